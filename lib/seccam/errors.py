"""The exception hierarchy every seccam module raises, and the exit codes it maps to.

Each error says whether it is temporary (retry later, nothing is wrong with the
item) or permanent (a human has to act). Entry points map them to sysexits
codes; nothing else in ``lib/`` decides exit codes.
"""

# sysexits.h values used by the jobs and the CLI.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class SeccamError(Exception):
    """Root of seccam's errors. ``str(err)`` is the one line shown to a person."""

    exit_code = EX_SOFTWARE
    temporary = False


class UsageError(SeccamError):
    """The command line was wrong."""

    exit_code = EX_USAGE


class ConfigError(SeccamError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = EX_CONFIG


class DataError(SeccamError):
    """An input file (key, mail, spool item) is malformed."""

    exit_code = EX_DATAERR


class TemporaryError(SeccamError):
    """Retry later: the network, a lock or a device is unavailable right now."""

    exit_code = EX_TEMPFAIL
    temporary = True


class PermanentError(SeccamError):
    """Retrying will not help; a human has to act."""

    exit_code = EX_UNAVAILABLE


class DiskFullError(TemporaryError):
    """The spool's filesystem is full (ENOSPC) or the spool budget is used up."""

    exit_code = EX_CANTCREAT
