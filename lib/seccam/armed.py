"""The armed state: whether motion makes alarms, who changed that last, and until when.

Disarmed, the camera still records every motion event (``seccam status`` and
the heartbeat count them), but the capture job takes no pictures for them and
nothing is sent; heartbeats go on and say "disarmed until ...". A person's
``/snap`` is not motion: it works armed or not.

This module owns ``state/armed.json`` in the spool::

    {"version": 1, "armed": false, "until": 1796184000.0,   # null: until someone arms it
     "by": "owner@example.org", "via": "chat",               # or "shell"
     "changed": 1796141934.0, "id": "20261201T161854.123456Z.812.a1b2c3d4",
     "announced": true}

No file means armed: a fresh camera is armed. A disarm whose ``until`` has
passed counts as armed at once, without anybody rewriting the file: no job has
to run at that instant (the capture job asks :func:`is_armed`). The inbox job,
which runs every minute, then records and announces the end of the disarm
(:func:`expire`, ``via: "timer"``), so the chat reads "Armed again" within a
minute.

One owner per transition: :func:`change` (the inbox job for a chat command,
``seccam arm``/``disarm`` from the shell or the crontab) runs under the spool
lock ``armed``. It writes the new state (``announced: false``), publishes the
announcement to every recipient (a reply set ``<id>-reply``, seccam.replies),
then writes the state again with ``announced: true``; each write replaces the
file atomically (seccam.spool.Spool.write_state). A run killed between the
first write and the last leaves an announcement pending: :func:`announce_pending`
(every inbox pass and every change) publishes it, unless it is still queued.
If it had been sent already, the copy carries the same Message-ID and Delta
Chat shows it once. So every change of the armed state is announced, and the
state never changes without it.

Readers (the capture job, status, the heartbeat) read without the lock: the
file is replaced atomically. A damaged file counts as armed (a security camera
fails armed) and is reported; the next change moves it to ``corrupt/``.
"""

import dataclasses
import logging
import re
import time

from .faults import checkpoint

log = logging.getLogger("seccam.armed")

VERSION = 1
STATE = "armed"
LOCK = "armed"
LOCK_TIMEOUT_S = 30
MAX_DURATION_S = 366 * 86400
_DURATION_RE = re.compile(r"^(?:(\d{1,3})d)?(?:(\d{1,4})h)?(?:(\d{1,6})m(?:in)?)?$")
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3])(?::([0-5]\d))?$")


class BadTime(ValueError):
    """A duration or a time of day that cannot be read; ``str()`` says what is accepted."""


@dataclasses.dataclass(frozen=True)
class State:
    armed: bool = True
    until: float | None = None       # disarmed until then (POSIX); None: until someone arms
    by: str | None = None            # who changed it: a recipient's address, or "the camera's shell (user x)"
    via: str | None = None           # "chat" | "shell"
    changed: float | None = None
    id: str | None = None            # the transition's ID; its announcement is ``<id>-reply``
    announced: bool = True
    expired: bool = False            # a disarm whose time has passed (armed again)
    error: str | None = None         # state/armed.json could not be read (counted as armed)

    def as_json(self):
        return {"armed": self.armed, "until": _iso(self.until), "by": self.by, "via": self.via,
                "changed": _iso(self.changed), "expired": self.expired, "error": self.error}

    def text(self):
        """One sentence for status, the heartbeat and /status."""
        if self.error:
            return f"Armed (the armed state could not be read: {self.error}; it counts as armed)."
        if self.armed:
            if self.expired:
                return f"Armed (the disarm by {self.by} ended at {clock(self.until)})."
            if self.via == "timer":
                return f"Armed (since {clock(self.changed)}, when the disarm by {self.by} ended)."
            if self.by:
                return f"Armed (since {clock(self.changed)}, by {self.by})."
            return "Armed."
        return (f"DISARMED {until_text(self.until)} (since {clock(self.changed)}, by {self.by}): "
                "motion is recorded, but no pictures are taken or sent.")


def _iso(ts):
    if ts is None:
        return None
    from .events import iso
    return iso(ts)


