"""Durable replacement of small files outside the spool: key store records, invites.

:func:`replace_json` writes a temporary file beside the target (O_EXCL, the
given mode), fsyncs it, renames it over the target and fsyncs the directory:
after a crash or a power loss the target is either the old or the new
version, never a mixture. The spool has its own writer (seccam.spool), because
there the temporary file lives in ``tmp/`` and the name is new each time.
Random name parts come from ``os.urandom``, not ``secrets``: the resident
poller imports this module, and ``secrets`` would load OpenSSL (hashlib).
"""

import contextlib
import json
import os

from .errors import TemporaryError


def fsync_dir(path):
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd, data):
    """os.write until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def replace_json(path, obj, mode):
    """Atomically replace ``path`` with ``obj`` as JSON; TemporaryError if it cannot be written."""
    replace_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), mode)


def replace_bytes(path, data, mode, owner=None):
    """Atomically replace ``path`` with ``data``: exactly ``mode`` when ``owner`` (uid, gid) is given
    (which is then set too, as root), else ``mode`` as the umask leaves it. TemporaryError (with
    ``.errno``) if it cannot be written; the old file is then untouched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode if owner is None else 0o600)
        try:
            if owner is not None:
                if os.geteuid() == 0:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        err = TemporaryError(f"writing {path}: {exc.strerror or exc}")
        err.errno = exc.errno
        raise err from None


def read_json(path, what, max_bytes=1 << 20):
    """The JSON object in ``path``, or None if there is no such file.

    DataError names the file and says what is wrong; the caller decides
    whether to skip it (a listing) or stop (a look-up).
    """
    from .errors import DataError
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        obj = json.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable {what} ({exc}); fix or remove it") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a JSON object ({what} expected); fix or remove it")
    return obj


def json_files(directory):
    """The ``*.json`` files of ``directory`` by name (no temporary dot-files); [] if it does not exist."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [directory / n for n in names if n.endswith(".json") and not n.startswith(".")]


@contextlib.contextmanager
def locked(path, timeout_s, mode, busy):
    """Hold an exclusive flock on ``path`` (created with ``mode``) for the ``with`` block.

    The kernel releases it when the process dies, so a crashed holder never
    leaves it taken. ``timeout_s=None`` waits for ever, ``0`` tries once;
    past the timeout ``busy()`` is raised (an exception instance, e.g. a
    TemporaryError naming what is locked).
    """
    import fcntl
    import time
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise busy() from None
                time.sleep(0.05)
        yield path
    finally:
        os.close(fd)
