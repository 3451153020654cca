"""``seccam trigger``: record a motion event exactly as the poller does."""

HELP = "record a motion event now, exactly as the poller does (a test alarm)"


def add_arguments(parser):
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing")


def run(args, config):
    from .. import events
    from ..spool import Spool

    spool = Spool(config.spool_dir).ensure()
    path = events.record(spool, "trigger")
    if not args.quiet:
        print(f"motion event recorded: {path}")
    return 0
