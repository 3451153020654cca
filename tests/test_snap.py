"""A /snap request and the armed state where events become captures (jobs/capture), and what
the encrypt step makes of snap and reply sets: the chat they go to, the text they carry.

The capture side uses fswebcam's test source; the encrypt side sendkit's camera with real gpg
(two recipients, so that the camera's chat is a group and a 1:1 answer can be told from it).
"""

import email
import json
import time

import pytest
from conftest import CAMERAS_OK, write_config

from seccam import armed, capture, config, encrypt, events, heartbeat, replies, snap
from seccam.spool import Spool
from helpers import sendkit

OWNER, BOB = "owner@seccam.test", "bob@seccam.test"


@pytest.fixture
def cam(short_tmp):
    cfg = config.load(write_config(short_tmp, cameras=CAMERAS_OK))
    return cfg, Spool(cfg.spool_dir).ensure()


def ready(spool, suffix):
    return [p for p in spool.items("sets.ready") if p.name.endswith(suffix + ".set")]


def meta_of(path):
    return json.loads((path / "meta.json").read_text())


# -- the capture job -------------------------------------------------------------------------------
def test_a_snap_request_becomes_a_snap_set_of_the_cameras_it_names(cam):
    cfg, spool = cam
    heartbeat.process(cfg, spool)  # every camera once: the camera state knows both
    snap.request(spool, OWNER, ["yard"], None, "/snap yard")
    published = capture.process(cfg, spool)
    [path] = ready(spool, "-snap")
    assert published == [path]
    meta = meta_of(path)
    assert meta["kind"] == "snap" and [c["name"] for c in meta["cameras"]] == ["yard"]
    assert [(e["by"], e["cameras"], e["to"], e["command"]) for e in meta["events"]] == \
        [(OWNER, ["yard"], None, "/snap yard")]
    assert spool.items("requests.new") == spool.items("requests.active") == []
    # A capture of one camera keeps what is known of the others (status, heartbeat).
    assert set(spool.read_state("cameras")) == {"front", "yard"}
    # A request is not motion.
    assert spool.items("events.done") == [] and spool.items("events.new") == []


def test_requests_for_the_same_pictures_in_the_same_chat_are_one_capture(cam):
    cfg, spool = cam
    snap.request(spool, OWNER, None, None, "/snap")
    snap.request(spool, BOB, None, None, "/snap")
    snap.request(spool, BOB, None, BOB, "/snap")  # Bob's 1:1 chat: his own capture
    capture.process(cfg, spool)
    sets = [meta_of(p) for p in ready(spool, "-snap")]
    assert sorted(([e["by"] for e in m["events"]], m["events"][0]["to"]) for m in sets) == \
        [([BOB], BOB), ([OWNER, BOB], None)]


def test_disarmed_motion_is_recorded_not_captured_and_a_snap_still_is(cam):
    cfg, spool = cam
    armed.change(spool, False, OWNER, "chat", until=time.time() + 3600)
    events.record(spool, "pir", [(17, time.time()), (27, time.time())])
    snap.request(spool, OWNER, None, None, "/snap")
    capture.process(cfg, spool)
    assert ready(spool, "-alarm") == [] and len(ready(spool, "-snap")) == 1
    assert len(spool.items("events.done")) == 1 and spool.items("events.new") == []
    # Armed again (the disarm ran out): the next motion is an alarm.
    armed.change(spool, False, OWNER, "chat", until=time.time() - 1)
    events.record(spool, "pir", [(17, time.time())])
    capture.process(cfg, spool)
    assert len(ready(spool, "-alarm")) == 1


def test_disarmed_a_first_pir_edge_does_not_start_the_cameras(cam):
    cfg, spool = cam
    armed.change(spool, False, OWNER, "chat")
    now = time.time()
    events.record_early(spool, 17, now, now + 2)
    events.record(spool, "pir", [(17, now), (27, now + 1)])
    assert capture.process(cfg, spool) == []
    assert spool.items("early.new") == spool.items("early.active") == [] and spool.read_state("cameras") is None
    assert len(spool.items("events.done")) == 1


