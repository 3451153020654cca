"""IMAP: the camera's mailbox, read by jobs/inbox.

This module owns the conversation with the IMAP server and nothing else: it
lists the INBOX, fetches a message up to a byte limit, deletes processed
messages and expunges them. What a message means is seccam.inbox's business.

Security (``account.imap_security``), the same rules as seccam.transport:

* ``tls``: implicit TLS (port 993);
* ``starttls``: plain connect, then STARTTLS; a server that does not offer it
  is an :class:`ImapPermanentError` (never a silent downgrade);
* ``plain``: no TLS, accepted by the configuration only for a loopback host.

Certificates are verified against the system store, or ``account.ca_file``.
Failures are :class:`ImapTemporaryError` (network, timeouts, server busy:
retry at the next run) or :class:`ImapPermanentError` (login refused, TLS not
trusted: a human must act). The password never appears in an error.

A message body is fetched with a partial ``BODY.PEEK[]<0.N>`` so that a server
(or a sender) lying about a size can never make the camera read more than
``max_bytes + 1`` bytes.

:meth:`Imap.idle` waits for new mail with IDLE (RFC 2177): the command, the
server's continuation, its untagged reports and the answer to ``DONE`` are read
straight from the socket with ``select()`` and a deadline (imaplib has no IDLE
before Python 3.14, and its buffered reader must not be read with a timeout).
Whatever the server says that is not what RFC 2177 allows ends the connection
with an :class:`ImapTemporaryError`; the caller connects again.
"""

import itertools
import logging
import re
import time

from .errors import ConfigError, PermanentError, TemporaryError

log = logging.getLogger("seccam.imap")

MAILBOX = "INBOX"
# Untagged reports during IDLE that mean "look again": new or removed mail, changed flags.
_IDLE_NEWS_RE = re.compile(rb"^\* (?:\d+ (?:EXISTS|RECENT|EXPUNGE|FETCH)\b|BYE\b)", re.I)
_MAX_LINE = 64 * 1024
_IDLE_TAGS = itertools.count(1)
_FETCH_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapTemporaryError(TemporaryError):
    pass


class ImapPermanentError(PermanentError):
    pass


class NoIdle(ImapTemporaryError):
    """The server refused IDLE although it advertised it: poll instead."""