def clock(ts):
    """A local time for people: ``07:00`` today, ``Wed 07:00`` within a week, else with the date."""
    if ts is None:
        return "?"
    import datetime as _dt
    when = _dt.datetime.fromtimestamp(ts).astimezone()
    today = _dt.datetime.now().astimezone().date()
    days = (when.date() - today).days
    if days == 0:
        return when.strftime("%H:%M")
    if -6 <= days <= 6:
        return when.strftime("%a %H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def until_text(until):
    return "until someone arms it again (/arm)" if until is None else f"until {clock(until)}"


# -- reading --------------------------------------------------------------------------
def read(spool):
    """The state as written (an expired disarm still disarmed), or the default if there is none."""
    from .spool import SpoolFormatError, read_json
    path = spool.dir("state") / f"{STATE}.json"
    try:
        obj = read_json(path)
    except FileNotFoundError:
        return State()
    except (SpoolFormatError, OSError) as exc:
        return State(error=str(exc))
    try:
        if obj.get("version") != VERSION or not isinstance(obj.get("armed"), bool):
            raise ValueError("not a version 1 armed state")
        until = obj.get("until")
        if until is not None and not isinstance(until, (int, float)):
            raise ValueError("until is not a time")
        return State(armed=obj["armed"], until=until, by=_str(obj.get("by")), via=_str(obj.get("via")),
                     changed=obj.get("changed") if isinstance(obj.get("changed"), (int, float)) else None,
                     id=_str(obj.get("id")), announced=obj.get("announced") is not False)
    except ValueError as exc:
        return State(error=f"{path.name}: {exc}")


def _str(value):
    return value if isinstance(value, str) else None


def current(spool, now=None):
    """The state in force at ``now``: a disarm whose time has passed counts as armed."""
    now = time.time() if now is None else now
    state = read(spool)
    if not state.armed and state.until is not None and state.until <= now:
        return dataclasses.replace(state, armed=True, expired=True)
    return state


def is_armed(spool, now=None):
    """True unless the camera is disarmed right now (the capture job's one question)."""
    return current(spool, now).armed


def armed_since(spool, now=None):
    """When the camera was armed again after its last disarm (POSIX time), or None: never
    disarmed, or disarmed now. Motion after it is a new incident (seccam.incident.route): a
    person who arms the camera expects an alarm for the next motion, not an update."""
    state = current(spool, now)
    if not state.armed or state.error or state.changed is None:
        return None
    return state.until if state.expired else state.changed


# -- durations ------------------------------------------------------------------------
def parse_duration(text):
    """Seconds in ``2h``, ``30m``, ``1h30m``, ``1d``, ``90min``; BadTime otherwise."""
    match = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groups()):
        raise BadTime(f"cannot read the duration {text!r}: say 30m, 2h, 1h30m or 1d")
    days, hours, minutes = (int(g or 0) for g in match.groups())
    seconds = days * 86400 + hours * 3600 + minutes * 60
    if not 0 < seconds <= MAX_DURATION_S:
        raise BadTime(f"the duration {text!r} must be more than 0 and at most 366 days")
    return seconds


def parse_clock(text, now):
    """The next time the camera's clock shows ``HH:MM`` (or ``HH``) after ``now`` (POSIX); BadTime otherwise."""
    match = _CLOCK_RE.match(text.strip())
    if not match:
        raise BadTime(f"cannot read the time {text!r}: say 07:00 (24-hour clock, the camera's time zone)")
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    today = time.localtime(now)
    for day in range(3):  # today, tomorrow; a third day only if a DST change swallowed the hour
        when = time.mktime((today.tm_year, today.tm_mon, today.tm_mday + day, hour, minute, 0, 0, 0, -1))
        if when > now:
            return when
    raise BadTime(f"the time {text!r} does not exist in the next days")  # pragma: no cover - DST gap twice