def test_disarmed_the_push_button_still_sends_pictures_and_motion_beside_it_does_not(cam):
    cfg, spool = cam
    armed.change(spool, False, OWNER, "chat")
    now = time.time()
    events.record(spool, "pir", [(17, now), (27, now)])
    events.record(spool, "button", [(22, now + 1)])  # a person at the camera asks for pictures
    published = capture.process(cfg, spool)
    [path] = ready(spool, "-alarm")
    assert published == [path]
    assert [e["source"] for e in meta_of(path)["events"]] == ["button"]
    # The motion beside it is recorded, not captured; nothing is left claimed.
    done = [json.loads(p.read_text())["source"] for p in spool.items("events.done")]
    assert sorted(done) == ["button", "pir"]
    assert spool.items("events.new") == spool.items("events.active") == []


@pytest.mark.parametrize("how", ["arm", "disarm-ran-out", "none"])
def test_arming_again_ends_the_running_incident_so_the_next_motion_is_an_alarm(cam, how):
    cfg, spool = cam
    assert cfg.incident.gap_s >= 300  # the default: the motion below is well within the gap
    t0 = time.time() - 120
    events.record(spool, "pir", [(17, t0), (27, t0)], when=t0)
    capture.process(cfg, spool, now=lambda: t0 + 1)
    assert len(ready(spool, "-alarm")) == 1  # the incident's first alarm
    if how == "arm":
        armed.change(spool, False, OWNER, "chat", now=t0 + 10)
        armed.change(spool, True, BOB, "chat", now=t0 + 60)
    elif how == "disarm-ran-out":
        armed.change(spool, False, OWNER, "chat", until=t0 + 60, now=t0 + 10)
    events.record(spool, "pir", [(17, t0 + 90), (27, t0 + 90)], when=t0 + 90)
    capture.process(cfg, spool, now=lambda: t0 + 91)
    if how == "none":  # the same motion without a disarm in between: part of the incident
        assert len(ready(spool, "-alarm")) == 1 and len(spool.items("incidents.open")) == 1
        return
    assert len(ready(spool, "-alarm")) == 2
    # The old incident is ending (its summary follows); the new one is open.
    [closing] = spool.items("incidents.closing")
    [opened] = spool.items("incidents.open")
    assert closing.name < opened.name


def test_an_unreadable_request_is_set_aside_and_the_others_are_captured(cam):
    cfg, spool = cam
    spool.write("requests.new", b"{not json", suffix=".json")
    spool.write_json("requests.new", {"version": 1, "kind": "snap", "time": "yesterday", "by": OWNER})
    spool.write_json("requests.new", {"version": 1, "kind": "snap", "time": events.iso(time.time()), "by": "x"})
    spool.write_json("requests.new", {"version": 1, "kind": "snap", "time": events.iso(time.time()), "by": OWNER,
                                      "cameras": "front"})
    spool.write_json("requests.new", {"version": 1, "kind": "snap", "time": events.iso(time.time()), "by": OWNER,
                                      "to": 5})
    spool.write_json("requests.new", {"version": 2, "kind": "snap"})
    snap.request(spool, OWNER)
    capture.process(cfg, spool)
    reasons = sorted(spool.read_reason(p) for p in spool.items("corrupt"))
    assert len(reasons) == 6 and all(r.startswith("unreadable snap request") for r in reasons)
    assert any("invalid time" in r for r in reasons) and any("no requester" in r for r in reasons)
    assert len(ready(spool, "-snap")) == 1


def test_a_request_a_dead_run_had_claimed_is_captured_once(cam):
    cfg, spool = cam
    path = snap.request(spool, OWNER)
    spool.claim(path, "requests.active")  # as if a capture job died right after claiming it
    capture.process(cfg, spool)
    assert len(ready(spool, "-snap")) == 1
    # A dead run that had published the set but not removed the request: no second capture.
    [done] = ready(spool, "-snap")
    again = spool.write_json("requests.active", {"version": 1, "kind": "snap", "time": events.iso(time.time()),
                                                 "by": OWNER}, name=done.name.removesuffix("-snap.set") + ".json")
    capture.process(cfg, spool)
    assert ready(spool, "-snap") == [done] and not again.exists()


