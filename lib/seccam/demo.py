"""``seccam demo``: one full cycle of the main job on simulated hardware, end to end.

What runs is seccam's own code, in the order the real camera runs it; only the
edges are stand-ins:

1. keys: the camera key (as ``seccam keys init`` makes it) and a *demo
   recipient* key, each in its own short, throw-away GnuPG home
   (``/tmp/scdemo-XXXXXX/cam/gnupg`` and ``.../owner``); the recipient's
   public key is imported into the camera's key store as ``seccam keys
   import`` would;
2. motion: the resident poller (:class:`seccam.poller.Poller`, the sensor layer
   of :mod:`seccam.sensors`) on gpiozero ``MockFactory`` pins; the demo drives
   both PIR pins high and the poller writes one motion event;
3. capture: ``jobs/capture``'s :func:`seccam.capture.process`, two cameras
   from fswebcam's test sources (colour bars, and ``raw:/dev/urandom`` noise);
4. encrypt and send: ``jobs/send``'s :func:`seccam.send.work`, signing and
   encrypting every message; instead of SMTP the messages are delivered into
   a local Maildir (:class:`seccam.maildir.Maildir`);
5. the recipient's side: every delivered message is checked to be PGP/MIME,
   decrypted with the demo key, its signature verified against the camera key
   it announced in its Autocrypt header, and its image written out.

Nothing leaves the machine: no mail server is contacted and no clear text is
written except the decrypted images in the output directory.

The output directory (``--dir``; default ``/var/lib/seccam/demo`` when
seccam is installed and that is writable, else a new ``/tmp/seccam-demo-*``)
holds ``seccam.toml``, ``spool/``, ``Maildir/`` (the ciphertext as delivered)
and ``images/`` (the decrypted JPEGs). It is emptied at the start of a run,
but only if it is empty or was made by an earlier demo (a ``.seccam-demo``
marker), so ``--dir`` can never delete someone's files.
"""

import dataclasses
import email
import email.policy
import os
import re
import shutil
import string
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .errors import PermanentError, UsageError

INSTALLED_STATE_DIR = Path("/var/lib/seccam")
INSTALLED_DIR = INSTALLED_STATE_DIR / "demo"
MARKER = ".seccam-demo"
TEMPLATE = Path(__file__).with_name("data") / "demo.toml"
WAIT_S = 20.0
_IMAGE_NAME = re.compile(r"^(?P<camera>.+?)-\d{8}-\d{6}(?P<preview>-preview)?\.jpg$")


@dataclasses.dataclass
class Arrived:
    """One delivered message, as the recipient sees it."""

    maildir_file: Path
    message_bytes: int
    subject: str
    camera: str
    kind: str               # "preview" | "full" | "text"
    text: str
    image: Path | None
    image_bytes: int
    signer: str


@dataclasses.dataclass
class Report:
    directory: Path
    camera_fpr: str
    owner_fpr: str
    event: Path
    cameras: list           # [(name, ok, detail)]
    arrived: list           # [Arrived]
    seconds: float


def default_dir():
    """Where the demo writes when ``--dir`` is not given (see the module docstring)."""
    if INSTALLED_STATE_DIR.is_dir() and os.access(INSTALLED_STATE_DIR, os.W_OK | os.X_OK):
        return INSTALLED_DIR
    return Path(tempfile.mkdtemp(prefix="seccam-demo-", dir="/tmp"))


def prepare_dir(path):
    """Make ``path`` an empty demo directory; refuse one with somebody else's files."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{path} exists and is not a directory")
        entries = list(path.iterdir())
        if entries and not (path / MARKER).exists():
            raise UsageError(f"{path} is not empty and not an earlier demo's directory; choose another --dir")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    (path / MARKER).write_text("made by seccam demo; emptied by the next run\n")
    return path


def write_config(directory, spool_dir, state_dir):
    """Write the embedded demo configuration; return its path (mode 0600: it holds a password)."""
    text = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        spool_dir=spool_dir, state_dir=state_dir)
    path = Path(directory) / "seccam.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def wait_for(predicate, what, timeout=WAIT_S):
    """Poll ``predicate`` until it returns something true; PermanentError after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise PermanentError(f"demo: no {what} after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _stop_agent(home):
    # gpg-agent outlives the process that started it; a demo must not leave one behind.
    # (python-gnupg has no call for this, so it is gpgconf here, not in seccam.gpg.)
    if Path(home).is_dir():
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False)


