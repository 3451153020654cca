"""What every entry point shares: argument basics, logging set-up, exit codes.

``bin/`` and ``jobs/`` wrappers call :func:`run`; it is the one place that
configures logging (the library never does) and turns exceptions into the
sysexits codes of docs/operations.md. A cron job is silent on success;
a failure is one line on stderr (``prog: error: ...``) and the detail goes
to the journal.
"""

import logging
import logging.handlers
import os
import sys

from .errors import EX_SOFTWARE, EX_TEMPFAIL, SeccamError

SYSLOG_IDENT = "seccam"


class _Formatter(logging.Formatter):
    """``PROG: LEVEL: message`` for a terminal; ``PROG module: message`` for the journal."""

    def __init__(self, prog, journal):
        super().__init__()
        self.prog = prog
        self.journal = journal

    def format(self, record):
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if self.journal:
            return f"{self.prog} {record.name.removeprefix('seccam.')}: {message}"
        return f"{self.prog}: {record.levelname.lower()}: {message}"


def setup_logging(prog, verbose=False, stream=None, syslog_socket="/dev/log"):
    """Send log records to the journal (via /dev/log) when there is one, and
    warnings to stderr when a person is watching (a terminal) or when
    SECCAM_LOG_STDERR=1; DEBUG=1 or --verbose lowers the level.
    ``syslog_socket`` is for tests."""
    root = logging.getLogger("seccam")
    root.handlers.clear()
    level = logging.DEBUG if verbose or os.environ.get("DEBUG") == "1" else logging.INFO
    root.setLevel(level)
    root.propagate = False
    if os.path.exists(syslog_socket) and os.environ.get("SECCAM_NO_SYSLOG") != "1":
        try:
            handler = logging.handlers.SysLogHandler(address=syslog_socket,
                                                     facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            handler.ident = f"{SYSLOG_IDENT}[{os.getpid()}]: "
            handler.setFormatter(_Formatter(prog, journal=True))
            root.addHandler(handler)
        except OSError:  # pragma: no cover - /dev/log vanished between the check and the connect
            pass
    stream = stream or sys.stderr
    to_stderr = os.environ.get("SECCAM_LOG_STDERR") == "1" or verbose or stream.isatty()
    if to_stderr or not root.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_Formatter(prog, journal=False))
        handler.setLevel(level if to_stderr else logging.WARNING)
        # run() prints the one-line error itself; its log record is for the journal.
        handler.addFilter(lambda record: not getattr(record, "journal_only", False))
        root.addHandler(handler)
    return root


def run(prog, func, argv=None):
    """Call ``func(argv)`` and map its outcome to an exit code. Never shows a traceback
    unless DEBUG=1: a person sees one line, the journal gets the detail."""
    log = logging.getLogger("seccam")
    try:
        code = func(argv)
        return 0 if code is None else code
    except SeccamError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        log.error("error=%r exit=%d", str(exc), exc.exit_code, extra={"journal_only": True})
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EX_TEMPFAIL
    except BrokenPipeError:  # pragma: no cover - `seccam status | head`
        return 0
    except Exception as exc:  # the last line of defence: a bug must still be one clear line
        if os.environ.get("DEBUG") == "1":
            raise
        log.exception("unexpected error", extra={"journal_only": True})
        print(f"{prog}: error: unexpected {type(exc).__name__}: {exc} (details in the journal; DEBUG=1 shows them)",
              file=sys.stderr)
        return EX_SOFTWARE


def add_common_arguments(parser, subcommand=False):
    """``--config`` and ``--verbose``. On a subcommand they default to SUPPRESS so
    that ``seccam --config X trigger`` keeps the X given before the subcommand."""
    import argparse
    extra = {"default": argparse.SUPPRESS} if subcommand else {}
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file (default: $SECCAM_CONFIG or /etc/seccam/seccam.toml)", **extra)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr at debug level", **extra)


def become_spool_owner(config):
    """Run as the spool's owner when started as root.

    ``sudo seccam trigger`` (or a job started by hand as root) would otherwise
    publish root-owned files that the service user cannot read, and they
    would end up in corrupt/. Like Postfix's postqueue, seccam does its spool
    work as the queue's owner. Does nothing unless root and the spool exists
    and belongs to another user (seccam.privilege, which also opens the files
    a person names on the command line before this switch).
    """
    from . import privilege
    entry = privilege.spool_owner(config)
    return privilege.switch_to(entry) if entry is not None else None


def job_main(prog, description, work, argv=None, add_arguments=None):
    """The whole of a ``jobs/`` entry point: parse ``--config``, set up logging,
    load the configuration and call ``work(config, args)``."""
    import argparse

    def _main(argv):
        parser = argparse.ArgumentParser(prog=prog, description=description)
        add_common_arguments(parser)
        if add_arguments:
            add_arguments(parser)
        args = parser.parse_args(argv)
        setup_logging(prog, args.verbose)
        from . import config as _config
        cfg = _config.load(args.config)
        become_spool_owner(cfg)
        return work(cfg, args)

    return run(prog, _main, argv)
