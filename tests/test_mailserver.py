"""Tests of the test infrastructure itself (owned by the test-infrastructure helper):
the loopback MailServer (helpers.mailserver), the PGP/MIME checker and the
Delta Chat core helpers (helpers.deltachat) behind the fixtures in
helpers.mailfixtures."""

import email
import email.policy
import imaplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import uuid
from email.message import EmailMessage

import pytest

from helpers.mailfixtures import check_pgp_mime
from helpers.mailserver import MailServer


def _mail(sender, rcpt, subject="hello", body="body text\n"):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@seccam.test>"
    msg.set_content(body)
    return msg


def _smtp_starttls(ms, addr, password, timeout=10):
    s = smtplib.SMTP(ms.host, ms.smtp_port, timeout=timeout)
    s.starttls(context=ssl.create_default_context(cafile=ms.cafile))
    s.login(addr, password)
    return s


# ---------------------------------------------------------------- delivery path
def test_starttls_auth_submission_with_verified_cert_lands_in_imap(mailserver):
    alice, alice_pw = mailserver.new_user("alice")
    bob, bob_pw = mailserver.new_user("bob")
    start = len(mailserver.received)
    msg = _mail(alice, bob, subject="infra check")
    with _smtp_starttls(mailserver, alice, alice_pw) as s:
        s.send_message(msg)

    rec = mailserver.wait_for_received(lambda m: m.mail_from == alice, start=start)
    assert (rec.listener, rec.tls, rec.auth_user, rec.rcpt_tos) == ("starttls", True, alice, [bob])
    assert rec.accepted and rec.port == mailserver.smtp_port

    ctx = ssl.create_default_context(cafile=mailserver.cafile)
    with imaplib.IMAP4_SSL(mailserver.host, mailserver.imaps_port, ssl_context=ctx) as imap:
        imap.login(bob, bob_pw)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        [num] = data[0].split()
        _, parts = imap.fetch(num, "(BODY.PEEK[])")
    got = email.message_from_bytes(parts[0][1], policy=email.policy.default)
    assert got["Message-ID"] == msg["Message-ID"] and got["Subject"] == "infra check"

    # the STARTTLS IMAP port verifies against the same certificate
    with imaplib.IMAP4(mailserver.host, mailserver.imap_port) as imap:
        imap.starttls(ssl_context=ctx)
        imap.login(bob, bob_pw)
    assert len(mailserver.fetch_inbox(bob)) == 1


def test_certificate_is_rejected_without_cafile(mailserver):
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(mailserver.host, mailserver.smtps_port, timeout=10,
                         context=ssl.create_default_context())


def test_implicit_tls_port_requires_auth_and_plain_port_does_not(mailserver):
    a, a_pw = mailserver.new_user("tls")
    ctx = mailserver.ssl_context()
    with smtplib.SMTP_SSL(mailserver.host, mailserver.smtps_port, context=ctx, timeout=10) as s:
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.sendmail(a, [a], _mail(a, a).as_bytes())
        assert exc.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(a, "wrong")
        s.login(a, a_pw)
        s.sendmail(a, [a], _mail(a, a).as_bytes())
    with smtplib.SMTP(mailserver.host, mailserver.smtp_plain_port, timeout=10) as s:
        s.sendmail(a, [a], _mail(a, a).as_bytes())
    recs = [m for m in mailserver.received if m.mail_from == a]
    assert [(m.listener, m.tls, m.auth_user) for m in recs] == [("ssl", True, a), ("plain", False, None)]
    assert len(mailserver.fetch_inbox(a)) == 2


def test_unknown_recipient_is_refused_with_550(mailserver):
    a, _ = mailserver.new_user("u")
    with smtplib.SMTP(mailserver.host, mailserver.smtp_plain_port, timeout=10) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.sendmail(a, ["nobody@seccam.test"], _mail(a, "nobody@seccam.test").as_bytes())
    assert exc.value.recipients["nobody@seccam.test"][0] == 550


# ---------------------------------------------------------------- fault hooks
def test_injected_451_at_data_applies_once_then_delivers(mailserver):
    a, a_pw = mailserver.new_user("f")
    mailserver.smtp_behavior = {"stage": "DATA", "code": 451, "text": "4.3.0 try later", "times": 1}
    with _smtp_starttls(mailserver, a, a_pw) as s:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.sendmail(a, [a], _mail(a, a).as_bytes())
        assert exc.value.smtp_code == 451 and b"try later" in exc.value.smtp_error
        s.sendmail(a, [a], _mail(a, a).as_bytes())
    assert mailserver.smtp_behavior is None
    assert [m.response[:3] for m in mailserver.received if m.mail_from == a] == ["451", "250"]
    assert len(mailserver.fetch_inbox(a)) == 1


