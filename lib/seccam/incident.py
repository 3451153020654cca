"""Incidents: one alarm, then updates at a slowing pace, then one summary with every picture.

Continuous motion makes a motion event every ``cooldown_s`` and each event a
capture. Sent one by one, an hour in the garden is 120 alarms. This module
groups them into *incidents* and owns the incident states of the spool:

* **An incident** is motion separated by less than ``[incident] gap_s`` from
  the motion before it. The first capture of an incident is an ordinary
  alarm set (``ID-alarm``), published and sent exactly as without incidents.
* Every later capture of the incident is kept in the incident's directory,
  not sent. Now and then, at the pace ``[incident] update_pace_s`` (30 s,
  1, 2, 4, 8 minutes, then every 10 minutes: each number is the least time
  since the previous update, the last one repeats), a capture becomes an
  **update** (``ID-updateNNN``): one message with the newest picture of every
  camera and "Motion continues at Front door: 14 events since 14:02".
* When the gap has passed without motion, the incident is **closed** and
  summarised (``ID-closing``): how long, how many events, which sensors and
  cameras, and contact sheets (seccam.sheet) with every capture that was not
  sent on its own: one sheet per camera, split into sheets of at most
  ``[incident] sheet_max`` thumbnails.
* ``gap_s = 0`` turns incidents off: every capture is an alarm.
* A person asking for pictures is not motion: events whose source is in
  :data:`REQUESTED_SOURCES` (the push button) are always an alarm set at once,
  never part of an incident and never extending one, and are never merged
  with motion into one capture. A ``/snap`` from the chat is a request of its
  own (``requests/``, seccam.snap), never an event: it is captured as a
  ``snap`` set and never touches an incident. ``seccam trigger`` records
  motion (source ``trigger``), so the incident rules apply to it.
* Arming the camera again ends the running incident: the next motion is a new
  incident with its own first alarm (seccam.armed.armed_since). While the
  camera is disarmed nothing is captured for motion, so an open incident ends
  when its gap has passed, as always.

The ID of an incident is the name of its first motion event, so every set
made from it sorts together: ``ID-alarm``, ``ID-closing``, ``ID-updateNNN``.

States and transitions (docs/spool.md); each is one rename by one owner::

    incidents/open/ID/        incident.json (written once), EVENT-capture.set/ (one per capture),
                              update-NNN.json (one per update)
        --gap passed, no event waiting-->  incidents/closing/ID/      owner: the capture lock
    incidents/closing/ID/     --summary built in tmp/--> closing/ID/summary.json, closing/ID/closing.set
                              --> incidents/closed/ID/                 owner: the incident lock
    incidents/closed/ID/closing.set --> sets/ready/ID-closing.set      owner: the incident lock
    incidents/closed/ID/      pruned after events_keep_days, or earlier by the spool budget

Who owns what:

* ``jobs/capture`` (under the capture lock) routes each group of events
  (:func:`route`), opens incidents (while the cameras expose:
  :func:`during_capture`), publishes follow-up captures into the open
  incident, makes updates (:func:`update_if_due`) and closes an incident whose
  gap has passed (:func:`close_stale`) at the end of every run, and cron runs
  it every minute;
* ``jobs/incident`` (under the incident lock, at a low CPU priority; started
  by seccam-incident.path when ``incidents/closing`` is not empty, and by cron
  every minute) closes stale incidents too (taking the capture lock for that
  one rename), summarises every closing incident and prunes old closed ones.
  It is a job of its own so that drawing sheets never delays a new alarm: the
  capture job and its systemd unit stay free for the next motion. The path
  unit also covers an upgrade that kept an edited crontab without the
  ``jobs/incident`` line.

Kill safety. An update set is built in ``tmp/``, renamed into the incident
(``update-NNN.set``), recorded (``update-NNN.json``) and then renamed into
``sets/ready``; a closing set is renamed into ``closing/ID/`` before the
incident moves to ``closed/`` and is handed over from there. Each step is one
rename, and a rerun finds every intermediate state and finishes it: a killed
job never loses a capture, and never makes an update or a summary twice.
Captures never leave the incident's directory before the budget or the
retention removes them.
"""

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import time
from pathlib import Path

