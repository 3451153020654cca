"""Disk space: the spool budget prunes in the documented order, and a real ENOSPC loses nothing."""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, write_config

from helpers.figures import record

from seccam import budget, camera, capture, config, events
from seccam.errors import DiskFullError
from seccam.spool import Spool


def load(path):
    cfg = config.load(path)
    return cfg, Spool(cfg.spool_dir).ensure()


def _name(t, kind):
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".000000Z.1.{int(t) % 99999:08x}-{kind}"


def fill(spool, t, kind, parts, size=100_000, state="outbox.new"):
    """Fake items of set (t, kind): outbox messages per part, or a set directory."""
    sid = _name(t, kind)
    made = []
    for part in parts:
        if part == "set":
            d = spool.dir("sets.ready") / f"{sid}.set"
            d.mkdir()
            (d / "a.jpg").write_bytes(b"x" * size)
            made.append(d.name)
        else:
            p = spool.dir(state) / f"{sid}.00.cam.{part}.eml"
            p.write_bytes(b"x" * size)
            made.append(p.name)
    return made


def test_pruning_order_heartbeats_then_delivered_previews_then_alarms(short_tmp):
    cfg, spool = load(write_config(short_tmp))
    old_alarm = fill(spool, 1000, "alarm", ["preview", "full"])
    hb1 = fill(spool, 2000, "heartbeat", ["full"])
    lone_preview = fill(spool, 2500, "alarm", ["preview"], state="outbox.deferred")  # its full was sent
    hb2 = fill(spool, 3000, "heartbeat", ["full"])
    new_alarm = fill(spool, 4000, "alarm", ["set"])
    hb_newest = fill(spool, 5000, "heartbeat", ["full"])
    order = [n for n, _, _ in budget.candidates(spool)]
    assert order == hb1 + hb2 + lone_preview + [old_alarm[1], old_alarm[0]] + new_alarm
    assert hb_newest[0] not in order  # the newest heartbeat is never pruned


def test_make_room_prunes_only_until_within_budget_and_records_it(short_tmp):
    _, spool = load(write_config(short_tmp))
    fill(spool, 1000, "heartbeat", ["full"])
    fill(spool, 2000, "heartbeat", ["full"])
    alarm = fill(spool, 3000, "alarm", ["preview", "full"])
    fill(spool, 4000, "heartbeat", ["full"])
    # A budget that two pruned heartbeats (~100 kB each) satisfy, and one does not.
    limit = (budget.usage(spool) + 100_000 - 150_000) / budget.MB
    cfg, _ = load(write_config(short_tmp, body=f"spool_budget_mb = {limit}\nmin_free_mb = 0\n"))
    pruned = budget.make_room(cfg, spool, needed=100_000)
    assert [n for n, _ in pruned] == [_name(1000, "heartbeat") + ".00.cam.full.eml",
                                      _name(2000, "heartbeat") + ".00.cam.full.eml"]
    assert all((spool.dir("outbox.new") / a).exists() for a in alarm)
    stamp = spool.read_state("pruned")
    assert stamp["count"] == 2 and stamp["bytes"] >= 200_000
    assert budget.make_room(cfg, spool, needed=0) == []  # within budget now: nothing more


def test_a_pruned_failed_message_takes_its_reason_along(short_tmp):
    _, spool = load(write_config(short_tmp))
    [name] = fill(spool, 1000, "alarm", ["full"], size=300_000, state="outbox.failed")
    spool.write_reason(spool.dir("outbox.failed") / name, "550 mailbox unavailable")
    cfg, _ = load(write_config(short_tmp, body="spool_budget_mb = 0.1\nmin_free_mb = 0\n"))
    assert [n for n, _ in budget.make_room(cfg, spool, needed=10**9)] == [name]
    assert list(spool.dir("outbox.failed").iterdir()) == []


def test_size_of_a_vanished_item_is_zero(short_tmp):
    assert budget.size_of(short_tmp / "gone") == 0


def test_events_and_corrupt_items_are_never_pruned(short_tmp):
    cfg, spool = load(write_config(short_tmp, body="spool_budget_mb = 1\nmin_free_mb = 0\n"))
    ev = events.record(spool, "trigger")
    bad = spool.write("corrupt", b"x" * 2_000_000)
    assert budget.make_room(cfg, spool, needed=10**9) == []
    assert ev.exists() and bad.exists()


def test_default_budget_is_a_share_of_the_filesystem(short_tmp):
    cfg, spool = load(write_config(short_tmp))
    b = budget.budget_bytes(cfg, spool)
    assert budget.DEFAULT_MIN_BYTES <= b <= budget.DEFAULT_MAX_BYTES
    assert budget.classify("x-heartbeat.00.a.text.eml") == ("heartbeat", "text")


