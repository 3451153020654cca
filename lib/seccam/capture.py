"""``jobs/capture``: turn pending motion events into image sets.

Owns the transitions ``events/new -> events/active -> events/done`` and the
publication of alarm sets into ``sets/ready``; early events (the first PIR
edge, ``early/new``) are handed to :mod:`seccam.early`, which captures at
once and publishes only what motion confirms. All of it happens under the
``capture`` lock, for two reasons: two jobs started at once (path unit and
cron) must never capture the same event twice, and a V4L2 camera cannot be
opened by two captures at the same time anyway. Under the lock nothing in
``events/active`` belongs to a live process, so the start-up scan returns it
to ``events/new``: a run killed at any instant loses no event.

While the camera is disarmed (seccam.armed) motion events are still claimed
and moved to ``events/done`` (status and the heartbeat count them), but not
captured, and early events are removed without starting the cameras. A
person asking for pictures is served whether armed or not: a ``/snap``
(``requests/``, seccam.snap) is captured first, and a press of the push button
(seccam.incident.REQUESTED_SOURCES) is captured as an alarm.

Events closer together than ``cooldown_s`` become one capture. Where a capture
goes is seccam.incident's decision: the first of an incident (or a person's
request) is an alarm set in ``sets/ready``, sent at once; the later ones of an
incident are kept in it, and now and then one becomes an update. A set's ID is
derived from its first event, so a run killed after publishing a set but
before marking its events done does not capture them again.

Before releasing the lock the job hands the new sets to the encrypt step, so
the plaintext images spend as little time on disk as possible, and a
jobs/send that watches for them never sees the hand-over as the end.

The job has no network (its sandbox); delivery is jobs/send's. So that
delivery does not start only once the first message is encrypted, the job
rewrites ``state/capturing.json`` as soon as its cameras run: that starts
jobs/send through seccam-send.path, which then opens and authenticates its
SMTP connection while the cameras expose, and sends each message the moment
the encrypt step publishes it (it keeps watching while this job holds the
``capture`` or ``encrypt`` lock).
"""

import logging
import os
import time

from . import armed, events, imageset, incident, snap
from . import early as _early
from .faults import checkpoint
from .errors import SeccamError
from .spool import TMP_MAX_AGE_S, Spool, SpoolFormatError

log = logging.getLogger("seccam.capture")

# A capture job started while another holds the cameras waits this long: a
# capture takes seconds; longer means something is stuck and cron comes back.
LOCK_WAIT_S = 120
DAY = 86400


def process(config, spool, now=time.time, while_waiting=None):
    """Capture every pending event; return the list of published set paths.

    ``while_waiting`` runs while the first capture's cameras expose (see
    camera.capture_all)."""
    spool.ensure()
    with spool.lock("capture", timeout_s=LOCK_WAIT_S):
        return _process_locked(config, spool, now, while_waiting)


def _process_locked(config, spool, now, while_waiting):
    published = []
    recovered = spool.recover("events.active", "events.new") + spool.recover("early.active", "early.new")
    if recovered:
        log.warning("recovered=%d state=events.new reason=interrupted-run", len(recovered))
    spool.clean_tmp(imageset.SET_SUFFIX)          # half-built sets of a dead run: ours, we hold the lock
    spool.clean_tmp(".json", TMP_MAX_AGE_S)       # event writes abandoned by a dead writer
    incident.recover(spool)
    snap.recover(spool)
    while True:
        requested = snap.capture_all(config, spool, now, while_waiting)  # a person asked: first, armed or not
        if requested:
            while_waiting = None
            published += requested
        claimed = _claim_all(spool)
        early = _early.claim_all(spool)
        if not claimed and not early:
            if requested:
                continue
            break
        checkpoint("capture.claimed")
        if not armed.is_armed(spool, now()):  # the one place where the armed state decides
            for ev in early:
                spool.remove(ev["_path"])  # a first PIR edge: the cameras stay off while disarmed
                log.info("early=%s state=removed reason=disarmed", ev["_path"].name)
            claimed, motion = incident.split(claimed)  # the push button is a person asking: served
            for ev in motion:
                spool.move(ev["_path"], "events.done")
                log.info("event=%s state=events.done reason=disarmed", ev["_path"].name)
            early = []
            if not claimed:
                continue
        for ev in early:
            path = _early.capture(config, spool, ev, claimed, lambda: _claim_all(spool), now=now,
                                  while_waiting=while_waiting)
            if path is not None:
                while_waiting = None
                published.append(path)
        armed_since = armed.armed_since(spool, now())
        for group in incident.groups(claimed, config.sensors.cooldown_s):
            route = incident.route(config, spool, group, armed_since)
            set_id = route.set_id
            if route.captured(spool):
                log.info("set=%s already captured; marking events done", set_id)
            else:
                hook = incident.during_capture(spool, route, group, now(),
                                               while_waiting if route.kind == "alarm" else None)
                path, _ = imageset.capture(config, spool, route.kind, set_id, group, now=now(),
                                           while_waiting=hook, into=route.into)
                if route.kind == "alarm":
                    while_waiting = None  # once is enough
                published.append(path)
                checkpoint("capture.published")
            published += incident.after_capture(config, spool, route, group, now())
            for ev in group:
                spool.move(ev["_path"], "events.done")
                log.info("event=%s state=events.done set=%s", ev["_path"].name, set_id)
                checkpoint("capture.event-done")
    incident.close_stale(config, spool, now())
    _prune_done(config, spool, now())
    return published


