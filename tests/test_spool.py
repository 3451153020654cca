"""The spool's guarantees: atomic publication, claim by rename, set-aside with reason, locks, recovery."""

import errno
import multiprocessing
import os
import time

import pytest

from seccam import events
from seccam.errors import DiskFullError, TemporaryError
from seccam.spool import STATES, Spool, SpoolFormatError, read_json, unique_name


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "spool").ensure()


def test_ensure_creates_every_state(spool):
    for rel in STATES.values():
        assert (spool.root / rel).is_dir()
    assert repr(spool).startswith("Spool(")


def test_unique_names_sort_by_time_and_never_collide():
    names = [unique_name(now_ns=t) for t in (2_000_000_000_000_000_000, 1_000_000_000_000_000_000)]
    assert sorted(names) == names[::-1]
    assert len({unique_name() for _ in range(2000)}) == 2000


def test_write_publishes_complete_file_and_leaves_no_tmp(spool):
    path = spool.write("events.new", b"hello", ".txt")
    assert path.parent == spool.dir("events.new") and path.read_bytes() == b"hello"
    assert list(spool.dir("tmp").iterdir()) == []
    assert spool.items("events.new") == [path]


def test_items_skip_reasons_and_dotfiles(spool):
    p = spool.write("corrupt", b"x")
    spool.write_reason(p, "because")
    (spool.dir("corrupt") / ".hidden").write_text("")
    assert spool.items("corrupt") == [p]
    assert spool.read_reason(p) == "because"
    assert spool.items("corrupt", suffix=".nope") == []


def test_claim_by_rename_has_exactly_one_winner(spool):
    path = spool.write("events.new", b"x")
    assert spool.claim(path, "events.active") is not None
    assert spool.claim(path, "events.active") is None


def _claimer(root, out):
    s = Spool(root)
    won = [p.name for p in s.items("events.new") if s.claim(p, "events.active")]
    out.put(won)


def test_concurrent_claimers_never_share_an_item(spool):
    for _ in range(200):
        spool.write("events.new", b"x")
    # spawn, not fork: the test process has threads (the mail server's), and a forked child may
    # inherit one of their locks held (Python 3.13 warns about exactly that).
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(spool.root, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    won = [n for r in results for n in r]
    assert len(won) == 200 and len(set(won)) == 200


def test_move_carries_away_the_old_reason(spool):
    p = spool.write("sets.held", b"x")
    spool.write_reason(p, "no key")
    moved = spool.move(p, "sets.ready")
    assert spool.read_reason(p) is None and moved.exists()


def test_set_aside_keeps_item_and_reason(spool):
    p = spool.write("events.new", b"garbage")
    aside = spool.set_aside(p, "not JSON")
    assert aside.read_bytes() == b"garbage" and spool.read_reason(aside) == "not JSON"
    assert aside.name.endswith(".new." + p.name)
    assert spool.set_aside(p, "again") is None  # already gone: nothing to do


def test_write_reason_failure_does_not_undo_the_move(spool, tmp_path):
    assert spool.write_reason(tmp_path / "nodir" / "item", "r") is None
    assert list(spool.dir("tmp").iterdir()) == []


def test_remove_files_and_directories(spool):
    d = spool.make_tmp_dir(".set")
    (d / "a").write_text("a")
    spool.remove(d)
    assert not d.exists()
    f = spool.write("events.done", b"x")
    spool.write_reason(f, "r")
    spool.remove(f)
    assert not f.exists() and spool.read_reason(f) is None
    spool.remove(f)  # removing twice is fine


def test_publish_directory_is_atomic(spool):
    d = spool.make_tmp_dir(".set")
    (d / "meta.json").write_text("{}")
    dest = spool.publish(d, "sets.ready", "x.set")
    assert (dest / "meta.json").exists() and not d.exists()


def test_recover_returns_claimed_items(spool):
    a = spool.claim(spool.write("events.new", b"1"), "events.active")
    spool.claim(spool.write("events.new", b"2"), "events.active")
    back = spool.recover("events.active", "events.new")
    assert len(back) == 2 and spool.items("events.active") == [] and a.name in {p.name for p in back}


def test_clean_tmp_removes_only_old_files_of_its_kind(spool):
    old = spool.dir("tmp") / "old.json"
    old.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    new = spool.dir("tmp") / "new.json"
    new.write_text("x")
    other = spool.dir("tmp") / "old.set"
    other.mkdir()
    assert spool.clean_tmp(".json", 3600) == 1
    assert not old.exists() and new.exists() and other.exists()


def test_lock_excludes_and_times_out(spool):
    with spool.lock("capture"):
        with pytest.raises(TemporaryError, match="another capture job is running"):
            with spool.lock("capture", timeout_s=0.1):
                pass
    with spool.lock("capture", timeout_s=0):
        pass


def test_state_stamps(spool):
    assert spool.read_state("poller") is None and spool.state_mtime("poller") is None
    spool.write_state("poller", {"pid": 1})
    assert spool.read_state("poller") == {"pid": 1}
    (spool.dir("state") / "bad.json").write_text("{")
    assert spool.read_state("bad") is None


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"), (b"{", "not JSON"), (b"[1]", "expected a JSON object"),
    (b"\xff\xfe", "not JSON"), (b" " * (1 << 20) + b"{}", "larger than"),
])
def test_read_json_reasons(tmp_path, content, reason):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(SpoolFormatError, match=reason):
        read_json(p)


