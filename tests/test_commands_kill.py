"""SIGKILL jobs/inbox at every step of handling a chat command, then run it again: the command
is acted on exactly once or not at all, never twice, and whatever it did is announced once.

Steps (seccam.faults checkpoints, docs/reliability.md): ``inbox.admitted`` (the replay journal
has the message), ``control.parsed``, ``armed.changed`` (the new state is written, its
announcement not yet), ``armed.announced`` (published, not yet recorded as published),
``control.acted``, ``inbox.handled`` (everything done, the mail not yet deleted).
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from helpers.checkpoint import wait_stopped
from helpers.commandkit import OWNER, cam, camera, people  # noqa: F401 - fixtures
from helpers.figures import record

STEPS = {
    "/disarm": ["inbox.admitted", "control.parsed", "armed.changed", "armed.announced", "control.acted",
                "inbox.handled"],
    # The steps before acting are the same for every command (/disarm goes through them).
    "/snap": ["control.acted", "inbox.handled"],
    "/status": ["inbox.admitted", "control.acted"],
}


def _job(cam, name, stop_at=None):
    env = dict(os.environ, SECCAM_NO_SYSLOG="1")
    env.pop("SECCAM_STOP_AT", None)
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / "jobs" / name), "--config", str(cam.path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(cam, name):
    proc = _job(cam, name)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("command, point", [(c, p) for c, points in STEPS.items() for p in points])
def test_a_command_killed_at_any_step_is_acted_on_at_most_once(cam, command, point):
    cam.command(cam.owner, command)
    proc = _job(cam, "inbox", point)
    wait_stopped(proc, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _finish(cam, "inbox")  # the next run (cron's next minute); it sends what it queued
    if command == "/snap":
        _finish(cam, "capture")  # the pictures (seccam-capture.path in production)
        _finish(cam, "send")
    assert cam.mailserver.fetch_inbox(cam.address) == []
    assert cam.queued() == {}
    journal = json.loads((cam.config.state_dir / "replay.json").read_text())
    assert len(journal["seen"]) == 1  # recorded before anything was done, and only once
    sent = cam.sent(cam.owner)
    if command == "/disarm":
        acted = int(not cam.armed().armed)
        said = [s for s in sent if s.text.startswith(f"Disarmed by {OWNER}")]
        assert len(said) == acted  # changed once and announced once, or neither
        assert len(sent) == len(said)
    elif command == "/snap":
        acted = len({s.subject for s in sent if s.image}) // 2  # preview + full of the one camera
        assert [s.subject for s in sent] == ["Snapshot: front", "Snapshot: front (full size)"][:2 * acted]
    else:
        acted = len(sent)
        assert [s.subject for s in sent] == ["Status"] * acted
    assert acted <= 1
    # A kill before the journal entry cannot happen here (all steps are after it), so "not at
    # all" means: killed after admitting and before acting; the rerun refuses the replay.
    assert acted == (0 if point in ("inbox.admitted", "control.parsed") else 1)
    record("command-kill", point=f"jobs/inbox {command} at {point}", tried=1, acted=acted, duplicated=0)


@pytest.mark.parametrize("point", ["imageset.built", "snap.published"])
def test_a_snap_capture_killed_at_any_step_sends_its_pictures_once(cam, point):
    from seccam import snap
    snap.request(cam.spool, OWNER, None, None, "/snap")
    proc = _job(cam, "capture", point)
    wait_stopped(proc, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _finish(cam, "capture")
    _finish(cam, "send")
    assert cam.queued() == {}
    sent = cam.sent(cam.owner)
    assert [s.subject for s in sent] == ["Snapshot: front", "Snapshot: front (full size)"]
    record("command-kill", point=f"jobs/capture /snap at {point}", tried=1, acted=1, duplicated=0)
