"""Incidents (seccam.incident): the gap, the pace of updates, the end and its summary, a new incident
during a summary, manual triggers and the button; status and heartbeat; retention and the budget.

The jobs run in-process with an injected clock (``now=``), the cameras are fswebcam's test source.
"""

import json
import os
import time

import pytest
from conftest import write_config

from seccam import budget, capture, config, encrypt, events, health, heartbeat, incident
from seccam.spool import Spool

CAMS = """
[[camera]]
name = "front"
device = "test"
resolution = "320x180"

[[camera]]
name = "yard"
device = "test"
resolution = "320x180"
"""
T0 = 1_790_000_000.0
GAP = 300
ACCOUNT = """[account]
address = "cam@seccam.test"
display_name = "Front door"
password = "pw"
smtp_host = "127.0.0.1"
smtp_security = "plain"

"""


class Cam:
    """A camera with an injected clock: ``at(t)`` is motion at t, captured at t."""

    def __init__(self, directory, body="", cameras=CAMS):
        self.path = write_config(directory, ACCOUNT + "[incident]\nupdate_pace_s = [30, 60, 120]\n" + body,
                                 cameras=cameras)
        self.reload()

    def reload(self):
        self.cfg = config.load(self.path)
        self.spool = Spool(self.cfg.spool_dir).ensure()

    def motion(self, t, source="pir"):
        sensors = {"pir": [(17, t), (27, t)], "button": [(22, t)], "trigger": []}[source]
        return events.record(self.spool, source, sensors, when=t)

    def capture(self, t):
        return capture.process(self.cfg, self.spool, now=lambda: t)

    def at(self, t, source="pir"):
        self.motion(t, source)
        return self.capture(t)

    def end(self, t):
        return incident.process(self.cfg, self.spool, now=lambda: t)

    def ready(self, kind):
        return [p for p in self.spool.items("sets.ready") if p.name.removesuffix(".set").rsplit("-", 1)[1]
                .startswith(kind)]

    def state(self, name):
        return self.spool.items(f"incidents.{name}")


def meta(path):
    return json.loads((path / "meta.json").read_text())


@pytest.fixture
def cam(short_tmp):
    return Cam(short_tmp)


def test_the_first_motion_is_an_alarm_as_before_and_opens_an_incident(cam):
    event = cam.motion(T0)
    [alarm] = cam.capture(T0)
    assert alarm.parent == cam.spool.dir("sets.ready")
    assert alarm.name == event.name.removesuffix(".json") + "-alarm.set"
    m = meta(alarm)
    assert m["kind"] == "alarm" and [c["name"] for c in m["cameras"] if c["ok"]] == ["front", "yard"]
    [inc] = cam.state("open")
    assert inc.name == event.name.removesuffix(".json")
    record = json.loads((inc / "incident.json").read_text())
    assert record["started_ts"] == T0 and record["alarm_set"] == alarm.name.removesuffix(".set")
    assert len(record["events"]) == 1 and "_path" not in record["events"][0]


def test_motion_within_the_gap_is_captured_and_kept_not_sent(cam):
    cam.at(T0)
    [captured] = cam.at(T0 + 10)          # earlier than the first update (30 s)
    [inc] = cam.state("open")
    assert captured.parent == inc and captured.name.endswith("-capture.set")
    assert all((captured / f).stat().st_size for f in ("front.jpg", "front.preview.jpg", "yard.jpg"))
    assert len(cam.ready("alarm")) == 1 and cam.ready("update") == []


def test_the_gap_counts_from_the_last_motion_and_motion_after_it_is_a_new_incident(cam):
    for t in range(0, 1001, 250):          # every 250 s: never a gap of 300 s
        cam.at(T0 + t)
    [first] = cam.state("open")
    assert len(cam.ready("alarm")) == 1 and len(list(first.glob("*-capture.set"))) == 4
    cam.at(T0 + 1000 + GAP)                 # exactly the gap after the last motion: a new incident
    assert cam.state("closing") == [cam.spool.dir("incidents.closing") / first.name]
    [second] = cam.state("open")
    assert second.name != first.name and len(cam.ready("alarm")) == 2


