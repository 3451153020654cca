"""Chat commands to a camera on the loopback mail server, built as a recipient's Delta Chat sends them.

* :class:`Person`: somebody with a key of their own in a short GnuPG home;
* :class:`CommandCamera`: a camera (configuration, key, spool) whose account is on the
  session's loopback MailServer, with recipients a person pinned (``seccam keys import``);
* :meth:`CommandCamera.command`: the raw RFC 3156 message of a chat message typed by a
  recipient (signed by their key, encrypted to the camera and to themselves, protected
  headers inside, ``Chat-Group-ID`` when typed in the camera's group), delivered over SMTP;
* :meth:`CommandCamera.sent`: what the camera sent since a mark, decrypted: subject, text,
  the envelope recipients, whether it carried the group headers;
* fixtures (import them into a test module): ``people`` and ``camera`` (factories, cleaned
  up after the test), ``cam`` (a camera whose one recipient, the owner, is pinned) and
  ``logs`` (caplog with seccam's records: the entry points' logging set-up stops them
  from reaching the root logger).

Real gpg and the real inbox job (``inbox.poll``) everywhere; the attack material comes
from helpers.forgery.
"""

import dataclasses
import email
import email.policy
import shutil
import smtplib

import pytest

from seccam import config as config_mod, encrypt, inbox, keys
from seccam.gpg import Gpg
from seccam.spool import Spool
from helpers import forgery
from helpers.sendkit import kill_agent, short_dir

OWNER = "owner@seccam.test"
BOB = "bob@seccam.test"


class Person:
    def __init__(self, address):
        self.address = address
        self.home = short_dir("scp")
        self.gpg = Gpg(self.home)
        self.fpr = self.gpg.generate_camera_key(address)

    def close(self):
        kill_agent(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


@dataclasses.dataclass
class Sent:
    subject: str
    text: str
    to: tuple            # the envelope recipients
    group: bool          # carried Chat-Group-ID (a group message)
    image: bool


class CommandCamera:
    def __init__(self, mailserver, recipients=(OWNER,), extra="", cameras=None):
        self.root = short_dir()
        self.mailserver = mailserver
        self.address, password = mailserver.new_user("cam")
        mailserver.add_camera_address(self.address)
        for address in recipients:
            if address not in mailserver.users:
                mailserver.add_user(address)
        rec = ", ".join(f'"{r}"' for r in recipients)
        cameras = cameras or '[[camera]]\nname = "front"\ndevice = "test"\nresolution = "320x240"\n'
        self.path = self.root / "seccam.toml"
        self.path.write_text(f'spool_dir = "{self.root}/spool"\nstate_dir = "{self.root}/state"\n'
                             + mailserver.account_toml(self.address, password, timeout_s=10)
                             + f'[delivery]\nrecipients = [{rec}]\ngroup_name = "Home"\nrate_per_minute = 6000\n'
                             + f"burst = 1000\n{extra}" + cameras)
        self.path.chmod(0o600)
        self.config = config_mod.load(self.path)
        self.gpg = Gpg(self.config.state_dir / "gnupg")
        self.fpr = self.gpg.generate_camera_key(self.address)
        self.spool = Spool(self.config.spool_dir).ensure()
        self.mark = len(mailserver.received)

    def pin(self, person):
        store = keys.open_store(self.config, self.gpg)
        assert store.import_key(person.address, person.gpg.export_armored(person.fpr), "file:test") \
            == keys.Outcome.PINNED
        person.gpg.import_keys(self.gpg.export_armored(self.fpr))

    def group_id(self):
        return encrypt.group_id(self.config, self.fpr)

    def command(self, person, text, group=False, to=None, deliver=True, **inner_kw):
        """The message ``person`` types into the camera's chat (1:1, or the group), delivered."""
        headers = [("Chat-Group-ID", self.group_id())] if group else []
        headers += list(inner_kw.pop("extra_headers", ()))
        raw, _ = forgery.chat_message(person.gpg, person.fpr, [self.fpr, person.fpr], person.address,
                                      to or [self.address], text=text, extra_headers=headers, **inner_kw)
        if deliver:
            self.deliver(raw)
        return raw

    def deliver(self, raw, envelope_from="someone@seccam.test"):
        with smtplib.SMTP(self.mailserver.host, self.mailserver.smtp_plain_port, timeout=10) as s:
            s.sendmail(envelope_from, [self.address], raw)

    def poll(self, **kw):
        return inbox.poll(self.config, self.spool, welcome=False, **kw)

    def armed(self):
        from seccam import armed
        return armed.current(self.spool)

    def sent(self, reader, since=None):
        """Every message the camera had accepted by the server since ``since`` (default: the
        last call), decrypted with ``reader``'s key; the mark moves on."""
        since = self.mark if since is None else since
        out = []
        for rec in self.mailserver.received[since:]:
            if rec.mail_from.lower() != self.address or not rec.accepted:
                continue
            msg = email.message_from_bytes(rec.raw, policy=email.policy.default)
            plain = reader.gpg.decrypt_verify(msg.get_payload()[1].get_payload(decode=True))
            assert plain.signer == self.fpr
            inner = email.message_from_bytes(plain.plaintext, policy=email.policy.default)
            body = inner.get_body(("plain",))
            out.append(Sent(str(inner["Subject"]), body.get_content() if body else "",
                            tuple(a.lower() for a in rec.rcpt_tos), inner["Chat-Group-ID"] is not None,
                            any(p.get_content_type() == "image/jpeg" for p in inner.iter_parts())))
        self.mark = len(self.mailserver.received)
        return out

    def queued(self):
        """Everything waiting anywhere between a command and the server: none after a clean run."""
        return {state: [p.name for p in self.spool.items(state)]
                for state in ("requests.new", "requests.active", "sets.ready", "sets.active", "sets.held",
                              "outbox.new", "outbox.active", "outbox.deferred", "outbox.failed")
                if self.spool.items(state)}

    def close(self):
        kill_agent(self.config.state_dir / "gnupg")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def people():
    made = []

    def make(address):
        made.append(Person(address))
        return made[-1]
    yield make
    for p in made:
        p.close()


@pytest.fixture
def camera(mailserver):
    made = []

    def make(**kw):
        made.append(CommandCamera(mailserver, **kw))
        return made[-1]
    yield make
    for c in made:
        c.close()


@pytest.fixture
def cam(camera, people):
    """A camera with one recipient, the owner, pinned (``cam.owner``)."""
    c = camera()
    c.owner = people(OWNER)
    c.pin(c.owner)
    return c


@pytest.fixture
def logs(caplog, monkeypatch):
    import logging
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    caplog.set_level(logging.INFO, logger="seccam")
    return caplog
