"""``jobs/heartbeat``: an image from every camera and a health summary, every hour.

Cron decides the frequency (``/etc/cron.d/seccam``). The capture runs under the
capture lock like an alarm's, so a heartbeat never fights an alarm for a
camera; the set goes to ``sets/ready`` with kind ``heartbeat``. The time of
the last heartbeat is stamped in ``state/heartbeat.json`` (this job is its only
writer) so the next one can count the motion events in between.
"""

import logging
import time

from . import events, health, imageset
from .spool import Spool, unique_name

log = logging.getLogger("seccam.heartbeat")


def process(config, spool, now=time.time):
    spool.ensure()
    from .capture import LOCK_WAIT_S
    with spool.lock("capture", timeout_s=LOCK_WAIT_S):
        start = now()
        previous = spool.read_state("heartbeat") or {}
        since = previous.get("ts")
        set_id = unique_name(now_ns=int(start * 1e9)) + "-heartbeat"

        def make_health(results):
            snap = health.snapshot(config, spool, start)
            count = health.events_since(spool, since if isinstance(since, (int, float)) else None)
            text = health.summary_text(snap, count, results, since=previous.get("time"))
            return {"text": "Heartbeat.\n" + text,
                    "events_since_last": count,
                    "poller_alive": snap["poller"]["alive"],
                    "poller_last_seen": snap["poller"]["last_seen"],
                    "free_bytes": (snap["disk"] or {}).get("free_bytes"),
                    "queues": {k: v["count"] for k, v in snap["queues"].items()},
                    "key_changes": snap.get("key_changes") or []}

        path, results = imageset.capture(config, spool, "heartbeat", set_id, (), health=make_health, now=start)
        spool.write_state("heartbeat", {"ts": start, "time": events.iso(start), "set": set_id})
    return path, results


def work(config, args):
    spool = Spool(config.spool_dir)
    process(config, spool)
    from .capture import hand_to_encrypt
    return 0 if args.no_encrypt else hand_to_encrypt(config, spool)


def _add_arguments(parser):
    parser.add_argument("--no-encrypt", action="store_true", help="only capture; leave the set in sets/ready")


def main(argv=None):
    from .runtime import job_main
    return job_main("seccam-heartbeat", "Capture every camera and record a heartbeat with a health summary.",
                    work, argv, _add_arguments)