def test_updates_go_out_at_the_slowing_pace_with_the_newest_pictures(cam):
    for t in range(0, 600, 10):            # motion every 10 s for 10 minutes; pace 30, 60, 120 (repeats)
        cam.at(T0 + t)
    updates = sorted(cam.ready("update"))
    times = [meta(u)["update"]["time"] - T0 for u in updates]
    assert times == [30, 90, 210, 330, 450, 570]
    [inc] = cam.state("open")
    first = meta(updates[0])
    assert first["kind"] == "update" and first["incident"] == inc.name
    [message] = first["messages"]
    assert message["text"].startswith("Motion continues at Front door: 4 events since ")
    assert message["image"] == "update.jpg" and (updates[0] / "update.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert first["update"]["capture"] == sorted(inc.glob("*-capture.set"))[2].name  # the capture at 30 s
    records = sorted(inc.glob("update-*.json"))
    assert [json.loads(r.read_text())["n"] for r in records] == [1, 2, 3, 4, 5, 6]
    # The encrypt step plans one image message for it.
    planned = encrypt.plan(encrypt.load_meta(updates[0]), updates[0])
    assert [(p.kind, p.camera, p.subject) for p in planned] == [("sheet", "all", "Motion continues")]


def test_no_update_without_a_new_picture(cam):
    cam.at(T0)
    cam.at(T0 + 40)
    [inc] = cam.state("open")
    assert len(cam.ready("update")) == 1
    assert incident.update_if_due(cam.cfg, cam.spool, inc) == []     # much later, but nothing new
    assert len(cam.ready("update")) == 1


def test_the_incident_ends_after_the_gap_with_one_summary_holding_every_capture(cam):
    for t in range(0, 121, 30):
        cam.at(T0 + t)
    assert cam.end(T0 + 120 + GAP - 1) == [] and len(cam.state("open")) == 1   # not yet
    [closing] = cam.end(T0 + 120 + GAP)
    assert closing.name.endswith("-closing.set") and closing.parent == cam.spool.dir("sets.ready")
    [inc] = cam.state("closed")
    assert cam.state("open") == cam.state("closing") == []
    m = meta(closing)
    captures = sorted(p.name for p in inc.glob("*-capture.set"))
    assert len(captures) == 4
    assert [(s["camera"], s["captures"]) for s in m["sheets"]] == [("front", captures), ("yard", captures)]
    text = m["messages"][0]["text"]
    assert text.startswith("Motion ended at Front door.\nIncident ")
    assert "(2 min): 5 motion events, 5 capture(s)." in text
    assert "Sensors: motion sensors on GPIO 17, 27." in text and "Cameras: front 4 pictures; yard 4 pictures." in text
    assert "Updates: 2." in text and "the 2 sheets (8 in all)" in text
    assert [x["image"] for x in m["messages"]] == ["sheet-01.jpg", "sheet-02.jpg"]
    assert m["messages"][1]["text"].startswith("Sheet 2 of 2: yard, 4 captures, ")
    assert json.loads((inc / "summary.json").read_text())["sheets"] == m["sheets"]
    planned = encrypt.plan(encrypt.load_meta(closing), closing)
    assert [(p.nn, p.camera, p.kind) for p in planned] == [(0, "front", "sheet"), (1, "yard", "sheet")]
    assert cam.end(T0 + 3600) == []       # idempotent: nothing made twice
    assert len(cam.ready("closing")) == 1


def test_a_single_motion_ends_with_a_text_only_summary(cam):
    cam.at(T0)
    [closing] = cam.end(T0 + GAP + 60)
    m = meta(closing)
    assert m["sheets"] == [] and len(m["messages"]) == 1 and m["messages"][0]["image"] is None
    assert "No picture after the first alarm." in m["messages"][0]["text"]
    assert [p.kind for p in encrypt.plan(encrypt.load_meta(closing), closing)] == ["text"]


def test_many_captures_are_split_into_sheets_of_at_most_sheet_max(short_tmp):
    cam = Cam(short_tmp, "sheet_max = 4\n", cameras=CAMS.split("[[camera]]\nname = \"yard\"")[0])
    for t in range(0, 300, 30):
        cam.at(T0 + t)
    [closing] = cam.end(T0 + 270 + GAP)
    sizes = [len(s["captures"]) for s in meta(closing)["sheets"]]
    assert sizes == [3, 3, 3]              # 9 captures in balanced sheets of at most 4
    assert [m["text"].splitlines()[-1].split(":")[0] for m in meta(closing)["messages"]] == \
        ["Sheet 1 of 3", "Sheet 2 of 3", "Sheet 3 of 3"]


def test_an_incident_is_not_ended_while_a_motion_event_waits_to_be_captured(cam):
    cam.at(T0)
    cam.motion(T0 + 100)                   # recorded, not captured yet (the capture job is busy)
    assert cam.end(T0 + 100 + GAP - 10) == [] and len(cam.state("open")) == 1
    cam.capture(T0 + 100)
    assert len(cam.state("open")) == 1 and len(cam.ready("alarm")) == 1


def test_a_new_incident_during_the_summary_is_a_new_incident_with_its_own_alarm(cam):
    for t in (0, 30, 60):
        cam.at(T0 + t)
    assert incident.close_stale(cam.cfg, cam.spool, T0 + 60 + GAP) != []
    [old] = cam.state("closing")           # being summarised
    cam.at(T0 + 60 + GAP + 5)               # motion now: a new incident, alarm at once
    assert len(cam.ready("alarm")) == 2
    [new] = cam.state("open")
    cam.at(T0 + 60 + GAP + 40)              # belongs to the new incident
    [closing] = cam.end(T0 + 60 + GAP + 50)
    assert meta(closing)["incident"] == old.name
    assert [len(s["captures"]) for s in meta(closing)["sheets"]] == [2, 2]
    assert cam.state("open") == [new] and len(list(new.glob("*-capture.set"))) == 1


def test_seccam_trigger_follows_the_incident_rules(cam, run):
    for _ in range(2):
        assert run("bin/seccam", "trigger", "-q", config=cam.path).returncode == 0
        res = run("jobs/capture", "--no-encrypt", config=cam.path)
        assert res.returncode == 0, res.stderr
    [alarm] = cam.ready("alarm")
    [inc] = cam.state("open")
    [captured] = inc.glob("*-capture.set")
    assert meta(alarm)["events"][0]["source"] == meta(captured)["events"][0]["source"] == "trigger"
    [closing] = cam.end(time.time() + GAP + 60)
    assert "Sensors: test alarm (seccam trigger) x2." in meta(closing)["messages"][0]["text"]


def test_the_button_is_a_request_and_always_sends_at_once(cam):
    cam.at(T0, "button")                    # no incident: an alarm, and no incident opened
    assert len(cam.ready("alarm")) == 1 and cam.state("open") == []
    cam.at(T0 + 100)                        # motion: an incident
    cam.at(T0 + 110, "button")              # during it: still an alarm at once
    cam.at(T0 + 115)                        # motion within the gap: kept
    assert len(cam.ready("alarm")) == 3
    [inc] = cam.state("open")
    assert [meta(c)["events"][0]["source"] for c in inc.glob("*-capture.set")] == ["pir"]
    # The button does not extend the incident: it ends GAP after the last *motion*.
    assert cam.end(T0 + 115 + GAP) != [] and cam.state("open") == []


def test_button_and_motion_at_the_same_moment_are_never_merged(cam):
    cam.motion(T0)
    cam.motion(T0 + 1, "button")
    cam.capture(T0 + 1)
    kinds = sorted(meta(a)["events"][0]["source"] for a in cam.ready("alarm"))
    assert kinds == ["button", "pir"]


def test_gap_zero_turns_incidents_off_and_closes_an_open_one(short_tmp):
    cam = Cam(short_tmp)
    cam.at(T0)
    cam.at(T0 + 30)
    assert len(cam.state("open")) == 1
    cam.path.write_text(cam.path.read_text().replace("[incident]\n", "[incident]\ngap_s = 0\n"))
    cam.reload()
    cam.at(T0 + 60)
    cam.at(T0 + 90)
    assert len(cam.ready("alarm")) == 3 and cam.state("open") == []      # today's behaviour
    assert len(cam.state("closing")) == 1                                # the open one is summarised
    assert len(cam.end(T0 + 100)) == 1


def test_status_and_heartbeat_show_the_current_incident(cam, run):
    for t in (0, 30, 90):
        cam.at(T0 + t)
    out = run("bin/seccam", "status", config=cam.path).stdout
    started = events.iso(T0)
    assert f"incident    in progress since {started}: 3 motion event(s), 3 capture(s)" in out
    assert "2 update(s) sent (last " in out and f"ends at {events.iso(T0 + 90 + GAP)}" in out
    js = json.loads(run("bin/seccam", "status", "--json", config=cam.path).stdout)["incident"]
    assert js["open"]["events"] == 3 and js["open"]["updates"] == 2 and js["kept_captures"] == 2
    assert js["open"]["last_update"] == events.iso(T0 + 90)
    path, _ = heartbeat.process(cam.cfg, cam.spool, now=lambda: T0 + 100)
    text = meta(path)["health"]["text"]
    assert "Incident in progress since " in text and "3 motion events, 2 update(s) sent (last " in text
    cam.end(T0 + 90 + GAP)
    js = json.loads(run("bin/seccam", "status", "--json", config=cam.path).stdout)["incident"]
    assert js["open"] is None and js["closed"] == 1
    out = run("bin/seccam", "status", config=cam.path).stdout
    assert "kept        2 capture(s) of 1 ended and 0 running incident(s)" in out


def test_status_says_when_incidents_are_off_or_a_summary_is_pending(short_tmp, run):
    cam = Cam(short_tmp, "gap_s = 0\n")
    out = run("bin/seccam", "status", config=cam.path).stdout
    assert "incidents   off ([incident] gap_s = 0)" in out
    (cam.spool.dir("incidents.closing") / "20261125T000000.000000Z.1.aa").mkdir()
    # an update waiting two hours for the network
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 7260))
    cam.spool.write("outbox.deferred", b"x", name=f"{stamp}.000000Z.1.aa-update001.00.all.sheet.eml")
    out = run("bin/seccam", "status", config=cam.path).stdout
    assert "incidents   1 ended, summary being made" in out
    assert "messages deferred (will retry), oldest 2h1m" in out
    from seccam.commands.status import render
    snap = health.snapshot(cam.cfg, cam.spool, with_keys=False)
    del snap["incident"]                     # a snapshot from before incidents
    assert "incident" not in render(snap)


