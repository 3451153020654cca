"""``seccam flush``: send everything queued now, ignoring backoff (like ``postqueue -f``)."""

HELP = "send every queued message now, ignoring the retry backoff"


def add_arguments(parser):
    pass


def run(args, config):
    import argparse

    from .. import send
    from ..spool import Spool

    spool = Spool(config.spool_dir)
    before = {s: len(spool.items(s)) for s in ("outbox.new", "outbox.deferred")}
    try:
        code = send.work(config, argparse.Namespace(flush=True))
    finally:
        after = {s: len(spool.items(s)) for s in ("outbox.new", "outbox.deferred", "outbox.failed")}
        queued = before["outbox.new"] + before["outbox.deferred"]
        print(f"queued {queued}, sent {max(0, queued - after['outbox.deferred'] - after['outbox.new'] - after['outbox.failed'] + before.get('outbox.failed', 0))}, "
              f"deferred {after['outbox.deferred']}, failed {after['outbox.failed']}")
    return code
