"""``seccam arm``: alarms on again (seccam.armed), announced in the camera's chat.

With ``seccam disarm`` this is the shell's (and the crontab's) side of the chat's
``/arm`` and ``/disarm``: arming by time of day is two crontab lines
(docs/operations.md, "Arming by time of day").
"""

HELP = "arm the camera: motion makes alarms again (announced in the chat)"


def add_arguments(parser):
    parser.add_argument("--by", metavar="NAME",
                        help="who the chat is told made the change (default: the camera's shell and your user "
                             "name), e.g. --by \"the night schedule\"")


def who(args):
    """Who the announcement names for a change made from the Pi's shell."""
    import os
    import pwd
    if args.by:
        return " ".join(args.by.split())[:80]
    user = os.environ.get("SUDO_USER") or os.environ.get("LOGNAME") or pwd.getpwuid(os.getuid()).pw_name
    return f"the camera's shell (user {user})"


def change(args, config, armed_now, until=None):
    import sys

    from .. import armed
    from ..spool import Spool

    state, changed = armed.change(Spool(config.spool_dir), armed_now, who(args), "shell", until)
    if not changed:
        print(f"Nothing changed: {state.text()}")
        return 0
    print(state.text())
    if config.account is not None:
        # Announce it now rather than at jobs/send's next run; the spool keeps it if this fails.
        from .. import send
        from ..errors import SeccamError
        try:
            send.work(config, None)
        except SeccamError as exc:
            print(f"seccam: the announcement waits in the spool: {exc}", file=sys.stderr)
    return 0


def run(args, config):
    return change(args, config, True)
