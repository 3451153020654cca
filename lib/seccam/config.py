"""The configuration: one TOML file, parsed with ``tomllib`` and validated once.

This module owns the public configuration contract documented in
docs/configuration.md. Every other module receives a validated, immutable
:class:`Config`; none of them reads the file or re-checks a value.

Where the file comes from, first match wins: ``--config PATH``, the
``SECCAM_CONFIG`` environment variable, ``/etc/seccam/seccam.toml``.

Every problem is reported as one line that names the file, the line (when the
key is found in the text), the key and the problem, e.g.::

    seccam.toml:14: camera[1].resolution: expected WIDTHxHEIGHT, got "720"

and raised as :class:`~seccam.errors.ConfigError` (exit code 78). Unknown keys
are errors too: a misspelt ``cooldown`s`` must not silently fall back to a
default on a security device.
"""

import dataclasses
import os
import re
import stat
import tomllib
from pathlib import Path

from .errors import ConfigError

DEFAULT_PATH = "/etc/seccam/seccam.toml"
ENV_VAR = "SECCAM_CONFIG"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_RES_RE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_ADDR_RE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:]+$|^[^@\s<>\"(),;:]+@localhost$")
_GROUP_ID_RE = re.compile(r"^[0-9A-Za-z_-]{11,32}$")
_PALETTE_RE = re.compile(r"^[A-Z0-9]{2,12}$")
_SECURITY = ("tls", "starttls", "plain")
_BACKENDS = ("fswebcam", "rpicam")
# BCM GPIO numbers usable on the 40-pin header of every Pi since the B+.
_BCM_PINS = range(0, 28)


# Every dataclass here has a docstring: without one, dataclasses builds it from inspect.signature(),
# which costs more at import than the class itself (and every job imports this module).
@dataclasses.dataclass(frozen=True)
class Sensors:
    """``[sensors]``: the PIRs, the button and the LEDs, and the motion rule's timing."""

    pir_pins: tuple = (17, 27)
    coincidence_s: float = 2.0
    warmup_s: float = 60.0
    cooldown_s: float = 30.0
    button_pin: int | None = None
    led_pins: tuple = ()
    sample_rate: int = 50          # no longer used (edge detection); accepted so older files still load
    liveness_s: float = 30.0
    early_capture: bool = True
    early_capture_burst: int = 3
    early_capture_refill_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class Camera:
    """One ``[[camera]]`` table."""

    name: str
    backend: str = "fswebcam"
    device: str | None = None
    index: int | None = None
    # rpicam: None = the module's whole field of view (camera.module_size), decided at capture time.
    resolution: tuple | None = (1280, 720)
    preview_resolution: tuple | None = (320, 180)
    skip: int = 5
    palette: str | None = None
    quality: int = 85
    preview_quality: int = 70
    timeout_s: float = 20.0
    warmup_ms: int = 750
    stamp: bool = True             # camera name and capture time on the picture
    title: str | None = None       # the name on the picture; None: the camera's name
    focus: str = "continuous"      # rpicam: "continuous", "hyperfocal" or dioptres as text


@dataclasses.dataclass(frozen=True)
class Account:
    """``[account]``: the camera's own mail account."""

    address: str
    display_name: str
    login: str
    password: str | None
    password_file: Path | None
    smtp_host: str
    smtp_port: int
    smtp_security: str
    imap_host: str | None
    imap_port: int
    imap_security: str
    ca_file: Path | None
    timeout_s: float = 30.0

    def read_password(self):
        """Return the password, from the config or from ``password_file``."""
        if self.password is not None:
            return self.password
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{self.password_file}: cannot read password_file: {exc.strerror}") from None

    def tls_context(self):
        """The TLS context for the SMTP and IMAP servers: certificates are always
        verified, against the system store or ``ca_file``."""
        import ssl
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def __repr__(self):  # never print a secret by accident, e.g. in a traceback
        return f"Account(address={self.address!r}, smtp_host={self.smtp_host!r})"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """``[delivery]``: who receives the messages, and how fast they may be sent."""

    recipients: tuple = ()
    group_name: str = "seccam"
    group_id: str | None = None
    rate_per_minute: float = 60.0
    burst: int = 10
    heartbeat_image: str = "full"
    hold_days: float = 7.0


