"""Motion events: the tiny files the poller and ``seccam trigger`` publish.

An event says that motion was seen, when, and which inputs fired. It is the
only thing the resident poller ever writes, so it must be cheap (one small
file, one rename) and must succeed even when the spool is nearly full.

Format (JSON, ``events/new/<unique>.json``)::

    {"version": 1, "kind": "motion", "source": "pir" | "button" | "trigger",
     "time": "2026-11-25T19:11:00.123456+00:00",
     "sensors": [{"pin": 17, "active_at": "2026-11-25T19:10:59.900000+00:00"}, ...],
     "early": "<name of the early event this coincidence confirms>" (optional),
     "host": "pi"}

An *early* event (``early/new/<unique>.json``) is the first PIR edge
of a possible coincidence: not motion yet, a hint that lets the capture job
start the cameras before the second PIR confirms (docs/spool.md, "Early
capture")::

    {"version": 1, "kind": "early", "source": "pir", "time": ISO,
     "sensors": [{"pin": 17, "active_at": ISO}], "confirm_by": ISO, "host": "pi"}
"""

import datetime as _dt
import os
import socket

from .spool import SpoolFormatError, read_json

VERSION = 1
SOURCES = ("pir", "button", "trigger")
KINDS = ("motion", "early")


def iso(ts):
    """UTC ISO-8601 string for a POSIX timestamp."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()


def parse_iso(text):
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text}")
    return value.timestamp()


def record(spool, source, sensors=(), when=None, early=None):
    """Publish one motion event; return its path. ``sensors`` is ``[(pin, active_at_ts), ...]``;
    ``early`` the name of the early event it confirms."""
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}")
    import time
    when = time.time() if when is None else when
    event = {
        "version": VERSION,
        "kind": "motion",
        "source": source,
        "time": iso(when),
        "sensors": [{"pin": pin, "active_at": iso(at)} for pin, at in sensors],
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if early:
        event["early"] = early
    return spool.write_json("events.new", event, name=None)


def record_early(spool, pin, active_at, confirm_by):
    """Publish an early event: PIR ``pin`` rose at ``active_at``; a confirming coincidence can
    come until ``confirm_by`` (POSIX times). Return its path."""
    event = {
        "version": VERSION,
        "kind": "early",
        "source": "pir",
        "time": iso(active_at),
        "sensors": [{"pin": pin, "active_at": iso(active_at)}],
        "confirm_by": iso(confirm_by),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    return spool.write_json("early.new", event)


def load(path):
    """Read and check an event file; return a dict with ``ts`` (POSIX time) added.

    Raises SpoolFormatError saying what is wrong; the caller sets the file aside.
    """
    event = read_json(path)
    if event.get("version") != VERSION or event.get("kind") not in KINDS:
        raise SpoolFormatError(f"{path.name}: not a version {VERSION} motion event")
    if event.get("source") not in SOURCES:
        raise SpoolFormatError(f"{path.name}: unknown source {event.get('source')!r}")
    try:
        event["ts"] = parse_iso(event["time"])
    except (KeyError, TypeError, ValueError):
        raise SpoolFormatError(f"{path.name}: missing or invalid time") from None
    sensors = event.get("sensors", [])
    if not isinstance(sensors, list) or not all(isinstance(s, dict) and isinstance(s.get("pin"), int)
                                                for s in sensors):
        raise SpoolFormatError(f"{path.name}: invalid sensors list")
    if event["kind"] == "early":
        try:
            event["confirm_ts"] = parse_iso(event["confirm_by"])
        except (KeyError, TypeError, ValueError):
            raise SpoolFormatError(f"{path.name}: early event without a valid confirm_by") from None
    elif "early" in event and not isinstance(event["early"], str):
        raise SpoolFormatError(f"{path.name}: early is not an event name")
    return event


def coalesce(events, window_s):
    """Group events (sorted by time) whose gaps are at most ``window_s``: one capture per group."""
    groups = []
    for event in sorted(events, key=lambda e: e["ts"]):
        if groups and event["ts"] - groups[-1][-1]["ts"] <= window_s:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups
