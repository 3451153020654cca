"""Incidents on the wire, against the real loopback mail server (tests/helpers/mailserver.py):

* after an outage the backlog is compacted per incident: its first alarm, its summary sheets, then the
  outage summary and the newest heartbeat; the queued updates give way to the sheets;
* SIGKILL of jobs/incident while it summarises, and of jobs/capture while it opens an incident or makes an
  update, loses no capture and sends no sheet and no update twice.
"""

import email
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from PIL import Image

from helpers import sendkit
from helpers.checkpoint import wait_stopped
from helpers.figures import record
from helpers.mailfixtures import sending_camera
from seccam import capture, encrypt, events, heartbeat, incident, send
from seccam.errors import SeccamError

GAP = 300


@pytest.fixture
def cam(mailserver):
    with sending_camera(mailserver, timeout=3) as c:
        text = c.config.path.read_text().replace('device = "test"\n', 'device = "test"\nresolution = "640x360"\n')
        c.config.path.write_text(text)
        c.reload()
        yield c


def run_send(c, now):
    try:
        return send.work(c.config, now=now)
    except SeccamError as exc:
        return exc.exit_code


def motion(c, t):
    events.record(c.spool, "pir", [(17, t), (27, t)], when=t)
    capture.process(c.config, c.spool, now=lambda: t)
    encrypt.process(c.config, c.spool)


def delivered(c, since=None):
    """[(subject, Message-ID, JPEG bytes or None)] of what the server accepted from the camera, in order."""
    out = []
    for rec in c.mailserver.received[c.start if since is None else since:]:
        if rec.mail_from != sendkit.CAMERA_ADDR or not rec.accepted:
            continue
        inner, signer = sendkit.decrypt_message(rec.raw, c.recipients[0])
        assert signer == c.fingerprint
        images = [p.get_content() for p in inner.iter_parts() if p.get_content_type() == "image/jpeg"]
        out.append((str(inner["Subject"]), email.message_from_bytes(rec.raw)["Message-ID"],
                    images[0] if images else None, inner.get_body(("plain",)).get_content()))
    return out


def queued_updates(c):
    return sum("-update" in p.name for s in ("outbox.new", "outbox.deferred") for p in c.spool.items(s))


def every_capture_on_a_sheet(c, path):
    summary = json.loads((path / "summary.json").read_text())
    captures = sorted(p.name for p in path.glob("*-capture.set"))
    for name in ("front", "yard"):
        assert [x for s in summary["sheets"] if s["camera"] == name for x in s["captures"]] == captures
    return len(captures)


def test_after_an_outage_each_incident_is_its_first_alarm_and_its_sheets_then_the_summary_and_heartbeat(cam):
    ms = cam.mailserver
    t0 = float(int(time.time()) - 7200)   # whole seconds: event times are stored to the microsecond
    ms.stop_smtp()
    try:
        for k in range(21):                          # incident A: 10 minutes of motion
            motion(cam, t0 + 30 * k)
            assert run_send(cam, t0 + 30 * k) == 75
        # Four updates were made (at 30 s, 1.5, 3.5 and 7.5 min); offline only the newest waits: the older
        # ones show nothing the sheets will not.
        assert queued_updates(cam) == 1 and len(list(cam.spool.items("incidents.open")[0].glob("update-*.json"))) == 4
        heartbeat.process(cam.config, cam.spool, now=lambda: t0 + 900)
        assert len(incident.process(cam.config, cam.spool, now=lambda: t0 + 600 + GAP)) == 1
        for k in range(11):                          # incident B: 5 minutes, half an hour later
            motion(cam, t0 + 1800 + 30 * k)
        heartbeat.process(cam.config, cam.spool, now=lambda: t0 + 3600)
        assert len(incident.process(cam.config, cam.spool, now=lambda: t0 + 2100 + GAP)) == 1
        encrypt.process(cam.config, cam.spool)
        assert run_send(cam, t0 + 3700) == 75
        queued = [p.name for s in ("outbox.new", "outbox.deferred") for p in cam.spool.items(s)]
        assert queued_updates(cam) == 0                # both incidents ended: their sheets replace them
    finally:
        ms.start_smtp()
    assert run_send(cam, t0 + 3800) == 0
    got = delivered(cam)
    alarm = ["Motion: front", "Motion: yard", "Motion: front (full size)", "Motion: yard (full size)"]
    subjects = [s for s, _, _, _ in got]
    assert subjects[:4] == alarm and subjects[6:10] == alarm
    assert subjects[4].startswith("Incident ended: 10 min, 21 events") and subjects[5] == "Incident sheet 2 of 2"
    assert subjects[10].startswith("Incident ended: 5 min, 11 events") and subjects[11] == "Incident sheet 2 of 2"
    assert subjects[12:] == ["Back online", "Heartbeat: front", "Heartbeat: yard"]
    assert len(got) == 15 and len({mid for _, mid, _, _ in got}) == 15
    for _, _, jpeg, _ in [g for g in got if g[0].startswith("Incident")]:
        assert Image.open(io.BytesIO(jpeg)).size[0] <= 1920
    assert "Incidents summarised with every picture on contact sheets: 2" in got[12][3]
    a, b = cam.spool.items("incidents.closed")
    kept = every_capture_on_a_sheet(cam, a) + every_capture_on_a_sheet(cam, b)
    assert kept == 20 + 10
    assert cam.spool.items("outbox.deferred") == cam.spool.items("outbox.new") == []
    record("outage", scenario="server stopped for an hour: 2 incidents (32 events, 2 cameras), 2 heartbeats",
           queued=len(queued), delivered=len(got), lost=0, duplicated=0,
           note="per incident: first alarm, then every capture on its sheets; the 7 updates made offline "
                "folded into the sheets, the older heartbeat collapsed")