def test_a_capture_whose_camera_failed_is_on_the_sheet_as_a_failure(short_tmp):
    cam = Cam(short_tmp, cameras=CAMS.split("[[camera]]\nname = \"yard\"")[0])
    cam.at(T0)
    cam.at(T0 + 30)
    cam.path.write_text(cam.path.read_text().replace('device = "test"', 'device = "/dev/video-gone"\ntimeout_s = 5'))
    cam.reload()
    cam.at(T0 + 60)                         # the camera fails in the middle
    cam.path.write_text(cam.path.read_text().replace('device = "/dev/video-gone"', 'device = "test"'))
    cam.reload()
    cam.at(T0 + 90)
    [closing] = cam.end(T0 + 90 + GAP)
    m = meta(closing)
    [layout] = m["sheets"]
    assert len(layout["captures"]) == 3 and layout["shown"] == 2
    text = m["messages"][0]["text"]
    assert "front 2 pictures, failed 1x (" in text and "no image written" in text


def test_a_capture_with_a_damaged_record_is_still_on_the_sheet(cam):
    cam.at(T0)
    [captured] = cam.at(T0 + 10)
    (captured / "meta.json").write_text("{broken")
    [closing] = cam.end(T0 + 10 + GAP + 60)
    sheets = meta(closing)["sheets"]
    assert [(s["camera"], s["captures"], s["shown"]) for s in sheets] == [
        ("front", [captured.name], 1), ("yard", [captured.name], 1)]


