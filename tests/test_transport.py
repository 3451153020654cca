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