@dataclasses.dataclass(frozen=True)
class Incident:
    """How continuous motion is reported (seccam.incident, docs/operations.md)."""

    gap_s: float = 300.0                                   # 0: every capture is an alarm
    update_pace_s: tuple = (30.0, 60.0, 120.0, 240.0, 480.0, 600.0)  # the last one repeats
    sheet_max: int = 120                                   # thumbnails on one contact sheet


@dataclasses.dataclass(frozen=True)
class Control:
    """Remote control from the chat (seccam.control): who may do what, and how fresh a command must be."""

    enabled: bool = True
    arm_disarm: tuple | None = None  # None: every recipient may /arm and /disarm
    window_s: float = 900.0          # a signed message older (or newer) than this is stale


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole validated configuration file."""

    path: Path
    spool_dir: Path
    state_dir: Path
    sensors: Sensors
    cameras: tuple
    account: Account | None
    delivery: Delivery
    control: Control = Control()
    events_keep_days: int = 7
    spool_budget_mb: float | None = None
    min_free_mb: float | None = None
    incident: Incident = Incident()

    def camera(self, name):
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)


def resolve_path(explicit=None, environ=None):
    """Return the config path: explicit argument, then $SECCAM_CONFIG, then the default."""
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path=None, environ=None):
    """Read, parse and validate the configuration; raise ConfigError on any problem."""
    path = resolve_path(path, environ)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set --config or {ENV_VAR})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse(text, path, mode=_file_mode(path))


def _file_mode(path):
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:  # pragma: no cover - we just read it
        return 0o600


def parse(text, path="seccam.toml", mode=0o600):
    """Validate TOML ``text`` (from ``path``, whose permission bits are ``mode``)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        line = re.search(r"\(at line (\d+), column \d+\)", msg)
        where = f"{path}:{line.group(1)}" if line else f"{path}"
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        raise ConfigError(one_line(f"{where}: invalid TOML: {msg}")) from None
    v = _Validator(path, _LineIndex(text))
    return v.config(data, mode)


class _LineIndex:
    """Finds the line of ``table.key`` in the TOML text, for error messages.

    tomllib keeps no positions, so this scans for table headers and ``key =``
    lines. It understands what configuration files use (``[table]``,
    ``[[array]]``, ``key = value``); anything it cannot place gets no line
    number rather than a wrong one.
    """

    # Compiled on the first error only (re caches them): a file that loads cleanly never needs them.
    _HEADER = r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$"
    _KEY = r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*="

    def __init__(self, text):
        self.text = text
        self.lines = None  # built on the first find(): only an error needs line numbers

    def _build(self, text):
        self.lines = {}
        table = ""
        counts = {}
        header_re, key_re = re.compile(self._HEADER), re.compile(self._KEY)
        for number, line in enumerate(text.splitlines(), start=1):
            header = header_re.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    table = f"{name}[{index}]"
                else:
                    table = name
                self.lines.setdefault(table, number)
                continue
            key = key_re.match(line)
            if key:
                name = key.group(1).strip('"')
                full = f"{table}.{name}" if table else name
                self.lines.setdefault(full, number)

    def find(self, keypath):
        if self.lines is None:
            self._build(self.text)
        return self.lines.get(keypath)


