"""seccam.transport: SMTP submission against a real aiosmtpd on loopback."""

import shutil
import socket
import ssl

import pytest

from helpers import sendkit
from seccam import config as config_mod
from seccam.transport import Smtp, SmtpPermanentError, SmtpTemporaryError

RAW = (b'From: "Front door" <cam@seccam.test>\r\nTo: owner@seccam.test\r\nSubject: [...]\r\n'
       b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n")


@pytest.fixture(scope="module")
def certs():
    d = sendkit.short_dir("sct")
    cert, key = sendkit.make_cert(d)
    yield cert, key
    shutil.rmtree(d, ignore_errors=True)


def account(port, security, ca_file=None, password=sendkit.PASSWORD, tmp=None):
    text = (f'spool_dir = "/tmp/unused"\n'
            + sendkit.account_toml(port=port, security=security, ca_file=ca_file, timeout=5))
    if password != sendkit.PASSWORD:
        text = text.replace(sendkit.PASSWORD, password)
    return config_mod.parse(text, "t.toml").account


def send_one(acc):
    with Smtp(acc) as smtp:
        return smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])


def test_starttls_with_verified_certificate_and_login(certs):
    cert, key = certs
    with sendkit.SmtpSink("starttls", cert, key) as sink:
        assert send_one(account(sink.port, "starttls", ca_file=cert)) == {}
    (rec,) = sink.received
    assert rec.tls and rec.data.replace(b"\r\n", b"\n") == RAW.replace(b"\r\n", b"\n")
    assert rec.mail_from == "cam@seccam.test" and rec.rcpt_tos == ["owner@seccam.test"]


def test_implicit_tls_with_verified_certificate(certs):
    cert, key = certs
    with sendkit.SmtpSink("tls", cert, key) as sink:
        send_one(account(sink.port, "tls", ca_file=cert))
    assert len(sink.received) == 1 and sink.received[0].tls


def test_plain_to_loopback(certs):
    with sendkit.SmtpSink("plain") as sink:
        send_one(account(sink.port, "plain"))
    assert len(sink.received) == 1 and not sink.received[0].tls


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_unverified_certificate_is_refused_permanently(certs, security):
    cert, key = certs
    with sendkit.SmtpSink(security, cert, key) as sink:
        with pytest.raises(SmtpPermanentError, match="certificate") as err:
            send_one(account(sink.port, security))  # system CAs only: the self-signed cert is unknown
    assert err.value.scope == "session" and sink.received == []


def test_starttls_not_offered_is_a_permanent_error_not_a_downgrade():
    with sendkit.SmtpSink("no-starttls") as sink:
        with pytest.raises(SmtpPermanentError, match="does not offer STARTTLS") as err:
            send_one(account(sink.port, "starttls"))
    assert err.value.scope == "session" and sink.received == []


def test_wrong_password_is_permanent_with_the_smtp_code(certs):
    cert, key = certs
    with sendkit.SmtpSink("starttls", cert, key) as sink:
        with pytest.raises(SmtpPermanentError) as err:
            send_one(account(sink.port, "starttls", ca_file=cert, password="wrong"))
    assert err.value.smtp_code == 535 and "wrong" not in str(err.value) and sink.received == []


def test_4xx_after_data_is_temporary_and_5xx_permanent_for_the_message():
    with sendkit.SmtpSink("plain") as sink:
        sink.replies = ["451 4.3.0 try again later", "554 5.7.1 rejected"]
        with Smtp(account(sink.port, "plain")) as smtp:
            with pytest.raises(SmtpTemporaryError) as temp:
                smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])
            with pytest.raises(SmtpPermanentError) as perm:
                smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])
            smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])  # same connection still usable
    assert (temp.value.smtp_code, temp.value.scope) == (451, "message")
    assert (perm.value.smtp_code, perm.value.scope) == (554, "message")
    assert len(sink.received) == 1 and sink.connections == 1


def test_connection_refused_is_temporary():
    port = sendkit.free_port()
    with pytest.raises(SmtpTemporaryError, match="cannot connect") as err:
        send_one(account(port, "plain"))
    assert err.value.scope == "session" and err.value.smtp_code is None


def test_reconnects_once_when_the_server_dropped_the_connection():
    with sendkit.SmtpSink("plain") as sink:
        with Smtp(account(sink.port, "plain")) as smtp:
            smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])
            smtp._conn.sock.shutdown(socket.SHUT_RDWR)  # as if the server timed the idle connection out
            smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])
    assert len(sink.received) == 2 and sink.connections == 2


def test_ssl_context_uses_ca_file(certs):
    cert, _ = certs
    ctx = Smtp(account(1, "tls", ca_file=cert))._ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