# -- real ENOSPC on a size-limited tmpfs ----------------------------------------

@pytest.fixture
def tiny_fs(short_tmp):
    """A 2 MB tmpfs mounted for the test (root only, as in CI), always unmounted."""
    mnt = short_tmp / "fs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")  # CI runs as root: it can
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_to(mnt, leave):
    """Fill the filesystem, then give back ``leave`` bytes."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def _noise_cameras():
    return ('[[camera]]\nname = "a"\ndevice = "raw:/dev/urandom"\npalette = "YUYV"\nresolution = "720x540"\n'
            '[[camera]]\nname = "b"\ndevice = "raw:/dev/urandom"\npalette = "YUYV"\nresolution = "720x540"\n')


def test_full_disk_keeps_the_event_and_the_next_run_recovers(short_tmp, tiny_fs, run):
    cfg_path = write_config(short_tmp, body="min_free_mb = 0\n", cameras=_noise_cameras())
    cfg_path.write_text(cfg_path.read_text().replace(f'"{short_tmp / "spool"}"', f'"{tiny_fs}/spool"'))
    cfg, spool = load(cfg_path)
    filler = _fill_to(tiny_fs, 300_000)  # room for events, not for two 330 kB images
    assert run("bin/seccam", "trigger", config=cfg_path).returncode == 0  # a tiny event still fits
    res = run("jobs/capture", "--no-encrypt", config=cfg_path)
    assert res.returncode == 73, res.stderr
    assert res.stderr.count("\n") == 1 and "is full" in res.stderr and "event stays queued" in res.stderr
    assert spool.items("sets.ready") == [] and len(spool.items("events.active")) == 1
    assert [p for p in spool.dir("tmp").iterdir() if p.name.endswith(".set")] == []
    filler.unlink()
    res = run("jobs/capture", "--no-encrypt", config=cfg_path)
    assert res.returncode == 0, res.stderr
    [s] = spool.items("sets.ready")
    assert (s / "a.jpg").stat().st_size > 200_000 and (s / "b.jpg").exists()
    assert len(spool.items("events.done")) == 1
    record("enospc", run="capture with 300 kB free on a 2 MB tmpfs, then space freed", alarms=1, kept=1,
           exit_code=73, note="event stays queued; next run captures it")


def test_disk_filling_up_during_capture_publishes_nothing(short_tmp, tiny_fs, monkeypatch):
    cfg_path = write_config(short_tmp, cameras=_noise_cameras())
    cfg_path.write_text(cfg_path.read_text().replace(f'"{short_tmp / "spool"}"', f'"{tiny_fs}/spool"'))
    cfg, spool = load(cfg_path)
    events.record(spool, "trigger")
    real_capture_all = camera.capture_all

    def another_process_fills_the_disk(cameras, outdir, while_waiting=None):
        _fill_to(tiny_fs, 100_000)
        return real_capture_all(cameras, outdir, while_waiting)
    monkeypatch.setattr(camera, "capture_all", another_process_fills_the_disk)
    with pytest.raises(DiskFullError, match="filled up during the capture"):
        capture.process(cfg, spool)
    assert spool.items("sets.ready") == [] and len(spool.items("events.active")) == 1
    assert [p for p in spool.dir("tmp").iterdir() if p.name.endswith(".set")] == []
    record("enospc", run="disk fills up during the capture", alarms=1, kept=1, exit_code=73,
           note="truncated images discarded, nothing published, event stays claimed for the next run")


def test_poller_event_write_on_a_full_disk_is_a_clear_disk_full_error(short_tmp, tiny_fs):
    spool = Spool(tiny_fs / "spool").ensure()
    _fill_to(tiny_fs, 0)
    with pytest.raises(DiskFullError, match="no space left"):
        events.record(spool, "pir", [(17, 1.0)])
    assert spool.items("events.new") == [] and list(spool.dir("tmp").iterdir()) == []
    record("enospc", run="event write on a completely full disk", alarms=1, kept=1, exit_code="-",
           note="DiskFullError, no partial file; the poller keeps it in memory and retries (test_poller)")


def test_status_and_heartbeat_report_pruning(short_tmp, run):
    cfg_path = write_config(short_tmp, body="spool_budget_mb = 0.1\nmin_free_mb = 0\n")
    cfg, spool = load(cfg_path)
    fill(spool, 1000, "heartbeat", ["full"])
    fill(spool, 2000, "heartbeat", ["full"])
    budget.make_room(cfg, spool)
    out = run("bin/seccam", "status", config=cfg_path).stdout
    assert "pruned      1 item(s)" in out
    from seccam import heartbeat
    path, _ = heartbeat.process(cfg, spool)
    import json
    assert "Pruned to stay within the spool budget: " in json.loads((path / "meta.json").read_text())["health"]["text"]