# -- the steps -------------------------------------------------------------------------
def make_keys(config, owner_home):
    """The camera key and the demo recipient's key; the recipient's key goes into the key store."""
    from . import keys
    from .gpg import Gpg, home_for

    camera = Gpg(home_for(config.state_dir))
    camera_fpr = camera.generate_camera_key(config.account.address)
    owner = Gpg(owner_home)
    [address] = config.delivery.recipients
    owner_fpr = owner.generate_camera_key(address)  # the same kind of key a Delta Chat profile has
    keys.open_store(config, camera).import_key(address, owner.export_armored(owner_fpr), "demo:generated")
    return camera_fpr, owner, owner_fpr


def simulate_motion(config, spool):
    """Run the poller on mock pins, drive both PIRs high, return the motion event file it wrote."""
    from gpiozero.pins.mock import MockFactory

    from .poller import Poller

    factory = MockFactory()
    poller = Poller(config, pin_factory=factory)
    failure = []

    def run():
        try:
            poller.run(install_signals=False)
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="seccam-demo-poller", daemon=True)
    thread.start()
    try:
        wait_for(lambda: failure or spool.read_state("poller"), "poller liveness stamp")
        for pin in config.sensors.pir_pins:
            factory.pin(pin).drive_high()
        events = wait_for(lambda: failure or spool.items("events.new"), "motion event")
    finally:
        poller.request_stop("demo")
        thread.join(WAIT_S)
        factory.reset()
    if failure:  # pragma: no cover - the poller's own tests cover its failures
        raise failure[0]
    return events[0]


def _inner_parts(inner):
    text, image_name, image = "", None, None
    for part in inner.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and not text:
            text = part.get_content().strip()
        elif ctype == "image/jpeg":
            image_name, image = part.get_filename(), part.get_payload(decode=True)
    return text, image_name, image


def read_delivered(maildir, owner, camera_fpr, images_dir):
    """Decrypt every delivered message as the recipient; return [Arrived]. Raises PermanentError
    when a message is not encrypted, does not decrypt, or is not signed by the camera key."""
    from .autocrypt import parse_header
    from .gpg import GpgError
    from .maildir import is_encrypted

    images_dir.mkdir(mode=0o750, exist_ok=True)
    arrived = []
    known = set()
    for path in maildir.messages():
        raw = path.read_bytes()
        if not is_encrypted(raw):
            raise PermanentError(f"{path.name}: delivered in clear text")
        outer = email.message_from_bytes(raw, policy=email.policy.default)
        # As Delta Chat does: the sender's key comes with the mail, in its Autocrypt header.
        header = parse_header(str(outer["Autocrypt"]))
        announced = owner.fingerprints_of(header.keydata)[0]
        if announced not in known:
            owner.import_keys(header.keydata)
            known.add(announced)
        payload = outer.get_payload()[1].get_payload(decode=True)
        try:
            decrypted = owner.decrypt_verify(payload)
        except GpgError as exc:
            raise PermanentError(f"{path.name}: the demo recipient cannot decrypt it: {exc}") from None
        if decrypted.signer != camera_fpr or announced != camera_fpr:
            raise PermanentError(f"{path.name}: signed by {decrypted.signer}, not by the camera key {camera_fpr}")
        inner = email.message_from_bytes(decrypted.plaintext, policy=email.policy.default)
        text, image_name, image = _inner_parts(inner)
        camera, kind, out = "all", "text", None
        if image is not None:
            match = _IMAGE_NAME.match(image_name or "")
            camera = match.group("camera") if match else "?"
            kind = "preview" if match and match.group("preview") else "full"
            out = images_dir / Path(image_name or f"{path.name}.jpg").name
            out.write_bytes(image)
        arrived.append(Arrived(maildir_file=path, message_bytes=len(raw), subject=str(inner["Subject"] or ""),
                               camera=camera, kind=kind, text=text, image=out,
                               image_bytes=len(image) if image is not None else 0, signer=decrypted.signer))
    return arrived


def _chown_like_parent(path):
    """Run as root, leave the tree owned like its parent (e.g. seccam, for /var/lib/seccam/demo),
    so the service user can run the next demo there."""
    parent = Path(path).parent.stat()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, parent.st_uid, parent.st_gid)


