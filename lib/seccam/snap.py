"""A person asks for pictures now (``/snap`` in the chat): ``requests/new -> requests/active -> removed``.

The inbox job turns an authenticated ``/snap`` into a *request*; the capture
job, which alone opens the cameras (under systemd the inbox's sandbox has no
devices at all), claims it under the ``capture`` lock, captures the cameras it
names and publishes an image set of kind ``snap``. seccam.encrypt sends that
like an alarm (every preview first, then every full image), marked as
requested by whom, into the chat the command came from. ``seccam-capture.path``
starts the capture job as soon as a request is queued, as it does for motion;
cron's once-a-minute capture line is the safety net.

A request is not motion: it is never coalesced with motion events, never part
of an incident (its set kind is ``snap``, never ``alarm``), not counted as
motion by ``seccam status``, and it is captured while the camera is disarmed
(a person asked, and the chat sees who).

Format (``requests/new/<unique>.json``, written once by seccam.control)::

    {"version": 1, "kind": "snap", "time": "2026-12-01T16:18:54.123456+00:00",
     "by": "owner@example.org", "cameras": ["front"],        # null: every camera
     "to": null,                                             # or the address of a 1:1 chat
     "command": "/snap front"}

Requests claimed together that ask for the same cameras for the same chat
become one capture, requested by all of them (three taps on /snap, one set of
pictures). The set's ``events`` are those requests.

Kill safety: the set's ID is the first request's name + ``-snap``. A run killed
after publishing the set but before removing its requests finds the set
(seccam.imageset.exists) and only removes them; a run killed before that
captures again: the start-up scan (:func:`recover`) returns what a dead run
had claimed to ``requests/new``.
"""

import logging

from . import events
from .faults import checkpoint
from .spool import SpoolFormatError, read_json

log = logging.getLogger("seccam.snap")

VERSION = 1
KIND = "snap"
SUFFIX = "-snap"


def request(spool, by, cameras=None, to=None, command="/snap", now=None):
    """Queue a request for pictures from ``cameras`` (None: all) for the chat ``to``; return its path."""
    import time
    now = time.time() if now is None else now
    spool.ensure()
    obj = {"version": VERSION, "kind": KIND, "time": events.iso(now), "by": by,
           "cameras": list(cameras) if cameras else None, "to": to, "command": command[:200]}
    return spool.write_json("requests.new", obj)


def load(path):
    """Read and check a request; SpoolFormatError says what is wrong."""
    obj = read_json(path)
    if obj.get("version") != VERSION or obj.get("kind") != KIND:
        raise SpoolFormatError(f"{path.name}: not a version {VERSION} snap request")
    if not isinstance(obj.get("by"), str) or "@" not in obj["by"]:
        raise SpoolFormatError(f"{path.name}: no requester")
    cameras = obj.get("cameras")
    if cameras is not None and not (isinstance(cameras, list) and all(isinstance(c, str) for c in cameras)):
        raise SpoolFormatError(f"{path.name}: cameras is not a list of names")
    if obj.get("to") is not None and not isinstance(obj["to"], str):
        raise SpoolFormatError(f"{path.name}: to is not an address")
    try:
        events.parse_iso(obj["time"])
    except (KeyError, TypeError, ValueError):
        raise SpoolFormatError(f"{path.name}: missing or invalid time") from None
    return obj


def recover(spool):
    """Start-up scan, under the capture lock: requests a dead run had claimed go back to new/."""
    returned = spool.recover("requests.active", "requests.new")
    if returned:
        log.warning("recovered=%d state=requests.new reason=interrupted-run", len(returned))
    return returned


def claim_all(spool):
    """Claim every waiting request, oldest first; unreadable ones go to corrupt/."""
    claimed = []
    for path in spool.items("requests.new"):
        mine = spool.claim(path, "requests.active")
        if mine is None:  # pragma: no cover - race: only the capture job claims, under its lock
            continue
        try:
            req = load(mine)
        except (SpoolFormatError, OSError) as exc:
            spool.set_aside(mine, f"unreadable snap request: {exc}")
            log.error("request=%s state=corrupt reason=%r", mine.name, str(exc))
            continue
        req["_path"] = mine
        claimed.append(req)
    return claimed


def groups(requests):
    """Requests for the same cameras and the same chat, in the order they came."""
    out = {}
    for req in requests:
        key = (tuple(sorted(req["cameras"])) if req.get("cameras") else None, req.get("to"))
        out.setdefault(key, []).append(req)
    return list(out.values())


def capture_all(config, spool, now, while_waiting=None):
    """Capture every waiting request (call under the capture lock); return the published set paths."""
    published = []
    for group in groups(claim_all(spool)):
        path = capture(config, spool, group, now(), while_waiting)
        while_waiting = None
        if path is not None:
            published.append(path)
    return published


def capture(config, spool, group, now, while_waiting=None):
    """One capture for a group of requests; return the set's path (None if it existed already)."""
    import dataclasses
    from . import imageset
    set_id = group[0]["_path"].name.removesuffix(".json") + SUFFIX
    path = None
    if imageset.exists(spool, set_id):
        log.info("set=%s already captured; removing its requests", set_id)
    else:
        wanted = group[0].get("cameras")
        cameras = tuple(c for c in config.cameras if not wanted or c.name in wanted)
        public = [{k: v for k, v in req.items() if not k.startswith("_")} for req in group]
        path, _ = imageset.capture(dataclasses.replace(config, cameras=cameras), spool, KIND, set_id, public,
                                   now=now, while_waiting=while_waiting)
        checkpoint("snap.published")
    for req in group:
        spool.remove(req["_path"])
        log.info("request=%s by=%s state=removed set=%s", req["_path"].name, req["by"], set_id)
    return path
