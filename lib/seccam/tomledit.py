"""Editing one table of a hand-written TOML file, keeping every other byte.

``tomllib`` only reads, and writing the parsed data back would drop the
owner's comments, blank lines, key order and spacing. This module changes
one table in place, line by line, the way an owner would with an editor:

* :func:`set_table` gives table ``[NAME]`` the keys it is passed: a key that
  is there keeps its line (indentation and trailing comment) with the new
  value, a key in ``drop`` is removed, a new key goes after the table's last
  key, and every other line of the file stays as it was. Without such a
  table it inserts one: after a commented-out ``# [NAME]`` template if the
  file has one (as docs/example.toml does), else at the end. An inline
  ``NAME = {...}`` at the top level is replaced by a real table.
* :func:`remove_table` takes the table out (header and keys; comments after
  its last key stay, they usually introduce what follows).

How it finds its way: :func:`statements` reads the file as a sequence of
top-level statements (table header, ``key = value``, comment, blank line),
following strings (all four kinds, multi-line ones too), arrays and inline
tables, so a ``[x]`` inside a multi-line string or an array is never taken
for a header.

Every result is checked before it is returned: ``tomllib`` must parse it to
exactly the data of the original file with only that one table changed as
asked. Anything else (a dotted ``NAME.key = ...`` at the top level, a
``[NAME.sub]`` table, a layout this module does not follow) raises
:class:`TomlEditError` and nothing is written. Values are never put into an
error message: the table may be the mail account.
"""

import re
import tomllib

from .errors import ConfigError


class TomlEditError(ConfigError):
    """The file cannot be changed safely; the message names the file's line where it can."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?")
_SCALAR = re.compile(r"[^\s,\]\}#]+")
_TEMPLATE = r"^\s*#+\s*\[\s*{name}\s*\]\s*$"


class Statement:
    """One top-level statement: lines ``first``..``last`` (0-based, inclusive) of the file.

    ``kind`` is ``header``, ``keyval``, ``comment`` or ``blank``; ``key`` is the
    dotted key (a tuple) of a header or key/value; ``array`` marks ``[[...]]``;
    ``table`` is the header key of the table a key/value belongs to (``()``:
    the top level).
    """

    __slots__ = ("kind", "first", "last", "key", "array", "table", "value_end")

    def __init__(self, kind, first, last, key=(), array=False, table=(), value_end=None):
        self.kind, self.first, self.last, self.key = kind, first, last, key
        self.array, self.table, self.value_end = array, table, value_end


class _Scanner:
    """A cursor over the text that skips TOML keys and values (the text is known to parse)."""

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def line_of(self, pos):
        return self.text.count("\n", 0, pos)

    def fail(self, what):
        raise TomlEditError(f"line {self.line_of(self.pos) + 1}: {what}")

    def peek(self, n=1):
        return self.text[self.pos:self.pos + n]

    def skip_blanks(self):
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def skip_space_newlines_comments(self):
        while True:
            ch = self.peek()
            if ch in (" ", "\t", "\r", "\n"):
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def key(self):
        """A dotted key, as a tuple of its decoded parts."""
        parts = []
        while True:
            self.skip_blanks()
            ch = self.peek()
            if ch == '"' or ch == "'":
                start = self.pos
                self.string()
                parts.append(tomllib.loads("k = " + self.text[start:self.pos])["k"])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if not match:
                    self.fail("expected a key")
                parts.append(match.group())
                self.pos = match.end()
            self.skip_blanks()
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def string(self):
        text = self.text
        for quote in ('"""', "'''"):
            if text.startswith(quote, self.pos):
                i = self.pos + 3
                while True:
                    if quote == '"""' and text[i:i + 1] == "\\":
                        i += 2
                        continue
                    if text.startswith(quote, i):
                        i += 3
                        for _ in range(2):  # up to two quotes may end the content
                            if text[i:i + 1] == quote[0]:
                                i += 1
                        self.pos = i
                        return
                    if i >= len(text):
                        self.fail("unterminated multi-line string")
                    i += 1
        quote = text[self.pos]
        i = self.pos + 1
        while i < len(text) and text[i] != quote and text[i] != "\n":
            i += 2 if quote == '"' and text[i] == "\\" else 1
        if text[i:i + 1] != quote:
            self.fail("unterminated string")
        self.pos = i + 1

    def value(self):
        ch = self.peek()
        if ch in ('"', "'"):
            self.string()
        elif ch == "[":
            self.pos += 1
            while True:
                self.skip_space_newlines_comments()
                if self.peek() == "]":
                    self.pos += 1
                    return
                self.value()
                self.skip_space_newlines_comments()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "]":
                    self.fail("expected , or ] in an array")
        elif ch == "{":
            self.pos += 1
            while True:
                self.skip_space_newlines_comments()
                if self.peek() == "}":
                    self.pos += 1
                    return
                self.key()
                self.skip_blanks()
                if self.peek() != "=":
                    self.fail("expected = in an inline table")
                self.pos += 1
                self.skip_blanks()
                self.value()
                self.skip_space_newlines_comments()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "}":
                    self.fail("expected , or } in an inline table")
        else:
            match = _DATETIME.match(self.text, self.pos) or _SCALAR.match(self.text, self.pos)
            if not match:
                self.fail("expected a value")
            self.pos = match.end()

    def rest_of_line(self):
        """Skip blanks and a comment; the line must end there."""
        self.skip_blanks()
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
        if self.peek() not in ("", "\n", "\r"):
            self.fail("unexpected text after a value")
        if self.peek() == "\r":
            self.pos += 1
        if self.peek() == "\n":
            self.pos += 1