from . import events
from .faults import checkpoint
from .spool import LockBusy, SpoolFormatError, read_json

log = logging.getLogger("seccam.incident")

VERSION = 1
RECORD = "incident.json"
SET_SUFFIX = ".set"
CAPTURE_KIND = "capture"
CLOSING_SET = "closing.set"
SUMMARY = "summary.json"
UPDATE_PREFIX = "update-"
# What this module writes in tmp/: under the capture lock (new incidents, updates) and under
# the incident lock (summaries). Each lock holder cleans only its own kind (:func:`recover`).
CAPTURE_TMP_SUFFIX = ".incident"
SUMMARY_TMP_SUFFIX = ".summary"
#: Event sources that are a person asking for pictures: sent at once, outside incidents.
REQUESTED_SOURCES = ("button",)
# jobs/incident waits this long for the capture lock to close a stale incident;
# the capture job closes it itself otherwise.
CAPTURE_LOCK_WAIT_S = 10
DAY = 86400
# The update's picture: the newest capture of every camera, large.
UPDATE_MAX_TILE = 1280
UPDATE_COLUMNS = 2


# -- reading an incident ------------------------------------------------------------
@dataclasses.dataclass
class Capture:
    """One follow-up capture kept in an incident (``EVENT-capture.set/``)."""

    path: Path
    created: float
    events: list
    cameras: list           # meta.json's camera entries; [] when meta.json is unreadable
    readable: bool = True

    @property
    def name(self):
        return self.path.name


@dataclasses.dataclass
class Incident:
    """What an incident directory holds, read once."""

    path: Path
    id: str
    started: float
    first_events: list
    captures: list          # [Capture], oldest first
    updates: list           # [dict] update records, oldest first

    def all_events(self):
        out = list(self.first_events)
        for cap in self.captures:
            out.extend(cap.events)
        return out

    @property
    def last_motion(self):
        """The newest motion event's time (a capture whose record is unreadable: its time)."""
        times = [self.started] + [_event_time(e) for e in self.all_events()]
        times += [c.created for c in self.captures if not c.readable]
        return max(t for t in times if t is not None)


def _event_time(event):
    try:
        return events.parse_iso(event["time"])
    except (KeyError, TypeError, ValueError):
        return None


def _name_time(name):
    from .health import name_time
    return name_time(name)


def _read_record(path):
    """incident.json, or {} if it cannot be read (the incident still works from its name)."""
    try:
        record = read_json(path / RECORD)
    except (OSError, SpoolFormatError):
        return {}
    return record


def _read_capture(path):
    try:
        meta = read_json(path / "meta.json")
        created = events.parse_iso(meta["created"])
        evs = [e for e in meta.get("events", []) if isinstance(e, dict)]
        cams = [c for c in meta.get("cameras", []) if isinstance(c, dict) and isinstance(c.get("name"), str)]
        return Capture(path, created, evs, cams)
    except (OSError, SpoolFormatError, KeyError, TypeError, ValueError, AttributeError):
        # A damaged meta.json loses the details, not the pictures: the sheet still shows
        # every camera's image found in the set, at the time its name says.
        return Capture(path, _name_time(path.name) or 0.0, [], [], readable=False)


