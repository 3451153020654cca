"""Line coverage report for the repo's bash scripts, from xtrace files.

The traces are written by tests/shcov-env.bash (loaded through BASH_ENV) into
one directory; each record is ``\\x1f+ SOURCE \\x1f LINENO \\x1f command``.
This module counts, per script, which of its *executable statements* appeared in a
record, and prints a table like ``coverage report -m``::

    /usr/bin/python3 tests/shcov.py --root . --traces DIR

Which lines are executable is decided from the source text with a small
line-based scanner that follows what bash's xtrace reports (measured on
bash 5.2). The unit is the *statement*, one line for nearly every command:

* Blank lines, comments and the shebang are not executable.
* A command that spans several physical lines (backslash continuation, a
  quoted string, ``$( … )``, ``$(( … ))``, ``<( … )``, ``arr=( … )`` or
  ``[[ … ]]`` left open at the end of a line, and a here-document body) is
  one statement: bash reports it with the number of its first, second or
  last line depending on the construct, so it counts as executed when any of
  its lines was reported, and the table shows it at its first line.
* Lines that only close a construct are not executable: ``}``, ``)``,
  ``fi``, ``done``, ``esac``, ``;;``, ``;&``, ``;;&``, also when followed by a
  redirection (``done <f``, ``} >&2``); followed by a pipe (``done | sort``)
  they are, because bash traces the command after the pipe on that line.
  ``{``, ``(``, ``then``, ``do``, ``else`` and ``in`` alone on a line are not
  executable either (with a command after them they are).
* Function headers (``name() {``, ``function name {``) and case patterns
  (``-h|--help)``) are not executable; ``pat) cmd ;;`` on one line is.
* ``if``/``elif``/``while``/``until`` (their condition), ``for``, ``case``,
  ``local``, assignments and every other simple command are executable.
  A pipeline or ``&&``/``||`` list split *after* the operator is one
  statement per line, as bash traces each part at its own line.

It is a heuristic, not a parser: unusual layouts can be misjudged, which
shows up as a line reported missing although it ran (or the reverse).

Lines that only run on a real system (apt-get, useradd, systemctl …) are
excluded by a marker comment that gives the reason, the counterpart of
coverage.py's ``# pragma: no cover - reason``:

* ``cmd  # shcov: skip - REASON`` excludes the statement on that line;
* ``# shcov: skip-begin - REASON`` … ``# shcov: skip-end`` excludes every
  statement between the two marker lines.

A marker without a reason is not honoured (the report says so). Excluded
statements count neither as executed nor as executable; the table shows
how many each file has (``Excl``). ``--fail-under N`` makes the exit status
2 when the total is below N percent.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

RECORD = re.compile(r"^\x1f+(?P<src>[^\x1f]*)\x1f(?P<line>\d+)\x1f")
CWD_HEADER = re.compile(r"^\x1fSHCOV-CWD\x1f(?P<cwd>.*)$")

# Scripts never reported: the test runner itself and the tracing setup.
EXCLUDED = {"tests/run", ".ci/run", "tests/shcov-env.bash"}

_OPENER = re.compile(r"^(?:\{|\(|then|do|else|in)(?=$|\s)(?P<rest>.*)$")
_CLOSER = re.compile(
    r"^(?:\}|\)|fi|done|esac|;;&|;;|;&)(?=$|[\s;<>&|)])(?P<rest>.*)$"
)
_FUNC_HEADER = re.compile(
    r"^(?:function\s+[\w:.@+-]+\s*(?:\(\s*\))?|[\w:.@+-]+\s*\(\s*\))\s*[{(]?\s*$"
)
_CASE_START = re.compile(r"^case\s.*\sin\s*$")
_CASE_PATTERN = re.compile(r"^\(?[^()]*\)(?P<rest>.*)$")
_HEREDOC = re.compile(r"(?<!<)<<(?!<)-?\s*(['\"]?)(?P<word>[A-Za-z_][\w.-]*)\1")
_MARKER = re.compile(r"#\s*shcov:\s*(?P<kind>skip-begin|skip-end|skip)\b(?P<rest>.*)$")
_REASON = re.compile(r"^\s*-\s*\S")


def _scan_line(text, state):
    """Advance the lexical state over one physical line.

    ``state`` holds ``quote`` (None, "'" or '"'), ``depth`` (open ``$(``,
    ``=(`` … parentheses) and ``dbrack`` (open ``[[``). Returns the state
    and whether the line ends with a backslash continuation.
    """
    quote, depth, dbrack = state
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == "\\":
            if i == n - 1:
                return (quote, depth, dbrack), True
            i += 1
        elif quote == '"':
            if c == '"':
                quote = None
            elif text.startswith("$(", i):
                depth += 1
                i += 1
            elif c == ")" and depth:
                depth -= 1
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t;|&("):
            break
        elif text.startswith("[[", i):
            dbrack += 1
            i += 1
        elif text.startswith("]]", i) and dbrack:
            dbrack -= 1
            i += 1
        elif c == "(" and i and text[i - 1] in "$=<>":
            depth += 1
        elif c == "(" and depth:
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        i += 1
    return (quote, depth, dbrack), False


def _is_executable(first, case_depth):
    """Whether a statement whose first physical line is ``first`` runs."""
    s = first.strip()
    if not s or s.startswith("#"):
        return False
    m = _OPENER.match(s)
    if m:
        return not _only_comment(m.group("rest"))
    m = _CLOSER.match(s)
    if m:
        return bool(re.search(r"(?<!\|)\|(?!\|)", m.group("rest")))
    if _FUNC_HEADER.match(s):
        return False
    if case_depth:
        m = _CASE_PATTERN.match(s)
        if m and "$(" not in s and "=" not in s.split(")")[0]:
            rest = m.group("rest").strip()
            return not _only_comment(rest) and not re.fullmatch(r";;&?|;&", rest)
    return True


def _only_comment(rest):
    rest = rest.strip()
    return not rest or rest.startswith("#")


def statements(text):
    """Return the executable statements as sorted (first, last) line spans.

    A span covers every physical line of one command, here-document body
    included; it counts as executed if xtrace reported any line in it.
    """
    lines = text.splitlines()
    result = []
    state = (None, 0, 0)
    first = None          # (line number, text) of the current statement
    heredocs = []         # pending here-document terminators
    case_depth = 0
    for lineno, raw in enumerate(lines, start=1):
        if heredocs:
            word, strip = heredocs[0]
            if (raw.lstrip("\t") if strip else raw) == word:
                heredocs.pop(0)
            if result and result[-1][1] == lineno - 1 and first is None:
                result[-1] = (result[-1][0], lineno)
            continue
        if lineno == 1 and raw.startswith("#!"):
            continue
        if first is None:
            first = (lineno, raw)
        if state == (None, 0, 0):
            for m in _HEREDOC.finditer(raw):
                heredocs.append((m.group("word"), m.group(0).startswith("<<-")))
        state, continued = _scan_line(raw, state)
        if continued or state != (None, 0, 0):
            continue
        stripped = first[1].strip()
        if _is_executable(first[1], case_depth):
            result.append((first[0], lineno))
        if _CASE_START.match(stripped):
            case_depth += 1
        elif re.match(r"^esac\b", stripped) and case_depth:
            case_depth -= 1
        first = None
    return result


def excluded_lines(text):
    """Physical lines excluded by ``# shcov: skip`` markers, and marker problems.

    Returns (set of line numbers, list of "LINE: problem" strings).
    """
    excluded, problems = set(), []
    begin = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        m = _MARKER.search(raw)
        if not m:
            if begin is not None:
                excluded.add(lineno)
            continue
        kind = m.group("kind")
        if kind == "skip-end":
            if begin is None:
                problems.append(f"{lineno}: skip-end without skip-begin")
            begin = None
            continue
        if not _REASON.match(m.group("rest")):
            problems.append(f"{lineno}: {kind} without a reason (write: # shcov: {kind} - why)")
            continue
        if kind == "skip-begin":
            if begin is not None:
                problems.append(f"{lineno}: skip-begin inside the block opened at line {begin}")
            begin = lineno
        excluded.add(lineno)
    if begin is not None:
        problems.append(f"{begin}: skip-begin without skip-end")
    return excluded, problems


def _is_bash_script(path):
    if path.suffix in (".sh", ".bash"):
        return True
    try:
        with path.open("rb") as f:
            head = f.readline(128)
    except OSError:
        return False
    return bool(re.match(rb"#!\s*(/usr)?/bin/(env\s+)?bash\b", head))


def repo_scripts(root):
    """Bash scripts of the repo, as paths relative to ``root``.

    Test tooling and fixtures under tests/ and the EXCLUDED files are left
    out: the report is about the scripts seccam ships.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            check=True, capture_output=True,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [
            os.path.relpath(os.path.join(d, f), root)
            for d, dirs, files in os.walk(root)
            if ".git" not in Path(d).relative_to(root).parts
            for f in files
        ]
    scripts = []
    for name in sorted(set(names)):
        if name in EXCLUDED or name.startswith("tests/"):
            continue
        path = root / name
        if path.is_file() and _is_bash_script(path):
            scripts.append(name)
    return scripts


COPY_MARKER = ".seccam-copy-of"  # tests/helpers/readable.py: a readable copy of the checkout


def _copy_root(src, root, copies):
    """``root``, or the top of the copy of ``root`` that ``src`` lies in (its lines count as
    the checkout's: tests run scripts from a copy as another user who cannot read a 0700 clone)."""
    found = root
    for parent in src.parents:
        marker = parent / COPY_MARKER
        if marker.is_file():
            try:
                if Path(marker.read_text().strip()).resolve() == root:
                    found = parent
            except OSError:
                pass
            break
    copies[src.parent] = found
    return found


def executed_lines(trace_dir, root):
    """Map repo-relative script path -> set of executed line numbers."""
    root = root.resolve()
    hits = {}
    copies = {}  # directory of a traced script -> the tree its path is relative to
    for trace in sorted(Path(trace_dir).glob("trace.*")):
        cwd = "/"
        with trace.open("r", encoding="utf-8", errors="replace") as f:
            for line in f:
                m = CWD_HEADER.match(line.rstrip("\n"))
                if m:
                    cwd = m.group("cwd")
                    continue
                m = RECORD.match(line)
                if not m or not m.group("src"):
                    continue
                src = Path(os.path.realpath(os.path.join(cwd, m.group("src"))))
                try:
                    rel = src.relative_to(copies.get(src.parent) or _copy_root(src, root, copies)).as_posix()
                except ValueError:
                    continue
                hits.setdefault(rel, set()).add(int(m.group("line")))
    return hits


def _missing_ranges(spans, hit):
    """Missing statements as text; runs of missing statements merge."""
    out, run = [], None
    for span in spans:
        if span in hit:
            if run:
                out.append(run)
            run = None
        elif run is None:
            run = list(span)
        else:
            run[1] = span[1]
    if run:
        out.append(run)
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def report(root, trace_dir, out=sys.stdout):
    """Print the table; return (executed, executable) statement totals.

    Statements excluded by markers are in neither total.
    """
    root = Path(root).resolve()
    hits = executed_lines(trace_dir, root)
    names = set(repo_scripts(root))
    names.update(n for n in hits
                 if n not in EXCLUDED and not n.startswith("tests/") and (root / n).is_file())
    rows, problems = [], []
    total_exec = total_hit = total_excl = 0
    for name in sorted(names):
        text = (root / name).read_text(encoding="utf-8", errors="replace")
        skipped, bad = excluded_lines(text)
        problems += [f"{name}:{p}" for p in bad]
        spans = []
        n_excl = 0
        for span in statements(text):
            if any(n in skipped for n in range(span[0], span[1] + 1)):
                n_excl += 1
            else:
                spans.append(span)
        lines_hit = hits.get(name, set())
        hit = {sp for sp in spans if any(sp[0] <= n <= sp[1] for n in lines_hit)}
        total_exec += len(spans)
        total_hit += len(hit)
        total_excl += n_excl
        rows.append((name, len(spans), len(hit), n_excl, _missing_ranges(spans, hit)))
    print("Bash coverage (xtrace; executed / executable lines, "
          "see tests/shcov.py for what counts):", file=out)
    if not rows:
        print("  no bash scripts found", file=out)
        return 0, 0
    width = max(len("TOTAL"), *(len(r[0]) for r in rows))
    rule = "-" * (width + 37)
    print(f"{'Name':<{width}}  Lines   Exec   Excl  Cover  Missing", file=out)
    print(rule, file=out)
    for name, n_lines, n_hit, n_excl, missing in rows + [(None, total_exec, total_hit, total_excl, "")]:
        if name is None:
            print(rule, file=out)
            name = "TOTAL"
        pct = f"{100 * n_hit // n_lines}%" if n_lines else "n/a"
        print(f"{name:<{width}}  {n_lines:5d}  {n_hit:5d}  {n_excl:5d}  {pct:>5}  {missing}".rstrip(),
              file=out)
    if total_excl:
        print(f"({total_excl} statements excluded by '# shcov: skip - reason' markers)", file=out)
    for problem in problems:
        print(f"marker ignored: {problem}", file=out)
    return total_hit, total_exec


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="repository root")
    parser.add_argument("--traces", required=True, help="directory of trace.* files")
    parser.add_argument("--fail-under", type=float, metavar="N",
                        help="exit with status 2 when the total is below N percent")
    args = parser.parse_args(argv)
    hit, executable = report(args.root, args.traces)
    if args.fail_under is not None and executable and 100 * hit < args.fail_under * executable:
        print(f"bash coverage {100 * hit / executable:.1f}% is below --fail-under={args.fail_under:g}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
