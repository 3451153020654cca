"""jobs/inbox against the loopback Dovecot: every inbound message is hostile.

Mail is delivered through the test SMTP front (plain listener) into the camera's real
IMAP mailbox; seccam.inbox.poll reads it over verified TLS (the server's own CA file).
Checked: oversize mail deleted unread, deep MIME and garbage dropped, undecryptable mail
and decompression bombs set aside with a reason (and capped), Autocrypt keys of
recipients pinned (strangers' ignored), processed mail deleted, mail kept on the server
after a temporary failure, the job lock, and the IMAP client's TLS and login errors.
"""

import dataclasses
import os
import smtplib

import pytest

from seccam import autocrypt, config as config_mod, imap, inbox, keys, mime
from seccam.errors import ConfigError, TemporaryError
from seccam.gpg import Gpg
from seccam.spool import Spool
from helpers.sendkit import kill_agent, short_dir


@dataclasses.dataclass
class Cam:
    root: object
    path: object
    config: object
    address: str
    fpr: str

    @property
    def spool(self):
        return Spool(self.config.spool_dir).ensure()

    def gpg(self):
        return Gpg(self.config.state_dir / "gnupg")


def account(mailserver, addr, password, ca=True, security="tls"):
    return mailserver.account_toml(addr, password, imap_security=security, ca=ca, timeout_s=10)


@pytest.fixture
def cam(mailserver):
    root = short_dir()
    addr, password = mailserver.new_user("cam")
    mailserver.add_camera_address(addr)
    path = root / "seccam.toml"
    path.write_text(f'spool_dir = "{root}/spool"\nstate_dir = "{root}/state"\n'
                    + account(mailserver, addr, password)
                    + '[delivery]\nrecipients = ["friend@seccam.test"]\n')
    path.chmod(0o600)
    cfg = config_mod.load(path)
    fpr = Gpg(cfg.state_dir / "gnupg").generate_camera_key(addr)
    yield Cam(root, path, cfg, addr, fpr)
    kill_agent(cfg.state_dir / "gnupg")
    import shutil
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stranger():
    home = short_dir("scs")
    g = Gpg(home)
    fpr = g.generate_camera_key("stranger@seccam.test")
    yield g, fpr
    kill_agent(home)
    import shutil
    shutil.rmtree(home, ignore_errors=True)


def deliver(mailserver, to, raw, sender="someone@seccam.test"):
    with smtplib.SMTP(mailserver.host, mailserver.smtp_plain_port, timeout=10) as s:
        s.sendmail(sender, [to], raw)


def inbox_count(mailserver, cam):
    return len(mailserver.fetch_inbox(cam.address))


def plain(sender, to, body="hello", extra=""):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: hi\r\nDate: Wed, 25 Nov 2026 19:00:00 +0000\r\n"
            f"Message-ID: <{os.urandom(6).hex()}@seccam.test>\r\n{extra}MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain\r\n\r\n{body}\r\n").encode()


def nested(depth, to):
    body = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for i in range(depth):
        body = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)) + body \
            + b"\r\n--b%d--\r\n" % i
    return b"From: <deep@seccam.test>\r\nTo: <" + to.encode() + b">\r\nMIME-Version: 1.0\r\n" + body