def _claim_all(spool):
    claimed = []
    for path in spool.items("events.new"):
        mine = spool.claim(path, "events.active")
        if mine is None:  # pragma: no cover - race: another job claimed it between listing and rename
            continue
        try:
            event = events.load(mine)
        except (SpoolFormatError, OSError) as exc:
            spool.set_aside(mine, f"unreadable motion event: {exc}")
            log.error("event=%s state=corrupt reason=%r", mine.name, str(exc))
            continue
        event["_path"] = mine
        claimed.append(event)
    return claimed


def _prune_done(config, spool, now):
    """Processed events are history for status and heartbeats; keep events_keep_days of it."""
    limit = now - config.events_keep_days * DAY
    for path in spool.items("events.done"):
        try:
            if path.stat().st_mtime < limit:
                spool.remove(path)
        except FileNotFoundError:  # pragma: no cover - race: removed between listing and stat
            continue


#: The stamp whose rewrite starts jobs/send (seccam-send.path: PathChanged=).
CAPTURING = "capturing"


class Prewarm:
    """While the cameras expose: wake jobs/send (``state/capturing.json``), so
    that its SMTP connection is up when the first message is encrypted, then
    load GnuPG and look up the keys, so that encryption starts the moment the
    images exist. Whatever fails here is simply done again, and reported, by
    the encrypt step and jobs/send themselves."""

    def __init__(self, config, spool=None):
        self.config = config
        self.spool = spool
        self.crypto = None

    def __call__(self):
        if self.spool is not None and self.config.account is not None:
            try:
                self.spool.write_state(CAPTURING, {"since": events.iso(time.time()), "pid": os.getpid()})
            except SeccamError as exc:  # a full disk: the path unit starts jobs/send with the first message
                log.warning("state=%s write-failed error=%r", CAPTURING, str(exc))
        from . import encrypt
        try:
            self.crypto = encrypt.prepare(self.config)
        except (SeccamError, encrypt.Hold):  # the encrypt step holds the set and says why
            self.crypto = None


def hand_to_encrypt(config, spool, crypto=None):
    """Encrypt what was captured, now. A failure here is not a capture failure:
    the set waits in sets/ready and jobs/send retries it."""
    from . import encrypt
    try:
        encrypt.process(config, spool, crypto=crypto)
    except SeccamError as exc:
        log.warning("encrypt deferred to jobs/send: %s", exc)
        return exc.exit_code
    return 0


def work(config, args):
    spool = Spool(config.spool_dir).ensure()
    prewarm = None if args.no_encrypt else Prewarm(config, spool)
    with spool.lock("capture", timeout_s=LOCK_WAIT_S):
        published = _process_locked(config, spool, time.time, prewarm)
        # Encrypted before the lock is released: jobs/send watches while the capture or the
        # encrypt lock is held, and must never find neither held before the pictures are in
        # the outbox (it would end, and the messages wait for the next send run).
        if published and prewarm is not None:
            return hand_to_encrypt(config, spool, prewarm.crypto)
    return 0


def _add_arguments(parser):
    parser.add_argument("--no-encrypt", action="store_true",
                        help="only capture; leave the sets in sets/ready (jobs/send encrypts them)")


def main(argv=None):
    from .runtime import job_main
    return job_main("seccam-capture", "Capture every pending motion event from every camera.",
                    work, argv, _add_arguments)