def test_the_summary_uses_the_preview_when_the_budget_pruned_the_full_picture(short_tmp):
    cam = Cam(short_tmp, cameras=CAMS.split("[[camera]]\nname = \"yard\"")[0])
    cam.at(T0)
    [captured] = cam.at(T0 + 10)
    (captured / "front.jpg").unlink()
    [also] = cam.at(T0 + 20)
    (also / "front.jpg").unlink()
    (also / "front.preview.jpg").unlink()
    [closing] = cam.end(T0 + 20 + GAP)
    [layout] = meta(closing)["sheets"]
    assert len(layout["captures"]) == 2 and layout["shown"] == 1


def test_budget_prunes_incident_full_pictures_before_alarms_and_never_the_previews_of_an_open_one(short_tmp):
    cam = Cam(short_tmp)
    for t in (0, 10, 20):
        cam.at(T0 + t)
    cam.end(T0 + 20 + GAP)                  # a closed incident with 2 captures
    for t in (1000, 1010):
        cam.at(T0 + t)                      # an open one with 1 capture
    order = [(name, state) for name, state, _ in budget.candidates(cam.spool)]
    names = [n for n, _ in order]
    fulls = [n for n in names if n.endswith(("/front.jpg", "/yard.jpg"))]
    assert len(fulls) == 6
    assert [s for n, s in order if n in fulls] == ["incidents.closed"] * 4 + ["incidents.open"] * 2
    [closed] = cam.state("closed")
    alarm = names.index(next(n for n in names if n.endswith("-alarm.set")))
    assert max(names.index(f) for f in fulls) < names.index(closed.name) < alarm
    assert not any(n.endswith(".preview.jpg") for n in names)
    # the closing set (a summary) is pruned with the alarms, last
    assert any(n.endswith("-closing.set") for n in names[alarm:])