def test_an_incident_still_running_when_the_server_returns_keeps_only_its_newest_update(cam):
    ms = cam.mailserver
    t0 = time.time() - 3600
    ms.stop_smtp()
    try:
        for k in range(12):
            motion(cam, t0 + 30 * k)
        assert run_send(cam, t0 + 400) == 75
    finally:
        ms.start_smtp()
    assert run_send(cam, t0 + 500) == 0
    subjects = [s for s, _, _, _ in delivered(cam)]
    assert subjects == ["Motion: front", "Motion: yard", "Motion: front (full size)", "Motion: yard (full size)",
                        "Motion continues", "Back online"]
    [(_, _, jpeg, text)] = [g for g in delivered(cam) if g[0] == "Motion continues"]
    assert text.startswith("Motion continues at Front door: 8 events since ") and jpeg[:3] == b"\xff\xd8\xff"


def _job(cam, entry, stop_at=None, *args):
    env = dict(os.environ, SECCAM_NO_SYSLOG="1")
    if stop_at:
        env["SECCAM_STOP_AT"] = stop_at
    return subprocess.Popen([sys.executable, str(ROOT / entry), "--config", str(cam.config.path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_at(cam, entry, point, *args):
    proc = _job(cam, entry, point, *args)
    wait_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rerun = _job(cam, entry, None, *args)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err


@pytest.mark.parametrize("point", ["incident.summary-built", "incident.summarised", "incident.closed",
                                   "encrypt.claimed", "encrypt.published", "encrypt.before-remove"])
def test_sigkill_while_summarising_loses_no_capture_and_sends_no_sheet_twice(cam, point):
    t0 = time.time() - 3 * GAP
    for k in range(6):
        motion(cam, t0 + 30 * k)
    assert run_send(cam, time.time()) == 0
    before = len(cam.mailserver.received)
    _kill_at(cam, "jobs/incident", point)
    assert run_send(cam, time.time()) == 0
    got = delivered(cam, before)
    assert [s for s, _, _, _ in got] == ["Incident ended: 2 min 30 s, 6 events", "Incident sheet 2 of 2"]
    assert all(jpeg is not None for _, _, jpeg, _ in got)
    [closed] = cam.spool.items("incidents.closed")
    assert every_capture_on_a_sheet(cam, closed) == 5
    assert cam.spool.items("incidents.closing") == cam.spool.items("sets.ready") == []
    assert list(cam.spool.dir("tmp").iterdir()) == []
    assert incident.process(cam.config, cam.spool) == []     # nothing left to make
    record("kill", point=f"jobs/incident at {point}", tried=1, lost=0, duplicated=0)


@pytest.mark.parametrize("point", ["incident.opened", "incident.update-built", "incident.update-recorded"])
def test_sigkill_of_the_capture_job_in_the_incident_steps_makes_each_alarm_and_update_once(cam, point):
    now = time.time()
    if point == "incident.opened":
        events.record(cam.spool, "pir", [(17, now)], when=now)
    else:
        motion(cam, now - 40)                       # the first alarm; the next capture is an update (pace 30 s)
        events.record(cam.spool, "pir", [(17, now)], when=now)
    _kill_at(cam, "jobs/capture", point)
    [inc] = cam.spool.items("incidents.open")
    assert cam.spool.items("events.new") == cam.spool.items("events.active") == []
    assert run_send(cam, time.time()) == 0
    subjects = [s for s, _, _, _ in delivered(cam)]
    if point == "incident.opened":
        assert subjects == ["Motion: front", "Motion: yard", "Motion: front (full size)", "Motion: yard (full size)"]
    else:
        assert subjects.count("Motion continues") == 1 and len(subjects) == 5
        assert [p.name for p in inc.glob("update-*")] == ["update-001.json"]
    assert list(cam.spool.dir("tmp").iterdir()) == []
    record("kill", point=f"jobs/capture at {point}", tried=1, lost=0, duplicated=0)