class _Validator:
    def __init__(self, path, index):
        self.path = path
        self.index = index

    # -- reporting --------------------------------------------------------
    def fail(self, keypath, problem):
        line = self.index.find(keypath)
        if line is None and "." in keypath:
            line = self.index.find(keypath.rsplit(".", 1)[0])
        where = f"{self.path}:{line}" if line else f"{self.path}"
        raise ConfigError(one_line(f"{where}: {keypath}: {problem}"))

    @staticmethod
    def _show(value):
        if isinstance(value, str):
            return '"' + value.replace('"', '\\"') + '"'
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict):
            return "a table"
        if isinstance(value, list):
            return "a list"
        return str(value)

    def check_keys(self, table, keypath, allowed):
        for key in table:
            if key not in allowed:
                full = f"{keypath}.{key}" if keypath else key
                self.fail(full, "unknown key (see docs/configuration.md)")

    # -- typed getters ----------------------------------------------------
    def get(self, table, keypath, key, kind, default, **limits):
        full = f"{keypath}.{key}" if keypath else key
        if key not in table:
            if default is _REQUIRED:
                self.fail(full, "required key is missing")
            return default
        value = table[key]
        return getattr(self, "_" + kind)(full, value, **limits)

    def _str(self, full, value, pattern=None, choices=None, what=None, secret=False):
        if not isinstance(value, str):
            # Never echo a secret, not even a malformed one: errors reach stderr and the journal.
            got = "a value that is not a string (put it in quotes)" if secret else self._show(value)
            self.fail(full, f"expected a string, got {got}")
        if not value.strip():
            self.fail(full, "must not be empty")
        if choices and value not in choices:
            self.fail(full, f"expected one of {', '.join(choices)}, got {self._show(value)}")
        if pattern and not pattern.match(value):
            self.fail(full, f"expected {what}, got {self._show(value)}")
        return value

    def _number(self, full, value, minimum=None, maximum=None, integer=False):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(full, f"expected {'an integer' if integer else 'a number'}, got {self._show(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(full, f"expected a finite number, got {value}")
        if minimum is not None and value < minimum:
            self.fail(full, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(full, f"must be at most {maximum}, got {value}")
        return value

    def _int(self, full, value, minimum=None, maximum=None):
        return self._number(full, value, minimum, maximum, integer=True)

    def _float(self, full, value, minimum=None, maximum=None):
        return float(self._number(full, value, minimum, maximum))

    def _bool(self, full, value):
        if not isinstance(value, bool):
            self.fail(full, f"expected true or false, got {self._show(value)}")
        return value

    def _pin(self, full, value):
        if isinstance(value, bool) or not isinstance(value, int) or value not in _BCM_PINS:
            self.fail(full, f"expected a BCM GPIO number 0-27, got {self._show(value)}")
        return value

    def _pins(self, full, value, min_len=0):
        if not isinstance(value, list):
            self.fail(full, f"expected a list of BCM GPIO numbers, got {self._show(value)}")
        if len(value) < min_len:
            self.fail(full, f"expected at least {min_len} pin(s), got {len(value)}")
        pins = tuple(self._pin(f"{full}[{i}]", pin) for i, pin in enumerate(value))
        if len(set(pins)) != len(pins):
            self.fail(full, f"the same pin is listed twice: {list(pins)}")
        return pins

    def _resolution(self, full, value):
        if not isinstance(value, str) or not _RES_RE.match(value):
            self.fail(full, f"expected WIDTHxHEIGHT, got {self._show(value)}")
        width, height = _RES_RE.match(value).groups()
        return (int(width), int(height))

    def _path(self, full, value):
        value = self._str(full, value)
        if not os.path.isabs(value):
            self.fail(full, f"expected an absolute path, got {self._show(value)}")
        return Path(value)

    def _addresses(self, full, value):
        if not isinstance(value, list):
            self.fail(full, f"expected a list of email addresses, got {self._show(value)}")
        addrs = tuple(self._str(f"{full}[{i}]", a, pattern=_ADDR_RE, what="an email address").lower()
                      for i, a in enumerate(value))
        if len(set(addrs)) != len(addrs):
            self.fail(full, "the same address is listed twice")
        return addrs

    # -- sections ---------------------------------------------------------
    def config(self, data, mode):
        self.check_keys(data, "", {"spool_dir", "state_dir", "events_keep_days", "spool_budget_mb", "min_free_mb",
                                   "sensors", "camera", "account", "delivery", "incident",
                                   "control"})
        spool_dir = self.get(data, "", "spool_dir", "path", Path("/var/spool/seccam"))
        state_dir = self.get(data, "", "state_dir", "path", Path("/var/lib/seccam"))
        keep = self.get(data, "", "events_keep_days", "int", 7, minimum=0, maximum=3650)
        budget = self.get(data, "", "spool_budget_mb", "float", None, minimum=0.1, maximum=10**7)
        min_free = self.get(data, "", "min_free_mb", "float", None, minimum=0, maximum=10**7)
        sensors = self.sensors(self.table(data, "sensors"))
        cameras = self.cameras(data.get("camera", []))
        account = self.account(data["account"], mode) if "account" in data else None
        delivery = self.delivery(self.table(data, "delivery"))
        incident = self.incident(self.table(data, "incident"))
        control = self.control(self.table(data, "control"))
        return Config(path=self.path, spool_dir=spool_dir, state_dir=state_dir, sensors=sensors,
                      cameras=cameras, account=account, delivery=delivery, control=control, events_keep_days=keep,
                      spool_budget_mb=budget, min_free_mb=min_free, incident=incident)

    def table(self, data, key):
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table [{key}], got {self._show(value)}")
        return value

    def sensors(self, t):
        d = Sensors()
        self.check_keys(t, "sensors", {f.name for f in dataclasses.fields(Sensors)})
        pir = self.get(t, "sensors", "pir_pins", "pins", d.pir_pins, min_len=1)
        button = self.get(t, "sensors", "button_pin", "pin", None)
        leds = self.get(t, "sensors", "led_pins", "pins", ())
        if leds and len(leds) != len(pir):
            self.fail("sensors.led_pins", f"expected one LED per PIR ({len(pir)}), got {len(leds)}")
        used = list(pir) + list(leds) + ([button] if button is not None else [])
        if len(set(used)) != len(used):
            self.fail("sensors", f"a pin is used twice among pir_pins, led_pins and button_pin: {used}")
        return Sensors(
            pir_pins=pir,
            coincidence_s=self.get(t, "sensors", "coincidence_s", "float", d.coincidence_s, minimum=0.05, maximum=600),
            warmup_s=self.get(t, "sensors", "warmup_s", "float", d.warmup_s, minimum=0, maximum=3600),
            cooldown_s=self.get(t, "sensors", "cooldown_s", "float", d.cooldown_s, minimum=0, maximum=86400),
            button_pin=button,
            led_pins=leds,
            sample_rate=self.get(t, "sensors", "sample_rate", "int", d.sample_rate, minimum=1, maximum=1000),
            liveness_s=self.get(t, "sensors", "liveness_s", "float", d.liveness_s, minimum=1, maximum=3600),
            early_capture=self.get(t, "sensors", "early_capture", "bool", d.early_capture),
            early_capture_burst=self.get(t, "sensors", "early_capture_burst", "int", d.early_capture_burst,
                                         minimum=1, maximum=100),
            early_capture_refill_s=self.get(t, "sensors", "early_capture_refill_s", "float",
                                            d.early_capture_refill_s, minimum=1, maximum=86400),
        )

    def cameras(self, value):
        if not isinstance(value, list):
            self.fail("camera", "expected [[camera]] tables")
        cams = []
        for i, t in enumerate(value):
            cams.append(self.camera(t, f"camera[{i}]"))
        names = [c.name for c in cams]
        for i, name in enumerate(names):
            if name in names[:i]:
                self.fail(f"camera[{i}].name", f"duplicate camera name {self._show(name)}")
        return tuple(cams)

    def camera(self, t, kp):
        if not isinstance(t, dict):
            self.fail(kp, f"expected a table, got {self._show(t)}")
        self.check_keys(t, kp, {f.name for f in dataclasses.fields(Camera)})
        d = Camera(name="x")
        name = self.get(t, kp, "name", "str", _REQUIRED, pattern=_NAME_RE,
                        what="1-32 letters, digits, '-' or '_'")
        device = self.get(t, kp, "device", "str", None)
        index = self.get(t, kp, "index", "int", None, minimum=0, maximum=15)
        backend = self.get(t, kp, "backend", "str", None, choices=_BACKENDS)
        if backend is None:
            if device is None and index is None:
                self.fail(kp, "needs a device (USB/V4L2 camera, fswebcam) or an index (camera module, rpicam)")
            backend = "rpicam" if device is None else "fswebcam"
        if backend == "fswebcam" and device is None:
            self.fail(f"{kp}.device", "required for backend fswebcam")
        if backend == "rpicam" and index is None:
            if device is not None:
                self.fail(f"{kp}.device", "backend rpicam takes an index, not a device")
            index = 0
        # A camera module's default is its whole field of view, known only on the Pi (camera.module_size).
        resolution = self.get(t, kp, "resolution", "resolution", None if backend == "rpicam" else d.resolution)
        if backend == "rpicam" and resolution and (resolution[0] % 2 or resolution[1] % 2):
            self.fail(f"{kp}.resolution", f"a camera module needs an even width and height (rpicam-still's JPEG "
                      f"writer fails on odd ones), got {resolution[0]}x{resolution[1]}")
        preview = self.get(t, kp, "preview_resolution", "resolution", None)
        if preview is None and resolution is not None:
            # Keep the aspect ratio: 320 pixels wide, or the full width if that is smaller.
            width = min(320, resolution[0])
            preview = (width, max(1, round(width * resolution[1] / resolution[0])))
        if preview and resolution and (preview[0] > resolution[0] or preview[1] > resolution[1]):
            self.fail(f"{kp}.preview_resolution", "must not be larger than resolution")
        title = self.get(t, kp, "title", "str", None)
        if title is not None and (len(title) > 64 or not title.isprintable()):
            self.fail(f"{kp}.title", "expected at most 64 printable characters")
        focus = d.focus
        if "focus" in t:
            if backend != "rpicam":
                self.fail(f"{kp}.focus", "only camera modules (backend rpicam) can focus")
            focus = t["focus"]
            if isinstance(focus, (int, float)) and not isinstance(focus, bool):
                focus = f"{self._float(f'{kp}.focus', focus, minimum=0, maximum=32):g}"
            elif focus not in ("continuous", "hyperfocal"):
                self.fail(f"{kp}.focus", f'expected "continuous", "hyperfocal" or a distance in dioptres '
                          f"(1/metres, 0 = infinity), got {self._show(focus)}")
        return Camera(
            name=name, backend=backend, device=device, index=index,
            resolution=resolution, preview_resolution=preview,
            skip=self.get(t, kp, "skip", "int", d.skip, minimum=0, maximum=100),
            palette=self.get(t, kp, "palette", "str", None, pattern=_PALETTE_RE, what="a fswebcam palette name"),
            quality=self.get(t, kp, "quality", "int", d.quality, minimum=1, maximum=100),
            preview_quality=self.get(t, kp, "preview_quality", "int", d.preview_quality, minimum=1, maximum=100),
            timeout_s=self.get(t, kp, "timeout_s", "float", d.timeout_s, minimum=1, maximum=600),
            warmup_ms=self.get(t, kp, "warmup_ms", "int", d.warmup_ms, minimum=1, maximum=60000),
            stamp=self.get(t, kp, "stamp", "bool", d.stamp),
            title=title,
            focus=focus,
        )

    def account(self, t, mode):
        kp = "account"
        if not isinstance(t, dict):
            self.fail(kp, f"expected a table [account], got {self._show(t)}")
        allowed = {f.name for f in dataclasses.fields(Account)}
        self.check_keys(t, kp, allowed)
        address = self.get(t, kp, "address", "str", _REQUIRED, pattern=_ADDR_RE, what="an email address").lower()
        password = self.get(t, kp, "password", "str", None, secret=True)
        password_file = self.get(t, kp, "password_file", "path", None)
        if password is None and password_file is None:
            self.fail(kp, "needs password or password_file")
        if password is not None and password_file is not None:
            self.fail("account.password_file", "give password or password_file, not both")
        if password is not None and mode & 0o007:
            self.fail("account.password", f"{self.path} holds a password but is readable by others "
                      f"(mode {mode:04o}); run: chmod o-rwx {self.path}")
        if password_file is not None:
            try:
                pmode = stat.S_IMODE(password_file.stat().st_mode)
            except OSError as exc:
                self.fail("account.password_file", f"cannot read {password_file}: {exc.strerror}")
            if pmode & 0o007:
                self.fail("account.password_file", f"{password_file} is readable by others (mode {pmode:04o}); "
                          f"run: chmod o-rwx {password_file}")
        smtp_host = self.get(t, kp, "smtp_host", "str", _REQUIRED)
        smtp_security = self.get(t, kp, "smtp_security", "str", "tls", choices=_SECURITY)
        imap_security = self.get(t, kp, "imap_security", "str", "tls", choices=_SECURITY)
        imap_host = self.get(t, kp, "imap_host", "str", None)
        for key, host, sec in (("smtp_security", smtp_host, smtp_security),
                               ("imap_security", imap_host, imap_security)):
            if sec == "plain" and host is not None and not _is_loopback(host):
                self.fail(f"account.{key}", f"plain (no TLS) is allowed only to a loopback host, not {host}")
        return Account(
            address=address,
            display_name=self.get(t, kp, "display_name", "str", "seccam"),
            login=self.get(t, kp, "login", "str", address),
            password=password, password_file=password_file,
            smtp_host=smtp_host,
            smtp_port=self.get(t, kp, "smtp_port", "int", {"tls": 465, "starttls": 587, "plain": 25}[smtp_security],
                               minimum=1, maximum=65535),
            smtp_security=smtp_security,
            imap_host=imap_host,
            imap_port=self.get(t, kp, "imap_port", "int", {"tls": 993, "starttls": 143, "plain": 143}[imap_security],
                               minimum=1, maximum=65535),
            imap_security=imap_security,
            ca_file=self.get(t, kp, "ca_file", "path", None),
            timeout_s=self.get(t, kp, "timeout_s", "float", 30.0, minimum=1, maximum=600),
        )

    def delivery(self, t):
        kp = "delivery"
        self.check_keys(t, kp, {f.name for f in dataclasses.fields(Delivery)})
        return Delivery(
            recipients=self.get(t, kp, "recipients", "addresses", ()),
            group_name=self.get(t, kp, "group_name", "str", "seccam"),
            group_id=self.get(t, kp, "group_id", "str", None, pattern=_GROUP_ID_RE,
                              what="11-32 characters of 0-9 A-Z a-z _ -"),
            rate_per_minute=self.get(t, kp, "rate_per_minute", "float", 60.0, minimum=1, maximum=6000),
            burst=self.get(t, kp, "burst", "int", 10, minimum=1, maximum=1000),
            heartbeat_image=self.get(t, kp, "heartbeat_image", "str", "full", choices=("full", "preview")),
            hold_days=self.get(t, kp, "hold_days", "float", 7.0, minimum=0.01, maximum=365),
        )

    def control(self, t):
        kp = "control"
        self.check_keys(t, kp, {f.name for f in dataclasses.fields(Control)})
        return Control(
            enabled=self.get(t, kp, "enabled", "bool", True),
            arm_disarm=self.get(t, kp, "arm_disarm", "addresses", None),
            window_s=self.get(t, kp, "window_s", "float", 900.0, minimum=30, maximum=86400),
        )

    def incident(self, t):
        kp = "incident"
        d = Incident()
        self.check_keys(t, kp, {f.name for f in dataclasses.fields(Incident)})
        pace = t.get("update_pace_s", list(d.update_pace_s))
        if not isinstance(pace, list) or not 1 <= len(pace) <= 32:
            self.fail(f"{kp}.update_pace_s", f"expected a list of 1-32 numbers of seconds, got {self._show(pace)}")
        return Incident(
            gap_s=self.get(t, kp, "gap_s", "float", d.gap_s, minimum=0, maximum=86400),
            update_pace_s=tuple(self._float(f"{kp}.update_pace_s[{i}]", v, minimum=0, maximum=86400)
                                for i, v in enumerate(pace)),
            sheet_max=self.get(t, kp, "sheet_max", "int", d.sheet_max, minimum=1, maximum=400),
        )


def one_line(text):
    """``text`` with every non-printable character escaped (``\\n``, ``\\x00``, ``\\u2028``):
    an error is one line, whatever a hand-edited file puts into a value or a key."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _is_loopback(host):
    if host == "localhost":
        return True
    import ipaddress  # only for plain (no TLS) accounts: not worth loading in every job
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_REQUIRED = object()
