"""``seccam flush``: send everything queued now, ignoring backoff (like ``postqueue -f``)."""

HELP = "send every queued message now, ignoring the retry backoff"
USES_GPG = True

_COUNTED = ("outbox.new", "outbox.deferred", "outbox.failed")


def add_arguments(parser):
    pass


def run(args, config):
    import argparse

    from .. import send
    from ..spool import Spool

    spool = Spool(config.spool_dir)
    before = {s: len(spool.items(s)) for s in _COUNTED}
    try:
        return send.work(config, argparse.Namespace(flush=True))
    finally:
        after = {s: len(spool.items(s)) for s in _COUNTED}
        newly_failed = after["outbox.failed"] - before["outbox.failed"]
        sent = before["outbox.new"] + before["outbox.deferred"] - after["outbox.new"] - after["outbox.deferred"] \
            - newly_failed
        print(f"sent {max(0, sent)}, deferred {after['outbox.deferred']}, failed {after['outbox.failed']}")
