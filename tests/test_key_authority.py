"""Only the owner decides whose key sees the pictures (issue 10): the attacks, one test each.

Every attack runs with real gpg through the camera's real inbox (jobs/inbox's
``inbox.poll`` reading the loopback Dovecot over verified TLS), as an outsider
would mount it with nothing but the camera's address, its public key (both are
in every camera message) and ordinary Delta Chat mail from the owner. After
each, the invariants are checked, not only "no crash":

* the pinned key of every recipient is the one a person pinned;
* the next alarm is encrypted to the pinned keys (and the camera) only.
"""

import base64
import os
import shutil
import smtplib
import time

import pytest

from seccam import autocrypt, budget, encrypt, inbox, keys
from seccam import config as config_mod
from seccam.gpg import Gpg, GpgError
from seccam.spool import Spool
from helpers import forgery
from helpers.sendkit import kill_agent, make_set, short_dir

OWNER = "owner@seccam.test"
GUEST = "guest@seccam.test"


class Person:
    """Somebody with a key of their own in a short GnuPG home."""

    def __init__(self, address, expire=None):
        self.address = address
        self.home = short_dir("scp")
        self.gpg = Gpg(self.home)
        self.fpr = self.gpg.generate_camera_key(address)
        if expire is not None:
            import subprocess
            subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quick-set-expire", self.fpr, expire],
                           check=True, capture_output=True)
            subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quick-set-expire", self.fpr, expire,
                            "*"], check=True, capture_output=True)

    def close(self):
        kill_agent(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


class Camera:
    def __init__(self, mailserver, recipients=(OWNER,), extra=""):
        self.root = short_dir()
        self.address, password = mailserver.new_user("cam")
        mailserver.add_camera_address(self.address)
        path = self.root / "seccam.toml"
        rec = ", ".join(f'"{r}"' for r in recipients)
        path.write_text(f'spool_dir = "{self.root}/spool"\nstate_dir = "{self.root}/state"\n'
                        + mailserver.account_toml(self.address, password, timeout_s=10)
                        + f"[delivery]\nrecipients = [{rec}]\n{extra}"
                        + '[[camera]]\nname = "front"\ndevice = "test"\n')
        path.chmod(0o600)
        self.config = config_mod.load(path)
        self.gpg = Gpg(self.config.state_dir / "gnupg")
        self.fpr = self.gpg.generate_camera_key(self.address)
        self.spool = Spool(self.config.spool_dir).ensure()
        self.mailserver = mailserver

    @property
    def store(self):
        return keys.open_store(self.config, self.gpg)

    def pin(self, person):
        """A person on the Pi imports the recipient's key (seccam keys import)."""
        assert self.store.import_key(person.address, person.gpg.export_armored(person.fpr), "file:test") \
            == keys.Outcome.PINNED
        person.gpg.import_keys(self.gpg.export_armored(self.fpr))

    def pinned(self, address):
        rec = keys.KeyStore(self.config.state_dir).record(address)
        return rec and rec.get("fingerprint")

    def deliver(self, raw, envelope_from="someone@seccam.test"):
        with smtplib.SMTP(self.mailserver.host, self.mailserver.smtp_plain_port, timeout=10) as s:
            s.sendmail(envelope_from, [self.address], raw)

    def poll(self):
        return inbox.poll(self.config, self.spool, welcome=False)

    def alarm_key_ids(self):
        """Fingerprints the next alarm is encrypted to (what prepare() would give gpg)."""
        crypto = encrypt.prepare(self.config, self.gpg)
        return set(crypto.recipient_fprs)

    def close(self):
        kill_agent(self.config.state_dir / "gnupg")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def people():
    made = []

    def make(address, **kw):
        made.append(Person(address, **kw))
        return made[-1]
    yield make
    for p in made:
        p.close()


@pytest.fixture
def camera(mailserver):
    made = []

    def make(**kw):
        made.append(Camera(mailserver, **kw))
        return made[-1]
    yield make
    for c in made:
        c.close()


def forged_outer(raw_or_armored, owner, attacker):
    """The owner's ciphertext with a forged outer From: owner and the attacker's key in Autocrypt."""
    armored = forgery.armored_of(raw_or_armored) if b"Content-Type" in raw_or_armored else raw_or_armored
    value = autocrypt.build_header(owner.address, attacker.gpg.export_minimal(attacker.fpr))
    return forgery.wrap(armored, owner.address, [attacker.address], value)


# -- hole 1a: a replayed owner-signed message -------------------------------------------------
def test_a_replayed_owner_message_with_a_forged_outer_autocrypt_never_replaces_the_pinned_key(
        camera, people):
    cam = camera()
    owner, mallory = people(OWNER), people("mallory@seccam.test")
    cam.pin(owner)
    # The owner writes into the camera chat (a group co-member and the provider see the ciphertext).
    raw, _ = forgery.chat_message(owner.gpg, owner.fpr, [cam.fpr, owner.fpr], OWNER, [cam.address])
    cam.deliver(raw)
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr
    # Mallory re-sends the very same ciphertext with his key in the outer Autocrypt header.
    cam.deliver(forged_outer(raw, owner, mallory))
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr
    assert mallory.fpr not in cam.alarm_key_ids()
    assert cam.alarm_key_ids() == {owner.fpr}


def test_the_replay_fails_even_when_the_camera_never_saw_the_original(camera, people):
    cam = camera()
    owner, mallory = people(OWNER), people("mallory@seccam.test")
    cam.pin(owner)
    raw, _ = forgery.chat_message(owner.gpg, owner.fpr, [cam.fpr, owner.fpr], OWNER, [cam.address])
    cam.deliver(forged_outer(raw, owner, mallory))  # the attacker is first
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr
    assert cam.alarm_key_ids() == {owner.fpr}


# -- hole 1b: unwrap and re-wrap ---------------------------------------------------------------
def test_an_owner_message_to_someone_else_rewrapped_to_the_camera_never_replaces_the_pinned_key(
        camera, people):
    cam = camera()
    owner, mallory = people(OWNER), people("mallory@seccam.test")
    cam.pin(owner)
    owner.gpg.import_keys(mallory.gpg.export_armored(mallory.fpr))
    mallory.gpg.import_keys(owner.gpg.export_armored(owner.fpr))
    mallory.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    # An ordinary Delta Chat message from the owner to Mallory, carrying the owner's own Autocrypt...
    _, armored = forgery.chat_message(owner.gpg, owner.fpr, [mallory.fpr, owner.fpr], OWNER, [mallory.address])
    # ...stripped of its encryption and re-encrypted, signature untouched, to the camera.
    packets = forgery.unwrap(mallory.home, armored)
    rewrapped = forgery.rewrap(mallory.home, packets, [cam.fpr])
    cam.deliver(forged_outer(rewrapped, owner, mallory))
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr
    assert cam.alarm_key_ids() == {owner.fpr}
    # And the same with the attacker's key planted in the inner Autocrypt is impossible: he
    # cannot change signed content. What he can do is sign his own: that is a stranger's mail.
    inner = forgery.inner_message(OWNER, [cam.address], autocrypt_keydata=mallory.gpg.export_minimal(mallory.fpr))
    armored = mallory.gpg.encrypt_sign(inner, [cam.fpr], signer=mallory.fpr)
    cam.deliver(forged_outer(armored, owner, mallory))
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr


def test_after_an_attack_the_owner_can_still_be_re_keyed_only_by_a_person(camera, people):
    """The attack cannot be repeated after `seccam keys accept` either: only a person moves the pin."""
    cam = camera()
    owner, new_phone, mallory = people(OWNER), people(OWNER), people("mallory@seccam.test")
    cam.pin(owner)
    raw, _ = forgery.chat_message(owner.gpg, owner.fpr, [cam.fpr], OWNER, [cam.address])
    cam.deliver(forged_outer(raw, owner, mallory))
    cam.poll()
    # The owner's genuinely new key arrives by mail: it is pending, a person accepts it.
    value = autocrypt.build_header(OWNER, new_phone.gpg.export_minimal(new_phone.fpr))
    cam.deliver(forgery.wrap(forgery.armored_of(raw), OWNER, [cam.address], value))
    cam.deliver(plain_with_autocrypt(OWNER, cam.address, new_phone))
    cam.poll()
    assert cam.pinned(OWNER) == owner.fpr
    assert new_phone.fpr in {p["fingerprint"] for p in keys.pending_changes(cam.config)}
    assert cam.store.accept(OWNER, new_phone.fpr) == keys.Outcome.ADOPTED
    new_phone.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    # Mallory replays again with his key: the new pin stays.
    raw2, _ = forgery.chat_message(new_phone.gpg, new_phone.fpr, [cam.fpr], OWNER, [cam.address])
    cam.deliver(forged_outer(raw2, new_phone, mallory))
    cam.poll()
    assert cam.pinned(OWNER) == new_phone.fpr
    assert cam.alarm_key_ids() == {new_phone.fpr}


def plain_with_autocrypt(sender, to, person):
    value = autocrypt.build_header(sender, person.gpg.export_minimal(person.fpr))
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: hi\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}"
            f"\r\nMessage-ID: <{time.time_ns()}@seccam.test>\r\nAutocrypt: {value}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain\r\n\r\nhello\r\n").encode()


