"""Early capture: the first PIR edge starts the cameras; motion confirms the frames or they are deleted.

The rule (sensors rule 6) on a fake clock, the poller writing early events on
mock pins, and the capture job with real fswebcam captures: confirmed, not
confirmed, superseded, late, killed mid-way, and a burst of single-PIR
triggers.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, write_config

from helpers.checkpoint import wait_stopped

from seccam import capture, config, early, events, health
from seccam.sensors import Coincidence, Motion
from seccam.spool import Spool
from test_poller import messages, records  # noqa: F401 - records is a fixture (the seccam logger's records)

EPOCH = 1_800_000_000.0


class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def now(self):
        return self.t

    def wall(self):
        return EPOCH + self.t


def rule(clock, burst=3, refill_s=600.0, cooldown_s=30.0, warmup_s=0.0, pins=(17, 27)):
    return Coincidence(pins, window_s=2.0, cooldown_s=cooldown_s, warmup_s=warmup_s, now=clock.now,
                       wall=clock.wall, early_burst=burst, early_refill_s=refill_s)


def early_events(out):
    return [m for m in out if m.source == "early"]


# -- the rule -----------------------------------------------------------------------

def test_the_first_pir_edge_is_an_early_event_and_the_second_confirms_it():
    clock = FakeClock()
    c = rule(clock)
    assert c.activate(17) == [Motion("early", ((17, EPOCH),), EPOCH)]
    clock.t = 1.0
    [motion] = c.activate(27)
    assert motion.source == "pir" and (17, EPOCH) in motion.sensors  # the same activation: confirmed
    assert c.early_tokens() == 3  # a confirmed early event gives its token back


def test_no_early_event_for_the_second_edge_while_cooling_down_during_warmup_or_with_one_pir():
    clock = FakeClock()
    c = rule(clock)
    c.activate(17)
    clock.t = 0.5
    c.deactivate(17)
    clock.t = 1.0
    assert early_events(c.activate(17)) == []  # one early event per possible coincidence
    clock.t = 1.5
    assert c.activate(27)[0].source == "pir"
    for pin in (17, 27):
        c.deactivate(pin)
    clock.t = 10.0  # cooldown (30 s) running: a coincidence now would be owed, not captured early
    assert c.activate(17) == []
    warm = FakeClock()
    assert rule(warm, warmup_s=60).activate(17) == []
    assert rule(FakeClock(), pins=(17,)).activate(17)[0].source == "pir"  # one PIR: motion at once


def test_a_burst_of_single_pir_triggers_is_rate_limited_and_the_bucket_refills():
    clock = FakeClock()
    c = rule(clock, burst=3, refill_s=600)
    got = []
    for i in range(20):  # one PIR alone, every 10 s for 200 s: never confirmed
        clock.t = 10.0 * i
        got += early_events(c.activate(17))
        clock.t += 3.0
        c.deactivate(17)
    assert len(got) == 3
    clock.t = 200 + 600  # one token back after early_capture_refill_s
    assert len(early_events(c.activate(17))) == 1
    clock.t += 3.0
    c.deactivate(17)
    clock.t += 5.0
    assert early_events(c.activate(17)) == []


def test_with_three_pirs_a_pir_that_fired_during_the_cooldown_still_started_the_possible_coincidence():
    clock = FakeClock()
    c = rule(clock, pins=(17, 27, 22), cooldown_s=30)
    c.activate(17), c.activate(27)
    assert c.activate(22)[0].source == "pir"  # cooldown until t=30
    for pin in (17, 27, 22):
        c.deactivate(pin)
    clock.t = 29.5
    assert c.activate(17) == []  # cooling down: no early event, but 17 is fresh
    clock.t = 30.5
    c.tick()
    assert c.activate(27) == []  # 17 (0.5 s ago) started this possible coincidence, not 27


def test_an_early_event_that_a_late_second_edge_does_not_confirm_keeps_its_token_used():
    clock = FakeClock()
    c = rule(clock, burst=1)
    assert len(c.activate(17)) == 1
    clock.t = 2.5  # outside the window: no coincidence, and no new early event (the bucket is empty)
    assert c.activate(27) == []
    assert c.early_tokens() == 0


# -- the poller writes them ---------------------------------------------------------------

def test_the_poller_writes_the_early_event_and_the_motion_event_names_it(tmp_path, mock_factory):
    from test_poller import run_poller, started, wait_for

    from seccam.poller import Poller

    cfg = write_config(tmp_path, body="[sensors]\nwarmup_s = 0\nliveness_s = 1\n", cameras="")
    poller = Poller(config.load(cfg), pin_factory=mock_factory)

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        wait_for(lambda: p.spool.items("early.new"), what="early event")
        mock_factory.pin(27).drive_high()
        wait_for(lambda: p.spool.items("events.new"), what="motion event")

    assert run_poller(poller, driver) == 0
    [early_path] = poller.spool.items("early.new")
    [motion_path] = poller.spool.items("events.new")
    early_event = events.load(early_path)
    motion = events.load(motion_path)
    assert early_event["kind"] == "early" and early_event["sensors"][0]["pin"] == 17
    assert early_event["confirm_ts"] == pytest.approx(events.parse_iso(early_event["time"]) + 2.0)
    assert motion["early"] == early_path.name
    assert motion["sensors"][0]["active_at"] == early_event["sensors"][0]["active_at"]


def test_a_burst_of_single_pir_triggers_makes_at_most_burst_early_events(tmp_path, mock_factory):
    from test_poller import run_poller, started, wait_for

    from seccam.poller import Poller

    cfg = write_config(tmp_path, body="[sensors]\nwarmup_s = 0\nliveness_s = 1\nearly_capture_burst = 2\n"
                                      "coincidence_s = 0.05\n", cameras="")
    poller = Poller(config.load(cfg), pin_factory=mock_factory)

    def driver(p):
        started(p)
        for _ in range(10):  # ten separate single-PIR triggers, each longer ago than coincidence_s
            mock_factory.pin(17).drive_high()
            mock_factory.pin(17).drive_low()
            time.sleep(0.06)
        wait_for(lambda: len(p.spool.items("early.new")) >= 2, what="early events")
        time.sleep(0.2)  # any further (wrong) early event would be written by now

    assert run_poller(poller, driver) == 0
    assert len(poller.spool.items("early.new")) == 2 and poller.spool.items("events.new") == []


def test_an_early_event_that_cannot_be_written_before_its_deadline_is_dropped(tmp_path, records):
    from seccam.poller import Poller

    cfg = config.load(write_config(tmp_path, body="[sensors]\ncoincidence_s = 0.05\n", cameras=""))
    poller = Poller(cfg)
    poller.pending.append(Motion("early", ((17, time.time() - 1),), time.time() - 1))
    assert poller.flush() and not poller.pending
    assert poller.spool.items("early.new") == []
    assert any(m.startswith("early=dropped pin=17") for m in messages(records))


# -- the capture job ------------------------------------------------------------------------

FAST_CAMERAS = """
[[camera]]
name = "front"
device = "test"
resolution = "320x240"
"""


def load(path):
    cfg = config.load(path)
    return cfg, Spool(cfg.spool_dir).ensure()


def sets(spool):
    return [p for p in spool.items("sets.ready") if p.name.endswith("-alarm.set")]


def meta(set_path):
    return json.loads((set_path / "meta.json").read_text())


def confirm_when_claimed(spool, early_name, delay_s=0.5):
    """Write the confirming motion event (as the poller would) once the capture job has the early event's
    frames under way: after its tmp set exists, ``delay_s`` later. Returns the thread and a result box."""
    box = {}

    def run():
        deadline = time.monotonic() + 30
        while not list(spool.dir("tmp").glob("*.set")) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay_s)
        box["path"] = events.record(spool, "pir", [(17, time.time() - 1), (27, time.time())], early=early_name)
        box["time"] = time.time()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_confirmed_early_capture_is_the_alarm_and_its_frames_precede_the_confirmation(short_tmp):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS))
    now = time.time()
    early_path = events.record_early(spool, 17, now, now + 10)
    thread, box = confirm_when_claimed(spool, early_path.name)
    published = capture.process(cfg, spool)
    thread.join(5)
    [s] = sets(spool)
    assert published == [s]
    m = meta(s)
    assert s.name == box["path"].name.removesuffix(".json") + "-alarm.set"  # the motion event's own set ID
    assert m["early"] == {"event": early_path.name, "time": events.iso(now)}
    assert m["events"][0]["early"] == early_path.name and m["events"][0]["source"] == "pir"
    [cam] = m["cameras"]
    # The frame was taken before the second PIR confirmed: the picture shows the first moment of motion.
    assert cam["ok"] and events.parse_iso(cam["captured"]) < box["time"]
    assert [p.name for p in spool.items("events.done")] == [box["path"].name]
    assert spool.items("early.new") == spool.items("early.active") == []
    assert list(spool.dir("tmp").iterdir()) == []


def test_unconfirmed_early_capture_is_deleted_unsent_unencrypted_and_never_an_alarm(short_tmp, records):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS))
    now = time.time()
    events.record_early(spool, 17, now, now + 0.3)
    made = []
    real_shoot = capture.imageset.shoot

    def shoot(*args, **kwargs):
        tmp, results = real_shoot(*args, **kwargs)
        made.append((tmp, [r.full for r in results if r.ok]))
        return tmp, results

    capture.imageset.shoot = shoot
    try:
        assert capture.process(cfg, spool) == []
    finally:
        capture.imageset.shoot = real_shoot
    [(tmp, fulls)] = made
    assert fulls and not tmp.exists()  # the frames existed, and are gone
    for state in ("sets.ready", "sets.active", "sets.held", "outbox.new", "events.new", "events.done",
                  "early.new", "early.active"):
        assert spool.items(state) == [], state
    assert list(spool.dir("tmp").iterdir()) == []
    assert health.last_motion(spool) is None and health.events_since(spool, None) == 0
    assert any("state=discarded reason=not-confirmed images=deleted" in m for m in messages(records))


def test_a_confirmation_already_waiting_supersedes_the_early_capture(short_tmp):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS))
    now = time.time()
    early_path = events.record_early(spool, 17, now, now + 10)
    motion = events.record(spool, "pir", [(17, now), (27, now + 1)], early=early_path.name)
    capture.process(cfg, spool)
    [s] = sets(spool)
    assert "early" not in meta(s) and s.name == motion.name.removesuffix(".json") + "-alarm.set"
    assert spool.items("early.new") == spool.items("early.active") == []


def test_a_late_early_event_is_not_captured_and_its_motion_event_is_captured_as_usual(short_tmp):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS))
    now = time.time()
    events.record_early(spool, 17, now - 30, now - 28)
    assert capture.process(cfg, spool) == [] and spool.items("early.new") == []
    events.record_early(spool, 17, now - 30, now - 28)
    motion = events.record(spool, "pir", [(17, now), (27, now)])
    [s] = capture.process(cfg, spool)
    assert "early" not in meta(s) and s.name.startswith(motion.name.removesuffix(".json"))


def test_an_unreadable_early_event_is_set_aside_and_the_batch_goes_on(short_tmp):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS))
    spool.write("early.new", b"{not json", ".json")
    spool.write_json("early.new", {"version": 1, "kind": "motion", "source": "pir", "time": events.iso(time.time())})
    events.record(spool, "trigger")
    assert len(capture.process(cfg, spool)) == 1
    reasons = [p for p in spool.dir("corrupt").iterdir() if p.name.endswith(".reason")]
    assert len(reasons) == 2 and all("unreadable early event" in p.read_text() for p in reasons)


def test_other_events_that_arrive_while_waiting_are_captured_after_it(short_tmp):
    cfg, spool = load(write_config(short_tmp, cameras=FAST_CAMERAS, body="[sensors]\ncooldown_s = 0\n"))
    now = time.time()
    events.record_early(spool, 17, now, now + 0.4)
    stop = threading.Event()

    def press():
        while not list(spool.dir("tmp").glob("*.set")) and not stop.is_set():
            time.sleep(0.005)
        events.record(spool, "button", [(22, time.time())])

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    published = capture.process(cfg, spool)
    stop.set()
    thread.join(5)
    [s] = published
    assert meta(s)["events"][0]["source"] == "button" and "early" not in meta(s)


def _start(cfg_path, stop_at=None):
    env = dict(os.environ, SECCAM_CONFIG=str(cfg_path), SECCAM_NO_SYSLOG="1")
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / "jobs/capture"), "--no-encrypt"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("point", ["early.captured", "imageset.built", "early.published"])
def test_killed_mid_way_loses_no_alarm_and_leaves_no_frames(short_tmp, point):
    cfg_path = write_config(short_tmp, cameras=FAST_CAMERAS)
    cfg, spool = load(cfg_path)
    now = time.time()
    early_path = events.record_early(spool, 17, now, now + 60)
    proc = _start(cfg_path, point if point == "early.captured" else None)
    if point == "early.captured":
        wait_stopped(proc)
        motion = events.record(spool, "pir", [(17, now), (27, now + 1)], early=early_path.name)
    else:
        proc.kill()
        proc.wait(10)
        proc = _start(cfg_path, point)
        deadline = time.monotonic() + 30
        while not spool.items("early.active") and time.monotonic() < deadline:
            time.sleep(0.005)
        motion = events.record(spool, "pir", [(17, now), (27, now + 1)], early=early_path.name)
        wait_stopped(proc)
    proc.kill()
    proc.wait(10)
    for s in spool.items("sets.ready"):  # whatever is published is complete
        assert all((s / c["full"]).exists() for c in meta(s)["cameras"] if c["ok"])
    rerun = _start(cfg_path)
    assert rerun.wait(60) == 0, rerun.stderr.read()
    [s] = sets(spool)  # exactly one alarm: the motion event's
    assert s.name == motion.name.removesuffix(".json") + "-alarm.set"
    assert [p.name for p in spool.items("events.done")] == [motion.name]
    for state in ("events.new", "events.active", "early.new", "early.active"):
        assert spool.items(state) == [], state
    assert list(spool.dir("tmp").iterdir()) == []


def test_waiting_for_the_confirmation_polls_until_the_deadline():
    clock = FakeClock(100.0)
    naps = []

    def sleep(s):
        naps.append(s)
        clock.t += s

    motion, seen = [], []
    found = early._wait_for_confirmation("E.json", 100.1, motion, lambda: seen.append(1) or [], clock.now, sleep)
    assert found is None and round(0.1 / early.POLL_S) <= len(naps) <= round(0.1 / early.POLL_S) + 1 and seen


def test_an_early_event_the_spool_refuses_is_retried_and_the_motion_event_still_names_it(tmp_path, records):
    from seccam.errors import DiskFullError
    from seccam.poller import Poller

    cfg = config.load(write_config(tmp_path, body="[sensors]\ncoincidence_s = 30\n", cameras=""))
    poller = Poller(cfg)
    real = poller.spool.write_json
    calls = []

    def flaky(state, obj, *args, **kwargs):
        calls.append(state)
        if len(calls) == 1:
            raise DiskFullError("spool full")
        return real(state, obj, *args, **kwargs)

    poller.spool.write_json = flaky
    now = time.time()
    poller.pending.append(Motion("early", ((17, now),), now))
    assert poller.flush() is False and len(poller.pending) == 1  # kept for the next try
    poller.pending.append(Motion("pir", ((17, now), (27, now + 1)), now + 1))
    poller.pending.append(Motion("button", ((22, now + 2),), now + 2))
    assert poller.flush() is True and not poller.pending
    [early_path] = poller.spool.items("early.new")
    motions = [events.load(p) for p in poller.spool.items("events.new")]
    assert [m.get("early") for m in motions] == [early_path.name, None]
    logged = messages(records)
    assert any(m.startswith("event=write-failed source=early") for m in logged)
    assert any(m.startswith("event=write-recovered") for m in logged)


def test_the_poller_forgets_early_events_nobody_confirmed(tmp_path):
    from seccam.poller import EARLY_MEMORY_S, Poller

    poller = Poller(config.load(write_config(tmp_path, body="[sensors]\ncoincidence_s = 600\n", cameras="")))
    old = time.time() - EARLY_MEMORY_S - 10
    poller.early_written[(17, old)] = "old.json"
    poller.pending.append(Motion("early", ((27, time.time()),), time.time()))
    poller.flush()
    assert (17, old) not in poller.early_written and len(poller.early_written) == 1


@pytest.mark.parametrize("body, message", [
    ({"version": 1, "kind": "early", "source": "pir", "time": "2026-11-25T19:11:00+00:00", "sensors": []},
     "early event without a valid confirm_by"),
    ({"version": 1, "kind": "motion", "source": "pir", "time": "2026-11-25T19:11:00+00:00", "early": 5},
     "early is not an event name"),
])
def test_events_that_lie_about_early_capture_are_refused(short_tmp, body, message):
    spool = Spool(short_tmp / "spool").ensure()
    path = spool.write_json("events.new", body)
    with pytest.raises(Exception, match=message):
        events.load(path)
