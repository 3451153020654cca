"""``seccam disarm [--for DURATION | --until HH:MM]``: no pictures for motion until then (seccam.armed).

Motion is still recorded (``seccam status`` counts it) and heartbeats go on;
``/snap`` still works. Without ``--for``/``--until`` the camera stays disarmed
until ``seccam arm`` or ``/arm``. The change is announced in the camera's chat.
"""

HELP = "disarm the camera (for a while: --for 2h, --until 07:00): motion is recorded, nothing is sent"


def add_arguments(parser):
    from .arm import add_arguments as by_argument
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1h30m, 1d")
    when.add_argument("--until", metavar="HH:MM", help="the next time the camera's clock shows HH:MM")
    by_argument(parser)


def run(args, config):
    import time

    from .. import armed
    from ..errors import UsageError
    from .arm import change

    now = time.time()
    try:
        if args.duration is not None:
            until = now + armed.parse_duration(args.duration)
        elif args.until is not None:
            until = armed.parse_clock(args.until, now)
        else:
            until = None
    except armed.BadTime as exc:
        raise UsageError(str(exc)) from None
    return change(args, config, False, until)
