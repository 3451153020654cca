"""The spool: every path, every state directory and every transition between them.

The spool directory is the only state seccam's processes share. It follows
Maildir and the Postfix queue (docs/spool.md has the full picture):

* an item is written under ``tmp/``, fsynced, and renamed into its state
  directory; at that instant it exists, never half-written;
* each state is a directory, each transition one ``rename(2)`` by the one
  process that owns it; a claim is a rename, so two jobs can never both win;
* a published item is never edited: a change of state is a move, a change of
  content is a new item;
* an item that cannot be parsed is moved to ``corrupt/`` with a ``.reason``
  file beside it, never deleted;
* jobs that own a state hold a lock (``flock(2)``, released by the kernel if
  the process dies); under it a start-up scan returns what a crashed run had
  claimed.

No other module builds a spool path by hand.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from .durable import fsync_dir, locked, write_all
from .errors import DataError, DiskFullError, TemporaryError

#: state name -> directory relative to the spool root, in pipeline order.
STATES = {
    "tmp": "tmp",
    "events.new": "events/new",          # motion events published by the poller / `seccam trigger`
    "events.active": "events/active",    # claimed by the capture job
    "events.done": "events/done",        # captured; kept events_keep_days for status and heartbeats
    "early.new": "early/new",            # first PIR edges: the cameras may start before motion is confirmed
    "early.active": "early/active",      # claimed by the capture job; removed once confirmed or discarded
    "requests.new": "requests/new",      # a person's /snap from the chat (seccam.snap), waiting for capture
    "requests.active": "requests/active",  # claimed by the capture job
    "sets.ready": "sets/ready",          # image sets (plaintext) ready for encryption
    "sets.active": "sets/active",        # claimed by the encrypt step
    "sets.held": "sets/held",            # waiting for a recipient key; reason beside it
    "outbox.new": "outbox/new",          # encrypted messages, ready to send
    "outbox.active": "outbox/active",    # claimed by the send job
    "outbox.deferred": "outbox/deferred",  # temporary failure; mtime = next attempt
    "outbox.failed": "outbox/failed",    # permanent failure; reason beside it
    "incidents.open": "incidents/open",        # the incident collecting captures (seccam.incident)
    "incidents.closing": "incidents/closing",  # incidents whose gap has passed, waiting for their summary
    "incidents.closed": "incidents/closed",    # summarised; their captures kept events_keep_days
    "corrupt": "corrupt",                # set aside for a human, with a reason
    "quarantine": "quarantine",          # inbound mail the inbox could not use; capped, pruned oldest first
    "state": "state",                    # small status stamps, each with one writer
    "locks": "locks",                    # flock files, one per job kind
}

REASON_SUFFIX = ".reason"
_DIR_MODE = 0o750
_FILE_MODE = 0o640
# A temporary file older than this belongs to a writer that died (writers
# finish in seconds); the start-up scan removes it.
TMP_MAX_AGE_S = 3600


class SpoolFormatError(DataError):
    """A spool item could not be parsed."""


class LockBusy(TemporaryError):
    """Another job of the same kind holds the lock."""


def _disk_error(exc, what):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what}: no space left on the spool's filesystem")
    return TemporaryError(f"{what}: {exc.strerror or exc}")


def unique_name(suffix="", now_ns=None):
    """A new item name that sorts by creation time: ``20261125T191100.123456Z.<pid>.<hex>``.

    Time first so a directory listing is chronological; pid and 32 random bits
    make it unique across processes, as in Maildir. The bits come from
    ``os.urandom`` (what ``secrets`` uses too) because ``secrets`` imports
    hashlib, i.e. OpenSSL's libcrypto: 3.6 MB of the resident poller's memory.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    return f"{stamp}.{nanos // 1000:06d}Z.{os.getpid()}.{os.urandom(4).hex()}{suffix}"