@pytest.mark.parametrize("stage", ["MAIL", "RCPT"])
def test_injected_550_at_envelope_stage(mailserver, stage):
    a, a_pw = mailserver.new_user("e")
    mailserver.smtp_behavior = {"stage": stage, "code": 550, "text": "5.7.1 rejected"}
    with _smtp_starttls(mailserver, a, a_pw) as s:
        error = smtplib.SMTPSenderRefused if stage == "MAIL" else smtplib.SMTPRecipientsRefused
        with pytest.raises(error):
            s.sendmail(a, [a], _mail(a, a).as_bytes())
    assert mailserver.smtp_behavior is not None  # no "times": stays until reset
    assert not [m for m in mailserver.received if m.mail_from == a]


def test_injected_hang_mid_data_holds_reply_until_released(mailserver):
    a, a_pw = mailserver.new_user("h")
    start = len(mailserver.received)
    mailserver.smtp_behavior = {"stage": "DATA", "hang": True}
    outcome = {}

    def client():
        with _smtp_starttls(mailserver, a, a_pw, timeout=15) as s:
            try:
                s.sendmail(a, [a], _mail(a, a).as_bytes())
            except smtplib.SMTPDataError as exc:
                outcome["code"] = exc.smtp_code

    t = threading.Thread(target=client)
    t.start()
    rec = mailserver.wait_for_hang(start=start)  # DATA content received, no reply sent
    assert rec.mail_from == a and rec.response is None and t.is_alive()
    mailserver.release_hang()
    t.join(15)
    assert outcome == {"code": 451} and rec.response.startswith("451")
    assert mailserver.fetch_inbox(a) == []


def test_hang_lets_client_time_out(mailserver):
    a, a_pw = mailserver.new_user("t")
    start = len(mailserver.received)
    mailserver.smtp_behavior = {"stage": "DATA", "hang": True}
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        with _smtp_starttls(mailserver, a, a_pw, timeout=0.3) as s:
            s.sendmail(a, [a], _mail(a, a).as_bytes())
    rec = mailserver.wait_for_received(lambda m: m.mail_from == a, start=start)
    assert mailserver.wait_for_response(rec) == "closed: client disconnected during hang"
    assert not rec.accepted


def test_stop_smtp_refuses_connections_and_start_smtp_reuses_ports(mailserver):
    a, a_pw = mailserver.new_user("r")
    ports = (mailserver.smtp_port, mailserver.smtps_port, mailserver.smtp_plain_port)
    mailserver.stop_smtp()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((mailserver.host, port), timeout=5)
    mailserver.start_smtp()
    assert (mailserver.smtp_port, mailserver.smtps_port, mailserver.smtp_plain_port) == ports
    with _smtp_starttls(mailserver, a, a_pw) as s:
        s.sendmail(a, [a], _mail(a, a).as_bytes())
    assert len(mailserver.fetch_inbox(a)) == 1


