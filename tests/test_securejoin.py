"""The camera's side of the legacy Secure-Join protocol, driven with hand-made joiner messages.

A joiner here is a GnuPG key of its own (no Delta Chat core: tests/test_e2e_invite.py has
the real one). Messages go through seccam.inbox.handle, so decryption and signature
checks are the real ones; replies are caught by a fake SMTP connection. Every rejection
of docs/deltachat.md's protocol is checked: nothing pinned, no recipient added, invite
untouched, and no secret in the log.
"""

import dataclasses
import datetime as _dt
import email
import email.policy
import io
import logging
import textwrap

import pytest

from seccam import autocrypt, config as config_mod, inbox, keys, mime, securejoin
from seccam.gpg import Gpg
from seccam.invites import InviteStore
from seccam.spool import Spool
from helpers.mailfixtures import check_pgp_mime
from helpers.sendkit import kill_agent, short_dir

CAM = "cam@seccam.test"
NOW = 1_790_000_000.0


class FakeSmtp:
    sent = []

    def __init__(self, account):
        self.account = account

    def send(self, raw, from_addr, to_addrs):
        FakeSmtp.sent.append((raw, from_addr, list(to_addrs)))
        return {}

    def close(self):
        pass


@dataclasses.dataclass
class Joiner:
    address: str
    home: object
    gpg: Gpg
    fpr: str

    def keydata(self):
        return self.gpg.export_minimal(self.fpr)

    def vc_request(self, invitenumber, autocrypt_addr=None, keydata=None):
        value = autocrypt.build_header(autocrypt_addr or self.address, keydata or self.keydata())
        raw = textwrap.dedent(f"""\
            From: <{self.address}>
            To: <{CAM}>
            Subject: Message from {self.address}
            Message-ID: <req.{self.fpr[:8]}@seccam.test>
            Date: Wed, 25 Nov 2026 19:00:00 +0000
            Chat-Version: 1.0
            Secure-Join: vc-request
            Secure-Join-Invitenumber: {invitenumber}
            Autocrypt: {value}
            MIME-Version: 1.0
            Content-Type: text/plain; charset=utf-8

            Secure-Join: vc-request
            """).replace("\n", "\r\n")
        return raw.encode()

    def request_with_auth(self, camera, auth, claimed=None, sign=True, gossip=True, clear_text=False):
        """``vc-request-with-auth`` as Delta Chat sends it: encrypted to the camera, signed."""
        lines = [f'From: "Joiner" <{self.address}>', f"To: <{CAM}>", "Subject: Message from Joiner",
                 "Date: Wed, 25 Nov 2026 19:00:01 +0000", "Chat-Version: 1.0",
                 "Secure-Join: vc-request-with-auth", f"Secure-Join-Auth: {auth}",
                 f"Secure-Join-Fingerprint: {claimed or self.fpr}"]
        if gossip:
            value = autocrypt.build_header(CAM, camera.gpg.export_minimal(camera.fpr), prefer_encrypt=None)
            lines.append("Autocrypt-Gossip: " + value)
        lines += ['Content-Type: text/plain; charset="utf-8"; protected-headers="v1"', "",
                  "Secure-Join: vc-request-with-auth", ""]
        inner = "\r\n".join(lines).encode()
        if clear_text:
            return inner
        if sign:
            armored = self.gpg.encrypt_sign(inner, [camera.fpr, self.fpr], signer=self.fpr)
        else:
            result = self.gpg._gpg.encrypt_file(io.BytesIO(inner), [camera.fpr], always_trust=True, armor=True)
            assert result.ok, result.status
            armored = bytes(result.data)
        env = mime.Envelope(from_name="", from_addr=self.address, to=(CAM,),
                            date=_dt.datetime(2026, 11, 24, tzinfo=_dt.timezone.utc),
                            message_id=f"<rwa.{self.fpr[:8]}@seccam.test>", subject="[...]")
        value = autocrypt.build_header(self.address, self.keydata())
        return mime.build_outer(env, value, armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def read_reply(self, raw):
        """(inner message, signer) of a camera reply, decrypted with the joiner's key."""
        outer = email.message_from_bytes(raw, policy=email.policy.compat32)
        plain, signer, _ = self.gpg.decrypt_verify(inbox.encrypted_payload(outer))
        return email.message_from_bytes(plain, policy=email.policy.compat32), signer


@dataclasses.dataclass
class Camera:
    root: object
    config: object
    gpg: Gpg
    fpr: str
    joiners: list

    @property
    def spool(self):
        return Spool(self.config.spool_dir).ensure()

    @property
    def invites(self):
        return InviteStore(self.config.state_dir)

    def invite(self, **kw):
        return self.invites.create(CAM, self.fpr, "Front door", now=kw.pop("now", NOW), **kw)

    def joiner(self, address):
        home = short_dir("scj")
        g = Gpg(home)
        j = Joiner(address, home, g, g.generate_camera_key(address))
        g.import_keys(self.gpg.export_armored(self.fpr))  # as Delta Chat learns it from the reply
        self.joiners.append(j)
        return j

    def handle(self, raw, now=NOW):
        session = inbox._Session(self.config, self.spool, lambda: now, FakeSmtp)
        try:
            disposition, detail = inbox.handle(session, raw)
        finally:
            session.close()
        return disposition, detail, session.result

    def pinned(self, address):
        rec = keys.KeyStore(self.config.state_dir).record(address)
        return rec and rec.get("fingerprint")


@pytest.fixture
def camera():
    root = short_dir()
    (root / "seccam.toml").write_text(textwrap.dedent(f"""\
        spool_dir = "{root}/spool"
        state_dir = "{root}/state"
        [account]
        address = "{CAM}"
        display_name = "Front door"
        password = "pw"
        smtp_host = "127.0.0.1"
        smtp_security = "plain"
        imap_host = "127.0.0.1"
        imap_security = "plain"
        [delivery]
        recipients = ["configured@seccam.test"]
        """))
    (root / "seccam.toml").chmod(0o600)
    cfg = config_mod.load(root / "seccam.toml")
    g = Gpg(cfg.state_dir / "gnupg")
    cam = Camera(root, cfg, g, g.generate_camera_key(CAM), [])
    FakeSmtp.sent = []
    yield cam
    for j in cam.joiners:
        kill_agent(j.home)
    kill_agent(cfg.state_dir / "gnupg")
    import shutil
    for j in cam.joiners:
        shutil.rmtree(j.home, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def full_join(camera, joiner, invite, now=NOW):
    d1, detail1, _ = camera.handle(joiner.vc_request(invite["invitenumber"]), now)
    assert "outcome=replied" in detail1, detail1
    return camera.handle(joiner.request_with_auth(camera, invite["auth"]), now)


def assert_nothing_changed(camera, joiner, invite_id=None, used=0):
    assert camera.pinned(joiner.address) is None
    assert joiner.address not in keys.recipients(camera.config)
    if invite_id:
        assert camera.invites.get(invite_id)["used"] == used


# -- the protocol as documented ---------------------------------------------------------
def test_vc_request_is_answered_with_auth_required_signed_encrypted_and_gossiping_the_joiner_key(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    disposition, detail, result = camera.handle(joiner.vc_request(invite["invitenumber"]))
    assert disposition == "securejoin" and "outcome=replied" in detail
    [(raw, sender, to)] = FakeSmtp.sent
    assert sender == CAM and to == [joiner.address]
    assert check_pgp_mime(raw) == []
    outer = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert autocrypt.parse_header(outer["Autocrypt"]).addr == CAM
    assert outer["Chat-Version"] == "1.0"
    inner, signer = joiner.read_reply(raw)
    assert signer == camera.fpr
    assert inner["Secure-Join"] == "vc-auth-required" and inner["Chat-Version"] == "1.0"
    gossip = autocrypt.parse_header(inner["Autocrypt-Gossip"])
    assert gossip.addr == joiner.address and joiner.fpr in camera.gpg.fingerprints_of(gossip.keydata)
    # Imported for the reply, but not pinned and not a recipient: that needs step 3.
    assert camera.gpg.has_key(joiner.fpr)
    assert_nothing_changed(camera, joiner, invite["id"])
    assert camera.invites.get(invite["id"])["pending"][0]["address"] == joiner.address


def test_join_pins_the_key_adds_the_recipient_uses_the_invite_and_confirms(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    disposition, detail, result = full_join(camera, joiner, invite)
    assert "outcome=joined" in detail and result.joined == [(joiner.address, invite["id"])]
    assert camera.pinned(joiner.address) == joiner.fpr
    assert keys.KeyStore(camera.config.state_dir).record(joiner.address)["source"] == "securejoin"
    assert joiner.address in keys.recipients(camera.config)
    record = camera.invites.get(invite["id"])
    assert record["used"] == 1 and record["pending"] == [] and record["joins"][0]["fingerprint"] == joiner.fpr
    raw, _, to = FakeSmtp.sent[-1]
    assert to == [joiner.address] and check_pgp_mime(raw) == []
    inner, signer = joiner.read_reply(raw)
    assert signer == camera.fpr and inner["Secure-Join"] == "vc-contact-confirm"
    assert autocrypt.parse_header(inner["Autocrypt-Gossip"]).addr == joiner.address


def test_multi_use_invite_admits_as_many_joiners_as_uses(camera):
    invite = camera.invite(uses=2)
    a, b, c = (camera.joiner(f"{n}@seccam.test") for n in ("anna", "ben", "carl"))
    assert "outcome=joined" in full_join(camera, a, invite)[1]
    assert "outcome=joined" in full_join(camera, b, invite)[1]
    _, detail, _ = camera.handle(c.vc_request(invite["invitenumber"]))
    assert "outcome=rejected" in detail and "invite used" in detail
    assert_nothing_changed(camera, c, invite["id"], used=2)


# -- rejections ----------------------------------------------------------------------------
def test_vc_request_with_a_wrong_invite_number_is_rejected_and_its_key_not_imported(camera):
    joiner = camera.joiner("mallory@seccam.test")
    invite = camera.invite()
    _, detail, result = camera.handle(joiner.vc_request("W" * 24))
    assert "outcome=rejected" in detail and "unknown invite number" in detail
    assert FakeSmtp.sent == [] and result.rejected
    assert not camera.gpg.has_key(joiner.fpr)
    assert_nothing_changed(camera, joiner, invite["id"])


def test_vc_request_with_two_invite_numbers_is_rejected_whichever_is_right(camera):
    """Decided by the header alone, on any Python (3.11 and 3.13 parse the message the same)."""
    joiner = camera.joiner("twice@seccam.test")
    invite = camera.invite()
    number = invite["invitenumber"].encode()
    raw = joiner.vc_request(invite["invitenumber"]).replace(
        b"Secure-Join-Invitenumber: " + number, b"Secure-Join-Invitenumber: " + number
        + b"\r\nSecure-Join-Invitenumber: " + number, 1)
    _, detail, result = camera.handle(raw)
    assert "outcome=rejected" in detail and "unknown invite number" in detail and result.rejected
    assert not camera.gpg.has_key(joiner.fpr)
    assert_nothing_changed(camera, joiner, invite["id"])


def test_expired_invite_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite(ttl_s=3600)
    _, detail, _ = camera.handle(joiner.vc_request(invite["invitenumber"]), now=NOW + 3601)
    assert "outcome=rejected" in detail and "invite expired" in detail
    assert FakeSmtp.sent == []
    # Step 1 inside the hour, step 3 after it: still rejected.
    camera.handle(joiner.vc_request(invite["invitenumber"]), now=NOW + 10)
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"]), now=NOW + 3601)
    assert "outcome=rejected" in detail and "invite expired" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_revoked_invite_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    camera.invites.revoke(invite["id"], now=NOW + 1)
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"]))
    assert "outcome=rejected" in detail and "invite revoked" in detail
    _, detail, _ = camera.handle(joiner.vc_request(invite["invitenumber"]))
    assert "invite revoked" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_wrong_auth_secret_is_rejected_and_nothing_pinned(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    wrong = invite["auth"][:-1] + ("x" if invite["auth"][-1] != "x" else "y")
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, wrong))
    assert "outcome=rejected" in detail and "wrong auth secret" in detail
    assert len(FakeSmtp.sent) == 1  # only vc-auth-required
    assert_nothing_changed(camera, joiner, invite["id"])


def test_fingerprint_header_that_is_not_the_signer_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    other = camera.joiner("other@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"], claimed=other.fpr))
    assert "outcome=rejected" in detail and "fingerprint mismatch" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_signing_key_that_differs_from_the_vc_request_key_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    # Someone who learnt the link but holds another key, writing as the joiner.
    mallory = camera.joiner("anna@seccam.test")
    camera.gpg.import_keys(mallory.gpg.export_armored(mallory.fpr))  # even a key the camera knows
    _, detail, _ = camera.handle(mallory.request_with_auth(camera, invite["auth"]))
    assert "outcome=rejected" in detail and "fingerprint mismatch" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_used_invite_cannot_be_replayed_by_another_joiner(camera):
    invite = camera.invite()
    anna, mallory = camera.joiner("anna@seccam.test"), camera.joiner("mallory@seccam.test")
    assert "outcome=joined" in full_join(camera, anna, invite)[1]
    _, detail, _ = camera.handle(mallory.vc_request(invite["invitenumber"]))
    assert "invite used" in detail
    camera.gpg.import_keys(mallory.gpg.export_armored(mallory.fpr))  # so only the used-up invite stops it
    _, detail, _ = camera.handle(mallory.request_with_auth(camera, invite["auth"]))
    assert "outcome=rejected" in detail and "invite used" in detail
    assert_nothing_changed(camera, mallory, invite["id"], used=1)


def test_request_with_auth_without_vc_request_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.gpg.import_keys(joiner.gpg.export_armored(joiner.fpr))
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"]))
    assert "outcome=rejected" in detail and "no vc-request" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_unsigned_request_with_auth_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"], sign=False))
    assert "outcome=rejected" in detail and "not signed" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_request_with_auth_not_gossiping_the_camera_key_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"], gossip=False))
    assert "outcome=rejected" in detail and "Autocrypt-Gossip" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_auth_secret_in_clear_text_is_dropped(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    disposition, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"], clear_text=True))
    assert disposition == "dropped" and "clear text" in detail
    assert_nothing_changed(camera, joiner, invite["id"])


def test_vc_request_whose_autocrypt_addr_is_not_the_sender_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    _, detail, _ = camera.handle(joiner.vc_request(invite["invitenumber"], autocrypt_addr="x@seccam.test"))
    assert "outcome=rejected" in detail and "not the From address" in detail
    assert FakeSmtp.sent == []


def test_join_never_replaces_a_different_pinned_key(camera):
    owner = camera.joiner("configured@seccam.test")
    store = keys.open_store(camera.config, camera.gpg)
    store.import_key(owner.address, owner.gpg.export_armored(owner.fpr), source="test")
    mallory = camera.joiner("configured@seccam.test")
    invite = camera.invite()
    _, detail, result = full_join(camera, mallory, invite)
    assert "outcome=key-pending" in detail and result.joined == []
    assert camera.pinned(owner.address) == owner.fpr
    pending = keys.pending_changes(camera.config)
    assert [p["fingerprint"] for p in pending] == [mallory.fpr]
    assert camera.invites.get(invite["id"])["used"] == 0
    assert len(FakeSmtp.sent) == 1  # no vc-contact-confirm


def test_the_same_joiner_again_is_confirmed_again_but_nothing_changes(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    full_join(camera, joiner, invite)
    _, detail, result = camera.handle(joiner.request_with_auth(camera, invite["auth"]))
    assert "outcome=replied" in detail and "already joined" in detail and result.joined == []
    assert camera.invites.get(invite["id"])["used"] == 1
    inner, _ = joiner.read_reply(FakeSmtp.sent[-1][0])
    assert inner["Secure-Join"] == "vc-contact-confirm"


def test_secrets_never_appear_in_the_log(camera, caplog, monkeypatch):
    # An entry point run earlier in this process may have stopped "seccam" propagating to the root logger.
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="seccam")
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request("Z" * 24))
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    camera.handle(joiner.request_with_auth(camera, "Y" * 24))
    full_join(camera, joiner, invite)
    text = caplog.text
    assert "invite=" + invite["id"] in text or invite["id"] in text
    for secret in (invite["invitenumber"], invite["auth"], "Z" * 24, "Y" * 24):
        assert secret not in text


def test_step_of_reads_the_claimed_step():
    msg = email.message_from_string("Secure-Join: VC-Request-With-Auth\n\n")
    assert securejoin.step_of(msg) == "vc-request-with-auth"
    msg = email.message_from_string("Secure-Join: vc-request\nSecure-Join-Invitenumber: x\n\n")
    assert securejoin.step_of(msg) == securejoin.REQUEST
    assert securejoin.step_of(email.message_from_string("Subject: hi\n\n")) is None


def test_a_reply_the_server_cannot_take_now_waits_in_the_outbox(camera):
    from seccam.transport import SmtpTemporaryError

    class DownSmtp(FakeSmtp):
        def send(self, raw, from_addr, to_addrs):
            raise SmtpTemporaryError("421 try later")

    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    session = inbox._Session(camera.config, camera.spool, lambda: NOW, DownSmtp)
    _, detail = inbox.handle(session, joiner.vc_request(invite["invitenumber"]))
    assert "outcome=replied" in detail and session.result.replies_queued == 1
    [queued] = camera.spool.items("outbox.new")
    assert queued.name.endswith(".securejoin.eml") and check_pgp_mime(queued.read_bytes()) == []
    inner, _ = joiner.read_reply(queued.read_bytes())
    assert inner["Secure-Join"] == "vc-auth-required"


# -- malformed steps, checked by the Inviter itself ---------------------------------------
def inviter(camera, gpg=None):
    gpg = gpg or camera.gpg
    return securejoin.Inviter(camera.config, gpg, camera.invites, keys.open_store(camera.config, gpg),
                              now=lambda: NOW)


def parsed(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def test_a_camera_without_its_key_cannot_answer_a_secure_join(camera):
    home = short_dir("scn")
    try:
        with pytest.raises(securejoin.DataError, match="the camera has no key"):
            inviter(camera, Gpg(home)).camera_fpr
    finally:
        kill_agent(home)
        import shutil
        shutil.rmtree(home, ignore_errors=True)


def test_vc_request_from_several_addresses_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    raw = joiner.vc_request(invite["invitenumber"]).replace(
        f"From: <{joiner.address}>".encode(), f"From: <{joiner.address}>, <x@seccam.test>".encode())
    result = inviter(camera).handle_request(parsed(raw))
    assert result.outcome == "rejected" and result.reason == "no single From address" and result.reply is None
    assert_nothing_changed(camera, joiner, invite["id"])


@pytest.mark.parametrize("count", [0, 2])
def test_vc_request_without_exactly_one_autocrypt_header_is_rejected(camera, count):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    message = parsed(joiner.vc_request(invite["invitenumber"]))
    value = message["Autocrypt"]
    del message["Autocrypt"]
    for _ in range(count):
        message["Autocrypt"] = value
    _, detail, _ = camera.handle(message.as_bytes())
    assert "outcome=rejected" in detail and f"{count} Autocrypt headers (expected 1)" in detail
    assert FakeSmtp.sent == [] and not camera.gpg.has_key(joiner.fpr)
    assert camera.invites.get(invite["id"])["pending"] == []


def test_vc_request_with_an_invalid_autocrypt_header_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    message = parsed(joiner.vc_request(invite["invitenumber"]))
    message.replace_header("Autocrypt", f"addr={joiner.address}; keydata=!!not-base64!!")
    _, detail, _ = camera.handle(message.as_bytes())
    assert "outcome=rejected" in detail and "invalid Autocrypt header" in detail
    assert FakeSmtp.sent == [] and camera.invites.get(invite["id"])["pending"] == []


def test_vc_request_offering_something_that_is_not_a_key_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    _, detail, _ = camera.handle(joiner.vc_request(invite["invitenumber"], keydata=b"not an OpenPGP key"))
    assert "outcome=rejected" in detail and "unusable key" in detail
    assert FakeSmtp.sent == [] and camera.invites.get(invite["id"])["pending"] == []


def test_request_with_auth_with_a_malformed_fingerprint_header_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    _, detail, _ = camera.handle(joiner.request_with_auth(camera, invite["auth"], claimed="NOT-A-FINGERPRINT"))
    assert "outcome=rejected" in detail and "no valid Secure-Join-Fingerprint" in detail
    assert len(FakeSmtp.sent) == 1  # only vc-auth-required
    assert_nothing_changed(camera, joiner, invite["id"])


def test_request_with_auth_whose_encrypted_part_names_another_sender_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    inner = parsed(joiner.request_with_auth(camera, invite["auth"], clear_text=True))
    outer = parsed(f"From: <{joiner.address}>\r\n\r\n".encode())
    inner.replace_header("From", "<mallory@seccam.test>")
    result = inviter(camera).handle_request_with_auth(outer, inner, joiner.fpr)
    assert result.outcome == "rejected" and "different outside" in result.reason
    assert_nothing_changed(camera, joiner, invite["id"])


def test_request_with_auth_without_a_signed_from_is_rejected_whatever_the_outer_from_says(camera):
    """Outer headers carry no authority: the joining address must be in the signed part."""
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    inner = parsed(joiner.request_with_auth(camera, invite["auth"], clear_text=True))
    del inner["From"]
    outer = parsed(f"From: <{joiner.address}>\r\n\r\n".encode())
    result = inviter(camera).handle_request_with_auth(outer, inner, joiner.fpr)
    assert result.outcome == "rejected" and "missing inside the encrypted part" in result.reason
    assert_nothing_changed(camera, joiner, invite["id"])


def test_request_with_auth_whose_step_header_is_only_outside_the_encryption_is_rejected(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    inner = parsed(joiner.request_with_auth(camera, invite["auth"], clear_text=True))
    del inner["Secure-Join"]
    outer = parsed(f"From: <{joiner.address}>\r\nSecure-Join: vc-request-with-auth\r\n\r\n".encode())
    result = inviter(camera).handle_request_with_auth(outer, inner, joiner.fpr)
    assert result.outcome == "rejected" and "not protected by the encryption" in result.reason
    assert_nothing_changed(camera, joiner, invite["id"])


def test_gossip_that_is_unparseable_for_another_address_or_not_a_key_does_not_count(camera):
    joiner = camera.joiner("anna@seccam.test")
    invite = camera.invite()
    camera.handle(joiner.vc_request(invite["invitenumber"]))
    inner = parsed(joiner.request_with_auth(camera, invite["auth"], gossip=False, clear_text=True))
    inner["Autocrypt-Gossip"] = "garbage without attributes"
    inner["Autocrypt-Gossip"] = autocrypt.build_header("other@seccam.test", camera.gpg.export_minimal(camera.fpr),
                                                       prefer_encrypt=None)
    inner["Autocrypt-Gossip"] = autocrypt.build_header(CAM, b"\x99 not a key at all", prefer_encrypt=None)
    outer = parsed(f"From: <{joiner.address}>\r\n\r\n".encode())
    result = inviter(camera).handle_request_with_auth(outer, inner, joiner.fpr)
    assert result.outcome == "rejected" and "no Autocrypt-Gossip of the camera key" in result.reason
    assert_nothing_changed(camera, joiner, invite["id"])
