"""From capture to delivery without waiting for an interpreter: jobs/send, woken when a capture begins,
is connected to the mail server by the time the first picture is encrypted.

jobs/capture has no network (its sandbox); it rewrites state/capturing.json when its cameras start,
which starts jobs/send through seccam-send.path (PathChanged=). jobs/send opens its SMTP session at
once and keeps watching the outbox while a capture or encrypt job runs.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT

from helpers import sendkit
from seccam import capture, encrypt, events, imageset, send
from seccam.errors import TemporaryError

STANDINS = ROOT / "tests" / "standins"


@pytest.fixture
def sink():
    with sendkit.SmtpSink("plain") as s:
        yield s


@pytest.fixture
def cam(sink):
    c = sendkit.make_camera(account=sendkit.account_toml(port=sink.port, security="plain", timeout=5))
    yield c
    c.close()


class Job:
    """An entry point whose stderr lines are time-stamped as they arrive."""

    def __init__(self, cam, entry, env=None):
        full_env = dict(os.environ, SECCAM_CONFIG=str(cam.config_path), SECCAM_NO_SYSLOG="1",
                        SECCAM_LOG_STDERR="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, str(ROOT / entry)], env=full_env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout=120):
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def first(self, text):
        return next((t for t, line in self.lines if text in line), None)


def test_a_capture_wakes_jobs_send_which_is_connected_before_the_pictures_exist(cam, sink):
    """As seccam-send.path does: jobs/send starts when state/capturing.json changes. The camera module
    stand-in takes 1.5 s; jobs/send is connected long before, and sends every message on that one session."""
    text = cam.config_path.read_text().replace('device = "test"\n', 'index = 0\nbackend = "rpicam"\n'
                                                'resolution = "640x480"\nwarmup_ms = 1500\n', 1)
    cam.config_path.write_text(text)
    spool = cam.spool
    stamp = spool.dir("state") / "capturing.json"
    events.record(spool, "trigger")
    capture_job = Job(cam, "jobs/capture", {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}",
                                            "RPICAM_STANDIN_CAMERAS": "2"})
    deadline = time.monotonic() + 60
    while not stamp.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    send_job = Job(cam, "jobs/send")
    assert capture_job.wait() == 0, capture_job.lines[-5:]
    assert send_job.wait() == 0, send_job.lines[-5:]
    assert json.loads(stamp.read_text())["pid"] == capture_job.proc.pid
    connected, published = send_job.first("state=connected"), capture_job.first("state=sets.ready")
    assert connected is not None and published is not None and connected < published
    assert len(sink.received) == 4 and sink.connections == 1
    assert spool.items("outbox.new") == spool.items("outbox.deferred") == []


def _deliver_in_thread(cam, **kwargs):
    box = {}

    def run():
        box["code"] = send.deliver(cam.config, cam.spool, **kwargs)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _alarm(cam):
    """What the capture job does under its lock: a set captured and published, then encrypted."""
    event = events.load(events.record(cam.spool, "trigger"))
    imageset.capture(cam.config, cam.spool, "alarm", "20261201T000000.000001Z.1.abcdef01-alarm", [event])
    encrypt.process(cam.config, cam.spool)


def test_jobs_send_keeps_watching_while_a_capture_job_holds_its_lock(cam, sink):
    spool = cam.spool
    made = []

    def factory(account):
        from seccam.transport import Smtp
        made.append(Smtp(account))
        return made[-1]

    with spool.lock("capture"):
        thread, box = _deliver_in_thread(cam, smtp_factory=factory)
        deadline = time.monotonic() + 30
        while not (made and made[0]._conn is not None) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert made and made[0]._conn is not None  # connected before there is anything to send
        assert thread.is_alive()
        _alarm(cam)
    thread.join(60)
    assert box["code"] == 0 and len(sink.received) == 4 and sink.connections == 1 and len(made) == 1


def test_a_failed_preconnect_is_only_logged_and_the_first_message_connects_again(cam, sink):
    from seccam.transport import Smtp

    class Flaky(Smtp):
        tries = 0

        def connect(self):
            Flaky.tries += 1
            if Flaky.tries == 1:
                raise TemporaryError("no route to the relay yet")
            return super().connect()

    spool = cam.spool
    with spool.lock("capture"):
        thread, box = _deliver_in_thread(cam, smtp_factory=Flaky)
        deadline = time.monotonic() + 30
        while Flaky.tries == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        _alarm(cam)
    thread.join(60)
    assert box["code"] == 0 and len(sink.received) == 4 and Flaky.tries == 2
    assert spool.read_state("outage") is None  # a preconnect is not an outage probe


def test_no_preconnect_during_an_outage_and_none_when_nothing_runs(cam, sink):
    spool = cam.spool
    made = []

    def factory(account):
        made.append(account)
        raise AssertionError("must not connect")

    assert send.deliver(cam.config, spool, smtp_factory=factory) == 0  # nothing queued, nothing running
    spool.write_state("outage", {"since": time.time(), "last_attempt": time.time(), "error": "down"})
    with spool.lock("capture"):
        assert send.deliver(cam.config, spool, smtp_factory=factory, clock=_fast_clock()) == 0
    assert made == []


def _fast_clock():
    """A clock that runs 100 s per call: the 60 s watch gives up at once."""
    t = [time.time()]

    def clock():
        t[0] += 100
        return t[0]
    return clock


def test_the_capturing_stamp_is_written_only_for_a_camera_with_a_mail_account(cam, short_tmp):
    from conftest import write_config
    from seccam import config
    from seccam.spool import Spool

    prewarm = capture.Prewarm(cam.config, cam.spool)
    prewarm()
    assert cam.spool.read_state("capturing")["pid"] == os.getpid()
    cfg = config.load(write_config(short_tmp))
    spool = Spool(cfg.spool_dir).ensure()
    capture.Prewarm(cfg, spool)()
    assert spool.read_state("capturing") is None


def test_the_spool_budget_is_kept_while_exposing_even_when_the_callers_work_fails(cam, monkeypatch):
    from seccam import budget

    kept = []
    monkeypatch.setattr(budget, "make_room", lambda *a, **k: kept.append(1))

    def broken():
        raise RuntimeError("a bug in the caller's work")

    event = events.load(events.record(cam.spool, "trigger"))
    path, results = imageset.capture(cam.config, cam.spool, "alarm", "20261201T000000.000002Z.1.abcdef02-alarm",
                                     [event], while_waiting=broken)
    assert kept == [1] and all(r.ok for r in results) and path.exists()


def test_a_capturing_stamp_that_cannot_be_written_costs_only_the_early_connection(cam, monkeypatch):
    from seccam.errors import DiskFullError

    def full(name, obj):
        raise DiskFullError("writing state capturing: no space left on the spool's filesystem")

    monkeypatch.setattr(cam.spool.__class__, "write_state", lambda self, name, obj: full(name, obj))
    prewarm = capture.Prewarm(cam.config, cam.spool)
    prewarm()  # logged, not raised: jobs/send still starts with the first message (outbox/new)
    assert prewarm.crypto is not None and cam.spool.read_state("capturing") is None
