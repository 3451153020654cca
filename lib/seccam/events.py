"""Motion events: the tiny files the poller and ``seccam trigger`` publish.

An event says that motion was seen, when, and which inputs fired. It is the
only thing the resident poller ever writes, so it must be cheap (one small
file, one rename) and must succeed even when the spool is nearly full.

Format (JSON, ``events/new/<unique>.json``)::

    {"version": 1, "kind": "motion", "source": "pir" | "button" | "trigger",
     "time": "2026-11-25T19:11:00.123456+00:00",
     "sensors": [{"pin": 17, "active_at": "2026-11-25T19:10:59.900000+00:00"}, ...],
     "host": "pi"}
"""

import datetime as _dt
import os
import socket

from .spool import SpoolFormatError, read_json, unique_name

VERSION = 1
SOURCES = ("pir", "button", "trigger")


def iso(ts):
    """UTC ISO-8601 string for a POSIX timestamp."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()


def parse_iso(text):
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {text}")
    return value.timestamp()


def record(spool, source, sensors=(), when=None):
    """Publish one motion event; return its path. ``sensors`` is ``[(pin, active_at_ts), ...]``."""
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
    # Named by the motion's time, so the spool lists events in the order they happened.
    return spool.write_json("events.new", event, name=unique_name(".json", now_ns=int(when * 1e9)))


def load(path):
    """Read and check an event file; return a dict with ``ts`` (POSIX time) added.

    Raises SpoolFormatError saying what is wrong; the caller sets the file aside.
    """
    event = read_json(path)
    if event.get("version") != VERSION or event.get("kind") != "motion":
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