class Imap:
    """``with Imap(account) as box: for uid, size in box.list(): ...``"""

    def __init__(self, account, ssl_context=None):
        if not account.imap_host:
            raise ConfigError("account.imap_host is not set: jobs/inbox needs the camera's IMAP server "
                              "(docs/configuration.md)")
        self.account = account
        self._context = ssl_context
        self._conn = None
        self._idle = None
        self.where = f"{account.imap_host}:{account.imap_port}"

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _ssl_context(self):
        if self._context is None:
            self._context = self.account.tls_context()
        return self._context

    # -- connection ----------------------------------------------------------------
    def connect(self):
        import imaplib
        import ssl

        acc = self.account
        security = acc.imap_security
        conn = None
        try:
            if security == "tls":
                conn = imaplib.IMAP4_SSL(acc.imap_host, acc.imap_port, ssl_context=self._ssl_context(),
                                         timeout=acc.timeout_s)
            else:
                conn = imaplib.IMAP4(acc.imap_host, acc.imap_port, timeout=acc.timeout_s)
                if security == "starttls":
                    if "STARTTLS" not in conn.capabilities:
                        raise ImapPermanentError(f"{self.where} does not offer STARTTLS; refusing to log in "
                                                 "without TLS (imap_security = \"starttls\")")
                    conn.starttls(ssl_context=self._ssl_context())
            try:
                conn.login(acc.login, acc.read_password())
            except imaplib.IMAP4.error as exc:
                raise ImapPermanentError(f"{self.where}: login as {acc.login} failed: {_text(exc)}") from None
            typ, data = conn.select(MAILBOX)
            if typ != "OK":
                raise ImapTemporaryError(f"{self.where}: cannot open {MAILBOX}: {_text(data)}")
        except (ImapTemporaryError, ImapPermanentError):
            _quietly_close(conn)
            raise
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn)
            raise ImapPermanentError(f"{self.where}: TLS certificate not trusted: {exc.verify_message} "
                                     "(set account.ca_file for a private CA)") from None
        except ssl.SSLError as exc:
            _quietly_close(conn)
            raise ImapTemporaryError(f"{self.where}: TLS failed: {exc.reason or exc}") from None
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            _quietly_close(conn)
            raise ImapTemporaryError(f"{self.where}: cannot connect: "
                                     f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else _text(exc)}"
                                     ) from None
        self._conn = conn
        self._idle = None
        log.debug("imap=%s security=%s state=connected", self.where, security)
        return self

    def can_idle(self):
        """True if the server offers IDLE (asked again after login: servers may say more then)."""
        if self._idle is None:
            try:
                typ, data = self._conn.capability()
                words = b" ".join(d for d in data if isinstance(d, bytes)).upper().split() if typ == "OK" else []
            except Exception:  # noqa: BLE001 - a failed CAPABILITY only means: go by what the greeting said
                words = []
            self._idle = b"IDLE" in words or "IDLE" in self._conn.capabilities
        return self._idle

    def idle(self, seconds):
        """Wait up to ``seconds`` in IDLE; True when the server reported news (new mail),
        False when the time ran out. ImapTemporaryError if the connection fails (it is closed
        then); :class:`NoIdle` if the server refuses the command."""
        conn = self._conn
        tag = b"SCI%d" % next(_IDLE_TAGS)
        deadline = time.monotonic() + max(0.0, seconds)
        reader = _Lines(conn.socket())
        try:
            if _buffered(conn):
                return True  # the server said something already: look before waiting
            conn.send(tag + b" IDLE\r\n")
            first = reader.line(time.monotonic() + self.account.timeout_s)
            if first is None:
                raise ImapTemporaryError(f"{self.where}: no answer to IDLE")
            if first.startswith(tag + b" "):
                raise NoIdle(f"{self.where}: IDLE refused: {_text(first)}")
            if not first.startswith(b"+"):
                raise ImapTemporaryError(f"{self.where}: unexpected answer to IDLE: {_text(first)}")
            news = False
            while not news:
                line = reader.line(deadline)
                if line is None:
                    break
                news = bool(_IDLE_NEWS_RE.match(line))
            conn.send(b"DONE\r\n")
            answer_by = time.monotonic() + self.account.timeout_s
            while True:
                line = reader.line(answer_by)
                if line is None:
                    raise ImapTemporaryError(f"{self.where}: no answer to DONE")
                if line.startswith(tag + b" "):
                    break
                news = news or bool(_IDLE_NEWS_RE.match(line))
            if not line[len(tag) + 1:].upper().startswith(b"OK"):
                raise ImapTemporaryError(f"{self.where}: IDLE ended with {_text(line)}")
            if reader.buffer:
                raise ImapTemporaryError(f"{self.where}: unexpected data after IDLE: {_text(reader.buffer)}")
        except ImapTemporaryError:
            self._drop()
            raise
        except (OSError, EOFError) as exc:
            self._drop()
            raise ImapTemporaryError(f"{self.where}: connection lost during IDLE: {_text(str(exc))}") from None
        log.debug("imap=%s idle=done news=%s", self.where, news)
        return news

    def _drop(self):
        _quietly_close(self._conn)
        self._conn = None

    def close(self):
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
            conn.logout()
        except Exception:  # noqa: BLE001 - closing a broken connection must not raise
            _quietly_close(conn)

    # -- commands -------------------------------------------------------------------
    def _uid(self, command, *args):
        import imaplib
        try:
            typ, data = self._conn.uid(command, *args)
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            _quietly_close(self._conn)
            self._conn = None
            raise ImapTemporaryError(f"{self.where}: connection lost during {command}: {_text(exc)}") from None
        except imaplib.IMAP4.error as exc:
            raise ImapTemporaryError(f"{self.where}: {command} failed: {_text(exc)}") from None
        if typ != "OK":
            raise ImapTemporaryError(f"{self.where}: {command} failed: {_text(data)}")
        return data

    def list(self):
        """``[(uid, size), ...]`` of every message in the INBOX not yet marked deleted, oldest first
        (a run that died before EXPUNGE must not make the next one handle its messages twice)."""
        data = self._uid("SEARCH", None, "UNDELETED")
        uids = sorted(int(u) for u in b" ".join(d for d in data if d).split())
        if not uids:
            return []
        sizes = {}
        for item in self._uid("FETCH", ",".join(map(str, uids)), "(RFC822.SIZE)"):
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, size = _FETCH_RE.search(line), _SIZE_RE.search(line)
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return [(uid, sizes.get(uid)) for uid in uids]

    def fetch(self, uid, max_bytes):
        """The message's bytes, at most ``max_bytes + 1`` of them (more means: too large);
        None if it vanished."""
        data = self._uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{int(max_bytes) + 1}>)")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    def delete(self, uid):
        """Mark a message deleted (gone for good at :meth:`expunge`)."""
        self._uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")

    def expunge(self):
        import imaplib
        try:
            typ, data = self._conn.expunge()
        except (imaplib.IMAP4.error, OSError, EOFError) as exc:
            raise ImapTemporaryError(f"{self.where}: EXPUNGE failed: {_text(exc)}") from None
        if typ != "OK":
            raise ImapTemporaryError(f"{self.where}: EXPUNGE failed: {_text(data)}")


class _Lines:
    """CRLF lines read from a socket with a deadline, without imaplib's buffered reader."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def line(self, deadline):
        """The next line without its CRLF, or None when ``deadline`` (monotonic) passes first."""
        import select
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_LINE:
                raise ImapTemporaryError(f"a line longer than {_MAX_LINE} bytes during IDLE")
            pending = getattr(self.sock, "pending", lambda: 0)()  # TLS: bytes already decrypted
            if not pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                    return None
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("the server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line


def _buffered(conn):
    """True if imaplib's reader holds bytes the server sent after its last answer (then IDLE
    would wait for news that is already here). Peeks without blocking."""
    import ssl
    reader = getattr(conn, "file", None)
    if reader is None:  # pragma: no cover - imaplib has kept it as .file from 3.0 to 3.13
        return False
    sock = conn.socket()
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        return bool(reader.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)


def _text(value):
    if isinstance(value, (list, tuple)):
        value = b" ".join(v for v in value if isinstance(v, bytes)) or str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:200]


def _quietly_close(conn):
    if conn is None:
        return
    try:
        conn.shutdown()
    except Exception:  # noqa: BLE001
        pass