def encrypted_to(gpg, recipients, signer, sender, to, plaintext=None):
    plaintext = plaintext or b"Content-Type: text/plain\r\n\r\nsecret\r\n"
    armored = gpg.encrypt_sign(plaintext, recipients, signer=signer)
    import datetime as _dt
    env = mime.Envelope(from_name="", from_addr=sender, to=(to,), date=_dt.datetime.now(_dt.timezone.utc),
                        message_id=f"<{os.urandom(6).hex()}@seccam.test>", subject="[...]")
    value = autocrypt.build_header(sender, gpg.export_minimal(signer))
    return mime.build_outer(env, value, armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def poll(cam, **kw):
    return inbox.poll(cam.config, cam.spool, welcome=False, **kw)


def set_aside_items(cam):
    return inbox.set_aside_items(cam.spool)


# -- the job ------------------------------------------------------------------------------
def test_inbox_job_exits_0_on_an_empty_mailbox(cam, run):
    proc = run("jobs/inbox", config=cam.path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_inbox_job_without_imap_host_does_nothing_quietly(short_tmp, run):
    from conftest import write_config
    path = write_config(short_tmp, """
        [account]
        address = "cam@seccam.test"
        password = "x"
        smtp_host = "127.0.0.1"
        smtp_security = "plain"
        """)
    proc = run("jobs/inbox", config=path)
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = run("jobs/inbox", config=short_tmp / "missing.toml")
    assert proc.returncode == 78


def test_processed_mail_is_deleted_so_the_mailbox_never_grows(cam, mailserver):
    for i in range(3):
        deliver(mailserver, cam.address, plain(f"spam{i}@seccam.test", cam.address))
    result = poll(cam)
    assert (result.fetched, result.deleted) == (3, 3)
    assert inbox_count(mailserver, cam) == 0
    assert poll(cam).fetched == 0


def test_mail_marked_deleted_by_a_run_that_died_before_expunge_is_not_handled_again(cam, mailserver):
    deliver(mailserver, cam.address, plain("a@seccam.test", cam.address))
    deliver(mailserver, cam.address, plain("b@seccam.test", cam.address))
    box = imap.Imap(cam.config.account).connect()
    box.delete(box.list()[0][0])
    box._conn.logout()  # the run dies: no EXPUNGE, no CLOSE (which would expunge)
    assert inbox_count(mailserver, cam) == 2
    result = poll(cam)
    assert (result.fetched, result.deleted) == (1, 1)
    assert inbox_count(mailserver, cam) == 0


# -- hostile input --------------------------------------------------------------------------
def test_oversize_mail_is_deleted_without_being_downloaded(cam, mailserver):
    big = plain("big@seccam.test", cam.address, body=("x" * 76 + "\r\n") * (inbox.MAX_MESSAGE_BYTES // 76))
    deliver(mailserver, cam.address, big)
    result = poll(cam)
    assert result.oversize == 1 and result.fetched == 0
    assert inbox_count(mailserver, cam) == 0 and set_aside_items(cam) == []


def test_partial_fetch_caps_what_is_read_even_if_the_size_is_a_lie(cam, mailserver, monkeypatch):
    deliver(mailserver, cam.address, plain("big@seccam.test", cam.address, body=("y" * 70 + "\r\n") * 70))
    monkeypatch.setattr(inbox, "MAX_MESSAGE_BYTES", 1000)
    real_list = imap.Imap.list
    monkeypatch.setattr(imap.Imap, "list", lambda self: [(uid, 10) for uid, _ in real_list(self)])
    result = poll(cam)
    assert result.oversize == 1 and result.fetched == 1
    assert inbox_count(mailserver, cam) == 0


@pytest.mark.parametrize("depth", [inbox.MAX_MIME_DEPTH + 1, 300, 3000])
def test_deeply_nested_mime_is_dropped(cam, mailserver, depth):
    deliver(mailserver, cam.address, nested(depth, cam.address))
    result = poll(cam)
    assert result.dropped == 1 and result.deleted == 1
    assert inbox_count(mailserver, cam) == 0


def test_mime_within_the_depth_limit_is_read(cam):
    message = inbox.parse(nested(inbox.MAX_MIME_DEPTH - 1, cam.address))
    assert inbox.mime_depth(message) == inbox.MAX_MIME_DEPTH


def test_garbage_is_dropped_and_deleted(cam, mailserver):
    noise = os.urandom(3000).replace(b"\r", b"").replace(b"\n", b"")
    deliver(mailserver, cam.address, b"\r\n".join(noise[i:i + 70] for i in range(0, len(noise), 70)))
    deliver(mailserver, cam.address, b"Content-Type: multipart/encrypted\r\n\r\nnot really\r\n")
    result = poll(cam)
    assert result.deleted == 2 and result.fetched == 2
    assert inbox_count(mailserver, cam) == 0


def test_undecryptable_mail_is_set_aside_with_a_reason(cam, mailserver, stranger):
    g, fpr = stranger
    deliver(mailserver, cam.address, encrypted_to(g, [fpr], fpr, "stranger@seccam.test", cam.address))
    result = poll(cam)
    assert result.set_aside == 1
    [item] = set_aside_items(cam)
    assert b"multipart/encrypted" in item.read_bytes()
    assert "cannot decrypt" in cam.spool.read_reason(item)
    assert item.parent == cam.spool.dir("quarantine")
    assert inbox_count(mailserver, cam) == 0


def test_a_decompression_bomb_is_set_aside_not_inflated(cam, mailserver, stranger):
    g, fpr = stranger
    g.import_keys(cam.gpg().export_armored(cam.fpr))
    bomb = b"Content-Type: text/plain\r\n\r\n" + b"\0" * (inbox.MAX_PLAINTEXT_BYTES + 1_000_000)
    raw = encrypted_to(g, [cam.fpr], fpr, "stranger@seccam.test", cam.address, plaintext=bomb)
    assert len(raw) < 200_000
    deliver(mailserver, cam.address, raw)
    result = poll(cam)
    assert result.set_aside == 1
    assert "larger than" in cam.spool.read_reason(set_aside_items(cam)[0])


def test_set_aside_mail_is_capped_by_count_oldest_out_first(cam, mailserver, stranger, monkeypatch):
    monkeypatch.setattr(inbox, "MAX_SET_ASIDE", 2)
    g, fpr = stranger
    for n in range(3):
        deliver(mailserver, cam.address, encrypted_to(g, [fpr], fpr, "stranger@seccam.test", cam.address,
                                                      plaintext=f"Content-Type: text/plain\r\n\r\nmail {n}\r\n".encode()))
    result = poll(cam)
    assert result.set_aside == 3 and result.deleted == 3
    kept = set_aside_items(cam)
    assert len(kept) == 2
    assert all(cam.spool.read_reason(p) for p in kept)
    assert not [p for p in cam.spool.dir("quarantine").iterdir() if p.name.endswith(".reason")
                and not p.with_name(p.name.removesuffix(".reason")).exists()]  # no orphaned notes


def test_set_aside_mail_is_capped_by_bytes(cam, mailserver, stranger, monkeypatch):
    g, fpr = stranger
    raw = encrypted_to(g, [fpr], fpr, "stranger@seccam.test", cam.address)
    monkeypatch.setattr(inbox, "MAX_SET_ASIDE_BYTES", int(len(raw) * 2.5))
    for _ in range(4):
        deliver(mailserver, cam.address, raw)
    assert poll(cam).set_aside == 4
    kept = set_aside_items(cam)
    assert len(kept) == 2 and sum(p.stat().st_size for p in kept) <= inbox.MAX_SET_ASIDE_BYTES


def test_attachments_are_never_written_anywhere(cam, mailserver):
    raw = (f"From: <friend@seccam.test>\r\nTo: <{cam.address}>\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
           '--b\r\nContent-Type: application/octet-stream\r\n'
           'Content-Disposition: attachment; filename="../../../../tmp/seccam-evil"\r\n'
           "Content-Transfer-Encoding: base64\r\n\r\nZXZpbA==\r\n--b--\r\n").encode()
    deliver(mailserver, cam.address, raw)
    before = {p for p in cam.root.rglob("*")}
    poll(cam)
    after = {p for p in cam.root.rglob("*")} - before
    assert not os.path.exists("/tmp/seccam-evil")
    assert all(p.is_relative_to(cam.root) for p in after)
    assert not [p for p in after if p.is_file() and p.read_bytes() == b"evil"]


# -- Autocrypt (issue 3) -----------------------------------------------------------------------
def test_autocrypt_key_of_a_recipient_is_pending_for_a_person_and_a_strangers_ignored(cam, mailserver, stranger):
    g, fpr = stranger
    value = autocrypt.build_header("friend@seccam.test", g.export_minimal(fpr))
    deliver(mailserver, cam.address, plain("friend@seccam.test", cam.address, extra=f"Autocrypt: {value}\r\n"))
    value = autocrypt.build_header("stranger@seccam.test", g.export_minimal(fpr))
    deliver(mailserver, cam.address, plain("stranger@seccam.test", cam.address, extra=f"Autocrypt: {value}\r\n"))
    result = poll(cam)
    assert result.keys_changed == 0
    store = keys.KeyStore(cam.config.state_dir)
    assert store.record("friend@seccam.test")["fingerprint"] is None  # mail never pins
    assert [(p["fingerprint"], p["source"]) for p in store.record("friend@seccam.test")["pending"]] == \
        [(fpr, "autocrypt")]
    assert store.record("stranger@seccam.test") is None
    assert inbox_count(mailserver, cam) == 0


def test_a_forged_autocrypt_key_does_not_replace_the_pinned_one(cam, mailserver, stranger):
    g, fpr = stranger
    friend = Gpg(short_dir("scf"))
    ffpr = friend.generate_camera_key("friend@seccam.test")
    keys.open_store(cam.config, cam.gpg()).import_key("friend@seccam.test", friend.export_armored(ffpr), "test")
    value = autocrypt.build_header("friend@seccam.test", g.export_minimal(fpr))
    deliver(mailserver, cam.address, plain("friend@seccam.test", cam.address, extra=f"Autocrypt: {value}\r\n"))
    poll(cam)
    assert keys.KeyStore(cam.config.state_dir).record("friend@seccam.test")["fingerprint"] == ffpr
    assert [p["fingerprint"] for p in keys.pending_changes(cam.config)] == [fpr]
    kill_agent(friend.home)
    import shutil
    shutil.rmtree(friend.home, ignore_errors=True)


def test_a_forged_message_encrypted_to_the_camera_and_signed_by_another_key_leaves_the_pin(
        cam, mailserver, stranger):
    """The forger knows the camera's key: encrypted, signed with his own key, his key in Autocrypt."""
    g, fpr = stranger
    g.import_keys(cam.gpg().export_armored(cam.fpr))
    friend = Gpg(short_dir("scf"))
    ffpr = friend.generate_camera_key("friend@seccam.test")
    keys.open_store(cam.config, cam.gpg()).import_key("friend@seccam.test", friend.export_armored(ffpr), "test")
    inner = (f"From: <friend@seccam.test>\r\nContent-Type: text/plain\r\n"
             f"Autocrypt: {autocrypt.build_header('friend@seccam.test', g.export_minimal(fpr))}\r\n\r\nnew key\r\n")
    deliver(mailserver, cam.address, encrypted_to(g, [cam.fpr], fpr, "friend@seccam.test", cam.address,
                                                  plaintext=inner.encode()))
    result = poll(cam)
    assert result.fetched == 1 and result.keys_changed == 0 and result.set_aside == 0
    record = keys.KeyStore(cam.config.state_dir).record("friend@seccam.test")
    assert record["fingerprint"] == ffpr  # never adopted: the signer is not the pinned key
    assert [p["fingerprint"] for p in keys.pending_changes(cam.config)] == [fpr]  # shown for seccam keys accept
    kill_agent(friend.home)
    import shutil
    shutil.rmtree(friend.home, ignore_errors=True)


# -- failures ---------------------------------------------------------------------------------
def test_mail_stays_on_the_server_after_a_temporary_failure(cam, mailserver, monkeypatch):
    deliver(mailserver, cam.address, plain("a@seccam.test", cam.address))

    def broken(session, raw):
        raise TemporaryError("disk full")
    monkeypatch.setattr(inbox, "handle", broken)
    result = poll(cam)
    assert result.kept == 1 and result.deleted == 0
    assert inbox_count(mailserver, cam) == 1
    monkeypatch.undo()
    assert poll(cam).deleted == 1


def test_one_bad_message_does_not_stop_the_others(cam, mailserver, monkeypatch):
    deliver(mailserver, cam.address, plain("a@seccam.test", cam.address, body="boom"))
    deliver(mailserver, cam.address, plain("b@seccam.test", cam.address))
    real = inbox.handle

    def flaky(session, raw):
        if b"boom" in raw:
            raise RuntimeError("a bug")
        return real(session, raw)
    monkeypatch.setattr(inbox, "handle", flaky)
    result = poll(cam)
    assert result.deleted == 2 and result.set_aside == 1
    assert "internal error" in cam.spool.read_reason(set_aside_items(cam)[0])


def test_a_second_run_skips_while_the_first_holds_the_lock(cam):
    with cam.spool.lock("inbox"):
        assert poll(cam) is None


def test_imap_refuses_a_server_certificate_it_cannot_verify(cam, mailserver):
    cfg = config_mod.parse(cam.path.read_text().replace(f'ca_file = "{mailserver.cafile}"\n', ""), cam.path)
    with pytest.raises(imap.ImapPermanentError, match="certificate not trusted"):
        imap.Imap(cfg.account).connect()


def test_imap_starttls_works_and_a_wrong_password_is_permanent(cam, mailserver):
    text = cam.path.read_text().replace(f"imap_port = {mailserver.imaps_port}", f"imap_port = {mailserver.imap_port}")
    cfg = config_mod.parse(text.replace('imap_security = "tls"', 'imap_security = "starttls"'), cam.path)
    with imap.Imap(cfg.account) as box:
        assert box.list() == []
    bad = config_mod.parse(text.replace('imap_security = "tls"', 'imap_security = "starttls"')
                           .replace(f'password = "{mailserver.users[cam.address]}"', 'password = "wrong"'), cam.path)
    with pytest.raises(imap.ImapPermanentError, match="login"):
        imap.Imap(bad.account).connect()


def test_imap_unreachable_is_temporary(cam):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    text = cam.path.read_text()
    import re
    text = re.sub(r"imap_port = \d+", f"imap_port = {port}", text)
    cfg = config_mod.parse(text, cam.path)
    with pytest.raises(imap.ImapTemporaryError):
        poll(Cam(cam.root, cam.path, cfg, cam.address, cam.fpr))


# -- more hostile and unusual mail -------------------------------------------------------------
def vc_request(sender, to, invitenumber, keydata):
    """A clear-text Secure-Join ``vc-request`` as Delta Chat sends it at step 1."""
    value = autocrypt.build_header(sender, keydata)
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: Message from {sender}\r\n"
            f"Message-ID: <{os.urandom(6).hex()}@seccam.test>\r\nDate: Wed, 25 Nov 2026 19:00:00 +0000\r\n"
            f"Chat-Version: 1.0\r\nSecure-Join: vc-request\r\nSecure-Join-Invitenumber: {invitenumber}\r\n"
            f"Autocrypt: {value}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Secure-Join: vc-request\r\n").encode()


@pytest.fixture
def journal(caplog, monkeypatch):
    """What the job logs (INFO and up), as lines."""
    import logging
    # An entry point run earlier in this process may have stopped "seccam" propagating to the root logger.
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    caplog.set_level(logging.INFO, logger="seccam")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "seccam.inbox"]


def test_deeply_nested_attached_messages_are_dropped_as_unparseable(cam, mailserver, journal):
    # message/rfc822 is not multipart, so the part count does not catch it; the parser's recursion does
    raw = (b"From: <deep@seccam.test>\r\nTo: <" + cam.address.encode() + b">\r\n"
           + b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"Subject: leaf\r\n\r\nleaf\r\n")
    assert len(raw) < inbox.MAX_MESSAGE_BYTES and len(inbox._MULTIPART_RE.findall(raw)) == 0
    deliver(mailserver, cam.address, raw)
    result = poll(cam)
    assert (result.fetched, result.dropped, result.deleted) == (1, 1, 1)
    assert any("disposition=dropped reason='unparseable: RecursionError'" in m for m in journal())


@pytest.mark.parametrize("raw, why", [
    (b"Content-Type: text/plain\r\n\r\nhello\r\n", "not multipart/encrypted"),
    (b'Content-Type: multipart/encrypted; boundary="b"\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b--\r\n',
     "without exactly two parts"),
    (b'Content-Type: multipart/encrypted; boundary="b"\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b\r\n\r\n'
     b"not armored\r\n--b--\r\n", "no armored OpenPGP message"),
])
def test_encrypted_payload_refuses_what_is_not_pgp_mime(raw, why):
    with pytest.raises(inbox.Hostile, match=why):
        inbox.encrypted_payload(inbox.parse(b"From: <x@seccam.test>\r\n" + raw))


@pytest.mark.allow_plaintext  # a forgery in the camera's name, not mail the camera sent
def test_mail_from_the_cameras_own_address_is_dropped(cam, mailserver, journal):
    deliver(mailserver, cam.address, plain(cam.address, cam.address))
    result = poll(cam)
    assert (result.dropped, result.deleted, result.keys_changed) == (1, 1, 0)
    assert any("reason='own address'" in m for m in journal())


def test_an_encrypted_secure_join_step_the_camera_never_expects_is_dropped(cam, mailserver, stranger, journal):
    g, fpr = stranger
    g.import_keys(cam.gpg().export_armored(cam.fpr))
    inner = b"From: <stranger@seccam.test>\r\nSecure-Join: vc-contact-confirm\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    deliver(mailserver, cam.address, encrypted_to(g, [cam.fpr], fpr, "stranger@seccam.test", cam.address,
                                                  plaintext=inner))
    result = poll(cam)
    assert (result.dropped, result.set_aside, result.joined) == (1, 0, [])
    assert any("reason='unexpected Secure-Join step' step='vc-contact-confirm'" in m for m in journal())