# -- the encrypt step ---------------------------------------------------------------------------------
@pytest.fixture
def two():
    c = sendkit.make_camera(recipients=(OWNER, BOB))
    yield c
    c.close()


def built(cam):
    out = []
    for path in cam.spool.items("outbox.new"):
        inner, signer = sendkit.decrypt_message(path.read_bytes(), cam.recipients[1])
        assert signer == cam.fingerprint
        body = inner.get_body(("plain",)).get_content()
        outer_to = [a.strip() for a in str(email.message_from_bytes(path.read_bytes())["To"]).split(",")]
        out.append((str(inner["Subject"]), body, outer_to, inner["Chat-Group-ID"] is not None))
    return out


def snap_set(spool, set_id, to, by=BOB):
    request = {"version": 1, "kind": "snap", "time": "2026-11-25T19:11:00+00:00", "by": by, "cameras": None,
               "to": to, "command": "/snap"}
    path, _ = sendkit.make_set(spool, set_id)
    meta = meta_of(path)
    meta.update(kind="snap", events=[request])
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def test_a_snap_goes_like_an_alarm_into_the_group_marked_with_who_asked(two):
    snap_set(two.spool, "20261125T191100.000001Z.1.aaaa-snap", None)
    encrypt.process(two.config, two.spool)
    got = built(two)
    assert [s for s, _, _, _ in got] == ["Snapshot: front", "Snapshot: yard", "Snapshot: front (full size)",
                                         "Snapshot: yard (full size)"]
    assert got[0][1].startswith("Snapshot ") and f"requested by {BOB} (/snap)" in got[0][1].splitlines()[0]
    assert all(group and set(to) == {OWNER, BOB} for _, _, to, group in got)
    assert two.spool.items("sets.held") == []  # a snap is not an alarm: no copies for anybody


def test_an_answer_for_a_1to1_chat_goes_to_that_recipient_alone_without_the_group(two):
    snap_set(two.spool, "20261125T191100.000001Z.1.aaaa-snap", BOB)
    replies.publish(two.spool, "20261125T191100.000002Z.1.bbbb-reply", "Status ...", "Status", to=BOB)
    encrypt.process(two.config, two.spool)
    got = built(two)
    assert len(got) == 5 and all(to == [BOB] and not group for _, _, to, group in got)
    assert got[-1][:2] == ("Status", "Status ...")
    for path in two.spool.items("outbox.new"):  # encrypted to Bob (and the camera) only
        with pytest.raises(Exception):
            sendkit.decrypt_message(path.read_bytes(), two.recipients[0])


def test_an_answer_for_a_recipient_without_a_usable_key_is_dropped_not_sent_to_others(two, caplog, monkeypatch):
    import logging
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    replies.publish(two.spool, "20261125T191100.000002Z.1.bbbb-reply", "Status ...", "Status",
                    to="carol@seccam.test")
    with caplog.at_level("WARNING", logger="seccam"):
        result = encrypt.process(two.config, two.spool)
    assert two.spool.items("outbox.new") == [] and two.spool.items("sets.ready") == []
    assert result.messages == 0 and "to=carol@seccam.test" in caplog.text


@pytest.mark.parametrize("change, reason", [
    ({"kind": "reply", "text": 5}, "a reply needs a subject and a text"),
    ({"kind": "reply", "subject": "s", "text": "t", "to": "nobody"}, "to is not one recipient's address"),
    ({"kind": "snap", "events": ["x"]}, "events of a snap are not requests"),
])
def test_a_malformed_snap_or_reply_set_is_set_aside(two, change, reason):
    path, _ = sendkit.make_set(two.spool, "20261125T191100.000001Z.1.aaaa-reply")
    meta = meta_of(path)
    meta.update(change)
    (path / "meta.json").write_text(json.dumps(meta))
    encrypt.process(two.config, two.spool)
    [aside] = two.spool.items("corrupt")
    assert reason in two.spool.read_reason(aside)
