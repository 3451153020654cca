"""SIGKILL jobs/send (which runs the encrypt step first) at every checkpoint between two renames,
then run it again: nothing is lost, and a message is sent twice at most once per kill."""

import email
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from helpers import sendkit
from helpers.checkpoint import wait_stopped
from helpers.figures import record
from helpers.mailfixtures import sending_camera

POINTS = ["encrypt.claimed", "encrypt.before-gpg", "encrypt.published", "encrypt.before-remove",
          "send.before-submit", "send.accepted"]


@pytest.fixture
def cam(mailserver):
    with sending_camera(mailserver, timeout=5) as c:
        yield c


def _job(cam, stop_at=None):
    env = dict(os.environ, SECCAM_NO_SYSLOG="1")
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / "jobs/send"), "--config", str(cam.config.path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_every_checkpoint_loses_nothing(cam, point):
    sid = "20261125T191100.000001Z.11.aaaa-alarm"
    sendkit.make_set(cam.spool, sid, cameras=(("front", True), ("yard", True)))
    proc = _job(cam, point)
    wait_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rerun = _job(cam)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert cam.spool.items("sets.ready") == cam.spool.items("sets.active") == []
    for state in ("outbox.new", "outbox.active", "outbox.deferred", "outbox.failed"):
        assert cam.spool.items(state) == [], state
    got = [r for r in cam.mailserver.received[cam.start:] if r.mail_from == sendkit.CAMERA_ADDR
           and r.response and r.response.startswith("250")]
    subjects = [sendkit.decrypt_message(r.raw, cam.recipients[0])[0]["Subject"] for r in got]
    expected = {"Motion: front", "Motion: front (full size)", "Motion: yard", "Motion: yard (full size)"}
    assert set(subjects) == expected  # nothing lost
    duplicated = len(subjects) - len(set(subjects))
    assert duplicated <= 1
    ids = [email.message_from_bytes(r.raw)["Message-ID"] for r in got]
    assert len(set(ids)) == len(expected)  # a message sent twice carries the same Message-ID
    record("kill", point=f"jobs/send at {point}", tried=1, lost=0, duplicated=duplicated)