# -- server behaviour aiosmtpd never shows: a scripted SMTP server on loopback -----------------
class ScriptedSmtp:
    """An SMTP server on loopback answering from ``script``: command (``EHLO``, ``MAIL``,
    ``DATA-END`` for the reply after the message, ``QUIT``, ...) -> reply lines, or "DROP"
    (close the connection), or "HANG" (never answer). ``greeting`` is the first reply.
    Every connection gets the same script; ``tls`` (cert, key) wraps them in implicit TLS."""

    def __init__(self, script, greeting="220 scripted ESMTP", tls=None):
        import threading
        self.script = {"EHLO": ["250-scripted", "250 AUTH PLAIN"], "AUTH": ["235 2.7.0 accepted"],
                       "QUIT": ["221 bye"], **script}
        self.greeting = greeting
        self.commands = []
        self._tls = None
        if tls:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*map(str, tls))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                if self._tls:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                self._talk(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _talk(self, conn):
        rfile = conn.makefile("rb")
        conn.sendall(self.greeting.encode() + b"\r\n")
        in_data = False
        for line in rfile:
            if in_data:
                if line.rstrip(b"\r\n") != b".":
                    continue
                in_data, command = False, "DATA-END"
            else:
                command = line.split(b" ", 1)[0].strip().decode().upper()
            self.commands.append(command)
            reply = self.script.get(command, ["354 go on"] if command == "DATA" else ["250 OK"])
            if reply == "DROP":
                return
            if reply == "HANG":
                rfile.read()  # until the client gives up
                return
            conn.sendall(b"".join(r.encode() + b"\r\n" for r in reply))
            in_data = command == "DATA"
            if command == "QUIT":
                return

    def close(self):
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def scripted():
    servers = []

    def start(script=None, **kw):
        servers.append(ScriptedSmtp(script or {}, **kw))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def test_a_greeting_of_421_is_temporary_and_of_554_permanent(scripted):
    with pytest.raises(SmtpTemporaryError) as temp:
        send_one(account(scripted(greeting="421 4.3.2 too busy").port, "plain"))
    with pytest.raises(SmtpPermanentError) as perm:
        send_one(account(scripted(greeting="554 5.7.1 go away").port, "plain"))
    assert (temp.value.smtp_code, temp.value.scope) == (421, "session")
    assert (perm.value.smtp_code, perm.value.scope) == (554, "session")


def test_starttls_that_the_server_then_refuses_is_classified_by_its_code(scripted):
    server = scripted({"EHLO": ["250-scripted", "250 STARTTLS"], "STARTTLS": ["454 4.7.0 TLS not available"]})
    with pytest.raises(SmtpTemporaryError) as err:
        send_one(account(server.port, "starttls"))
    assert err.value.smtp_code == 454 and "MAIL" not in server.commands


def test_a_tls_server_without_auth_is_permanent_as_the_camera_cannot_log_in(scripted, certs):
    server = scripted({"EHLO": ["250-scripted", "250 8BITMIME"]}, tls=certs)
    with pytest.raises(SmtpPermanentError, match="offers no AUTH"):
        send_one(account(server.port, "tls", ca_file=certs[0]))
    assert "MAIL" not in server.commands


def test_implicit_tls_to_a_plain_text_server_is_a_temporary_tls_failure():
    with sendkit.SmtpSink("plain") as sink:
        with pytest.raises(SmtpTemporaryError, match="TLS failed"):
            send_one(account(sink.port, "tls"))
    assert sink.received == []


def test_a_connection_lost_again_after_reconnecting_is_temporary(scripted):
    server = scripted({"MAIL": "DROP"})
    with pytest.raises(SmtpTemporaryError, match="connection lost") as err:
        send_one(account(server.port, "plain"))
    assert err.value.scope == "session" and server.commands.count("MAIL") == 2


def test_a_server_that_never_answers_the_message_is_temporary_after_one_more_try(scripted):
    import dataclasses
    server = scripted({"DATA-END": "HANG"})
    acc = dataclasses.replace(account(server.port, "plain"), timeout_s=0.3)
    smtp = Smtp(acc).connect()
    with pytest.raises(SmtpTemporaryError, match="connection lost: .*timed out"):
        smtp.send(RAW, "cam@seccam.test", ["owner@seccam.test"])
    assert smtp._conn is None and server.commands.count("DATA-END") == 2
    smtp.close()


def test_closing_a_connection_the_server_already_dropped_does_not_raise(scripted, monkeypatch):
    import smtplib
    server = scripted({"QUIT": "DROP"})
    smtp = Smtp(account(server.port, "plain")).connect()

    def failing_close(self):
        raise OSError("socket already gone")
    monkeypatch.setattr(smtplib.SMTP, "close", failing_close)  # even the socket's close fails
    smtp.close()
    assert smtp._conn is None and "QUIT" in server.commands