def parse_until(words, now):
    """``[]`` -> None (until armed); ``["2h"]``; ``["until", "07:00"]``; ``["07:00"]``. BadTime otherwise."""
    words = [w for w in words if w]
    if not words:
        return None
    if words[0].lower() in ("until", "till", "to") and len(words) == 2:
        return parse_clock(words[1], now)
    if len(words) == 1:
        if ":" in words[0]:
            return parse_clock(words[0], now)
        return now + parse_duration(words[0])
    raise BadTime(f"cannot read {' '.join(words)!r}: say /disarm, /disarm 2h or /disarm until 07:00")


# -- changing it ----------------------------------------------------------------------
def change(spool, armed, by, via, until=None, now=None):
    """Arm or disarm; return ``(state, changed)``. Nothing is written when the state in force
    already is the one asked for (same ``until``); otherwise the change is announced to every
    recipient (see the module docstring). Raises TemporaryError (lock, disk)."""
    from . import events
    from .spool import unique_name
    now = time.time() if now is None else now
    spool.ensure()
    with spool.lock(LOCK, timeout_s=LOCK_TIMEOUT_S):
        _announce_pending_locked(spool, now)
        old = current(spool, now)
        if old.error:
            path = spool.dir("state") / f"{STATE}.json"
            spool.set_aside(path, f"unreadable armed state, replaced by a change by {by}: {old.error}")
        elif old.armed == armed and (armed or old.until == until):
            return old, False
        new = State(armed=armed, until=None if armed else until, by=by, via=via, changed=now,
                    id=unique_name(now_ns=int(now * 1e9)), announced=False)
        _write(spool, new)
        log.info("event=%s by=%r via=%s until=%s id=%s", "armed" if armed else "disarmed", by, via,
                 events.iso(until) if until and not armed else "-", new.id)
        checkpoint("armed.changed")
        new = _announce(spool, new, now)
    return new, True


def expire(spool, now=None):
    """Record and announce that a disarm ran out (the state in force is armed already); True if it did."""
    from .spool import unique_name
    now = time.time() if now is None else now
    state = read(spool)
    if state.armed or state.until is None or state.until > now:
        return False  # the common case: no lock, one small read
    with spool.lock(LOCK, timeout_s=LOCK_TIMEOUT_S):
        state = read(spool)
        if state.armed or state.until is None or state.until > now:  # pragma: no cover - a change came first
            return False
        new = State(armed=True, by=state.by, via="timer", changed=state.until, id=unique_name(now_ns=int(now * 1e9)),
                    announced=False)
        _write(spool, new)
        log.info("event=armed by=%r via=timer reason=disarm-ended id=%s", state.by, new.id)
        _announce(spool, new, now)
    return True


def announce_pending(spool, now=None):
    """Publish the announcement of the last change if a killed run left it unpublished."""
    now = time.time() if now is None else now
    if read(spool).announced:
        return False  # the common case: no lock, one small read
    with spool.lock(LOCK, timeout_s=LOCK_TIMEOUT_S):
        return _announce_pending_locked(spool, now)


def _announce_pending_locked(spool, now):
    state = read(spool)
    if state.announced or state.error or state.id is None:
        return False
    _announce(spool, state, now)
    return True


def _announce(spool, state, now):
    from . import imageset, replies
    set_id = f"{state.id}{replies.SUFFIX}"
    if not imageset.exists(spool, set_id):
        replies.publish(spool, set_id, announcement(state), "Armed" if state.armed else "Disarmed", now=now)
        log.info("event=announced set=%s state=sets.ready", set_id)
    checkpoint("armed.announced")
    state = dataclasses.replace(state, announced=True)
    _write(spool, state)
    return state


def announcement(state):
    """What the whole chat reads when the armed state changes."""
    if state.armed and state.via == "timer":
        return f"Armed again: the disarm by {state.by} ended at {clock(state.changed)}. Motion alarms are on."
    if state.armed:
        return f"Armed by {state.by}: motion alarms are on."
    return (f"Disarmed by {state.by} {until_text(state.until)}: motion is recorded, but no pictures are taken "
            "or sent. Heartbeats go on. /arm arms it again.")


def _write(spool, state):
    spool.write_state(STATE, {"version": VERSION, "armed": state.armed, "until": state.until, "by": state.by,
                              "via": state.via, "changed": state.changed, "id": state.id,
                              "announced": state.announced})
