"""The capture job delivers its alarm itself (seccam.courier): one interpreter start fewer on the alarm path."""

import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT

from helpers import sendkit
from helpers.checkpoint import wait_stopped
from seccam import capture, events, send
from seccam.courier import Courier


@pytest.fixture
def sink():
    with sendkit.SmtpSink("plain") as s:
        yield s


@pytest.fixture
def cam(sink):
    c = sendkit.make_camera(account=sendkit.account_toml(port=sink.port, security="plain", timeout=5))
    yield c
    c.close()


def run_capture(cam, *args, stop_at=None):
    env = dict(os.environ, SECCAM_CONFIG=str(cam.config_path), SECCAM_NO_SYSLOG="1", SECCAM_LOG_STDERR="1")
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / "jobs/capture"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_capture_job_sends_its_alarm_without_jobs_send_on_a_connection_opened_while_exposing(cam, sink):
    events.record(cam.spool, "trigger")
    proc = run_capture(cam)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(sink.received) == 4 and sink.connections == 1  # 2 previews, 2 full images, one connection
    assert all(cam.spool.items(s) == [] for s in ("outbox.new", "outbox.active", "outbox.deferred"))
    lines = err.splitlines()
    connected = next(i for i, ln in enumerate(lines) if "state=connected" in ln)
    published = next(i for i, ln in enumerate(lines) if "state=sets.ready" in ln)
    assert connected < published  # the SMTP session was up before the pictures were
    sent = [ln for ln in lines if "state=sent" in ln]
    assert [".preview." in ln for ln in sent] == [True, True, False, False]


def test_with_no_send_the_capture_job_leaves_delivery_to_jobs_send(cam, sink):
    events.record(cam.spool, "trigger")
    proc = run_capture(cam, "--no-send")
    assert proc.wait(120) == 0
    assert sink.received == [] and len(cam.spool.items("outbox.new")) == 4


def test_an_unreachable_server_never_fails_the_capture_and_jobs_send_takes_over(cam, sink):
    sink.__exit__(None, None, None)
    events.record(cam.spool, "trigger")
    proc = run_capture(cam)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # As jobs/send would: the first message deferred and the outage recorded; the courier stops at the
    # outage, and what was encrypted after it waits in outbox/new for jobs/send (path unit, cron).
    spool = cam.spool
    assert spool.items("outbox.deferred") and spool.read_state("outage")
    assert len(spool.items("outbox.new")) + len(spool.items("outbox.deferred")) == 4
    assert "courier=incomplete" in err


def test_a_capture_job_killed_while_its_courier_sends_loses_nothing(cam, sink):
    events.record(cam.spool, "trigger")
    proc = run_capture(cam, stop_at="send.before-submit")
    wait_stopped(proc)
    proc.kill()
    proc.wait(10)
    assert len(cam.spool.items("outbox.active")) == 1
    assert send.work(cam.config) == 0  # the next jobs/send run (path unit or cron)
    assert len(sink.received) == 4
    assert len({m.data.split(b"Message-ID:")[1].split(b"\n")[0] for m in sink.received}) == 4


def test_while_another_send_job_holds_the_lock_the_courier_leaves_delivery_to_it(cam, sink):
    spool = cam.spool
    courier = Courier(cam.config, spool)
    with spool.lock("send"):
        courier.start()
        time.sleep(0.2)
        assert courier._thread.is_alive()  # waiting for the lock while the capture job produces
        courier.finish(timeout_s=10)
    assert not courier._thread.is_alive() and not courier.sent and sink.received == []


def test_a_courier_whose_lock_frees_up_delivers_what_the_producer_publishes(cam, sink):
    spool = cam.spool
    courier = Courier(cam.config, spool)
    release = threading.Event()

    def holder():
        with spool.lock("send"):
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    time.sleep(0.05)
    courier.start()
    release.set()
    thread.join()
    events.record(spool, "trigger")
    capture.process(cam.config, spool)
    assert capture.hand_to_encrypt(cam.config, spool) == 0
    courier.finish(timeout_s=60)
    assert courier.sent and len(sink.received) == 4


def test_a_preconnect_failure_is_only_logged_and_deliver_retries(cam, sink, caplog):
    import logging

    from seccam.errors import TemporaryError

    attempts = []

    class Flaky:
        def __init__(self, account):
            self.inner = None

        def connect(self):
            attempts.append("connect")
            raise TemporaryError("no route yet")

        def send(self, raw, from_addr, to_addrs):
            from seccam.transport import Smtp
            self.inner = self.inner or Smtp(cam.config.account)
            return self.inner.send(raw, from_addr, to_addrs)

        def close(self):
            if self.inner:
                self.inner.close()

    caplog.set_level(logging.INFO, logger="seccam")
    spool = cam.spool
    events.record(spool, "trigger")
    capture.process(cam.config, spool)
    courier = Courier(cam.config, spool, smtp_factory=Flaky)
    courier.start()
    capture.hand_to_encrypt(cam.config, spool)
    courier.finish(timeout_s=60)
    assert attempts == ["connect"] and len(sink.received) == 4
    assert any("courier=preconnect-failed" in r.getMessage() for r in caplog.records)


def test_a_bug_in_delivery_never_escapes_the_courier(cam, sink, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(send, "deliver", broken)
    courier = Courier(cam.config, cam.spool)
    courier.start()
    courier.finish(timeout_s=10)
    assert isinstance(courier.error, RuntimeError)
    courier.finish()  # idempotent
    Courier(cam.config, cam.spool).finish()  # never started: nothing to wait for


def test_starting_a_courier_twice_starts_one_thread(cam, sink):
    courier = Courier(cam.config, cam.spool)
    courier.start()
    thread = courier._thread
    courier.start()
    assert courier._thread is thread
    courier.finish(timeout_s=10)