class Spool:
    """The spool rooted at ``root``. Cheap to create; ``ensure()`` makes the directories."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self):
        return f"Spool({str(self.root)!r})"

    # -- layout -------------------------------------------------------------
    def dir(self, state):
        return self.root / STATES[state]

    def ensure(self):
        """Create every state directory (idempotent)."""
        for rel in STATES.values():
            try:
                os.makedirs(self.root / rel, mode=_DIR_MODE, exist_ok=True)
            except OSError as exc:
                raise _disk_error(exc, f"{self.root / rel}") from None
        return self

    def items(self, state, suffix=None):
        """Published items of ``state``, oldest first; ``.reason`` notes and dot-files excluded."""
        try:
            names = os.listdir(self.dir(state))
        except FileNotFoundError:
            return []
        out = sorted(n for n in names if not n.startswith(".") and not n.endswith(REASON_SUFFIX)
                     and (suffix is None or n.endswith(suffix)))
        return [self.dir(state) / n for n in out]

    # -- writing ------------------------------------------------------------
    def write(self, state, data, suffix="", name=None):
        """Atomically publish ``data`` (bytes) as a new item of ``state``; return its path."""
        name = name or unique_name(suffix)
        tmp = self.dir("tmp") / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return self.publish(tmp, state, name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _disk_error(exc, f"writing {state} item {name}") from None

    def write_json(self, state, obj, suffix=".json", name=None):
        return self.write(state, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), suffix, name)

    def make_tmp_dir(self, suffix=""):
        """A new private directory under ``tmp/`` for building a multi-file item (an image set)."""
        path = self.dir("tmp") / unique_name(suffix)
        try:
            os.mkdir(path, _DIR_MODE)
        except OSError as exc:
            raise _disk_error(exc, f"creating {path}") from None
        return path

    def publish(self, tmp_path, state, name=None):
        """Rename a finished file or directory from ``tmp/`` into ``state``, durably."""
        return self.publish_into(tmp_path, self.dir(state), name)

    def publish_into(self, tmp_path, directory, name=None):
        """:meth:`publish` into ``directory``, an item of a state that holds items of its own
        (an incident's directory collects its captures)."""
        tmp_path = Path(tmp_path)
        dest = Path(directory) / (name or tmp_path.name)
        if tmp_path.is_dir():
            for child in tmp_path.iterdir():
                _fsync_file(child)
            fsync_dir(tmp_path)
        os.rename(tmp_path, dest)
        fsync_dir(dest.parent)
        return dest

    # -- transitions --------------------------------------------------------
    def move(self, path, state, name=None):
        """Move an item to ``state`` by one rename; return the new path, or None if
        another process moved it first (the claim was lost)."""
        path = Path(path)
        dest = self.dir(state) / (name or path.name)
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        fsync_dir(dest.parent)
        reason = path.with_name(path.name + REASON_SUFFIX)
        if reason.exists():
            # A reason belongs to the state the item was in; it leaves with it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(reason)
        return dest

    def claim(self, path, state):
        """Take an item for processing by one rename into ``state`` (an "active" directory); return
        its new path, or None if another process took it first.

        Unlike :meth:`move` the directory is not fsynced: the claim sits on the alarm path (an SD
        card's fsync takes tens of milliseconds), and a claim lost to a power cut leaves the item
        where the owner's start-up scan would have put it back anyway."""
        path = Path(path)
        dest = self.dir(state) / path.name
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        return dest

    def set_aside(self, path, reason):
        """Move a damaged item to ``corrupt/`` with its reason; never delete it."""
        path = Path(path)
        name = f"{unique_name()}.{path.parent.name}.{path.name}"
        dest = self.dir("corrupt") / name
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        self.write_reason(dest, reason)
        fsync_dir(dest.parent)
        return dest

    def write_reason(self, item, reason):
        """Write the note that says why ``item`` is where it is (``ITEM.reason``)."""
        item = Path(item)
        note = item.with_name(item.name + REASON_SUFFIX)
        tmp = self.dir("tmp") / (unique_name(REASON_SUFFIX))
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(reason.rstrip("\n") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, note)
        except OSError:
            # The item itself is already where it belongs; a missing note must
            # not undo that. The log line of the caller carries the reason too.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return None
        return note

    def read_reason(self, item):
        try:
            return Path(str(item) + REASON_SUFFIX).read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def remove(self, path):
        """Delete a finished item (a file or a set directory) after its successor is published."""
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        reason = path.with_name(path.name + REASON_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(reason)

    def recover(self, claimed, back_to):
        """Start-up scan: return every item left in ``claimed`` by a dead run to ``back_to``.

        Call only while holding the lock of the job that owns ``claimed``: then
        nothing in it belongs to a live process.
        """
        returned = []
        for item in self.items(claimed):
            moved = self.move(item, back_to)
            if moved is not None:
                returned.append(moved)
        return returned

    def clean_tmp(self, suffix, max_age_s=0, now=None):
        """Remove leftovers in ``tmp/`` named ``*suffix`` older than ``max_age_s``.

        Each writer cleans only its own kind (by suffix), under its own lock, so
        a live writer's file is never removed.
        """
        now = time.time() if now is None else now
        removed = 0
        for path in self.dir("tmp").glob("*" + suffix):
            try:
                age = now - path.lstat().st_mtime
            except FileNotFoundError:  # pragma: no cover - race: removed between glob and lstat
                continue
            if age >= max_age_s:
                self.remove(path)
                removed += 1
        return removed

    # -- locks --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name, timeout_s=None):
        """Hold the job lock ``name`` (an flock, released by the kernel on death).

        ``timeout_s=None`` waits for ever, ``0`` fails at once. Raises
        LockBusy (a TemporaryError) when the lock is not had in time.
        """
        path = self.dir("locks") / f"{name}.lock"
        with locked(path, timeout_s, _FILE_MODE, lambda: LockBusy(f"another {name} job is running (lock {path})")):
            yield path

    def lock_held(self, name):
        """True if a live process holds the job lock ``name`` right now."""
        path = self.dir("locks") / f"{name}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the probe's lock
        return False

    # -- small status stamps -----------------------------------------------
    def write_state(self, name, obj):
        """Replace ``state/NAME.json`` atomically (each stamp has exactly one writer)."""
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        tmp = self.dir("tmp") / unique_name(".state")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self.dir("state") / f"{name}.json")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _disk_error(exc, f"writing state {name}") from None

    def read_state(self, name):
        """The stamp ``name`` as a dict, or None if absent or unreadable."""
        path = self.dir("state") / f"{name}.json"
        try:
            return read_json(path)
        except (FileNotFoundError, SpoolFormatError):
            return None

    def state_mtime(self, name):
        try:
            return (self.dir("state") / f"{name}.json").stat().st_mtime
        except FileNotFoundError:
            return None


def read_json(path, max_bytes=1 << 20):
    """Parse a JSON spool file; raise SpoolFormatError with the reason if it is not one."""
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SpoolFormatError(f"{path.name}: larger than {max_bytes} bytes")
    if not raw:
        raise SpoolFormatError(f"{path.name}: empty file")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpoolFormatError(f"{path.name}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise SpoolFormatError(f"{path.name}: expected a JSON object")
    return obj


def _fsync_file(path):
    if path.is_dir():
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
