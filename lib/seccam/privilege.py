"""Who a command runs for, and as whom it does its work.

``sudo seccam ...`` starts as root. The spool and the key store belong to
the service user, so a command does its work as the spool's owner (like
Postfix's postqueue), and everything it publishes is readable by the
service. But the files a person names on the command line are *theirs*:
``keys import ~/owner.asc`` is in a home directory the service user cannot
enter (0700 on Debian 12 and 13), and ``export-secret --output ~/key.asc``
must give them a file they own. So:

* :class:`CommandFiles` opens those files *before* privileges are dropped,
  with the invoking user's rights (root under sudo): inputs are read into
  memory, outputs are created new (``O_EXCL``: never overwritten, never
  through a symlink) and handed to the command as open files. An output
  belongs to the invoking user (``SUDO_UID``/``SUDO_GID`` when root runs it
  for someone through sudo) with the mode the command asks for.
* :func:`run_as_spool_owner` then switches to the spool's owner for good and
  runs the command. An output the command leaves empty (it failed, or a
  camera took no picture) is removed again; after the switch only a process
  that kept the invoking user's rights can do that, so when outputs were
  created the process forks first: the child switches and works, the parent
  only waits, removes what stayed empty, and exits with the child's status.
  The unprivileged child never regains root.

Nothing here runs when the process is not root, or when the spool belongs
to root: the command then simply runs, and still removes its empty outputs.
"""

import contextlib
import os
import signal
import sys

from .errors import EX_NOPERM, DataError, SeccamError

# The largest file a command reads whole (a key, a vCard, an e-mail with an Autocrypt header).
MAX_INPUT_BYTES = 4 * 1024 * 1024


class NeedsRootError(SeccamError):
    """The command must run as root (sudo) or as the spool's owner."""

    exit_code = EX_NOPERM


def invoking_user(environ=None):
    """``(uid, gid)`` of the person who ran the command: sudo's SUDO_UID/SUDO_GID when
    root runs it through sudo, else the process's own user."""
    environ = os.environ if environ is None else environ
    if os.geteuid() == 0:
        try:
            return int(environ["SUDO_UID"]), int(environ["SUDO_GID"])
        except (KeyError, ValueError):
            pass
    return os.geteuid(), os.getegid()


def spool_owner(config):
    """The passwd entry of the user to switch to (the spool's owner), or None when this
    process is not root, the spool does not exist yet, or it belongs to root."""
    if os.geteuid() != 0:
        return None
    try:
        owner = os.stat(config.spool_dir).st_uid
    except OSError:
        return None
    if owner == 0:
        return None
    import pwd
    return pwd.getpwuid(owner)


def switch_to(entry):
    """Become ``entry`` (a passwd entry) for good: its groups, gid, uid and HOME."""
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    return entry.pw_name


def check_access(config, command_line):
    """A person who is neither root nor the spool's owner gets one clear line saying to use
    sudo, instead of the first "Permission denied" of whatever the command touches."""
    if os.geteuid() == 0:
        return
    try:
        owner = os.stat(config.spool_dir).st_uid
    except OSError:
        return  # no spool yet: the command says what it needs
    if owner != os.geteuid():
        import pwd
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"uid {owner}"
        raise NeedsRootError(f"the spool {config.spool_dir} and the camera's keys belong to {name}: "
                             f"run it with sudo:  sudo {command_line}")


def check_config_readable(path, command_line):
    """NeedsRootError when the configuration exists but this (non-root) user cannot read it."""
    if os.geteuid() != 0 and os.path.exists(path) and not os.access(path, os.R_OK):
        raise NeedsRootError(f"{path} is readable only by root and the service: run it with sudo:  "
                             f"sudo {command_line}")


class CommandFiles:
    """The files named on a command line, opened with the invoking user's rights.

    ``owner`` is ``(uid, gid)`` of whom outputs belong to (default:
    :func:`invoking_user`). Every output is remembered; :meth:`remove_unfilled`
    removes those still empty.
    """

    def __init__(self, owner=None):
        self.owner = owner or invoking_user()
        self.created = []       # [(path, device, inode)]

    def read(self, path, limit=MAX_INPUT_BYTES, what="file"):
        """The bytes of ``path``; DataError naming the file if it cannot be read or is too large."""
        try:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror}") from None
        if len(data) > limit:
            raise DataError(f"{path}: larger than {limit // (1024 * 1024)} MiB; not a {what}")
        return data

    def create(self, path, mode=0o600):
        """A new file ``path`` (never an existing one, never through a symlink), open for
        writing in binary mode, owned by :attr:`owner`, with exactly ``mode``."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, mode & 0o600)
        except FileExistsError:
            raise DataError(f"{path} exists; choose another name (an existing file is never overwritten)") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot create: {exc.strerror}") from None
        st = os.fstat(fd)
        self.created.append((os.path.abspath(path), st.st_dev, st.st_ino))
        try:
            self._give(fd)
            os.fchmod(fd, mode)  # O_CREAT's mode is reduced by the umask, never widened: make it exact
        except OSError as exc:  # pragma: no cover - we created the file just now, as root or as its owner
            os.close(fd)
            raise DataError(f"{path}: cannot set its owner or mode: {exc.strerror}") from None
        return os.fdopen(fd, "wb")

    def make_dir(self, path, mode=0o755):
        """Directory ``path`` and its missing parents; the ones made here belong to :attr:`owner`."""
        path = os.path.abspath(path)
        missing = []
        probe = path
        while not os.path.lexists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        for directory in reversed(missing):
            try:
                os.mkdir(directory, mode)
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    self._give(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise DataError(f"{directory}: cannot create: {exc.strerror}") from None
        return path

    def _give(self, fd):
        if os.geteuid() == 0 and self.owner != (0, 0):
            os.fchown(fd, *self.owner)

    def remove_unfilled(self):
        """Remove the outputs that are still empty (the command failed, or had nothing to write)."""
        for path, device, inode in self.created:
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == (device, inode) and st.st_size == 0:
                    os.unlink(path)
        self.created = []


def run_as_spool_owner(config, work, files=None):
    """Run ``work()`` as the spool's owner (see the module docstring) and return its exit code.

    ``config`` None: no switch (a command that needs no configuration).
    """
    files = files or CommandFiles()
    entry = spool_owner(config) if config is not None else None
    if entry is None:
        try:
            return work()
        finally:
            files.remove_unfilled()
    if not files.created:
        switch_to(entry)
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        # The child: it leaves through the caller's normal path (runtime.run, sys.exit), so
        # its one-line error and its exit code are the command's.
        files.created = []
        switch_to(entry)
        return work()
    return _wait_for(pid, files)


def _wait_for(pid, files):
    """The parent: wait for the child, pass Ctrl-C and termination on to it, clean up after it."""
    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    # Ctrl-C reaches the child from the terminal by itself; the parent must not also report it.
    saved = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
             signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
             signal.SIGHUP: signal.signal(signal.SIGHUP, forward)}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        files.remove_unfilled()
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code