# -- hole 2: first key wins ----------------------------------------------------------------------
def test_a_forged_first_key_for_a_recipient_without_one_is_never_pinned_and_held_pictures_stay(
        camera, people):
    cam = camera()
    mallory = people("mallory@seccam.test")
    make_set(cam.spool, "20261201T100000.000000Z.1.aaaa-alarm", cameras=(("front", True),))
    encrypt.process(cam.config, cam.spool)
    assert len(cam.spool.items("sets.held")) == 1
    cam.deliver(plain_with_autocrypt(OWNER, cam.address, mallory))
    result = cam.poll()
    assert cam.pinned(OWNER) is None
    assert result.keys_changed == 0
    assert [p["fingerprint"] for p in keys.pending_changes(cam.config)] == [mallory.fpr]
    # jobs/send (which encrypts first) still sends nothing: nobody has a pinned key.
    encrypt.process(cam.config, cam.spool)
    assert cam.spool.items("outbox.new") == []
    assert len(cam.spool.items("sets.held")) == 1


# -- hole 3: a stranger takes the spool budget ----------------------------------------------------
def test_mail_the_camera_cannot_decrypt_never_displaces_a_queued_alarm(camera, people):
    cam = camera(extra="")
    owner, stranger = people(OWNER), people("stranger@seccam.test")
    cam.pin(owner)
    stranger.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    # A queued alarm of about 1 MB in the outbox.
    alarm = cam.spool.write("outbox.new", b"x" * 1_000_000, name="20261201T100000.000000Z.1.aaaa-alarm.00.front.preview.eml")
    # 30 mails of ~0.9 MB that the camera cannot decrypt (encrypted to a key it does not have).
    noise = base64.b64encode(os.urandom(600_000))  # incompressible: gpg must not shrink it
    junk = forgery.wrap(stranger.gpg.encrypt_sign(b"Content-Type: text/plain\r\n\r\n" + noise,
                                                  [stranger.fpr], signer=stranger.fpr),
                        "stranger@seccam.test", [cam.address],
                        autocrypt.build_header("stranger@seccam.test", stranger.gpg.export_minimal(stranger.fpr)))
    assert 700_000 < len(junk) < inbox.MAX_MESSAGE_BYTES
    for _ in range(30):
        cam.deliver(junk)
    cam.poll()
    before = budget.usage(cam.spool)
    # A budget that the alarm plus a little fits in: junk must not count against it.
    cfg = config_mod.load(cam.config.path)
    object.__setattr__(cfg, "spool_budget_mb", 3)
    budget.make_room(cfg, cam.spool, needed=100_000)
    assert alarm.exists(), f"the queued alarm was pruned (spool used {before} bytes)"
    kept = inbox.set_aside_items(cam.spool)
    assert 0 < len(kept) <= inbox.MAX_SET_ASIDE
    assert sum(p.stat().st_size for p in kept) <= inbox.MAX_SET_ASIDE_BYTES


# -- hole 4: one recipient stops everyone's alarms -------------------------------------------------
def test_a_guest_whose_key_expired_does_not_stop_the_owners_alarms(camera, people):
    cam = camera(recipients=(OWNER, GUEST))
    owner, guest = people(OWNER), people(GUEST, expire="seconds=3")
    cam.pin(owner)
    cam.pin(guest)
    deadline = time.monotonic() + 30
    while cam.store.missing([GUEST]) != [GUEST]:
        assert time.monotonic() < deadline, "the guest key did not expire"
        time.sleep(0.5)
    make_set(cam.spool, "20261201T100000.000000Z.1.aaaa-alarm", cameras=(("front", True),))
    encrypt.process(cam.config, cam.spool)
    messages = cam.spool.items("outbox.new")
    assert messages, "the owner's alarm was held because of the guest"
    for path in messages:
        assert owner.gpg.decrypt_verify(forgery.armored_of(path.read_bytes())).signer == cam.fpr
        with pytest.raises(GpgError):
            guest.gpg.decrypt_verify(forgery.armored_of(path.read_bytes()))
    held = cam.spool.items("sets.held")
    assert len(held) == 1 and GUEST in cam.spool.read_reason(held[0])
