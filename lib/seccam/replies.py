"""Text messages the camera writes to people: answers to chat commands, armed-state announcements.

A reply is an image set without images: a directory ``sets/ready/<ID>-reply.set/``
holding only ``meta.json``::

    {"version": 1, "kind": "reply", "id": "<ID>-reply", "created": ISO,
     "cameras": [], "events": [], "subject": "Status", "text": "...",
     "to": "owner@example.org"}          # only for an answer in a 1:1 chat

seccam.encrypt turns it into one text message, signed and encrypted like every
camera message and sent through the outbox, so that a reply is never lost and
never leaves the Pi in clear text. Without ``to`` it goes to the camera's chat
(every recipient: the group when there are several); with ``to``, to that
recipient alone (the 1:1 chat a command came from).

A reply is built in ``tmp/`` under a suffix of its own (``.reply``): the capture
job removes half-built ``*.set`` directories in ``tmp/`` under its lock, and a
reply is written by other jobs (the inbox, ``seccam arm``). Leftovers of a
writer that died are removed by :func:`clean` once they are an hour old.
"""

import json
import os
import time

from . import events
from .spool import TMP_MAX_AGE_S

VERSION = 1
KIND = "reply"
SUFFIX = "-reply"
TMP_SUFFIX = ".reply"
SET_SUFFIX = ".set"


def publish(spool, set_id, text, subject, to=None, now=None):
    """Publish a reply set ``set_id`` (which ends in :data:`SUFFIX`) into ``sets/ready``; return its path."""
    now = time.time() if now is None else now
    meta = {"version": VERSION, "kind": KIND, "id": set_id, "created": events.iso(now), "cameras": [],
            "events": [], "subject": subject, "text": text}
    if to is not None:
        meta["to"] = to
    tmp = spool.make_tmp_dir(TMP_SUFFIX)
    try:
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        return spool.publish(tmp, "sets.ready", set_id + SET_SUFFIX)
    except OSError as exc:
        spool.remove(tmp)
        import errno
        from .errors import DiskFullError, TemporaryError
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"no space left on the spool's filesystem for reply {set_id}") from None
        raise TemporaryError(f"writing reply {set_id}: {exc.strerror or exc}") from None


def new_id(now=None):
    """A fresh reply set ID (sorts by time, like every spool item)."""
    from .spool import unique_name
    now = time.time() if now is None else now
    return unique_name(now_ns=int(now * 1e9)) + SUFFIX


def clean(spool, now=None):
    """Remove half-built replies of writers that died (older than an hour)."""
    return spool.clean_tmp(TMP_SUFFIX, TMP_MAX_AGE_S, now)