def test_enospc_becomes_disk_full_and_publishes_nothing(spool, monkeypatch):
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskFullError, match="no space left"):
        spool.write("events.new", b"x")
    monkeypatch.setattr(os, "write", real_write)
    assert spool.items("events.new") == [] and list(spool.dir("tmp").iterdir()) == []


def test_other_write_errors_are_temporary(spool, monkeypatch):
    def broken(fd, data):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(TemporaryError, match="Input/output error") as exc:
        spool.write("events.new", b"x")
    assert not isinstance(exc.value, DiskFullError)


def test_ensure_fails_clearly_when_root_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(TemporaryError, match="f/"):
        Spool(tmp_path / "f").ensure()


# -- events ---------------------------------------------------------------

def test_event_roundtrip(spool):
    path = events.record(spool, "pir", sensors=[(17, 100.0), (27, 101.5)], when=102.0)
    ev = events.load(path)
    assert ev["ts"] == 102.0 and ev["source"] == "pir" and [s["pin"] for s in ev["sensors"]] == [17, 27]
    with pytest.raises(ValueError):
        events.record(spool, "ghost")


@pytest.mark.parametrize("body, reason", [
    ('{"version": 2, "kind": "motion"}', "not a version 1 motion event"),
    ('{"version": 1, "kind": "motion", "source": "x"}', "unknown source"),
    ('{"version": 1, "kind": "motion", "source": "pir"}', "missing or invalid time"),
    ('{"version": 1, "kind": "motion", "source": "pir", "time": "2026-01-01T00:00:00"}', "invalid time"),
    ('{"version": 1, "kind": "motion", "source": "pir", "time": "2026-01-01T00:00:00+00:00", "sensors": [1]}',
     "invalid sensors"),
])
def test_event_validation(tmp_path, body, reason):
    p = tmp_path / "e.json"
    p.write_text(body)
    with pytest.raises(SpoolFormatError, match=reason):
        events.load(p)


def test_coalesce_groups_by_gap():
    evs = [{"ts": t} for t in (0, 10, 25, 100, 129, 200)]
    groups = events.coalesce(evs, 30)
    assert [[e["ts"] for e in g] for g in groups] == [[0, 10, 25], [100, 129], [200]]
    assert events.coalesce([], 30) == []


def test_items_of_a_state_not_created_yet_are_none(tmp_path):
    assert Spool(tmp_path / "never-ensured").items("outbox.new") == []


def test_lock_held_is_false_for_a_lock_never_taken_and_true_while_held(spool):
    assert spool.lock_held("encrypt") is False
    with spool.lock("encrypt"):
        assert spool.lock_held("encrypt") is True  # flock: another open of the file conflicts
    assert spool.lock_held("encrypt") is False


def test_publish_makes_nested_directories_durable_too(spool):
    d = spool.make_tmp_dir(".set")
    (d / "sub").mkdir()
    (d / "sub" / "a.jpg").write_bytes(b"x")
    dest = spool.publish(d, "sets.ready", "y.set")
    assert (dest / "sub" / "a.jpg").read_bytes() == b"x"


def test_full_disk_when_creating_a_set_directory_is_disk_full(spool, monkeypatch):
    def full(path, mode=0o777):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "mkdir", full)
    with pytest.raises(DiskFullError, match="no space left"):
        spool.make_tmp_dir(".set")


def test_state_stamp_write_failure_keeps_the_old_stamp_and_leaves_no_tmp(spool, monkeypatch):
    spool.write_state("poller", {"pid": 1})

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "rename", full)
    with pytest.raises(DiskFullError, match="writing state poller"):
        spool.write_state("poller", {"pid": 2})
    monkeypatch.undo()
    assert spool.read_state("poller") == {"pid": 1} and list(spool.dir("tmp").iterdir()) == []


def test_a_move_or_claim_of_an_item_already_gone_says_so_and_changes_nothing(tmp_path):
    from seccam.spool import Spool

    spool = Spool(tmp_path / "spool").ensure()
    gone = spool.dir("events.new") / "gone.json"
    assert spool.move(gone, "events.done") is None and spool.claim(gone, "events.active") is None
    assert spool.items("events.done") == spool.items("events.active") == []
