"""Tests of seccam.poller: in-process on gpiozero mock pins with real signals, and bin/seccam-poller as a process."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = str(ROOT / "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)

from seccam import config as seccam_config  # noqa: E402
from seccam import events as seccam_events  # noqa: E402
from seccam.errors import DiskFullError  # noqa: E402
from seccam.poller import Poller  # noqa: E402
from seccam.spool import Spool  # noqa: E402

TIMEOUT = 10.0


def write_config(tmp_path, **sensors):
    """A config file in tmp_path with the spool inside it; ``sensors`` are [sensors] keys."""
    lines = [f'spool_dir = "{tmp_path}/spool"', f'state_dir = "{tmp_path}/state"', "", "[sensors]"]
    for key, value in sensors.items():
        lines.append(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")
    lines += ["", "[[camera]]", 'name = "a"', 'device = "test"', ""]
    path = tmp_path / "seccam.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# Early capture off: these tests count motion events and their writes; early events have tests of their own.
FAST = {"warmup_s": 0, "coincidence_s": 2, "cooldown_s": 30, "liveness_s": 1, "sample_rate": 100,
        "early_capture": False}


def wait_for(predicate, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def stamp(spool):
    return spool.read_state("poller")


@pytest.fixture
def records():
    """Log records of seccam.* (independent of whatever logging set-up ran before)."""
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record)

    logger = logging.getLogger("seccam")
    handler = Keep(logging.DEBUG)
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def messages(records, level=logging.DEBUG):
    return [r.getMessage() for r in records if r.levelno >= level]


def run_poller(poller, driver, timeout=2 * TIMEOUT):
    """Run ``poller.run()`` in this (main) thread, so its signal handlers work, while ``driver(poller)``
    runs in another thread. The driver's errors are re-raised; the poller is stopped when the driver
    returns or at the timeout."""
    errors = []

    def target():
        try:
            driver(poller)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)
        finally:
            poller.request_stop("test-driver-done")

    thread = threading.Thread(target=target, daemon=True)
    watchdog = threading.Timer(timeout, poller.request_stop, args=("test-timeout",))
    thread.start()
    watchdog.start()
    try:
        code = poller.run()
    finally:
        watchdog.cancel()
        thread.join(TIMEOUT)
    if errors:
        raise errors[0]
    return code


def started(poller):
    wait_for(lambda: stamp(poller.spool), what="liveness stamp")


# -- in process, mock pins ------------------------------------------------------

def test_coincident_pirs_write_exactly_one_event(tmp_path, mock_factory):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        wait_for(lambda: p.spool.items("events.new"), what="event file")

    assert run_poller(poller, driver) == 0
    (path,) = poller.spool.items("events.new")
    event = json.loads(path.read_text())
    assert event["source"] == "pir"
    assert [s["pin"] for s in event["sensors"]] == [17, 27]


def test_single_pir_writes_no_event(tmp_path, mock_factory):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        wait_for(lambda: p.detector.active() == (17,), what="PIR 17 active")

    assert run_poller(poller, driver) == 0
    assert poller.spool.items("events.new") == []


def test_button_writes_button_event(tmp_path, mock_factory):
    poller = Poller(seccam_config.load(write_config(tmp_path, **{**FAST, "warmup_s": 60, "button_pin": 22})),
                    pin_factory=mock_factory)

    def driver(p):
        started(p)
        mock_factory.pin(22).drive_low()
        wait_for(lambda: p.spool.items("events.new"), what="event file")
        mock_factory.pin(22).drive_high()  # released: closing a held Button waits out gpiozero's hold_time

    assert run_poller(poller, driver) == 0
    (path,) = poller.spool.items("events.new")
    event = json.loads(path.read_text())
    assert event["source"] == "button" and event["sensors"][0]["pin"] == 22


def test_liveness_stamp_is_refreshed(tmp_path, mock_factory):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)
    seen = {}

    def driver(p):
        started(p)
        seen["first"] = stamp(p.spool)
        wait_for(lambda: stamp(p.spool)["now"] != seen["first"]["now"], what="a newer stamp")
        seen["second"] = stamp(p.spool)

    assert run_poller(poller, driver) == 0
    first, second = seen["first"], seen["second"]
    assert first["pid"] == os.getpid() and first["started"] == second["started"]
    assert first["pins"] == {"pir": [17, 27], "button": None, "led": []}
    assert "stopped" not in second
    assert "stopped" in stamp(poller.spool)


def test_sigterm_stops_cleanly_and_closes_devices(tmp_path, mock_factory):
    from gpiozero import MotionSensor

    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)

    def driver(p):
        started(p)
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: p._stop == "SIGTERM", what="the poller to see SIGTERM")

    before = signal.getsignal(signal.SIGTERM)
    assert run_poller(poller, driver) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    assert stamp(poller.spool)["stopped"]
    # The pins were released: they can be opened again.
    for pin in (17, 27):
        MotionSensor(pin=pin, pin_factory=mock_factory).close()


def test_sighup_reloads_config_onto_new_pins_and_keeps_it_after_a_bad_reload(tmp_path, mock_factory, records):
    path = write_config(tmp_path, **FAST)
    poller = Poller(seccam_config.load(path), pin_factory=mock_factory)
    events_new = []

    def driver(p):
        started(p)
        write_config(tmp_path, **{**FAST, "pir_pins": (5, 6), "cooldown_s": 0})
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: stamp(p.spool)["pins"]["pir"] == [5, 6], what="stamp with the new pins")
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        mock_factory.pin(5).drive_high()
        mock_factory.pin(6).drive_high()
        events_new[:] = wait_for(lambda: p.spool.items("events.new"), what="event on the new pins")
        path.write_text("this is [not toml\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: any(m.startswith("reload=failed") for m in messages(records, logging.ERROR)),
                 what="reload failure logged")
        # Still running on the old (good) configuration: another coincidence on 5+6 is recorded.
        mock_factory.pin(5).drive_low()
        mock_factory.pin(6).drive_low()
        wait_for(lambda: p.detector.active() == (), what="PIRs inactive")
        mock_factory.pin(5).drive_high()
        mock_factory.pin(6).drive_high()
        wait_for(lambda: len(p.spool.items("events.new")) == 2, what="a second event")

    assert run_poller(poller, driver) == 0
    event = json.loads(events_new[0].read_text())
    assert [s["pin"] for s in event["sensors"]] == [5, 6]
    assert poller.config.sensors.pir_pins == (5, 6)
    assert any(m.startswith("reloaded pins=pir:5,6") for m in messages(records))


@pytest.mark.parametrize("failures", [
    [DiskFullError("writing events.new item: no space left on the spool's filesystem")],
    [OSError(5, "Input/output error"), DiskFullError("spool full")],
])
def test_failed_event_write_is_retried_and_poller_keeps_running(tmp_path, mock_factory, records, failures):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)
    real_write_json = poller.spool.write_json
    calls = []

    def flaky_write_json(state, obj, *args, **kwargs):
        calls.append(state)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return real_write_json(state, obj, *args, **kwargs)

    poller.spool.write_json = flaky_write_json
    poller.retry_s = 0.05

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        wait_for(lambda: p.spool.items("events.new"), what="the event, written on a retry")

    assert run_poller(poller, driver) == 0
    assert len(calls) == len(failures) + 1
    assert len(poller.spool.items("events.new")) == 1
    errors = messages(records, logging.ERROR)
    assert len(errors) == 1 and errors[0].startswith("event=write-failed source=pir")
    assert any(m.startswith("event=write-recovered") for m in messages(records))


def test_pending_events_are_tried_once_more_on_stop(tmp_path, mock_factory):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)
    real_write_json = poller.spool.write_json
    state = {"fail": True, "calls": 0}

    def flaky_write_json(*args, **kwargs):
        state["calls"] += 1
        if state["fail"]:
            raise DiskFullError("spool full")
        return real_write_json(*args, **kwargs)

    poller.spool.write_json = flaky_write_json

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        wait_for(lambda: state["calls"] >= 1 and p.pending, what="a failed write")
        state["fail"] = False
        p.request_stop("test")

    assert run_poller(poller, driver) == 0
    assert len(poller.spool.items("events.new")) == 1
    assert not poller.pending


def test_reload_onto_busy_pins_keeps_the_old_pins(tmp_path, mock_factory, records):
    from gpiozero import LED

    path = write_config(tmp_path, **FAST)
    poller = Poller(seccam_config.load(path), pin_factory=mock_factory)
    blocker = LED(pin=6, pin_factory=mock_factory)

    def driver(p):
        started(p)
        before = p.detector
        write_config(tmp_path, **{**FAST, "pir_pins": (5, 6)})
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: any(m.startswith("reload=failed") for m in messages(records, logging.ERROR)),
                 what="reload failure logged")
        # The failure is logged before the old pins are opened again: drive them only once they are.
        wait_for(lambda: p.detector is not before and p.detector is not None, what="old pins reopened")
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        wait_for(lambda: p.spool.items("events.new"), what="event on the old pins")

    try:
        assert run_poller(poller, driver) == 0
    finally:
        blocker.close()
    assert poller.config.sensors.pir_pins == (17, 27)
    assert stamp(poller.spool)["pins"]["pir"] == [17, 27]


def test_pending_list_is_bounded_dropping_the_oldest(tmp_path, records):
    from seccam.poller import MAX_PENDING
    from seccam.sensors import Motion

    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)))

    def full(*args, **kwargs):
        raise DiskFullError("spool full")

    poller.spool.write_json = full
    for i in range(MAX_PENDING + 3):
        poller._queue(Motion("button", ((22, 1000.0 + i),), 1000.0 + i))
        assert poller.flush() is False
    assert len(poller.pending) == MAX_PENDING
    assert poller.pending[0].when == 1003.0
    errors = messages(records, logging.ERROR)
    assert len([m for m in errors if m.startswith("event=dropped")]) == 3
    assert len([m for m in errors if m.startswith("event=write-failed")]) == 1


def test_failed_stamp_write_is_logged_not_raised(tmp_path, records):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)))

    def full(*args, **kwargs):
        raise DiskFullError("spool full")

    poller.spool.write_state = full
    poller.write_stamp()
    assert messages(records, logging.ERROR) == ["stamp=write-failed error='spool full'"]


def test_events_still_unwritable_at_stop_are_reported_lost(tmp_path, mock_factory, records):
    poller = Poller(seccam_config.load(write_config(tmp_path, **FAST)), pin_factory=mock_factory)

    def full(*args, **kwargs):
        raise DiskFullError("spool full")
    poller.spool.write_json = full

    def driver(p):
        started(p)
        mock_factory.pin(17).drive_high()
        mock_factory.pin(27).drive_high()
        wait_for(lambda: p.pending, what="a failed write")

    assert run_poller(poller, driver) == 0
    assert len(poller.pending) == 1 and poller.spool.items("events.new") == []
    assert "stopped events=lost pending=1 reason='spool not writable'" in messages(records, logging.ERROR)


def test_a_new_run_remembers_when_the_previous_one_was_last_seen_and_whether_it_stopped_cleanly(tmp_path):
    cfg = seccam_config.load(write_config(tmp_path, **FAST))
    first = Poller(cfg)
    assert first.previous is None
    first.write_stamp(stopped=True)
    seen = first.spool.state_mtime("poller")
    second = Poller(cfg)
    second.write_stamp()
    previous = stamp(second.spool)["previous"]
    assert previous["clean_stop"] is True and previous["last_seen"] == seccam_events.iso(seen)
    third = Poller(cfg)  # the second one never wrote "stopped": it died
    assert third.previous["clean_stop"] is False


def test_waking_a_waker_whose_pipe_is_full_is_harmless():
    from seccam.poller import Waker
    waker = Waker()
    for _ in range(70_000):  # more than a pipe holds
        waker.wake()
    started = time.monotonic()
    waker.wait(5)
    waker.wait(0.05)  # drained: this one times out
    assert time.monotonic() - started < 1


def test_pins_text_names_every_pin_kind():
    from seccam.poller import _pins_text
    assert _pins_text({"pir": [17, 27], "button": 22, "led": [5, 6]}) == "pir:17,27/button:22/led:5,6"
    assert _pins_text({"pir": [17], "button": None, "led": []}) == "pir:17"


# -- bin/seccam-poller as a process ------------------------------------------------

def start_process(tmp_path, cfg):
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", SECCAM_LOG_STDERR="1", SECCAM_NO_SYSLOG="1")
    env.pop("SECCAM_CONFIG", None)
    stderr = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "seccam-poller"), "--config", str(cfg)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    return proc


def stderr_text(tmp_path):
    return (tmp_path / "stderr.log").read_text(errors="replace")


@pytest.fixture
def processes():
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def test_process_writes_stamp_and_exits_0_on_sigterm(tmp_path, processes):
    cfg = write_config(tmp_path, **FAST)
    proc = start_process(tmp_path, cfg)
    processes.append(proc)
    spool = Spool(tmp_path / "spool")
    first = wait_for(lambda: stamp(spool), what="liveness stamp")
    assert first["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0, stderr_text(tmp_path)
    assert stamp(spool)["stopped"]
    assert "stopping reason=SIGTERM" in stderr_text(tmp_path)


def test_process_reloads_config_on_sighup(tmp_path, processes):
    cfg = write_config(tmp_path, **FAST)
    proc = start_process(tmp_path, cfg)
    processes.append(proc)
    spool = Spool(tmp_path / "spool")
    wait_for(lambda: stamp(spool), what="liveness stamp")
    write_config(tmp_path, **{**FAST, "pir_pins": (5, 6)})
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: stamp(spool)["pins"]["pir"] == [5, 6], what="stamp with the new pins")
    cfg.write_text("[sensors]\nbogus = 1\n", encoding="utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload=failed" in stderr_text(tmp_path), what="reload failure on stderr")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0, stderr_text(tmp_path)
    assert "bogus: unknown key" in stderr_text(tmp_path)
    assert stamp(spool)["pins"]["pir"] == [5, 6]


def test_process_exits_78_on_bad_config(tmp_path):
    cfg = tmp_path / "seccam.toml"
    cfg.write_text("[sensors]\npir_pins = [99]\n", encoding="utf-8")
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", SECCAM_NO_SYSLOG="1")
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "seccam-poller"), "--config", str(cfg)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 78
    assert result.stderr.startswith("seccam-poller: error: ") and "sensors.pir_pins[0]" in result.stderr


def test_the_devices_start_no_thread_and_the_poller_sleeps_until_the_next_stamp(tmp_path, mock_factory):
    """Interrupt-driven: edge callbacks, no sampling thread (MotionSensor), no hold thread (Button); at
    rest the one wait lasts until the next liveness stamp."""
    cfg = seccam_config.load(write_config(tmp_path, **{**FAST, "liveness_s": 45, "button_pin": 22,
                                                         "led_pins": (23, 24)}))
    before = set(threading.enumerate())
    poller = Poller(cfg, pin_factory=mock_factory)
    poller.detector = poller._build(cfg.sensors)
    try:
        assert set(threading.enumerate()) == before
        poller._schedule()
        poller.step()  # warm-up (0 s) ends
        assert poller._timeout() == pytest.approx(45, abs=0.5)
        mock_factory.pin(22).drive_low()  # the button: its callback runs in the driving thread, at once
        assert [e.source for e in poller.detector.poll()] == ["button"]
        assert set(threading.enumerate()) == before
    finally:
        poller.detector.close()
