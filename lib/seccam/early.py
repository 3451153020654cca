"""Early capture: the cameras start at the first PIR edge, before motion is confirmed.

A USB webcam needs 1.5-2.5 s to open, settle and take a frame; a camera
module's warm-up is about a second. Waiting for the second PIR before
starting them puts that time after the confirmation, so no sequential
design can deliver a picture sooner than "second PIR + camera time". Early
capture moves it before: the poller publishes an *early event* at the first
PIR edge (``early/new``; :mod:`seccam.sensors` rule 6), the capture job
captures every camera at once, and then:

* **confirmed** - the motion event that confirms it (its ``early`` field
  names the early event) arrives by the early event's ``confirm_by`` (plus
  :data:`GRACE_S`): the frames are that motion event's alarm set, published
  at once under the motion event's usual set ID; the early event is noted in
  ``meta.json`` (``early``);
* **not confirmed** - nothing confirms it in time: the frames are deleted,
  never published, never encrypted, never sent; the early event is removed
  and no alarm is counted (one ``early=discarded`` log line says so);
* **superseded** - the confirming motion event was already waiting when the
  job claimed the early event (the job started late): the motion event is
  captured the usual way, the early event only removed;
* **late** - the early event's deadline had already passed when it was
  claimed (a run killed mid-way, whose early event the next run returned to
  ``early/new``): no capture for it; a confirming motion event, if any, is
  captured the usual way.

This module owns the transitions ``early/new -> early/active -> removed``,
always under the ``capture`` lock (held by :func:`seccam.capture.process`,
the only caller). The frames live in a ``tmp/*.set`` directory until they
are published or deleted, so a run killed at any instant leaves nothing a
reader could mistake for a set: the next run's start-up scan removes the
directory, returns the early event to ``early/new``, finds it late, and the
motion event (never lost: it is in ``events/``) is captured again.

Rate limiting (a PIR that fires alone all day must not keep the cameras
busy) is the poller's: it writes an early event only when its token bucket
allows (``[sensors] early_capture_burst`` / ``early_capture_refill_s``).
"""

import logging
import time

from . import events, imageset
from .faults import checkpoint
from .spool import SpoolFormatError

log = logging.getLogger("seccam.early")

#: How long after ``confirm_by`` a confirming event still counts: the poller writes it within
#: milliseconds of the second PIR edge; this covers a slow SD card's fsync.
GRACE_S = 0.5
#: How often events/new is looked at while waiting for the confirmation.
POLL_S = 0.02


def claim_all(spool):
    """Claim every early event, oldest first; unreadable ones are set aside. Return the loaded events."""
    claimed = []
    for path in spool.items("early.new"):
        mine = spool.claim(path, "early.active")
        if mine is None:  # pragma: no cover - race: only the capture job claims, under its lock
            continue
        try:
            event = events.load(mine)
            if event["kind"] != "early":
                raise SpoolFormatError(f"{mine.name}: not an early event")
        except (SpoolFormatError, OSError) as exc:
            spool.set_aside(mine, f"unreadable early event: {exc}")
            log.error("early=%s state=corrupt reason=%r", mine.name, str(exc))
            continue
        event["_path"] = mine
        claimed.append(event)
    return claimed


def capture(config, spool, early, motion, claim_motion, now=time.time, sleep=time.sleep, while_waiting=None):
    """Handle one claimed early event (see the module docstring).

    ``motion`` is the list of motion events this run has claimed; a
    confirming event found there means "superseded". ``claim_motion()``
    claims what is in ``events/new`` now and returns the loaded events (the
    capture job's own claim). Every motion event claimed while waiting is
    appended to ``motion`` for the caller to process, except the confirming
    one, which this function moves to ``events/done`` with the published set.
    Return the published set's path, or None.
    """
    name = early["_path"].name
    if any(ev.get("early") == name for ev in motion):
        return _finish(spool, early, "superseded")
    if now() > early["confirm_ts"] + GRACE_S:
        return _finish(spool, early, "late")
    pin = early["sensors"][0]["pin"] if early["sensors"] else None
    log.info("early=%s state=capturing pin=%s confirm_by=%s", name, pin, early["confirm_by"])
    tmp, results = imageset.shoot(config, spool, now(), while_waiting)
    checkpoint("early.captured")
    confirm = _wait_for_confirmation(name, early["confirm_ts"] + GRACE_S, motion, claim_motion, now, sleep)
    if confirm is None:
        spool.remove(tmp)
        log.info("early=%s state=discarded reason=not-confirmed images=deleted", name)
        return _finish(spool, early, None)
    set_id = confirm["_path"].name.removesuffix(".json") + "-alarm"
    path = imageset.publish(config, spool, "alarm", set_id, tmp, results, [confirm], now=now(),
                            early={"event": name, "time": early["time"]})
    checkpoint("early.published")
    spool.move(confirm["_path"], "events.done")
    log.info("event=%s state=events.done set=%s early=%s", confirm["_path"].name, set_id, name)
    _finish(spool, early, "confirmed")
    return path


def _wait_for_confirmation(name, deadline, motion, claim_motion, now, sleep):
    """The motion event confirming early event ``name``, claimed by ``deadline``, or None."""
    while True:
        for event in claim_motion():
            if event.get("early") == name:
                return event
            motion.append(event)
        if now() > deadline:
            return None
        sleep(POLL_S)


def _finish(spool, early, outcome):
    spool.remove(early["_path"])
    if outcome is not None:
        log.info("early=%s state=removed outcome=%s", early["_path"].name, outcome)
    return None