def test_budget_prunes_queued_updates_before_alarms(cam):
    cam.spool.write("outbox.new", b"x", name="20261125T000000.000000Z.1.aa-update001.00.all.sheet.eml")
    cam.spool.write("outbox.new", b"x", name="20261125T000000.000000Z.1.aa-alarm.00.front.preview.eml")
    names = [n for n, _, _ in budget.candidates(cam.spool)]
    assert names.index("20261125T000000.000000Z.1.aa-update001.00.all.sheet.eml") < \
        names.index("20261125T000000.000000Z.1.aa-alarm.00.front.preview.eml")


def test_closed_incidents_are_removed_after_events_keep_days(short_tmp):
    cam = Cam(short_tmp, body="", cameras=CAMS)
    cam.path.write_text("events_keep_days = 1\n" + cam.path.read_text())
    cam.reload()
    cam.at(T0)
    cam.at(T0 + 10)
    cam.end(T0 + 10 + GAP)
    assert len(cam.state("closed")) == 1
    cam.end(T0 + 86400 - 60)
    assert len(cam.state("closed")) == 1
    cam.end(T0 + 10 + 86400 + 1)
    assert cam.state("closed") == []


def test_an_update_left_by_a_killed_run_is_recorded_and_handed_over_once(cam):
    cam.at(T0)
    cam.at(T0 + 30)
    [inc] = cam.state("open")
    [update] = cam.ready("update")
    # As if killed after the update set was kept in the incident, before it was recorded:
    (inc / "update-001.json").unlink()
    os.rename(update, inc / "update-001.set")
    handed = incident.update_if_due(cam.cfg, cam.spool, inc)
    assert [p.name for p in handed] == [update.name] and (inc / "update-001.json").exists()
    assert incident.update_if_due(cam.cfg, cam.spool, inc) == []
    # An unreadable one is set aside, not sent.
    bad = inc / "update-002.set"
    bad.mkdir()
    assert incident.update_if_due(cam.cfg, cam.spool, inc) == []
    assert not bad.exists() and any("update-002.set" in p.name for p in cam.spool.items("corrupt"))


def test_an_update_set_left_in_a_closing_incident_is_superseded_by_the_summary(cam):
    cam.at(T0)
    cam.at(T0 + 30)
    [inc] = cam.state("open")
    [update] = cam.ready("update")
    os.rename(update, inc / "update-002.set")
    [closing] = cam.end(T0 + 30 + GAP)
    assert cam.ready("update") == [] and meta(closing)["summary"]["updates"] == 1
    [closed] = cam.state("closed")
    assert not (closed / "update-002.set").exists()


def test_a_damaged_incident_record_does_not_stop_routing_or_the_summary(cam):
    cam.at(T0)
    [inc] = cam.state("open")
    (inc / "incident.json").write_text("")
    cam.at(T0 + 10)                         # the incident's time comes from its name
    assert len(cam.ready("alarm")) == 1
    [closing] = cam.end(T0 + 10 + GAP)
    assert [len(s["captures"]) for s in meta(closing)["sheets"]] == [1, 1]


def test_a_second_incident_job_leaves_at_once(cam):
    with cam.spool.lock("incident"):
        from seccam.spool import LockBusy
        with pytest.raises(LockBusy):
            incident.process(cam.cfg, cam.spool, now=lambda: T0)


def test_the_incident_job_leaves_closing_to_a_running_capture_job(cam, monkeypatch):
    cam.at(T0)
    monkeypatch.setattr(incident, "CAPTURE_LOCK_WAIT_S", 0.1)
    with cam.spool.lock("capture"):
        assert cam.end(T0 + 2 * GAP) == []
    assert len(cam.state("open")) == 1
    assert len(cam.end(T0 + 2 * GAP)) == 1


