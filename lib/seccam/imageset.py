"""Image sets: one capture of every camera, published as ``sets/ready/<ID>.set/``.

This module owns the set format that the encrypt step consumes (docs/spool.md):
a directory holding ``meta.json`` and, per camera that worked, ``NAME.jpg``
and ``NAME.preview.jpg``. A set is built in ``tmp/`` and renamed into
``sets/ready`` complete, so no reader ever sees half a set.

It also keeps ``state/cameras.json``, the last result of every camera (for
``seccam status`` and the heartbeat); only the capture and heartbeat jobs
write it, and they do so under the capture lock.
"""

import errno
import json
import logging
import shutil
import time

from . import budget, camera, events
from .errors import DiskFullError
from .faults import checkpoint

log = logging.getLogger("seccam.imageset")

VERSION = 1
SET_SUFFIX = ".set"
META = "meta.json"


def set_name(set_id):
    return set_id + SET_SUFFIX


def capture(config, spool, kind, set_id, event_list=(), health=None, now=None, while_waiting=None, into=None):
    """Capture every camera and publish the set; return ``(set_path, results)``.

    ``health(results)`` (heartbeats) returns the health summary, computed after
    the capture so that it includes this capture's camera results. The set goes
    to ``sets/ready``, or into the directory ``into`` (an open incident keeps its
    follow-up captures, seccam.incident).
    """
    now = time.time() if now is None else now
    tmp, results = shoot(config, spool, now, while_waiting)
    return publish(config, spool, kind, set_id, tmp, results, event_list, health, now, into=into), results


def shoot(config, spool, now=None, while_waiting=None):
    """Capture every camera into a new directory under ``tmp/``; return ``(tmp_dir, results)``.

    Nothing is published: :func:`publish` makes it a set, or the caller
    removes it (an early capture that motion did not confirm)."""
    now = time.time() if now is None else now
    needed = budget.room_for(config.cameras)
    if shutil.disk_usage(spool.root).free - needed < budget.min_free_bytes(config):
        # Only a nearly full filesystem makes the cameras wait for pruning (statvfs is cheap; measuring
        # the spool against its budget means walking it).
        budget.make_room(config, spool, needed, now)
        free = shutil.disk_usage(spool.root).free
        if free < needed:
            raise DiskFullError(f"spool {spool.root} is full: {free // 1000} kB free, a capture needs "
                                f"{needed // 1000} kB; the event stays queued")

    def meanwhile():
        # The caller's work first (the capture job loads GnuPG: the encryption waits for it), then the
        # spool's budget, kept while the cameras expose: the time is free.
        try:
            if while_waiting is not None:
                while_waiting()
        finally:  # whatever the caller's work raised (capture_all logs it), the budget is kept
            budget.make_room(config, spool, needed, now)

    tmp = spool.make_tmp_dir(SET_SUFFIX)
    log.info("capture=start cameras=%d dir=%s", len(config.cameras), tmp.name)
    results = camera.capture_all(config.cameras, tmp, meanwhile)
    if not all(r.ok for r in results) and shutil.disk_usage(spool.root).free < needed:
        # The disk filled up during the capture: images are truncated, not missing.
        spool.remove(tmp)
        raise DiskFullError(f"spool {spool.root} filled up during the capture; the event stays queued")
    return tmp, results


def publish(config, spool, kind, set_id, tmp, results, event_list=(), health=None, now=None, early=None, into=None):
    """Write ``meta.json`` into ``tmp`` (what :func:`shoot` made) and publish it as set ``set_id``
    into ``sets/ready``, or into the directory ``into`` (an open incident); return the set's path.
    ``early``: the early event whose capture this is (recorded in meta)."""
    now = time.time() if now is None else now
    meta = {
        "version": VERSION,
        "kind": kind,
        "id": set_id,
        "created": events.iso(now),
        "events": [{k: v for k, v in ev.items() if not k.startswith("_") and k not in ("ts", "confirm_ts")}
                   for ev in event_list],
        "cameras": [r.as_meta() for r in results],
    }
    if early is not None:
        meta["early"] = early
    if health is not None:
        meta["health"] = health(results)
    try:
        with open(tmp / META, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)
        checkpoint("imageset.built")
        if into is None:
            path = spool.publish(tmp, "sets.ready", set_name(set_id))
        else:
            path = spool.publish_into(tmp, into, set_name(set_id))
    except OSError as exc:
        spool.remove(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"spool {spool.root} is full while writing set {set_id}; "
                                "the event stays queued") from None
        raise
    record_camera_state(spool, results, now)
    for r in results:
        if r.ok:
            log.info("camera=%s set=%s ok seconds=%.2f", r.camera, set_id, r.seconds)
        else:
            log.warning("camera=%s set=%s failed error=%r", r.camera, set_id, r.error)
    log.info("set=%s kind=%s state=%s cameras_ok=%d cameras_failed=%d", set_id, kind,
             "sets.ready" if into is None else f"incidents.open/{into.name}",
             sum(r.ok for r in results), sum(not r.ok for r in results))
    return path


def record_camera_state(spool, results, now):
    previous = spool.read_state("cameras") or {}
    # A capture of some cameras (a /snap of one) keeps what is known of the others.
    state = {name: entry for name, entry in previous.items() if name not in {r.camera for r in results}}
    for r in results:
        entry = {"ok": r.ok, "time": events.iso(now), "seconds": round(r.seconds, 3)}
        old = previous.get(r.camera) if isinstance(previous.get(r.camera), dict) else {}
        if r.ok:
            entry["last_ok"] = entry["time"]
        else:
            entry["error"] = r.error
            if old.get("last_ok"):
                entry["last_ok"] = old["last_ok"]
        state[r.camera] = entry
    spool.write_state("cameras", state)


def exists(spool, set_id):
    """True if a set or any message made from it is still somewhere in the pipeline."""
    for state in ("sets.ready", "sets.active", "sets.held",
                  "outbox.new", "outbox.active", "outbox.deferred", "outbox.failed"):
        if any(p.name.startswith(set_id) for p in spool.items(state)):
            return True
    return False
