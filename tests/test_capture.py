"""jobs/capture and jobs/heartbeat: events become validated image sets; kills and concurrency lose nothing."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import CAMERA_BROKEN, CAMERAS_OK, ROOT, write_config

from helpers.checkpoint import wait_stopped
from helpers.figures import record
from helpers.readable import repo_for_others

from seccam import capture, config, events, heartbeat
from seccam.spool import Spool


def load(path):
    cfg = config.load(path)
    return cfg, Spool(cfg.spool_dir).ensure()


def sets(spool, kind="alarm"):
    return [p for p in spool.items("sets.ready") if p.name.endswith(f"-{kind}.set")]


def meta(set_path):
    return json.loads((set_path / "meta.json").read_text())


def test_done_when_trigger_then_capture_leaves_a_validated_set_and_reports_the_broken_camera(short_tmp, run):
    cfg_path = write_config(short_tmp, cameras=CAMERAS_OK + CAMERA_BROKEN)
    assert run("bin/seccam", "trigger", config=cfg_path).returncode == 0
    res = run("jobs/capture", "--no-encrypt", config=cfg_path)
    assert res.returncode == 0, res.stderr
    assert "camera=garage" in res.stderr and "failed" in res.stderr  # one line for the broken camera
    cfg, spool = load(cfg_path)
    [s] = sets(spool)
    m = meta(s)
    assert m["kind"] == "alarm" and m["events"][0]["source"] == "trigger"
    ok = {c["name"]: c for c in m["cameras"] if c["ok"]}
    assert set(ok) == {"front", "yard"}
    for c in ok.values():
        for f in (c["full"], c["preview"]):
            data = (s / f).read_bytes()
            assert data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\0").endswith(b"\xff\xd9")
    [bad] = [c for c in m["cameras"] if not c["ok"]]
    assert bad["name"] == "garage" and "no image written" in bad["error"]
    assert not (s / "garage.jpg").exists()
    assert spool.items("events.new") == [] and len(spool.items("events.done")) == 1
    status = run("bin/seccam", "status", config=cfg_path)
    assert status.returncode == 0
    assert "garage       FAILED" in status.stdout and "no image written" in status.stdout
    assert "sets.ready           1" in status.stdout
    js = json.loads(run("bin/seccam", "status", "--json", config=cfg_path).stdout)
    assert js["cameras"]["front"]["ok"] is True and js["cameras"]["garage"]["ok"] is False
    assert js["queues"]["sets.ready"]["count"] == 1 and js["last_motion"] and js["last_capture"]


def test_nothing_pending_is_a_quiet_success(config_path, run):
    res = run("jobs/capture", config=config_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_events_within_cooldown_become_one_capture(config_path):
    cfg, spool = load(config_path)
    now = time.time()
    for dt in (0, 5, 20):
        events.record(spool, "pir", [(17, now + dt)], when=now + dt)
    events.record(spool, "pir", [(17, now + 100)], when=now + 100)
    published = capture.process(cfg, spool)
    assert len(published) == 2
    assert sorted(len(meta(p)["events"]) for p in published) == [1, 3]


def test_corrupt_event_is_set_aside_and_the_batch_goes_on(config_path):
    cfg, spool = load(config_path)
    spool.write("events.new", b"not json", ".json")
    events.record(spool, "trigger")
    assert len(capture.process(cfg, spool)) == 1
    [aside] = spool.items("corrupt")
    assert aside.read_bytes() == b"not json"
    assert "unreadable motion event" in spool.read_reason(aside)


def test_event_already_captured_is_not_captured_again(config_path):
    cfg, spool = load(config_path)
    path = events.record(spool, "trigger")
    set_id = path.name.removesuffix(".json") + "-alarm"
    (spool.dir("sets.ready") / f"{set_id}.set").mkdir()
    assert capture.process(cfg, spool) == []
    assert len(spool.items("events.done")) == 1


def test_done_events_are_pruned_after_keep_days(short_tmp):
    cfg, spool = load(write_config(short_tmp, body="events_keep_days = 1\n"))
    old = spool.write("events.done", b"{}", ".json")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    fresh = spool.write("events.done", b"{}", ".json")
    capture.process(cfg, spool)
    assert not old.exists() and fresh.exists()


def _start(cfg_path, stop_at=None):
    env = dict(os.environ, SECCAM_CONFIG=str(cfg_path), SECCAM_NO_SYSLOG="1")
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / "jobs/capture"), "--no-encrypt"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("point", ["capture.claimed", "imageset.built", "capture.published", "capture.event-done"])
def test_sigkill_at_any_point_loses_no_event(short_tmp, point):
    cfg_path = write_config(short_tmp)
    cfg, spool = load(cfg_path)
    # Further apart than the incident gap: two incidents, so two alarm sets.
    first = events.record(spool, "pir", [(17, 1.0)], when=time.time() - 1000)
    second = events.record(spool, "pir", [(27, 2.0)], when=time.time())
    proc = _start(cfg_path, point)
    wait_stopped(proc)
    proc.kill()
    proc.wait(timeout=10)
    # Nothing half-written is published: every set present is complete.
    for s in spool.items("sets.ready"):
        m = meta(s)
        assert all((s / c["full"]).exists() and (s / c["preview"]).exists() for c in m["cameras"] if c["ok"])
    rerun = _start(cfg_path)
    assert rerun.wait(timeout=60) == 0, rerun.stderr.read()
    done = {p.name for p in spool.items("events.done")}
    assert done == {first.name, second.name}
    alarm_sets = sets(spool)
    ids = sorted(meta(s)["events"][0]["time"] for s in alarm_sets)
    assert len(alarm_sets) == 2 and len(set(ids)) == 2  # each event captured exactly once
    assert spool.items("events.new") == spool.items("events.active") == []
    assert list(spool.dir("tmp").iterdir()) == []
    record("kill", point=f"jobs/capture at {point}", tried=1, lost=0, duplicated=len(alarm_sets) - 2)


def test_two_capture_jobs_at_once_never_capture_an_event_twice(short_tmp):
    cfg_path = write_config(short_tmp, body="[sensors]\ncooldown_s = 0\n")
    cfg, spool = load(cfg_path)
    now = time.time()
    for i in range(6):
        events.record(spool, "pir", [(17, now + 10 * i)], when=now + 10 * i)
    procs = [_start(cfg_path) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    # One incident: the first event is its alarm, the others its captures.
    [incident] = spool.items("incidents.open")
    captures = sets(spool) + sorted(incident.glob("*-capture.set"))
    all_events = [meta(s)["events"][0]["time"] for s in captures]
    assert len(sets(spool)) == 1 and len(all_events) == 6 and len(set(all_events)) == 6


def test_lock_held_elsewhere_makes_the_job_wait_then_fail_temporarily(config_path, monkeypatch):
    cfg, spool = load(config_path)
    monkeypatch.setattr(capture, "LOCK_WAIT_S", 0.2)
    events.record(spool, "trigger")
    with spool.lock("capture"):
        with pytest.raises(Exception) as exc:
            capture.process(cfg, spool)
    assert getattr(exc.value, "exit_code", None) == 75
    assert len(spool.items("events.new")) == 1


def test_full_disk_exits_clearly_and_the_next_run_recovers(config_path, run, monkeypatch):
    cfg, spool = load(config_path)
    events.record(spool, "trigger")
    from seccam import imageset
    from seccam.errors import DiskFullError

    def full(*a, **k):
        raise DiskFullError("writing sets.ready item: no space left on the spool's filesystem")
    monkeypatch.setattr(imageset, "capture", full)
    with pytest.raises(DiskFullError):
        capture.process(cfg, spool)
    assert len(spool.items("events.active")) == 1  # claimed, not lost
    monkeypatch.undo()
    assert len(capture.process(cfg, spool)) == 1
    assert len(spool.items("events.done")) == 1


def test_bad_config_is_exit_78_with_one_line(short_tmp, run):
    bad = short_tmp / "bad.toml"
    bad.write_text('[[camera]]\nname = "a"\ndevice = "test"\nresolution = "720"\n')
    for entry in ("jobs/capture", "jobs/heartbeat", "bin/seccam"):
        args = ("trigger",) if entry == "bin/seccam" else ()
        res = run(entry, *args, "--config", bad)
        assert res.returncode == 78
        assert res.stderr.strip().splitlines() == [
            f'{res.stderr.split(":")[0]}: error: {bad}:4: camera[0].resolution: expected WIDTHxHEIGHT, got "720"']


def test_heartbeat_records_a_set_with_health(short_tmp, run):
    cfg_path = write_config(short_tmp, cameras=CAMERAS_OK + CAMERA_BROKEN)
    cfg, spool = load(cfg_path)
    events.record(spool, "trigger")
    res = run("jobs/heartbeat", "--no-encrypt", config=cfg_path)
    assert res.returncode == 0, res.stderr
    [hb] = sets(spool, "heartbeat")
    h = meta(hb)["health"]
    assert meta(hb)["kind"] == "heartbeat" and meta(hb)["events"] == []
    assert "front ok" in h["text"] and "garage FAILED" in h["text"]
    assert "Motion sensors: NOT RUNNING" in h["text"] and h["events_since_last"] == 1
    assert "Free disk:" in h["text"] and h["queues"]["events.new"] == 1
    assert (hb / "front.jpg").exists()
    # the next heartbeat counts only what happened since
    path, _ = heartbeat.process(cfg, spool)
    assert meta(path)["health"]["events_since_last"] == 0
    assert spool.read_state("heartbeat")["set"] == meta(path)["id"]


def test_cameras_command_reports_each_camera(short_tmp, run):
    cfg_path = write_config(short_tmp, cameras=CAMERAS_OK + CAMERA_BROKEN)
    res = run("bin/seccam", "cameras", config=cfg_path)
    assert res.returncode == 69
    lines = res.stdout.splitlines()
    assert lines[0].startswith("front") and " ok " in lines[0]
    assert lines[2].startswith("garage") and "FAILED" in lines[2]
    keep = short_tmp / "keep"
    res = run("bin/seccam", "cameras", "--keep", keep, config=write_config(short_tmp))
    assert res.returncode == 0 and len(list(keep.glob("front-*.preview.jpg"))) == 1
    res = run("bin/seccam", "cameras", config=write_config(short_tmp, cameras=""))
    assert res.returncode == 78 and "no [[camera]] configured" in res.stdout


def test_status_shows_poller_liveness_and_reasons(config_path, run):
    cfg, spool = load(config_path)
    spool.write_state("poller", {"pid": 42, "started": "then"})
    held = spool.write("sets.held", b"x")
    spool.write_reason(held, "no key for owner@example.org")
    out = run("bin/seccam", "status", config=config_path).stdout
    assert "poller      alive (pid 42" in out and "no key for owner@example.org" in out
    old = time.time() - 3600
    os.utime(spool.dir("state") / "poller.json", (old, old))
    out = run("bin/seccam", "status", config=config_path).stdout
    assert "poller      NOT RUNNING (last seen" in out


def test_config_option_works_before_and_after_the_subcommand(config_path, run):
    for args in (("--config", config_path, "trigger"), ("trigger", "--config", config_path)):
        res = run("bin/seccam", *args)
        assert res.returncode == 0 and "motion event recorded" in res.stdout
    assert len(Spool(config.load(config_path).spool_dir).items("events.new")) == 2


def test_heartbeat_says_when_the_poller_was_down(config_path):
    cfg, spool = load(config_path)
    heartbeat.process(cfg, spool)  # the previous heartbeat
    spool.write_state("poller", {"pid": 1, "started": "2999-01-01T00:00:00+00:00",
                                 "previous": {"last_seen": "2998-12-31T23:00:00+00:00", "clean_stop": False}})
    path, _ = heartbeat.process(cfg, spool)
    text = json.loads((path / "meta.json").read_text())["health"]["text"]
    assert ("Motion sensors were down from 2998-12-31T23:00:00+00:00 to 2999-01-01T00:00:00+00:00 "
            "(crashed or lost power).") in text


def test_root_works_in_the_spool_as_its_owner(short_tmp, run):
    """`sudo seccam trigger` must not leave root-owned files the service user cannot read."""
    import pwd
    if os.geteuid() != 0:
        pytest.skip("needs root to own files as another user")  # CI runs as root
    nobody = pwd.getpwnam("nobody")
    cfg_path = write_config(short_tmp)
    cfg, spool = load(cfg_path)
    for path in [spool.root, *spool.root.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    os.chmod(short_tmp, 0o755)
    cfg_path.chmod(0o644)
    # The command switches to the spool's owner, who must still be able to import seccam: from a
    # clone in a 0700 home, the code runs from a copy that the user nobody can read (helpers.readable).
    proc = run("bin/seccam", "trigger", config=cfg_path, repo=repo_for_others())
    assert proc.returncode == 0, proc.stderr
    [event] = spool.items("events.new")
    assert event.stat().st_uid == nobody.pw_uid


def test_a_set_captured_while_gpg_is_unusable_waits_in_sets_ready_for_jobs_send(short_tmp, caplog, monkeypatch):
    import logging
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    state = short_tmp / ("s" * 90)  # too long a path for gpg-agent's socket: gpg cannot start
    path = write_config(short_tmp, """
        [account]
        address = "cam@seccam.test"
        password = "pw"
        smtp_host = "127.0.0.1"
        smtp_security = "plain"
        [delivery]
        recipients = ["owner@seccam.test"]
        """)
    path.write_text(path.read_text().replace(f'state_dir = "{short_tmp / "state"}"', f'state_dir = "{state}"'))
    cfg, spool = load(path)
    events.record(spool, "trigger")
    prewarm = capture.Prewarm(cfg)
    [published] = capture.process(cfg, spool, while_waiting=prewarm)
    assert prewarm.crypto is None  # the failure is the encrypt step's to report, not the capture's
    assert capture.hand_to_encrypt(cfg, spool, prewarm.crypto) == 78
    assert spool.items("sets.ready") == [published]
    assert "encrypt deferred to jobs/send" in caplog.text and "characters long" in caplog.text


@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_a_set_that_cannot_be_written_leaves_nothing_behind_and_a_full_disk_keeps_the_event(
        config_path, monkeypatch, err):
    import errno
    from seccam import imageset
    from seccam.errors import DiskFullError
    cfg, spool = load(config_path)
    code = getattr(errno, err)

    def failing_dump(obj, fh, **kw):  # as if writing meta.json hit the disk's limits
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(imageset.json, "dump", failing_dump)
    with pytest.raises(DiskFullError if err == "ENOSPC" else OSError) as exc:
        imageset.capture(cfg, spool, "alarm", "20261125T191100Z-x")
    assert isinstance(exc.value, DiskFullError) == (err == "ENOSPC")
    assert spool.items("tmp") == [] and spool.items("sets.ready") == []


def test_camera_state_keeps_the_last_good_capture_time_while_a_camera_fails(config_path):
    from seccam import imageset
    from seccam.camera import Result
    _, spool = load(config_path)
    imageset.record_camera_state(spool, [Result("front", True, seconds=0.5)], 1_790_000_000)
    imageset.record_camera_state(spool, [Result("front", False, error="no image written")], 1_790_000_060)
    imageset.record_camera_state(spool, [Result("front", False, error="no image written")], 1_790_000_120)
    state = spool.read_state("cameras")["front"]
    assert (state["ok"], state["error"]) == (False, "no image written")
    assert state["last_ok"] == events.iso(1_790_000_000) and state["time"] == events.iso(1_790_000_120)
