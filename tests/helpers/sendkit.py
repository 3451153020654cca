"""Test kit for the encrypt and send steps (tests/test_mime, test_encrypt, test_send, test_transport).

* :func:`make_camera`: a config (spool/state under a short dir) with an
  account and recipients, the camera key generated, and each recipient's key
  made in its own short GnuPG home (to decrypt what the camera sent) and
  imported into the camera's key store;
* :func:`make_set`: an image set published in ``sets/ready`` by hand;
* :class:`SmtpSink`: an aiosmtpd server on 127.0.0.1 (implicit TLS, STARTTLS
  or plain, with AUTH) that records messages and can answer DATA with a
  scripted reply; :func:`make_cert` makes its self-signed certificate.
"""

import contextlib
import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "lib") not in sys.path:
    sys.path.insert(0, str(ROOT / "lib"))

from seccam import config as config_mod  # noqa: E402

CAMERA_ADDR = "cam@seccam.test"
PASSWORD = "s3cret-pw"


def jpeg(seed, size=2000):
    """Bytes that look like a JPEG (the encrypt step does not decode images)."""
    body = (seed.encode() * (size // max(1, len(seed)) + 1))[:size]
    return b"\xff\xd8\xff\xe0" + body + b"\xff\xd9"


def short_dir(prefix="sc"):
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def kill_agent(home):
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


@dataclasses.dataclass
class Recipient:
    address: str
    home: Path
    fingerprint: str

    def decrypt(self, armored):
        from seccam.gpg import Gpg
        return Gpg(self.home).decrypt_verify(armored)


@dataclasses.dataclass
class Camera:
    root: Path
    config_path: Path
    config: object
    fingerprint: str | None
    recipients: list

    @property
    def spool(self):
        from seccam.spool import Spool
        return Spool(self.config.spool_dir).ensure()

    @property
    def home(self):
        return self.config.state_dir / "gnupg"

    def gpg(self):
        from seccam.gpg import Gpg
        return Gpg(self.home)

    def reload(self):
        self.config = config_mod.load(self.config_path)
        return self.config

    def close(self):
        for home in [self.home] + [r.home for r in self.recipients]:
            kill_agent(home)
        shutil.rmtree(self.root, ignore_errors=True)


def account_toml(host="127.0.0.1", port=25, security="plain", ca_file=None, timeout=10):
    lines = ["[account]", f'address = "{CAMERA_ADDR}"', 'display_name = "Front door"', f'password = "{PASSWORD}"',
             f'smtp_host = "{host}"', f"smtp_port = {port}", f'smtp_security = "{security}"', f"timeout_s = {timeout}"]
    if ca_file:
        lines.append(f'ca_file = "{ca_file}"')
    return "\n".join(lines) + "\n"


def write_config(root, recipients, account=None, delivery_extra=""):
    rec = ", ".join(f'"{r}"' for r in recipients)
    text = (f'spool_dir = "{root}/spool"\nstate_dir = "{root}/state"\n\n'
            + (account if account is not None else account_toml())
            + f"\n[delivery]\nrecipients = [{rec}]\n" + delivery_extra
            + '\n[[camera]]\nname = "front"\ndevice = "test"\n\n[[camera]]\nname = "yard"\ndevice = "test"\n')
    path = Path(root) / "seccam.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def make_recipient(address, import_into=None, config=None):
    """A recipient with its own key; imported into the camera's store when ``config`` is given."""
    from seccam.gpg import Gpg
    home = short_dir("scr")
    g = Gpg(home)
    fpr = g.generate_camera_key(address)
    rec = Recipient(address, home, fpr)
    if config is not None:
        import_recipient(config, rec)
    return rec


def import_recipient(config, rec):
    from seccam import keys
    from seccam.gpg import Gpg
    data = Gpg(rec.home).export_armored(rec.fingerprint)
    store = keys.open_store(config, Gpg(config.state_dir / "gnupg"))
    store.import_key(rec.address, data, source="test")


def make_camera(recipients=("owner@seccam.test",), with_key=True, import_keys=True, account=None,
                delivery_extra=""):
    root = short_dir()
    path = write_config(root, recipients, account=account, delivery_extra=delivery_extra)
    cfg = config_mod.load(path)
    cam = Camera(root, path, cfg, None, [])
    if with_key:
        cam.fingerprint = cam.gpg().generate_camera_key(CAMERA_ADDR)
    for address in recipients:
        cam.recipients.append(make_recipient(address, config=cfg if import_keys else None))
    if with_key:  # so that recipients can check the camera's signature
        from seccam.gpg import Gpg
        for rec in cam.recipients:
            Gpg(rec.home).import_keys(cam.gpg().export_armored(cam.fingerprint))
    return cam


def make_set(spool, set_id, kind="alarm", cameras=(("front", True), ("yard", True)), health_text=None,
             meta_override=None, created="2026-11-25T19:11:00+00:00"):
    """Publish ``sets/ready/<set_id>.set`` with fake JPEGs; return (path, {file name: bytes})."""
    tmp = spool.make_tmp_dir(".set")
    files = {}
    cams = []
    for name, ok in cameras:
        if ok:
            for fname in (f"{name}.jpg", f"{name}.preview.jpg"):
                data = jpeg(f"{set_id}/{fname}", 5000 if "preview" in fname else 40000)
                (tmp / fname).write_bytes(data)
                files[fname] = data
            cams.append({"name": name, "ok": True, "full": f"{name}.jpg", "preview": f"{name}.preview.jpg",
                         "captured": created, "bytes": 1, "preview_bytes": 1, "seconds": 0.5})
        else:
            cams.append({"name": name, "ok": False, "error": "no image written"})
    meta = {"version": 1, "kind": kind, "id": set_id, "created": created, "cameras": cams,
            "events": ([{"source": "pir", "time": created,
                         "sensors": [{"pin": 17, "active_at": created}, {"pin": 27, "active_at": created}]}]
                       if kind == "alarm" else [])}
    if kind == "heartbeat":
        meta["health"] = {"text": health_text or "All good: 2 cameras, disk 10% used."}
    if meta_override is not None:
        meta = meta_override
    (tmp / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return spool.publish(tmp, "sets.ready", f"{set_id}.set"), files


# -- SMTP --------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory, cn="127.0.0.1"):
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    data: bytes
    tls: bool
    auth: str | None


class SmtpSink:
    """aiosmtpd on 127.0.0.1. ``mode``: "tls" (implicit), "starttls" (required), "plain",
    "no-starttls" (plain, STARTTLS not offered). ``replies`` is a list of DATA replies to
    give (in order, one per message) before accepting normally."""

    def __init__(self, mode="plain", cert=None, key=None, login="cam@seccam.test", password=PASSWORD):
        self.mode = mode
        self.cert, self.key = cert, key
        self.login, self.password = login, password
        self.received = []
        self.replies = []
        self.peers = set()
        self.on_data = None       # callable(envelope), run before the reply
        self.port = free_port()
        self._controller = None
        self._lock = threading.Lock()

    # aiosmtpd handler hook
    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            self.peers.add(session.peer)
            reply = self.replies.pop(0) if self.replies else None
        if self.on_data is not None:
            self.on_data(envelope)
        if reply:
            return reply
        tls = self.mode == "tls" or session.ssl is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content),
                                      tls, getattr(session, "login_data", None)))
        return "250 OK queued"

    @property
    def connections(self):
        """Connections that reached DATA (distinct client ports)."""
        return len(self.peers)

    def _auth(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult
        ok = (auth_data.login.decode() == self.login and auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False)  # handled=True would leave the client without a reply

    def __enter__(self):
        from aiosmtpd.controller import Controller
        kwargs = dict(authenticator=self._auth, auth_require_tls=self.mode == "starttls",
                      decode_data=False)
        ctx = None
        if self.mode in ("tls", "starttls"):
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cert), str(self.key))
        if self.mode == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True)
        controller_kwargs = {}
        if self.mode == "tls":
            controller_kwargs["ssl_context"] = ctx
            controller_kwargs["server_hostname"] = "127.0.0.1"
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **controller_kwargs, **kwargs)
        self._controller.start()
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(Exception):
            self._controller.stop()
        return False


def decrypt_message(raw, recipient):
    """(inner email.message.EmailMessage, signer fingerprint) of a camera message."""
    import email
    import email.policy
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    armored = msg.get_payload()[1].get_payload(decode=True)
    plain, signer, _ = recipient.decrypt(armored)
    return email.message_from_bytes(plain, policy=email.policy.default), signer


__all__ = ["make_camera", "make_set", "make_recipient", "import_recipient", "SmtpSink", "make_cert",
           "decrypt_message", "CAMERA_ADDR", "PASSWORD"]