# -- the whole cycle -------------------------------------------------------------------------
def run(directory=None, say=print):
    """Run the demo cycle in ``directory`` (default: :func:`default_dir`); return a :class:`Report`.

    ``say(line)`` receives the progress lines.
    """
    from . import capture, send
    from . import config as _config
    from .maildir import Maildir
    from .spool import Spool

    started = time.monotonic()
    directory = prepare_dir(directory or default_dir())
    say(f"seccam demo: one full cycle on simulated hardware, in {directory}")
    say("  nothing leaves this machine: the messages go into a local Maildir, never to a mail server")
    homes = Path(tempfile.mkdtemp(prefix="scdemo-", dir="/tmp"))  # short: gpg-agent's socket lives there
    try:
        config = _config.load(write_config(directory, directory / "spool", homes / "cam"))
        spool = Spool(config.spool_dir).ensure()
        maildir = Maildir(directory / "Maildir")

        t = time.monotonic()
        camera_fpr, owner, owner_fpr = make_keys(config, homes / "owner")
        say(f"  1. keys      camera {config.account.address} {camera_fpr}")
        say(f"               demo recipient {config.delivery.recipients[0]} {owner_fpr}"
            f"   ({time.monotonic() - t:.2f} s)")

        t = time.monotonic()
        event = simulate_motion(config, spool)
        pins = " and ".join(str(p) for p in config.sensors.pir_pins)
        say(f"  2. motion    PIRs on GPIO {pins} (mock pins) both high: the poller wrote {event.name}"
            f"   ({time.monotonic() - t:.2f} s)")

        t = time.monotonic()
        capture.process(config, spool)
        cams = []
        for name, entry in sorted((spool.read_state("cameras") or {}).items()):
            cams.append((name, entry.get("ok"), entry.get("error") or ""))
        detail = ", ".join(f"{n} {'ok' if ok else 'FAILED: ' + err}" for n, ok, err in cams)
        say(f"  3. capture   {detail}   ({time.monotonic() - t:.2f} s)")
        if not all(ok for _, ok, _ in cams):
            raise PermanentError(f"demo: a camera failed ({detail}); is fswebcam installed?")

        t = time.monotonic()
        code = send.work(config, None, smtp_factory=lambda account: maildir)
        if code != 0:  # pragma: no cover - seccam.send's own tests cover its failures
            raise PermanentError(f"demo: the send step exited {code}; see the messages above")
        leftovers = [p.name for s in ("sets.ready", "sets.held", "outbox.new", "outbox.deferred", "outbox.failed")
                     for p in spool.items(s)]
        if leftovers:  # pragma: no cover - a safety net: send.work returned 0, so nothing is left
            raise PermanentError(f"demo: not everything was delivered: {', '.join(leftovers)}")
        say(f"  4. send      {len(maildir.messages())} messages signed and encrypted, delivered into "
            f"{maildir.root}/new   ({time.monotonic() - t:.2f} s)")

        t = time.monotonic()
        arrived = read_delivered(maildir, owner, camera_fpr, directory / "images")
        say(f"  5. received  decrypted with the demo recipient's key, signature checked   "
            f"({time.monotonic() - t:.2f} s)")
        for a in arrived:
            what = f"{a.image.name} {a.image_bytes // 1024} KiB" if a.image else "text only"
            say(f"       {a.subject:28} camera {a.camera:6} {a.kind:8} {a.message_bytes // 1024:4} KiB encrypted"
                f" -> {what}; signed by the camera key")
        images = sorted(p for p in (directory / "images").iterdir())
        say(f"  the images as the recipient sees them: {directory / 'images'}/ ({len(images)} JPEG files)")
        say(f"  the mail as it was delivered (ciphertext only): {maildir.root}/new/")
        seconds = time.monotonic() - started
        say(f"seccam demo: ok, one full cycle in {seconds:.1f} s")
        return Report(directory=directory, camera_fpr=camera_fpr, owner_fpr=owner_fpr, event=event, cameras=cams,
                      arrived=arrived, seconds=seconds)
    finally:
        for home in (homes / "cam" / "gnupg", homes / "owner"):
            _stop_agent(home)
        shutil.rmtree(homes, ignore_errors=True)
        if os.geteuid() == 0:
            _chown_like_parent(directory)
