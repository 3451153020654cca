"""The command benchmark (tests/bench/snap.py) still runs end to end and writes well-formed tables.

Not a timing test: nothing here depends on how fast anything is. ``--quick`` takes one sample of
each case with the real Delta Chat core and short periods, and fills a copy of the docs markers.
"""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("deltachat_rpc_client")

NUMBER = r"\d+(\.\d+)?"


def _rows(text, heading):
    part = text.split("### " + heading, 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in part.splitlines()
            if line.startswith("|")]
    header, rule, body = rows[0], rows[1], rows[2:]
    assert all(re.fullmatch(r"-{3,}", cell) for cell in rule) and all(len(r) == len(header) for r in body)
    return body


def test_snap_bench_quick_writes_its_tables_between_its_markers(short_tmp):
    doc = short_tmp / "performance.md"
    doc.write_text("# title\n\n<!-- bench:begin -->\nthe alarm bench's\n<!-- bench:end -->\n")
    proc = subprocess.run([sys.executable, str(ROOT / "tests/bench/snap.py"), "--quick", "--write", str(doc)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith("# title\n\n<!-- bench:begin -->\nthe alarm bench's\n<!-- bench:end -->\n")
    assert "<!-- bench-snap:begin -->" in text and text.endswith("<!-- bench-snap:end -->\n")
    latency = _rows(text, "From the owner's `/snap`")
    assert [r[0] for r in latency] == ["the inbox job waiting (IMAP IDLE)", "sent in the gap between two inbox runs",
                                       "baseline: the request written straight into the spool"]
    assert all(r[1] == "1" and all(re.fullmatch(NUMBER, c) for c in r[2:]) for r in latency)
    steps = _rows(text, "Where the time goes")
    assert len(steps) == 6 and all(re.fullmatch(NUMBER, r[1]) for r in steps)
    cost = _rows(text, "The inbox job's cost")
    assert len(cost) == 3 and all(re.fullmatch(NUMBER, c) for r in cost for c in r[2:])
    assert re.search(r"Target \(issue 13\): .*: (met|\*\*not met\*\*)", text)
    # A second run replaces its own block and nothing else.
    bench = _load_bench()
    bench.write(doc, "new tables")
    assert doc.read_text() == text.split("<!-- bench-snap:begin -->")[0] + \
        "<!-- bench-snap:begin -->\nnew tables\n<!-- bench-snap:end -->\n"


def _load_bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("snap_bench", ROOT / "tests/bench/snap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