def test_jobs_incident_is_quiet_and_encrypts_what_it_made(cam, run):
    res = run("jobs/incident", config=cam.path)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    cam.at(time.time() - 2 * GAP)
    res = run("jobs/incident", "--no-encrypt", config=cam.path)
    assert res.returncode == 0 and len(cam.ready("closing")) == 1
    with cam.spool.lock("incident"):
        res = run("jobs/incident", config=cam.path)
    assert (res.returncode, res.stderr) == (0, "")


def test_health_reports_an_incident_error_instead_of_failing(cam, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk on fire")
    monkeypatch.setattr(incident, "describe", broken)
    snap = health.snapshot(cam.cfg, cam.spool, with_keys=False)
    assert snap["incident"] == {"error": "cannot read incidents: disk on fire"}
    from seccam.commands.status import render
    assert "incidents   cannot read incidents: disk on fire" in render(snap)


def test_an_hour_long_incident_is_summarised_and_damaged_records_do_not_stop_it(cam):
    for t in range(0, 3641, 280):            # every 280 s, within the gap: one incident of an hour
        cam.at(T0 + t)
    [inc] = cam.state("open")
    first, second = sorted(inc.glob("*-capture.set"))[:2]
    m = meta(first)
    m["events"] = [{"source": "pir"}]        # an event without a time
    (first / "meta.json").write_text(json.dumps(m))
    (inc / "update-001.json").write_text("")  # an unreadable update record
    loaded = incident.load(inc)
    assert len(loaded.updates) == 13 and loaded.updates[0] == {"file": "update-001.json"}
    assert loaded.last_motion == T0 + 3640
    (second / "meta.json").write_text("[]")  # unreadable: the pictures found still count
    (second / "yard.jpg").unlink()
    (second / "yard.preview.jpg").unlink()
    [closing] = cam.end(T0 + 3640 + GAP)
    m = meta(closing)
    # The unreadable record loses that capture's event, not its pictures.
    assert "(1 h 0 min): 13 motion events, 14 capture(s)." in m["messages"][0]["text"]
    front, yard = m["sheets"]
    assert second.name in front["captures"] and second.name not in yard["captures"]
    assert len(front["captures"]) == 13 and len(yard["captures"]) == 12


def test_a_camera_added_or_removed_during_an_incident_keeps_every_picture(short_tmp):
    cam = Cam(short_tmp)
    cam.at(T0)
    cam.at(T0 + 10)                          # front and yard
    cam.path.write_text(cam.path.read_text().replace('name = "yard"', 'name = "gate"'))
    cam.reload()
    cam.at(T0 + 20)                          # front and gate
    [closing] = cam.end(T0 + 20 + GAP)
    sheets = [(s["camera"], len(s["captures"])) for s in meta(closing)["sheets"]]
    assert sheets == [("front", 2), ("gate", 1), ("yard", 1)]


def test_an_update_is_due_only_with_a_capture_after_its_time(cam):
    cam.at(T0)
    [inc] = cam.state("open")
    assert incident.update_due(cam.cfg, incident.load(inc)) is None   # no capture yet
    (inc / "update-001.json").write_text(json.dumps({"n": 1, "time": "later"}))
    cam.at(T0 + 20)
    # A record without a usable time counts from the start: 20 s < 60 s (the second step of the pace).
    assert incident.update_due(cam.cfg, incident.load(inc)) is None
    cam.at(T0 + 60)                          # 60 s after the start: update 2 is made with it
    [update] = cam.ready("update")
    assert meta(update)["update"]["n"] == 2 and meta(update)["update"]["time"] == T0 + 60


def test_reading_an_incident_that_moved_on_meanwhile_gives_nothing_not_an_error(cam):
    gone = incident.load(cam.spool.dir("incidents.open") / "20261125T000000.000000Z.1.aa")
    assert gone.captures == [] and gone.updates == [] and gone.first_events == []


def test_budget_leaves_the_pictures_of_a_capture_with_a_damaged_record_alone(cam):
    cam.at(T0)
    [captured] = cam.at(T0 + 10)
    (captured / "meta.json").write_text("{")
    names = [n for n, _, _ in budget.candidates(cam.spool)]
    assert not any(captured.name in n for n in names)


@pytest.mark.parametrize("messages, reason", [
    ([], "messages is not a non-empty list"),
    ([{"subject": "s"}], "messages[0] needs a subject and a text"),
    ([{"subject": "s", "text": "t", "image": "../x.jpg"}], "messages[0].image is not a file name"),
    ([{"subject": "s", "text": "t", "camera": "a b"}], "messages[0].camera is not a camera name"),
])
def test_a_malformed_incident_set_is_set_aside_by_the_encrypt_step(cam, messages, reason):
    from seccam.spool import SpoolFormatError
    tmp = cam.spool.make_tmp_dir(".set")
    (tmp / "meta.json").write_text(json.dumps({"version": 1, "kind": "closing", "id": "x-closing",
                                               "created": events.iso(T0), "cameras": [], "messages": messages}))
    with pytest.raises(SpoolFormatError, match=__import__("re").escape(reason)):
        encrypt.load_meta(tmp)


def test_a_sheet_missing_from_its_set_becomes_a_text_message(cam):
    cam.at(T0)
    cam.at(T0 + 10)
    [closing] = cam.end(T0 + 10 + GAP)
    (closing / "sheet-02.jpg").unlink()
    planned = encrypt.plan(encrypt.load_meta(closing), closing)
    assert [p.kind for p in planned] == ["sheet", "text"]


def test_the_incident_is_opened_while_the_cameras_expose_and_a_failure_there_costs_no_picture(cam, monkeypatch):
    from seccam import camera
    seen = {}
    real_capture_all = camera.capture_all

    def capture_all(cameras, outdir, while_waiting=None):
        def hook():
            while_waiting()
            seen["open during exposure"] = bool(cam.state("open"))
        return real_capture_all(cameras, outdir, hook)
    monkeypatch.setattr(camera, "capture_all", capture_all)
    cam.at(T0)
    assert seen == {"open during exposure": True}
    # A failing bookkeeping step inside the hook is retried after the capture; the prewarm still runs.
    real_open = incident.open_incident
    calls = []

    def flaky_open(*args):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_open(*args)
    monkeypatch.setattr(incident, "open_incident", flaky_open)
    prewarmed = []
    cam.motion(T0 + 2 * GAP)
    capture.process(cam.cfg, cam.spool, now=lambda: T0 + 2 * GAP, while_waiting=lambda: prewarmed.append(1))
    assert prewarmed == [1] and len(calls) == 2
    assert len(cam.ready("alarm")) == 2 and len(cam.state("open")) == 1 and len(cam.state("closing")) == 1


def test_a_recipient_without_a_key_gets_the_closing_sheets_later_and_alone(short_tmp):
    """Issue 10's held copies also keep an incident's summary for a recipient whose key is missing:
    its sheets hold every capture. The updates are stale by then and are not kept."""
    from helpers import sendkit
    c = Cam(short_tmp, body='[delivery]\nrecipients = ["owner@seccam.test", "bob@seccam.test"]\n')
    owner = sendkit.make_recipient("owner@seccam.test", config=c.cfg)
    bob = sendkit.make_recipient("bob@seccam.test")
    from seccam.gpg import Gpg
    Gpg(c.cfg.state_dir / "gnupg").generate_camera_key("cam@seccam.test")
    try:
        for t in range(0, 121, 30):
            c.at(T0 + t)
        [closing] = c.end(T0 + 120 + GAP)
        sheets = sorted(m["image"] for m in meta(closing)["messages"])
        encrypt.process(c.cfg, c.spool)
        held = {p.name: p for p in c.spool.items("sets.held")}
        copy = encrypt.copy_id(closing.name.removesuffix(".set"), "bob@seccam.test") + ".set"
        assert copy in held and copy.endswith("-closing.set")
        assert sorted(p.name for p in held[copy].glob("sheet-*.jpg")) == sheets
        assert not [n for n in held if "-update" in n]
        for path in c.spool.items("outbox.new"):
            c.spool.remove(path)
        sendkit.import_recipient(c.cfg, bob)
        encrypt.process(c.cfg, c.spool)
        sent = [p for p in c.spool.items("outbox.new") if p.name.startswith(copy.removesuffix(".set"))]
        assert len(sent) == len(sheets)
        for path in sent:
            inner, signer = sendkit.decrypt_message(path.read_bytes(), bob)
            assert inner.get_content_type() == "multipart/mixed"
    finally:
        for r in (owner, bob):
            sendkit.kill_agent(r.home)