def test_the_configuration_is_the_installed_dovecots_own_syntax(mailserver):
    """Dovecot 2.3 (bookworm) and 2.4 (trixie, `dovecot_config_version` first, renamed settings)
    each get their own syntax: the installed doveconf reads the running server's file without
    a warning, and the file is in the syntax of that version."""
    from helpers.mailserver import dovecot_version

    proc = subprocess.run(["doveconf", "-c", mailserver.dovecot_conf, "-n"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "warning" not in proc.stderr.lower(), proc.stderr
    text = open(mailserver.dovecot_conf).read()
    first = next(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if dovecot_version() >= (2, 4):
        assert first.startswith("dovecot_config_version = ") and "mail_driver = maildir" in text
        assert "ssl_cert =" not in text and "mail_location" not in text
    else:
        assert "dovecot_config_version" not in text and "mail_location = maildir:~/Maildir" in text


def test_mailserver_shuts_down_cleanly():
    with MailServer() as ms:
        tmpdir, port = ms.tmpdir, ms.imaps_port
        pid = ms._dovecot.pid
        addr, pw = ms.add_user("x@seccam.test", "pw-123")
        assert addr in ms.users
    assert not ms.running and ms.tmpdir is None
    assert not __import__("os").path.exists(tmpdir)
    with pytest.raises(ProcessLookupError):
        __import__("os").kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# ---------------------------------------------------------------- PGP/MIME checker
@pytest.fixture
def gpg_home():
    home = tempfile.mkdtemp(prefix="sc-g-", dir="/tmp")
    base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(base + ["--quick-gen-key", "cam@seccam.test", "ed25519", "sign", "0"],
                   check=True, capture_output=True)
    fpr = subprocess.run(["gpg", "--homedir", home, "--with-colons", "-K"], check=True,
                         capture_output=True, text=True).stdout
    fpr = next(ln.split(":")[9] for ln in fpr.splitlines() if ln.startswith("fpr"))
    subprocess.run(base + ["--quick-add-key", fpr, "cv25519", "encr", "0"],
                   check=True, capture_output=True)
    yield home, fpr
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def _pgp_mime(home, *extra):
    armored = subprocess.run(
        ["gpg", "--homedir", home, "--batch", "--trust-model", "always", "--armor",
         "--encrypt", "--sign", "-r", "cam@seccam.test", *extra],
        input=b"Content-Type: text/plain\r\n\r\nsecret\r\n", check=True, capture_output=True).stdout
    return (b'From: cam@seccam.test\r\nTo: o@seccam.test\r\nMIME-Version: 1.0\r\n'
            b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="B"\r\n'
            b'\r\n--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n'
            b'\r\n--B\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
            + armored.replace(b"\n", b"\r\n") + b"\r\n--B--\r\n")


def test_check_pgp_mime_accepts_gpg_sign_encrypt_and_flags_defects(gpg_home):
    home, fpr = gpg_home
    good = _pgp_mime(home)
    assert check_pgp_mime(good) == []
    assert check_pgp_mime(good, gnupghome=home, signer=fpr) == []

    assert any("Version:" in p for p in check_pgp_mime(_pgp_mime(home, "--emit-version")))
    plain = _mail("cam@seccam.test", "o@seccam.test").as_bytes()
    assert check_pgp_mime(plain) == ["Content-Type is text/plain, not multipart/encrypted"]
    no_control = good.replace(b"Version: 1\r\n", b"Version: 2\r\n")
    assert any("Version: 1" in p for p in check_pgp_mime(no_control))


@pytest.mark.allow_plaintext
def test_plaintext_from_camera_address_is_detected(mailserver):
    cam, cam_pw = mailserver.new_user("cam")
    mailserver.add_camera_address(cam)
    start = len(mailserver.received)
    with _smtp_starttls(mailserver, cam, cam_pw) as s:
        s.send_message(_mail(cam, cam))
    rec = mailserver.wait_for_received(lambda m: m.mail_from == cam, start=start)
    from helpers.mailfixtures import _is_camera_message

    assert _is_camera_message(mailserver, rec)
    assert check_pgp_mime(rec.raw)  # the autouse check would fail this test without the marker


# ---------------------------------------------------------------- Delta Chat core
def test_two_delta_chat_accounts_exchange_encrypted_messages(mailserver, dc_owner, dc_account_factory):
    friend = dc_account_factory(name="Friend", security="starttls", prefix="friend")
    start = len(mailserver.received)

    # the friend gets the owner's key out of band (vCard) and writes first
    chat = friend.chat_with_vcard(dc_owner.vcard())
    sent = chat.send_text("hello owner")
    got = dc_owner.wait_for_incoming_msg()
    assert got.text == "hello owner"
    assert got.show_padlock is True
    assert got.sender_addr == friend.addr and got.sender_is_key_contact
    assert got.sender_fingerprint == friend.fingerprint()
    assert got.is_contact_request  # unknown sender until accepted

    # on the wire: PGP/MIME, but Delta Chat-to-Delta Chat uses RFC 9580 packets
    # (PKESK v6 + SEIPD v2) that GnuPG 2.2 cannot read -- unlike what a camera must send
    rec = mailserver.wait_for_received(lambda m: m.mail_from == friend.addr, start=start)
    assert rec.listener == "starttls" and rec.tls and rec.auth_user == friend.addr
    problems = check_pgp_mime(rec.raw)
    assert problems and all("version" in p for p in problems), problems
    friend.wait_for_delivered(sent)

    # the owner accepts and answers; the friend sees the padlock too
    dc_owner.get_chat_by_id(got.chat_id).accept()
    dc_owner.get_chat_by_id(got.chat_id).send_text("hello friend")
    back = friend.wait_for_incoming_msg()
    assert (back.text, back.show_padlock, back.sender_fingerprint) == (
        "hello friend", True, dc_owner.fingerprint())
    assert not back.is_contact_request
    assert dc_owner.public_key_armored().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