def test_a_secure_join_reply_the_server_refuses_is_logged_and_not_queued(cam, mailserver, stranger, journal):
    from seccam.invites import InviteStore
    g, fpr = stranger
    assert "stranger@seccam.test" not in mailserver.users  # the server refuses it at RCPT: 550
    invite = InviteStore(cam.config.state_dir).create(cam.address, cam.fpr, "Front door")
    deliver(mailserver, cam.address, vc_request("stranger@seccam.test", cam.address, invite["invitenumber"],
                                                g.export_minimal(fpr)))
    result = poll(cam)
    assert (result.replies_sent, result.replies_queued, result.deleted) == (0, 0, 1)
    assert cam.spool.items("outbox.new") == []  # retrying a refused address would not help
    failed = [m for m in journal() if m.startswith("reply to=stranger@seccam.test state=failed")]
    assert len(failed) == 1 and "550" in failed[0]


def test_a_secure_join_request_to_a_camera_without_its_key_is_dropped_with_the_reason(
        cam, mailserver, stranger, journal):
    from seccam.invites import InviteStore
    g, fpr = stranger
    invite = InviteStore(cam.config.state_dir).create(cam.address, cam.fpr, "Front door")
    cam.gpg().delete_key(cam.fpr, secret=True)  # e.g. the state dir was restored without the camera key
    deliver(mailserver, cam.address, vc_request("stranger@seccam.test", cam.address, invite["invitenumber"],
                                                g.export_minimal(fpr)))
    result = poll(cam)
    assert (result.dropped, result.deleted, result.replies_sent, result.replies_queued) == (1, 1, 0, 0)
    assert any("disposition=dropped error='the camera has no key (seccam keys init)'" in m
               for m in journal())