def _listing(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:  # moved on (closed, pruned) while we looked: nothing to read
        return []


def _captures(names):
    return [n for n in names if n.endswith(f"-{CAPTURE_KIND}{SET_SUFFIX}")]


def load(path, captures=True):
    """Read the incident at ``path``. ``captures=False`` reads only the newest capture
    (enough for the time of the last motion: that is all routing needs)."""
    path = Path(path)
    record = _read_record(path)
    started = record.get("started_ts")
    if not isinstance(started, (int, float)):
        started = _name_time(path.name) or 0.0
    listing = _listing(path)
    names = _captures(listing)
    if not captures:
        names = names[-1:]
    caps = sorted((_read_capture(path / n) for n in names), key=lambda c: (c.created, c.name))
    updates = []
    for name in listing:
        if name.startswith(UPDATE_PREFIX) and name.endswith(".json"):
            try:
                updates.append(read_json(path / name))
            except (OSError, SpoolFormatError):
                updates.append({"file": name})
    first = [e for e in record.get("events", []) if isinstance(e, dict)]
    return Incident(path, path.name, float(started), first, caps, updates)


def current(spool):
    """The open incident's directory (the newest, should a person have made two), or None."""
    items = [p for p in spool.items("incidents.open") if p.is_dir()]
    return items[-1] if items else None


# -- routing a capture ----------------------------------------------------------------
@dataclasses.dataclass
class Route:
    """Where one group of events goes. ``kind`` "alarm": a set in sets/ready, sent at once
    (``opens``: the incident it starts, None for a request or with incidents off);
    "capture": kept in the open incident ``into``."""

    kind: str
    set_id: str
    into: Path | None = None
    opens: str | None = None
    closes: Path | None = None   # the open incident whose gap has passed: closed before ``opens`` opens
    why: str = "new motion after the gap"  # why ``closes`` is closed

    def captured(self, spool):
        """True if this group was captured already (a rerun after a kill)."""
        if self.kind == CAPTURE_KIND:
            return (self.into / (self.set_id + SET_SUFFIX)).exists()
        from .imageset import exists
        return exists(spool, self.set_id)


def is_requested(group):
    return all(e.get("source") in REQUESTED_SOURCES for e in group)


def split(claimed):
    """``(requested, motion)``: the events a person asked for (the push button), and the rest."""
    requested = [e for e in claimed if e.get("source") in REQUESTED_SOURCES]
    return requested, [e for e in claimed if e.get("source") not in REQUESTED_SOURCES]


def groups(claimed, cooldown_s):
    """Events coalesced into captures (seccam.events.coalesce), a person's requests never
    merged with motion, in time order."""
    requested, motion = split(claimed)
    out = events.coalesce(motion, cooldown_s) + events.coalesce(requested, cooldown_s)
    return sorted(out, key=lambda g: g[0]["ts"])


def route(config, spool, group, armed_since=None):
    """Decide where the capture of ``group`` goes (call under the capture lock). Reads only.

    A group that starts a new incident closes the open one first (``closes``):
    at most one incident is open, and an incident never absorbs motion after
    its gap, nor motion after the camera was armed again (``armed_since``,
    seccam.armed.armed_since: whoever arms it expects an alarm). The caller
    does that bookkeeping with :func:`during_capture` and :func:`after_capture`.
    """
    name = group[0]["_path"].name.removesuffix(".json")
    if is_requested(group) or config.incident.gap_s <= 0:
        return Route("alarm", f"{name}-alarm")
    inc = current(spool)
    if inc is not None:
        if inc.name == name:  # this group opened it: a rerun after a kill
            return Route("alarm", f"{name}-alarm", opens=name)
        last = load(inc, captures=False).last_motion
        if armed_since is not None and last < armed_since:
            return Route("alarm", f"{name}-alarm", opens=name, closes=inc, why="armed again")
        if group[0]["ts"] - last < config.incident.gap_s:
            return Route(CAPTURE_KIND, f"{name}-{CAPTURE_KIND}", into=inc)
        return Route("alarm", f"{name}-alarm", opens=name, closes=inc)
    return Route("alarm", f"{name}-alarm", opens=name)


def _bookkeeping(spool, route, group, now):
    """Close the stale incident and open the new one of an alarm's route (idempotent)."""
    if route.closes is not None and route.closes.exists():
        close(spool, route.closes, route.why)
    if route.opens:
        open_incident(spool, route.opens, group, now)


def during_capture(spool, route, group, now, then=None):
    """A ``while_waiting`` hook for the capture (seccam.camera.capture_all): the incident's
    bookkeeping (a few fsyncs) runs while the cameras expose, so that it costs the first
    alarm nothing; then ``then`` (the capture job's GnuPG prewarm), whatever happened."""
    def hook():
        try:
            _bookkeeping(spool, route, group, now)
        finally:
            if then is not None:
                then()
    return hook


def after_capture(config, spool, route, group, now):
    """After the group's set is published (or found from a killed run): finish the alarm's
    bookkeeping if the hook did not run, or make an update when one is due. Returns the
    sets it put into sets/ready."""
    if route.kind == CAPTURE_KIND:
        return update_if_due(config, spool, route.into)
    _bookkeeping(spool, route, group, now)
    return []


def open_incident(spool, incident_id, group, now):
    """Publish ``incidents/open/ID/`` with its record (idempotent: a rerun finds it)."""
    for state in ("incidents.open", "incidents.closing", "incidents.closed"):
        if (spool.dir(state) / incident_id).exists():
            return spool.dir(state) / incident_id
    tmp = spool.make_tmp_dir(CAPTURE_TMP_SUFFIX)
    record = {"version": VERSION, "id": incident_id, "started_ts": group[0]["ts"],
              "started": events.iso(group[0]["ts"]), "created": events.iso(now), "alarm_set": f"{incident_id}-alarm",
              "events": [_public(e) for e in group]}
    (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    path = spool.publish_into(tmp, spool.dir("incidents.open"), incident_id)
    log.info("incident=%s state=incidents.open started=%s", incident_id, record["started"])
    checkpoint("incident.opened")
    return path


def _public(event):
    return {k: v for k, v in event.items() if not k.startswith("_") and k != "ts"}


def close(spool, path, why):
    """open -> closing: the incident takes no more captures; jobs/incident summarises it."""
    dest = spool.move(path, "incidents.closing")
    if dest is not None:
        log.info("incident=%s state=incidents.closing reason=%r", Path(path).name, why)
    return dest


def close_stale(config, spool, now):
    """Close every open incident whose gap has passed (call under the capture lock).

    Not while a motion event is waiting to be captured: it may belong to the
    incident (the capture job routes it and closes the incident if not).
    """
    if spool.items("events.new") or spool.items("events.active"):
        return []
    closed = []
    items = [p for p in spool.items("incidents.open") if p.is_dir()]
    for i, path in enumerate(items):
        newest = i == len(items) - 1
        gap = config.incident.gap_s
        if newest and gap > 0 and now - load(path, captures=False).last_motion < gap:
            continue
        if close(spool, path, "gap passed" if gap > 0 else "incidents turned off") is not None:
            closed.append(path.name)
    return closed


# -- updates ---------------------------------------------------------------------------
def update_set_id(incident_id, number):
    return f"{incident_id}-update{number:03d}"


def _write_json(spool, directory, name, obj, tmp_suffix=CAPTURE_TMP_SUFFIX):
    """Publish ``obj`` as ``directory/name``: written in tmp/, fsynced, renamed."""
    from .durable import write_all
    from .spool import unique_name
    tmp = spool.dir("tmp") / unique_name(tmp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        write_all(fd, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return spool.publish_into(tmp, directory, name)


def _hand_over_updates(spool, path):
    """Record every update set kept in the incident (``update-NNN.set``) and hand it to the
    encrypt step; a killed run leaves one at any of these steps. Returns the sets handed over."""
    out = []
    for name in sorted(os.listdir(path)):
        if not (name.startswith(UPDATE_PREFIX) and name.endswith(SET_SUFFIX)):
            continue
        kept = path / name
        try:
            meta = read_json(kept / "meta.json")
            update = meta["update"]
            record = {"version": VERSION, "n": int(update["n"]), "time": float(update["time"]),
                      "capture": str(update["capture"]), "events": int(update["events"]), "set": str(meta["id"])}
        except (OSError, SpoolFormatError, KeyError, TypeError, ValueError):
            spool.set_aside(kept, "unreadable incident update set")
            log.error("incident=%s update=%s state=corrupt", path.name, name)
            continue
        recorded = f"{UPDATE_PREFIX}{record['n']:03d}.json"
        if not (path / recorded).exists():
            _write_json(spool, path, recorded, record)
            checkpoint("incident.update-recorded")
        dest = spool.move(kept, "sets.ready", record["set"] + SET_SUFFIX)
        if dest is not None:
            log.info("incident=%s set=%s kind=update state=sets.ready", path.name, record["set"])
            out.append(dest)
    return out


def update_due(config, inc):
    """The capture the next update of ``inc`` should show, or None if none is due."""
    if not inc.captures:
        return None
    newest = inc.captures[-1]
    done = len(inc.updates)
    last = inc.updates[-1].get("time") if done else inc.started
    if done and inc.updates[-1].get("capture") == newest.name:
        return None  # nothing new to show
    if not isinstance(last, (int, float)):
        last = inc.started
    pace = config.incident.update_pace_s
    return newest if newest.created >= last + pace[min(done, len(pace) - 1)] else None


def update_if_due(config, spool, path):
    """Make the next update of the open incident at ``path`` if its time has come (call under
    the capture lock); return the update sets now in sets/ready (a killed run's included)."""
    handed = _hand_over_updates(spool, path)
    inc = load(path)
    newest = update_due(config, inc)
    if newest is None:
        return handed
    number = len(inc.updates) + 1
    set_id = update_set_id(inc.id, number)
    count = len(inc.all_events())
    place = _place(config)
    text = [f"Motion continues at {place}: {count} event{'' if count == 1 else 's'} since {_hm(inc.started)}.",
            f"Picture: {_hms(newest.created)}."]
    text += [f"Camera {c['name']} failed: {c.get('error') or 'unknown error'}" for c in newest.cameras
             if not c.get("ok")]
    text.append("Every picture will be on the summary when the motion has stopped for "
                f"{_duration(config.incident.gap_s)}.")
    tiles = _tiles(config, newest, label_camera=True)
    tmp = spool.make_tmp_dir(CAPTURE_TMP_SUFFIX)
    messages = [{"subject": "Motion continues", "text": "\n".join(text), "camera": "all", "image": None}]
    if any(t.missing is None for t in tiles):
        from . import sheet
        title = [f"{place}: motion continues, {count} events since {_hm(inc.started)}"]
        rendered = sheet.render(tiles, title, max_tile=UPDATE_MAX_TILE, columns=min(len(tiles), UPDATE_COLUMNS))
        (tmp / "update.jpg").write_bytes(rendered.jpeg(quality=85))
        messages[0]["image"] = "update.jpg"
    meta = {"version": 1, "kind": "update", "id": set_id, "created": events.iso(newest.created), "events": [],
            "cameras": [], "incident": inc.id, "messages": messages,
            "update": {"n": number, "time": newest.created, "capture": newest.name, "events": count}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    spool.publish_into(tmp, path, f"{UPDATE_PREFIX}{number:03d}{SET_SUFFIX}")
    log.info("incident=%s update=%d events=%d capture=%s", inc.id, number, count, newest.name)
    checkpoint("incident.update-built")
    return handed + _hand_over_updates(spool, path)


def recover(spool):
    """Start of a capture run, under the capture lock: remove what a killed run of this
    module left in tmp/ (nothing there belongs to a live process now)."""
    spool.clean_tmp(CAPTURE_TMP_SUFFIX)


# -- the summary --------------------------------------------------------------------
def _place(config):
    return config.account.display_name if config.account is not None else "the camera"


def _local(ts):
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).astimezone()


def _hm(ts):
    return _local(ts).strftime("%H:%M")


def _hms(ts):
    return _local(ts).strftime("%H:%M:%S")


def _day(ts):
    return _local(ts).strftime("%Y-%m-%d")


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    return f"{seconds} s"


def _camera_order(config, captures):
    names = [c.name for c in config.cameras]
    for cap in captures:
        for cam in cap.cameras:
            if cam["name"] not in names:
                names.append(cam["name"])
    return names


def _entry(config, cap, name):
    """The camera entry ``name`` of ``cap``; for a capture whose meta.json is unreadable,
    one made up from the files in it."""
    for cam in cap.cameras:
        if cam["name"] == name:
            return cam
    if cap.readable:
        return None
    full, preview = cap.path / f"{name}.jpg", cap.path / f"{name}.preview.jpg"
    if full.exists() or preview.exists():
        return {"name": name, "ok": True, "full": full.name, "preview": preview.name}
    return None


def _tile(cap, cam, label):
    from .sheet import Tile
    if not cam.get("ok"):
        return Tile(label, missing=str(cam.get("error") or "camera failed"))
    full = cap.path / cam["full"] if isinstance(cam.get("full"), str) else None
    preview = cap.path / cam["preview"] if isinstance(cam.get("preview"), str) else None
    if not any(p is not None and p.exists() for p in (full, preview)):
        return Tile(label, missing="pictures pruned (spool budget)")
    return Tile(label, full if full is not None and full.exists() else None,
                preview if preview is not None and preview.exists() else None)


def _tiles(config, cap, label_camera=False):
    out = []
    for name in _camera_order(config, [cap]):
        cam = _entry(config, cap, name)
        if cam is not None:
            out.append(_tile(cap, cam, f"{name} {_hms(cap.created)}" if label_camera else _hms(cap.created)))
    return out


def _chunks(items, size):
    if not items:
        return []
    count = math.ceil(len(items) / size)
    per = math.ceil(len(items) / count)
    return [items[i:i + per] for i in range(0, len(items), per)]


def plan_sheets(config, inc):
    """[(camera, [Capture, ...]), ...]: one sheet per camera, split so that none holds more
    than ``sheet_max`` thumbnails; every capture in which the camera appears, in time order."""
    out = []
    for name in _camera_order(config, inc.captures):
        caps = [c for c in inc.captures if _entry(config, c, name) is not None]
        out += [(name, chunk) for chunk in _chunks(caps, config.incident.sheet_max)]
    return out


def _sensor_text(all_events):
    pins, triggers = [], 0
    for ev in all_events:
        if ev.get("source") == "trigger":
            triggers += 1
        for s in ev.get("sensors") or []:
            if isinstance(s, dict) and s.get("pin") not in pins:
                pins.append(s.get("pin"))
    parts = []
    if pins:
        parts.append("motion sensors on GPIO " + ", ".join(str(p) for p in sorted(pins, key=str)))
    if triggers:
        parts.append(f"test alarm (seccam trigger) x{triggers}")
    return "; ".join(parts) or "none recorded"


def _camera_text(config, inc):
    parts = []
    for name in _camera_order(config, inc.captures):
        entries = [e for e in (_entry(config, c, name) for c in inc.captures) if e is not None]
        ok = sum(1 for e in entries if e.get("ok"))
        failed = [e for e in entries if not e.get("ok")]
        if not entries:
            continue
        text = f"{name} {ok} picture{'' if ok == 1 else 's'}"
        if failed:
            text += f", failed {len(failed)}x ({failed[-1].get('error') or 'unknown error'})"
        parts.append(text)
    return "; ".join(parts) or "no picture after the first alarm"


def summary_messages(config, inc, sheets):
    """The closing set's messages: the summary text with the first sheet, a caption with each other."""
    all_events = inc.all_events()
    count = len(all_events)
    end = inc.last_motion
    pictures = sum(len(caps) for _, caps in sheets)
    head = [f"Motion ended at {_place(config)}.",
            f"Incident {_day(inc.started)} {_hms(inc.started)} to {_hms(end)} ({_duration(end - inc.started)}): "
            f"{count} motion event{'' if count == 1 else 's'}, {len(inc.captures) + 1} capture(s).",
            f"Sensors: {_sensor_text(all_events)}.",
            f"Cameras: {_camera_text(config, inc)}.",
            f"Updates: {len(inc.updates)}."]
    if sheets:
        head.append(f"Every picture after the first alarm is on the {len(sheets)} sheet"
                    f"{'' if len(sheets) == 1 else 's'} ({pictures} in all); the full-size pictures stay on "
                    f"the camera for {config.events_keep_days} day(s) (spool incidents/closed/{inc.id}).")
    else:
        head.append("No picture after the first alarm.")
    subject = f"Incident ended: {_duration(end - inc.started)}, {count} event{'' if count == 1 else 's'}"
    messages = []
    for i, (name, caps) in enumerate(sheets):
        caption = (f"Sheet {i + 1} of {len(sheets)}: {name}, {len(caps)} capture{'' if len(caps) == 1 else 's'}, "
                   f"{_hms(caps[0].created)} to {_hms(caps[-1].created)}.")
        if i == 0:
            messages.append({"subject": subject, "text": "\n".join(head + ["", caption]), "camera": name})
        else:
            messages.append({"subject": f"Incident sheet {i + 1} of {len(sheets)}", "text": caption, "camera": name})
    if not messages:
        messages.append({"subject": subject, "text": "\n".join(head), "camera": "all"})
    return messages


def build_summary(config, spool, inc):
    """The closing set, built in a new directory under tmp/; return its path."""
    from . import sheet
    sheets = plan_sheets(config, inc)
    messages = summary_messages(config, inc, sheets)
    tmp = spool.make_tmp_dir(SUMMARY_TMP_SUFFIX)
    layout = []
    for i, (name, caps) in enumerate(sheets):
        span = f"{_day(caps[0].created)} {_hms(caps[0].created)} to {_hms(caps[-1].created)}"
        title = [f"{_place(config)}: {name}, {len(caps)} capture{'' if len(caps) == 1 else 's'}",
                 f"{span}   sheet {i + 1} of {len(sheets)}"]
        tiles = [_tile(c, _entry(config, c, name), _hms(c.created)) for c in caps]
        rendered = sheet.render(tiles, title)
        file = f"sheet-{i + 1:02d}.jpg"
        (tmp / file).write_bytes(rendered.jpeg())
        messages[i]["image"] = file
        layout.append({"file": file, "camera": name, "captures": [c.name for c in caps],
                       "columns": rendered.columns, "shown": rendered.shown})
    for m in messages:
        m.setdefault("image", None)
    meta = {"version": 1, "kind": "closing", "id": f"{inc.id}-closing", "created": events.iso(inc.last_motion),
            "events": [], "cameras": [], "incident": inc.id, "messages": messages, "sheets": layout,
            "summary": {"started": events.iso(inc.started), "ended": events.iso(inc.last_motion),
                        "events": len(inc.all_events()), "captures": len(inc.captures) + 1,
                        "updates": len(inc.updates)}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return tmp


def summarise(config, spool, path):
    """closing/ID -> closed/ID with its closing set handed to the encrypt step; return the
    set's path in sets/ready. Each step is one rename; a rerun finishes a killed one."""
    path = Path(path)
    if not (path / CLOSING_SET).exists():
        # Update sets a killed capture run left behind are superseded by the summary.
        for name in os.listdir(path):
            if name.startswith(UPDATE_PREFIX) and name.endswith(SET_SUFFIX):
                spool.remove(path / name)
        inc = load(path)
        tmp = build_summary(config, spool, inc)
        checkpoint("incident.summary-built")
        # Which capture is on which sheet stays with the captures (the set leaves for the outbox).
        meta = read_json(tmp / "meta.json")
        _write_json(spool, path, SUMMARY, {k: meta[k] for k in ("id", "incident", "sheets", "summary")},
                    SUMMARY_TMP_SUFFIX)
        spool.publish_into(tmp, path, CLOSING_SET)
        log.info("incident=%s summary=built events=%d captures=%d", inc.id, len(inc.all_events()),
                 len(inc.captures))
        checkpoint("incident.summarised")
    dest = spool.move(path, "incidents.closed")
    if dest is None:  # pragma: no cover - only this job, under its lock, moves closing incidents
        return None
    log.info("incident=%s state=incidents.closed", path.name)
    checkpoint("incident.closed")
    return hand_over_summary(spool, dest)


def hand_over_summary(spool, path):
    kept = Path(path) / CLOSING_SET
    if not kept.exists():
        return None
    set_id = f"{Path(path).name}-closing"
    dest = spool.move(kept, "sets.ready", set_id + SET_SUFFIX)
    if dest is not None:
        log.info("incident=%s set=%s kind=closing state=sets.ready", Path(path).name, set_id)
    return dest


def prune_closed(config, spool, now):
    """Remove closed incidents whose last motion is older than events_keep_days."""
    limit = now - config.events_keep_days * DAY
    removed = []
    for path in spool.items("incidents.closed"):
        if (path / CLOSING_SET).exists() or load(path, captures=False).last_motion >= limit:
            continue
        spool.remove(path)
        removed.append(path.name)
        log.info("incident=%s state=removed reason=events_keep_days", path.name)
    return removed


# -- what status and the heartbeat show ----------------------------------------------
def describe(config, spool, now):
    """The current incident and the kept ones, for ``seccam status`` and the heartbeat (read-only)."""
    out = {"open": None, "closing": len(spool.items("incidents.closing")),
           "closed": len(spool.items("incidents.closed")), "gap_s": config.incident.gap_s}
    path = current(spool)
    if path is not None:
        inc = load(path)
        last_update = inc.updates[-1].get("time") if inc.updates else None
        out["open"] = {"id": inc.id, "since": events.iso(inc.started), "events": len(inc.all_events()),
                       "captures": len(inc.captures) + 1, "updates": len(inc.updates),
                       "last_update": events.iso(last_update) if isinstance(last_update, (int, float)) else None,
                       "last_motion": events.iso(inc.last_motion),
                       "ends": events.iso(inc.last_motion + config.incident.gap_s)}
    kept = 0
    for state in ("incidents.open", "incidents.closing", "incidents.closed"):
        for p in spool.items(state):
            kept += len(_captures(_listing(p)))
    out["kept_captures"] = kept
    return out


def status_text(info):
    """One line for the heartbeat, or None without an open incident."""
    inc = info and info.get("open")
    if not inc:
        return None
    since = _hm(events.parse_iso(inc["since"]))
    last = _hm(events.parse_iso(inc["last_update"])) if inc.get("last_update") else "none yet"
    return (f"Incident in progress since {since}: {inc['events']} motion events, {inc['updates']} update(s) "
            f"sent (last {last}).")


# -- jobs/incident ------------------------------------------------------------------
def process(config, spool, now=time.time):
    """Close stale incidents, summarise closing ones, prune old ones; return the closing sets made.

    Raises LockBusy when another jobs/incident runs (it does all of this)."""
    spool.ensure()
    made = []
    with spool.lock("incident", timeout_s=0):
        spool.clean_tmp(SUMMARY_TMP_SUFFIX)      # a killed run's half-drawn sheets: ours, we hold the lock
        try:
            with spool.lock("capture", timeout_s=CAPTURE_LOCK_WAIT_S):
                close_stale(config, spool, now())
        except LockBusy:
            log.info("step=close state=skipped reason=capture-job-running")
        for path in spool.items("incidents.closed"):
            handed = hand_over_summary(spool, path)   # a killed run's leftover
            if handed is not None:
                made.append(handed)
        for path in spool.items("incidents.closing"):
            done = summarise(config, spool, path)
            if done is not None:
                made.append(done)
        prune_closed(config, spool, now())
    return made


def work(config, args):
    from .spool import Spool
    try:
        os.nice(10)  # drawing sheets must never slow down a new alarm's capture and encryption
    except OSError:  # pragma: no cover - the unit's system call filter forbids it; its Nice=10 did it already
        pass
    spool = Spool(config.spool_dir)
    try:
        made = process(config, spool)
    except LockBusy:
        log.info("state=skipped reason=another-incident-job-running")
        return 0
    if made and not args.no_encrypt:
        from .capture import hand_to_encrypt
        return hand_to_encrypt(config, spool)
    return 0


def _add_arguments(parser):
    parser.add_argument("--no-encrypt", action="store_true",
                        help="only summarise; leave the sets in sets/ready (jobs/send encrypts them)")


def main(argv=None):
    from .runtime import job_main
    return job_main("seccam-incident", "End incidents whose gap has passed and send their summary sheets.",
                    work, argv, _add_arguments)
