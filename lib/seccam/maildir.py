"""A local Maildir in the place of the mail server, for ``seccam demo`` only.

:class:`Maildir` has the interface of :class:`seccam.transport.Smtp` that
:func:`seccam.send.deliver` uses (``send(raw, from_addr, to_addrs)`` and
``close()``), so the demo passes it as ``smtp_factory`` and runs the real send
step without any network. The SMTP code is not involved and not changed.

Delivery follows maildir(5): the message is written under ``tmp/`` with a
unique name created with ``O_EXCL``, fsynced, and renamed into ``new/``; at
that instant it has arrived, never half-written. Unique names are
``SECONDS.MMICROSPID.QCOUNTER.HOST`` as in Dovecot and qmail.

Like a chatmail relay, it accepts only OpenPGP/MIME (``multipart/encrypted``):
anything else is refused permanently, so even a bug cannot leave clear text
in the demo's mailbox (seccam.send refuses such files earlier already).
"""

import email.parser
import email.policy
import itertools
import os
import socket
import time
from pathlib import Path

from .transport import SmtpPermanentError

_counter = itertools.count(1)


def _host():
    # maildir(5): "/" and ":" cannot appear in the host part of a name.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


def is_encrypted(raw):
    """True if ``raw`` is a PGP/MIME encrypted message (RFC 3156) by its outer headers."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return (headers.get_content_type() == "multipart/encrypted"
            and (headers.get_param("protocol") or "").lower() == "application/pgp-encrypted")


class Maildir:
    """The Maildir at ``root`` (``tmp``, ``new`` and ``cur`` are created, mode 0700)."""

    def __init__(self, root):
        self.root = Path(root)
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.delivered = []

    def __repr__(self):
        return f"Maildir({str(self.root)!r})"

    def _unique_name(self):
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{_host()}"

    def deliver(self, raw):
        """Deliver ``raw`` (bytes) into ``new/``; return the path of the delivered file."""
        while True:
            name = self._unique_name()
            tmp = self.root / "tmp" / name
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # pragma: no cover - needs the same pid, microsecond and counter
                continue
            break
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        dest = self.root / "new" / name
        os.rename(tmp, dest)
        dfd = os.open(self.root / "new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.delivered.append(dest)
        return dest

    # -- the part of seccam.transport.Smtp that seccam.send uses ---------------------
    def send(self, raw, from_addr, to_addrs):
        """Deliver one message; return the refused recipients (none), as smtplib does."""
        if not is_encrypted(raw):
            raise SmtpPermanentError("554 refused: not an OpenPGP/MIME encrypted message", smtp_code=554,
                                     scope="message")
        self.deliver(raw)
        return {}

    def close(self):
        """Nothing to close (a connection would be closed here)."""

    def messages(self):
        """The delivered messages in ``new/``, oldest first."""
        return sorted((self.root / "new").iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