def test_inbox_needs_an_account_with_an_imap_host(short_tmp, run):
    from conftest import write_config
    path = write_config(short_tmp)
    proc = run("jobs/inbox", config=path)
    assert proc.returncode == 78 and "no [account] section" in proc.stderr
    cfg = config_mod.load(write_config(short_tmp, '[account]\naddress = "cam@seccam.test"\npassword = "x"\n'
                                                  'smtp_host = "127.0.0.1"\n'))
    with pytest.raises(ConfigError, match="account.imap_host is not set"):
        inbox.poll(cfg, Spool(cfg.spool_dir))  # e.g. seccam invite --wait on a send-only camera


def test_a_message_another_client_deletes_between_listing_and_fetching_is_skipped(cam, mailserver):
    import imaplib
    deliver(mailserver, cam.address, plain("a@seccam.test", cam.address, body="gone"))
    deliver(mailserver, cam.address, plain("b@seccam.test", cam.address, body="kept"))

    class PhoneDeletesMeanwhile(imap.Imap):
        """The real client; right after it lists the INBOX a phone on the same account deletes mail."""

        def list(self):
            listing = super().list()
            with imaplib.IMAP4_SSL(mailserver.host, mailserver.imaps_port, ssl_context=mailserver.ssl_context(),
                                   timeout=10) as phone:
                phone.login(cam.address, mailserver.users[cam.address])
                phone.select("INBOX")
                phone.store("1", "+FLAGS", "(\\Deleted)")
                phone.expunge()
            return listing

    result = poll(cam, imap_factory=PhoneDeletesMeanwhile)
    assert (result.fetched, result.deleted, result.dropped, result.set_aside) == (1, 1, 0, 0)
    assert inbox_count(mailserver, cam) == 0


