"""SMTP submission: one authenticated, certificate-checked connection per send run.

This module owns the conversation with the mail server and the meaning of its
answers; it knows nothing about the spool. :class:`Smtp` connects lazily,
keeps one connection for all messages of a run and reconnects once if the
server dropped it between messages.

Security (``account.smtp_security``):

* ``tls``: implicit TLS (port 465);
* ``starttls``: plain connect, then STARTTLS; a server that does not offer it
  is a :class:`SmtpPermanentError` (never a silent downgrade);
* ``plain``: no TLS, accepted by the configuration only for a loopback host.

Certificates are verified against the system store, or ``account.ca_file``.

Every failure is raised as :class:`SmtpTemporaryError` (4xx, network,
timeouts: retry later) or :class:`SmtpPermanentError` (5xx, authentication,
TLS verification: a human must act), carrying ``smtp_code`` (None when there
was no SMTP reply) and ``scope``: ``"session"`` when the connection or the
account failed (every message would fail the same way) or ``"message"`` when
the server refused this one message. The password never appears in an error.
"""

import logging

from .errors import PermanentError, TemporaryError

log = logging.getLogger("seccam.transport")


class SmtpTemporaryError(TemporaryError):
    auth = False

    def __init__(self, message, smtp_code=None, scope="session"):
        super().__init__(message)
        self.smtp_code = smtp_code
        self.scope = scope


class SmtpPermanentError(PermanentError):
    auth = False

    def __init__(self, message, smtp_code=None, scope="session"):
        super().__init__(message)
        self.smtp_code = smtp_code
        self.scope = scope


def _reply_text(resp):
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join(str(resp).split())[:200]


def classify(code, text, scope):
    """The error for SMTP reply ``code``: 4xx temporary, anything else permanent."""
    cls = SmtpTemporaryError if code is not None and 400 <= code < 500 else SmtpPermanentError
    return cls(f"{code} {_reply_text(text)}".strip(), smtp_code=code, scope=scope)


class Smtp:
    """``with Smtp(account) as smtp: smtp.send(raw, from_addr, to_addrs)``."""

    def __init__(self, account, ssl_context=None):
        self.account = account
        self._context = ssl_context
        self._conn = None
        self.where = f"{account.smtp_host}:{account.smtp_port}"

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- connection ----------------------------------------------------------------
    def _ssl_context(self):
        if self._context is None:
            self._context = self.account.tls_context()
        return self._context

    def connect(self):
        """Open, secure and authenticate the connection; raise a classified error on failure."""
        import smtplib
        import ssl

        acc = self.account
        security = acc.smtp_security
        conn = None
        try:
            if security == "tls":
                conn = smtplib.SMTP_SSL(acc.smtp_host, acc.smtp_port, timeout=acc.timeout_s,
                                        context=self._ssl_context())
            else:
                conn = smtplib.SMTP(acc.smtp_host, acc.smtp_port, timeout=acc.timeout_s)
            conn.ehlo()
            if security == "starttls":
                if not conn.has_extn("starttls"):
                    raise SmtpPermanentError(f"{self.where} does not offer STARTTLS; refusing to send without TLS "
                                             "(smtp_security = \"starttls\")")
                code, resp = conn.starttls(context=self._ssl_context())
                if code != 220:  # pragma: no cover - smtplib raises SMTPResponseException for any other reply
                    raise classify(code, resp, "session")
                conn.ehlo()
            if security != "plain" or conn.has_extn("auth"):
                if not conn.has_extn("auth"):
                    raise SmtpPermanentError(f"{self.where} offers no AUTH; cannot log in")
                conn.login(acc.login, acc.read_password())
        except (SmtpTemporaryError, SmtpPermanentError):
            _quietly_close(conn)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            err = classify(exc.smtp_code, exc.smtp_error, "session")
            err = type(err)(f"{self.where}: login as {acc.login} failed: {err}", exc.smtp_code)
            err.auth = True  # retried rarely: repeated bad logins can lock the account
            raise err from None
        except smtplib.SMTPNotSupportedError as exc:  # pragma: no cover - smtplib raises it only for a
            # missing STARTTLS or AUTH extension, which connect() checks first; kept for a future smtplib
            _quietly_close(conn)
            raise SmtpPermanentError(f"{self.where}: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn)
            err = classify(exc.smtp_code, exc.smtp_error, "session")
            raise type(err)(f"{self.where}: {err}", exc.smtp_code) from None
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn)
            raise SmtpPermanentError(f"{self.where}: TLS certificate not trusted: {exc.verify_message} "
                                     "(set account.ca_file for a private CA)") from None
        except ssl.SSLError as exc:
            _quietly_close(conn)
            raise SmtpTemporaryError(f"{self.where}: TLS failed: {exc.reason or exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            _quietly_close(conn)
            raise SmtpTemporaryError(f"{self.where}: cannot connect: {exc.strerror or exc}"
                                     if isinstance(exc, OSError) else f"{self.where}: {exc}") from None
        self._conn = conn
        log.info("smtp=%s security=%s state=connected", self.where, security)
        return self

    def close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001 - closing a broken connection must not raise
                _quietly_close(conn)

    # -- sending ---------------------------------------------------------------------
    def send(self, raw, from_addr, to_addrs):
        """Submit ``raw`` (bytes, CRLF) and return once the server replied 250 to DATA.

        Returns the recipients the server refused (``{addr: (code, text)}``)
        when it accepted the message for the others.
        """
        import smtplib

        for attempt in (1, 2):
            if self._conn is None:
                self.connect()
            try:
                refused = self._conn.sendmail(from_addr, list(to_addrs), raw)
                return {a: (code, _reply_text(text)) for a, (code, text) in refused.items()}
            except smtplib.SMTPServerDisconnected as exc:
                self._conn = None
                if attempt == 2:
                    raise SmtpTemporaryError(f"{self.where}: connection lost: {exc}") from None
                # Dropped while idle, or mid-message: send again on a new connection. A
                # duplicate carries the same Message-ID, which Delta Chat shows once.
                log.info("smtp=%s state=reconnecting reason=%r", self.where, str(exc))
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                code = min(codes) if all(400 <= c < 500 for c in codes) else max(codes)
                detail = "; ".join(f"{a}: {c} {_reply_text(t)}" for a, (c, t) in exc.recipients.items())
                self._reset()
                raise classify(code, f"recipients refused: {detail}", "message") from None
            except smtplib.SMTPResponseException as exc:
                self._reset()
                # A refused sender (MAIL FROM) is about the account, not about this message.
                scope = "session" if isinstance(exc, smtplib.SMTPSenderRefused) else "message"
                raise classify(exc.smtp_code, exc.smtp_error, scope) from None
            except (smtplib.SMTPException, OSError) as exc:  # pragma: no cover - smtplib turns socket errors
                # into SMTPServerDisconnected and replies into SMTPResponseException; a net for anything else
                _quietly_close(self._conn)
                self._conn = None
                raise SmtpTemporaryError(f"{self.where}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns or raises

    def _reset(self):
        import smtplib
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            _quietly_close(self._conn)
            self._conn = None


def _quietly_close(conn):
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