def statements(text):
    """The top-level statements of TOML ``text`` (which must parse), in order."""
    scan = _Scanner(text)
    out = []
    table = ()
    while scan.pos < len(text):
        first = scan.line_of(scan.pos)
        scan.skip_blanks()
        ch = scan.peek()
        if ch in ("\n", "\r", ""):
            scan.rest_of_line()
            out.append(Statement("blank", first, first, table=table))
        elif ch == "#":
            scan.rest_of_line()
            out.append(Statement("comment", first, first, table=table))
        elif ch == "[":
            array = scan.peek(2) == "[["
            scan.pos += 2 if array else 1
            key = scan.key()
            closing = "]]" if array else "]"
            if scan.peek(len(closing)) != closing:
                scan.fail("expected the end of a table header")
            scan.pos += len(closing)
            scan.rest_of_line()
            table = key
            out.append(Statement("header", first, first, key=key, array=array, table=key))
        else:
            key = scan.key()
            if scan.peek() != "=":
                scan.fail("expected = after a key")
            scan.pos += 1
            scan.skip_blanks()
            scan.value()
            value_end = scan.pos
            last = scan.line_of(scan.pos)
            scan.rest_of_line()
            out.append(Statement("keyval", first, last, key=key, table=table, value_end=value_end))
    return out