def test_keys_of_joins_that_never_finished_leave_the_keyring_with_their_closed_invite(
        cam, mailserver, stranger, journal):
    import shutil
    import time as _time

    from seccam.invites import InviteStore
    g, anna = stranger
    friend = Gpg(short_dir("scf"))
    try:
        ffpr = friend.generate_camera_key("friend@seccam.test")
        ghost = "0123456789ABCDEF0123456789ABCDEF01234567"  # no longer in the keyring
        cam.gpg().import_keys(g.export_armored(anna))     # imported at step 1 of a join
        keys.open_store(cam.config, cam.gpg()).import_key("friend@seccam.test", friend.export_armored(ffpr), "test")
        invites = InviteStore(cam.config.state_dir)
        expired = invites.create(cam.address, cam.fpr, "Front door", ttl_s=60, now=_time.time() - 3600)
        for address, fpr in (("anna@seccam.test", anna), ("ghost@seccam.test", ghost),
                             ("friend@seccam.test", ffpr)):
            invites.add_pending(expired["id"], address, fpr)
        poll(cam)
        gpg = cam.gpg()
        assert not gpg.has_key(anna)
        assert gpg.has_key(ffpr) and gpg.camera_key() == cam.fpr  # a pinned recipient and the camera stay
        assert invites.get(expired["id"])["pending"] == []
        lines = journal()
        assert f"event=unjoined_key_removed fingerprint={anna}" in lines
        assert any(m.startswith(f"event=unjoined_key_remove_failed fingerprint={ghost} ") for m in lines)
        assert not any(ffpr in m for m in lines if m.startswith("event=unjoined_key"))
    finally:
        kill_agent(friend.home)
        shutil.rmtree(friend.home, ignore_errors=True)