def toml_value(value):
    """``value`` (str, int, bool) as TOML text; strings as basic strings with escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    raise TypeError(f"cannot write {type(value).__name__} values")


def _key_text(name):
    return name if _BARE_KEY.fullmatch(name) else toml_value(name)


def _parse(text, what):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+)", str(exc))
        line = f"line {where.group(1)}: " if where else ""
        raise TomlEditError(f"{what}: {line}not valid TOML ({re.sub(r' [(]at line.*', '', str(exc))})") from None


def _newline(text):
    return "\r\n" if "\r\n" in text else "\n"


def _ending(line):
    return line[len(line.rstrip("\r\n")):] or ""


class _Table:
    """Where table NAME is in a file: its header, its key/values, or a top-level inline table."""

    def __init__(self, stmts, name):
        self.header = None
        self.keyvals = []
        self.inline = None
        key = (name,)
        for st in stmts:
            if st.kind == "header" and st.key[:1] == key and (st.key != key or st.array):
                raise TomlEditError(f"line {st.first + 1}: [{'.'.join(st.key)}] is a table seccam does not "
                                    f"write; edit [{name}] by hand")
            if st.kind == "header" and st.key == key:
                self.header = st
            elif st.kind == "keyval" and st.table == key and self.header is not None:
                self.keyvals.append(st)
            elif st.kind == "keyval" and st.table == () and st.key[:1] == key:
                if len(st.key) > 1:
                    raise TomlEditError(f"line {st.first + 1}: {'.'.join(st.key)} is a dotted key; seccam "
                                        f"cannot rewrite [{name}] written that way: edit it by hand")
                self.inline = st


def set_table(text, name, values, drop=(), comments=(), what="the configuration"):
    """Return ``text`` with table ``[name]`` holding ``values`` (an ordered ``{key: value}``).

    Keys of the table that are in ``drop`` are removed; other keys it already
    has are kept. ``comments`` (lines without ``#``) go below a new table's
    header. Raises TomlEditError when the result would not be exactly that.
    """
    before = _parse(text, what)
    stmts = statements(text)
    found = _Table(stmts, name)
    nl = _newline(text)
    lines = text.splitlines(keepends=True)
    old = before.get(name, {})
    expected = dict(before)
    merged = {k: v for k, v in old.items() if k not in drop and k not in values}
    merged.update(values)
    expected[name] = merged

    if found.header is not None:
        new_lines = _update_in_place(lines, found, values, drop, nl)
        return _checked("".join(new_lines), expected, name, what)

    block = [f"[{_key_text(name)}]{nl}"] + [f"# {c}{nl}" for c in comments]
    block += [f"{_key_text(k)} = {toml_value(v)}{nl}" for k, v in merged.items()]
    if found.inline is not None:
        del lines[found.inline.first:found.inline.last + 1]
        stmts = statements("".join(lines))
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += nl
    candidates = []
    template = re.compile(_TEMPLATE.format(name=re.escape(name)))
    for i, st in enumerate(stmts):
        if st.kind == "comment" and template.match(lines[st.first]):
            end = i
            while end + 1 < len(stmts) and stmts[end + 1].kind == "comment":
                end += 1
            candidates.append(stmts[end].last + 1)
            break
    candidates.append(len(lines))
    for at in candidates:
        pad = [nl] if at > 0 and lines[at - 1].strip() else []
        tail = [nl] if at < len(lines) and lines[at].strip() else []
        attempt = lines[:at] + pad + block + tail + lines[at:]
        try:
            return _checked("".join(attempt), expected, name, what)
        except TomlEditError:
            continue
    raise TomlEditError(f"{what}: cannot add [{name}] without changing other settings; add it by hand")


def _update_in_place(lines, found, values, drop, nl):
    remaining = dict(values)
    replace = {}   # first line -> replacement lines for the statement starting there
    remove = set()
    for st in found.keyvals:
        if len(st.key) != 1:
            continue
        key = st.key[0]
        if key in remaining:
            first = lines[st.first]
            indent = first[:len(first) - len(first.lstrip(" \t"))]
            comment = ""
            if st.first == st.last:  # keep a trailing comment of a one-line key/value
                tail = lines[st.first][st.value_end - _line_start(lines, st.first):].rstrip("\r\n")
                comment = tail if tail.strip().startswith("#") else ""
            ending = _ending(lines[st.last]) or nl
            replace[st.first] = [f"{indent}{_key_text(key)} = {toml_value(remaining.pop(key))}{comment}{ending}"]
            remove.update(range(st.first + 1, st.last + 1))
        elif key in drop:
            remove.update(range(st.first, st.last + 1))
    after = (found.keyvals[-1].last if found.keyvals else found.header.last)
    new_keys = [f"{_key_text(k)} = {toml_value(v)}{nl}" for k, v in remaining.items()]
    out = []
    for i, line in enumerate(lines):
        if i in replace:
            out.extend(replace[i])
        elif i not in remove:
            if i == after and not line.endswith(("\n", "\r")):
                line += nl
            out.append(line)
        if i == after:
            out.extend(new_keys)
    return out


def _line_start(lines, index):
    return sum(len(line) for line in lines[:index])


def remove_table(text, name, what="the configuration"):
    """Return ``text`` without table ``[name]`` (or a top-level inline ``name = {...}``)."""
    before = _parse(text, what)
    found = _Table(statements(text), name)
    lines = text.splitlines(keepends=True)
    expected = {k: v for k, v in before.items() if k != name}
    if found.header is not None:
        last = found.keyvals[-1].last if found.keyvals else found.header.last
        del lines[found.header.first:last + 1]
    elif found.inline is not None:
        del lines[found.inline.first:found.inline.last + 1]
    return _checked("".join(lines), expected, name, what)


def _checked(new_text, expected, name, what):
    after = _parse(new_text, f"{what} as edited")
    if after != expected:
        raise TomlEditError(f"{what}: editing [{name}] would change other settings; edit it by hand")
    return new_text