def test_a_welcome_that_cannot_capture_now_is_logged_and_skipped(cam, journal, monkeypatch):
    from seccam import capture
    monkeypatch.setattr(capture, "LOCK_WAIT_S", 0.2)
    with cam.spool.lock("capture"):  # a capture that does not end
        assert inbox.send_welcome(cam.config, cam.spool, ["friend@seccam.test"]) is None
    assert cam.spool.items("sets.ready") == []
    assert any(m.startswith("event=welcome state=failed error='another capture job is running")
               for m in journal())


def test_a_key_offered_by_mail_never_releases_held_sets(cam, mailserver, stranger, journal):
    from seccam import encrypt
    from helpers.sendkit import make_set
    g, fpr = stranger
    make_set(cam.spool, "20261125T191100.000001Z.11.aaaa-alarm")
    assert encrypt.process(cam.config, cam.spool).held == 1  # friend@seccam.test has no key yet
    value = autocrypt.build_header("friend@seccam.test", g.export_minimal(fpr))
    deliver(mailserver, cam.address, plain("friend@seccam.test", cam.address, extra=f"Autocrypt: {value}\r\n"))
    sent = len(mailserver.received)
    result = poll(cam)
    assert result.keys_changed == 0 and len(cam.spool.items("sets.held")) == 1
    assert cam.spool.items("outbox.new") == [] and len(mailserver.received) == sent
    assert not any(m.startswith("step=send") for m in journal())


def test_encrypted_mail_whose_content_is_too_deeply_nested_is_set_aside(cam, mailserver, stranger):
    g, fpr = stranger
    g.import_keys(cam.gpg().export_armored(cam.fpr))
    inner = nested(inbox.MAX_MIME_DEPTH + 1, cam.address)
    raw = encrypted_to(g, [cam.fpr], fpr, "stranger@seccam.test", cam.address, plaintext=inner)
    deliver(mailserver, cam.address, raw)
    result = poll(cam)
    assert result.set_aside == 1 and inbox_count(mailserver, cam) == 0
    assert "decrypted mail from stranger@seccam.test is unusable" in cam.spool.read_reason(set_aside_items(cam)[0])


def test_a_send_after_a_join_that_fails_is_logged_and_left_to_jobs_send(cam, journal, monkeypatch):
    from seccam import send
    from seccam.errors import TemporaryError

    def down(*a, **kw):
        raise TemporaryError("smtp: connection refused")
    monkeypatch.setattr(send, "work", down)
    assert inbox._run_send(cam.config) == 75
    assert any("step=send error='smtp: connection refused' (jobs/send retries)" in m for m in journal())
