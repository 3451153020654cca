"""The one module that talks to GnuPG (through python-gnupg).

It owns the GnuPG home (``STATE_DIR/gnupg``, mode 0700) and every gpg call:
the camera key, exporting and importing keys, sign+encrypt and
decrypt+verify. python-gnupg reports failures as result *values* (and 0.5.x
sometimes raises BrokenPipeError or ValueError instead); here every failed
call becomes a :class:`GpgError` carrying gpg's status keywords
(``statuses``, from its ``[GNUPG:]`` lines) and the lines that say why, so no
caller can forget to check.

The same code runs on Debian 12 (GnuPG 2.2, python-gnupg 0.4.9) and Debian 13
(GnuPG 2.4, python-gnupg 0.5.4). Decisions are taken on ``[GNUPG:]`` status
keywords only: 2.4 prints more prose, in other words and order.

Invariants:

* ``gnupg`` is imported only here and only when a :class:`Gpg` is created, so
  importing this module is cheap; the capture path must not import it at all.
* Every operation on imported keys passes ``always_trust=True``: seccam
  decides which key belongs to which address (seccam.keys pins them) and
  names keys by fingerprint, never by user id, so gpg's web of trust has no say.
* Data goes to gpg as open file objects (``encrypt_file(path)`` exists only in
  python-gnupg 0.5.x); works with Debian's 0.4.9 and PyPI 0.5.x.
* Fingerprints are checked (40 or 64 hex digits) before they reach a gpg
  command line, so nothing a peer sends can become a gpg option.
* What :meth:`Gpg.encrypt_sign` returns is PKESK/SKESK packets then one
  SEIPD v1 packet (tag 18, version 1), checked on every message: Delta Chat
  and chatmail relays refuse AEAD (tag 20) and SEIPD v2. GnuPG 2.4 writes AEAD
  when every recipient key advertises it; the camera key (made here, features
  MDC only) is always a recipient, and the check makes any other case an error
  instead of a message nobody can read.

Example::

    g = Gpg(config.state_dir / "gnupg")
    fpr = g.camera_key() or g.generate_camera_key("cam@example.org")
    armored = g.encrypt_sign(b"hello", [owner_fpr, fpr], signer=fpr)
"""

import base64
import contextlib
import datetime as _dt
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

from .errors import EX_UNAVAILABLE, ConfigError, DataError, SeccamError

log = logging.getLogger("seccam.gpg")

# gpg-agent's socket lives in the home; sun_path allows 108 bytes and gpg
# fails with "No agent running" from about 86 characters on. 80 leaves room.
MAX_HOME_LEN = 80
_FPR_RE = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")
_STATUS_PREFIX = "[GNUPG:] "
# Status keywords that explain a failure better than python-gnupg's summary.
_FAILURE_KEYWORDS = ("ERROR", "FAILURE", "INV_RECP", "INV_SGNR", "NO_PUBKEY", "NO_SECKEY", "NODATA",
                     "DECRYPTION_FAILED", "BADMDC", "BADSIG", "KEY_NOT_CREATED", "IMPORT_PROBLEM",
                     "KEYEXPIRED", "KEYREVOKED", "UNEXPECTED")
_ALGOS = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elgamal", "17": "dsa", "18": "ecdh", "19": "ecdsa",
          "22": "eddsa"}
# A key is unusable as a whole when its validity says so (gpg's DETAILS, field 2).
_BAD_VALIDITY = ("r", "e", "i", "d", "n")

_CAMERA_KEY_PARAMS = """\
Key-Type: EDDSA
Key-Curve: ed25519
Key-Usage: sign
Subkey-Type: ECDH
Subkey-Curve: cv25519
Subkey-Usage: encrypt
Name-Email: {address}
Expire-Date: 0
%no-protection
%commit
"""


class GpgError(SeccamError):
    """A gpg operation failed. ``status`` is python-gnupg's summary (or the
    exception it raised), ``statuses`` the keywords of gpg's ``[GNUPG:]``
    status lines (what code may decide on), ``tail`` the failure statuses and
    gpg's last messages (for people)."""

    exit_code = EX_UNAVAILABLE

    def __init__(self, operation, status=None, tail=None, returncode=None, statuses=()):
        self.operation = operation
        self.status = status
        self.tail = tail or ""
        self.returncode = returncode
        self.statuses = tuple(statuses)
        text = f"gpg {operation} failed"
        if status:
            text += f": {status}"
        if self.tail:
            text += f" ({self.tail})"
        super().__init__(text)


class KeyInfo(NamedTuple):
    fingerprint: str
    secret: bool            # True when listed from secret keys / secret key material
    uids: tuple
    algo: str               # "eddsa", "rsa", ...
    curve: str | None
    created: str | None     # ISO-8601 UTC
    expires: str | None
    validity: str           # gpg's validity letter ("u", "-", "r", "e", ...)
    capabilities: str       # gpg's key capabilities: upper case = usable by the whole key
    can_encrypt: bool


class Decrypted(NamedTuple):
    plaintext: bytes
    signer: str | None      # primary-key fingerprint of a good signature, else None
    signed_at: float | None = None  # the good signature's creation time (POSIX), else None


def check_fingerprint(fpr):
    """Normalise a fingerprint (upper case, no spaces) or raise DataError."""
    if not isinstance(fpr, str):
        raise DataError(f"not a fingerprint: {fpr!r}")
    norm = fpr.replace(" ", "").upper()
    if not _FPR_RE.match(norm):
        raise DataError(f"not an OpenPGP fingerprint (40 hex digits): {fpr!r}")
    return norm


def home_for(state_dir):
    return Path(state_dir) / "gnupg"


def _iso(epoch_text):
    if not epoch_text:
        return None
    try:
        ts = int(epoch_text)
    except ValueError:  # gpg prints ISO dates with some options; keep them as they are
        return epoch_text
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sig_time(text):
    """A status line's time stamp: seconds since the epoch, or ISO 8601 ``yyyymmddThhmmss``."""
    try:
        return float(int(text))
    except ValueError:
        try:
            return _dt.datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            return None


def _status_lines(result):
    text = getattr(result, "stderr", "") or ""
    return [line[len(_STATUS_PREFIX):].rstrip() for line in text.splitlines() if line.startswith(_STATUS_PREFIX)]


def _has_status(result, keyword):
    return any(line.split(" ", 1)[0] == keyword for line in _status_lines(result))


def _tail(result, lines=4):
    """The lines of gpg's stderr that say why: every failure status, then gpg's last messages
    up to ``lines`` in all (GnuPG 2.4 prints more prose than 2.2; it never crowds out a status)."""
    statuses, prose = [], []
    for line in (getattr(result, "stderr", "") or "").splitlines():
        line = line.strip()
        if line.startswith(_STATUS_PREFIX):
            status = line[len(_STATUS_PREFIX):]
            if status.split(" ", 1)[0] in _FAILURE_KEYWORDS and status not in statuses:
                statuses.append(status)
        elif line.startswith("gpg:") and "WARNING: Using untrusted key" not in line:
            prose.append(line)
    room = max(lines - len(statuses), 0)
    return "; ".join(statuses + (prose[-room:] if room else []))


def _framing_problem(binary):
    """Why ``binary`` is not PKESK/SKESK packets then one SEIPD v1 packet, or None."""
    from .mime import packets  # the encrypt path imports mime anyway; the rest of seccam.gpg does not

    try:
        found = [(tag, body[:1]) for tag, body in packets(binary)]
    except (ValueError, IndexError) as exc:
        return f"unparseable output: {exc}"
    names = {1: "PKESK", 3: "SKESK", 18: "SEIPD", 20: "AEAD (OCB) encrypted data"}
    listing = ", ".join(f"{names.get(tag, 'tag')} {tag}" + (f" v{ver[0]}" if ver else "") for tag, ver in found)
    esk = 0
    while esk < len(found) and found[esk][0] in (1, 3):
        esk += 1
    if esk == 0 or [tag for tag, _ in found[esk:]] != [18] or found[esk][1] != b"\x01":
        return (f"gpg wrote {listing or 'no packets'}; Delta Chat and chatmail relays accept only "
                f"PKESK/SKESK then one SEIPD v1 (tag 18)")
    return None


def _dearmor(armored):
    """The binary packets of an ASCII-armored message (gpg's armor; no checksum check)."""
    lines = bytes(armored).replace(b"\r\n", b"\n").split(b"\n")
    after_headers = lines[lines.index(b"") + 1:] if b"" in lines else []
    body = [ln for ln in after_headers if ln and not ln.startswith((b"=", b"-----"))]
    return base64.b64decode(b"".join(body))


def _key_info(entry):
    caps = entry.get("cap", "") or ""
    validity = entry.get("trust", "") or ""
    return KeyInfo(
        fingerprint=entry.get("fingerprint", ""),
        secret=entry.get("type") == "sec",
        uids=tuple(entry.get("uids", ())),
        algo=_ALGOS.get(entry.get("algo", ""), entry.get("algo", "")),
        curve=entry.get("curve") or None,
        created=_iso(entry.get("date")),
        expires=_iso(entry.get("expires")),
        validity=validity,
        capabilities=caps,
        # Upper-case E: some subkey (or the primary) can encrypt and is valid now.
        can_encrypt="E" in caps and validity not in _BAD_VALIDITY,
    )


class Gpg:
    """GnuPG at ``home`` (created with mode 0700 if missing)."""

    def __init__(self, home):
        home = Path(home)
        if len(str(home)) > MAX_HOME_LEN:
            raise ConfigError(f"GnuPG home {home} is {len(str(home))} characters long; gpg-agent needs at most "
                              f"{MAX_HOME_LEN}: choose a shorter state_dir")
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            owner = home.stat().st_uid
        except OSError as exc:
            raise ConfigError(f"cannot create GnuPG home {home}: {exc.strerror}") from None
        if owner != os.geteuid():
            # The camera's secret key lives here: only the service user may own it.
            raise ConfigError(f"GnuPG home {home} belongs to uid {owner}, not to the user running seccam "
                              f"(uid {os.geteuid()}); run seccam as that user, or: chown -R that-user {home}")
        try:
            os.chmod(home, 0o700)  # gpg warns about (and an attacker could use) a group-readable home
        except OSError as exc:  # pragma: no cover - we own it, so chmod works
            raise ConfigError(f"cannot make GnuPG home {home} private: {exc.strerror}") from None
        try:
            import gnupg
        except ImportError:  # pragma: no cover - python3-gnupg is a test dependency (tests/run installs it)
            raise ConfigError("python-gnupg is not installed (Debian package python3-gnupg)") from None
        self.home = home
        self._gnupg = gnupg
        _note_agent(home)
        try:
            self._gpg = gnupg.GPG(gnupghome=str(home))
        except (OSError, ValueError) as exc:
            raise GpgError("start", f"cannot run gpg: {exc}") from None
        # Readable, stable output whatever the user's locale.
        self._gpg.encoding = "utf-8"

    def __repr__(self):
        return f"Gpg({str(self.home)!r})"

    # -- plumbing -------------------------------------------------------------
    def _call(self, operation, func, *args, **kwargs):
        """Run one python-gnupg call; exceptions it raises become GpgError."""
        try:
            return func(*args, **kwargs)
        except (OSError, ValueError) as exc:  # 0.5.x: BrokenPipeError, ValueError on bad input
            raise GpgError(operation, f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _fail(operation, result, status=None):
        raise GpgError(operation, status or getattr(result, "status", None) or "no result",
                       _tail(result), getattr(result, "returncode", None),
                       [line.split(" ", 1)[0] for line in _status_lines(result)])

    # -- listing --------------------------------------------------------------
    def list_keys(self, secret=False, fingerprints=None):
        keys = [check_fingerprint(f) for f in fingerprints] if fingerprints else None
        result = self._call("list-keys", self._gpg.list_keys, secret=secret, keys=keys)
        rc = getattr(result, "returncode", 0)
        if rc not in (0, None) and not list(result) and not keys:
            self._fail("list-keys", result, f"exit code {rc}")
        return [_key_info(entry) for entry in result]

    def key_info(self, fpr):
        """KeyInfo of a public key in the keyring, or None if absent."""
        fpr = check_fingerprint(fpr)
        for info in self.list_keys(fingerprints=[fpr]):
            if info.fingerprint == fpr:
                return info
        return None

    def has_key(self, fpr):
        return self.key_info(fpr) is not None

    def camera_key(self):
        """Fingerprint of the camera's own key (the only secret key here), or None."""
        secret = self.list_keys(secret=True)
        if not secret:
            return None
        if len(secret) > 1:
            fprs = ", ".join(k.fingerprint for k in secret)
            raise GpgError("camera-key", f"{len(secret)} secret keys in {self.home} ({fprs}); expected one")
        return secret[0].fingerprint

    # -- the camera key -------------------------------------------------------
    def generate_camera_key(self, address):
        """Generate the camera key (Ed25519 signing primary, Cv25519 encryption
        subkey, no passphrase, no expiry, user id ``address``); return its fingerprint."""
        if not address or any(c in address for c in "\r\n%<>") or "@" not in address:
            raise DataError(f"not a usable address for the camera key: {address!r}")
        result = self._call("generate-key", self._gpg.gen_key, _CAMERA_KEY_PARAMS.format(address=address))
        fpr = getattr(result, "fingerprint", None)
        if not fpr:
            self._fail("generate-key", result)
        log.info("event=camera_key_generated fingerprint=%s", fpr)
        return fpr

    # -- export / import ------------------------------------------------------
    def _export(self, operation, fpr, **kwargs):
        fpr = check_fingerprint(fpr)
        data = self._call(operation, self._gpg.export_keys, fpr, **kwargs)
        if not data:
            # gpg --export prints nothing (and no status) for an unknown key.
            raise GpgError(operation, f"no such key {fpr}")
        return data

    def export_minimal(self, fpr):
        """Binary minimal export (the Autocrypt ``keydata``)."""
        return bytes(self._export("export", fpr, armor=False, minimal=True))

    def export_armored(self, fpr):
        """ASCII-armored public key (minimal) as bytes."""
        data = self._export("export", fpr, armor=True, minimal=True)
        return data.encode("ascii") if isinstance(data, str) else bytes(data)

    def export_secret(self, fpr):
        """ASCII-armored secret key as bytes (the camera key has no passphrase)."""
        data = self._export("export-secret", fpr, secret=True, armor=True, expect_passphrase=False)
        data = data.encode("ascii") if isinstance(data, str) else bytes(data)
        if b"PRIVATE KEY BLOCK" not in data:  # pragma: no cover - for a key without its secret part gpg
            # exports nothing (_export raises); guards a non-empty export that is still no secret key
            raise GpgError("export-secret", f"gpg exported no secret key for {fpr}")
        return data

    def import_keys(self, data):
        """Import key material; return the fingerprints imported (raise if none)."""
        if not data:
            raise GpgError("import", "no key data")
        result = self._call("import", self._gpg.import_keys, bytes(data))
        fprs = []
        for fpr in getattr(result, "fingerprints", []) or []:
            if fpr and fpr not in fprs:
                fprs.append(fpr)
        if not fprs or getattr(result, "not_imported", 0):
            self._fail("import", result, getattr(result, "status", None) or "no key was imported")
        return fprs

    def scan(self, keydata):
        """List the keys in ``keydata`` WITHOUT importing them (KeyInfo list)."""
        if not keydata:
            raise GpgError("scan", "no key data")
        # scan_keys(file) exists in python-gnupg 0.4.9 and 0.5.x alike (scan_keys_mem only in 0.5.x):
        # one code path for both releases.
        fd, name = tempfile.mkstemp(prefix="scan", dir=self.home)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(keydata))
            result = self._call("scan", self._gpg.scan_keys, name)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        keys = [_key_info(entry) for entry in result]
        if not keys:
            self._fail("scan", result, "no OpenPGP key found in the data")
        return keys

    def fingerprints_of(self, keydata):
        """Fingerprints of the keys in ``keydata``, without importing them."""
        return [k.fingerprint for k in self.scan(keydata)]

    def delete_key(self, fpr, secret=False):
        """Remove a key (with ``secret=True``: secret and public part)."""
        fpr = check_fingerprint(fpr)
        if secret:
            result = self._call("delete-secret-key", self._gpg.delete_keys, fpr, secret=True,
                                expect_passphrase=False)
            if str(getattr(result, "status", "")) != "ok":
                self._fail("delete-secret-key", result)
        result = self._call("delete-key", self._gpg.delete_keys, fpr)
        if str(getattr(result, "status", "")) != "ok":
            self._fail("delete-key", result)

    # -- crypto ---------------------------------------------------------------
    def encrypt_sign(self, data, recipients, signer, armor=True):
        """Sign with ``signer`` and encrypt to ``recipients`` in one gpg pass.

        The armored output has no ``Version:`` line (chatmail relays refuse it).
        """
        if not recipients:
            raise GpgError("encrypt", "no recipients")
        recipients = [check_fingerprint(r) for r in recipients]
        signer = check_fingerprint(signer)
        stream = io.BytesIO(bytes(data))
        result = self._call("encrypt", self._gpg.encrypt_file, stream, recipients, sign=signer,
                            always_trust=True, armor=armor,
                            # --local-user: without it gpg signs with ANOTHER secret key when
                            # the signer's is missing; with it, that is an INV_SGNR failure.
                            extra_args=["--no-emit-version", "--local-user", signer])
        # SIG_CREATED proves the one-pass signature happened: Delta Chat drops unsigned mail.
        if not getattr(result, "ok", False) or not _has_status(result, "SIG_CREATED"):
            self._fail("encrypt", result, None if getattr(result, "status", None) != "encryption ok"
                       else "no signature was created")
        data = bytes(result.data)
        problem = _framing_problem(_dearmor(data) if armor else data)
        if problem:
            raise GpgError("encrypt", problem)
        return data

    def decrypt_verify(self, data, max_output=None):
        """Decrypt and check the signature; return Decrypted(plaintext, signer).

        Success is judged by DECRYPTION_OKAY, not gpg's exit code: gpg exits 2
        for Delta Chat mail that it decrypted fine. ``signer`` is the primary
        key fingerprint of a good signature, None for unsigned mail or a key we
        do not have. A bad signature raises GpgError.
        """
        stream = io.BytesIO(bytes(data))
        # --max-output: a small compressed message from a stranger must not inflate to gigabytes.
        extra = ["--max-output", str(int(max_output))] if max_output else None
        result = self._call("decrypt", self._gpg.decrypt_file, stream, always_trust=True, extra_args=extra)
        statuses = [line.split(" ", 1) for line in _status_lines(result)]
        keywords = [s[0] for s in statuses]
        if "DECRYPTION_OKAY" not in keywords or "DECRYPTION_FAILED" in keywords or "BADMDC" in keywords:
            self._fail("decrypt", result)
        if "BADSIG" in keywords:  # pragma: no cover - gpg 2.2 stops before DECRYPTION_OKAY on a bad
            # signature, so the check above refuses it (see tests/test_gpg.py)
            self._fail("decrypt", result, "bad signature")
        # gpg still says DECRYPTION_OKAY when it stopped writing at --max-output (and says so only
        # in prose, which differs between 2.2 and 2.4): a plaintext that reached the limit is refused.
        if max_output and len(result.data or b"") >= int(max_output):
            self._fail("decrypt", result, f"plaintext larger than {int(max_output)} bytes")
        signer = signed_at = None
        if "GOODSIG" in keywords:
            for key, *rest in statuses:
                if key == "VALIDSIG" and rest:
                    fields = rest[0].split()
                    # The last field is the primary key's fingerprint (differs when a subkey signed);
                    # the third is the signature's creation time.
                    signer = fields[-1]
                    signed_at = _sig_time(fields[2]) if len(fields) > 2 else None
        return Decrypted(bytes(result.data), signer, signed_at)


# -- gpg-agent's lifetime ---------------------------------------------------------------------
# gpg starts a gpg-agent by itself on the first operation that needs a secret key, and the
# agent outlives it. A job leaves its agent (under systemd it ends with the job's unit; without
# systemd the next alarm finds it warm: docs/performance.md, "gpg-agent"), but a command a
# person types must not leave one behind. A command calls watch_agents() first: every home a Gpg is then made for
# is probed once for a running agent, and stop_watched_agents() stops the agents that were
# not running then. An agent that was (the service's) is never touched.
AGENT_STOP_TIMEOUT_S = 5.0
_watched = None     # {home: pid of the agent running when first seen, or None}; None: not watching


def watch_agents():
    """Start remembering which homes had an agent before this process used them."""
    global _watched
    if _watched is None:
        _watched = {}


def _note_agent(home):
    if _watched is not None and str(home) not in _watched:
        _watched[str(home)] = agent_pid(home)


def agent_pid(home):
    """The pid of the gpg-agent serving ``home``, or None when none runs (never starts one)."""
    import subprocess
    try:
        out = subprocess.run(["gpg-connect-agent", "--homedir", str(home), "--no-autostart", "GETINFO pid", "/bye"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("event=agent_probe_failed home=%s error=%r", home, str(exc))
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "D" and fields[1].isdigit():
            return int(fields[1])
    return None


def stop_agent(home, timeout_s=AGENT_STOP_TIMEOUT_S):
    """Stop the gpg-agent of ``home``, if one runs, and wait until it is gone; return its pid.

    SIGTERM, not ``gpgconf --kill``: on SIGTERM the agent first finishes the operations it
    is serving (another process's signature goes through), while ``--kill`` breaks them.
    GnuPG 2.4 (trixie; measured with 2.4.7) finishes them too, but an agent that got its
    SIGTERM while serving then never exits, and stops answering on its socket; 2.2 exits. So
    when it is still there after ``timeout_s`` (far longer than any signature seccam makes),
    GnuPG's forced shutdown follows: its third SIGTERM.
    """
    import signal
    import time
    pid = agent_pid(home)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
        if _gone_within(pid, timeout_s):
            log.debug("event=agent_stopped home=%s pid=%d", home, pid)
            return pid
        for _ in range(2):  # the second and the third ("shutdown forced"), apart: signals do not queue
            time.sleep(0.1)
            os.kill(pid, signal.SIGTERM)
    except PermissionError as exc:
        log.warning("event=agent_not_stopped home=%s pid=%d error=%r", home, pid, exc.strerror)
        return None
    except ProcessLookupError:  # pragma: no cover - it exited between the probe and a signal
        return pid
    if _gone_within(pid, min(timeout_s, 1.0)):
        log.warning("event=agent_stopped home=%s pid=%d forced=after-%gs", home, pid, timeout_s)
        return pid
    log.warning("event=agent_not_stopped home=%s pid=%d error='still serving after %g s'", home, pid, timeout_s)
    return None


def _gone_within(pid, timeout_s):
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.01)
    return not _running(pid)


def _running(pid):
    """True while ``pid`` exists and is not a zombie (a container's init may be slow to reap)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def stop_watched_agents():
    """Stop the agents this process started since watch_agents(); stop watching. Return their pids."""
    global _watched
    watched, _watched = _watched or {}, None
    stopped = []
    for home, before in watched.items():
        now = agent_pid(home)
        if now is not None and now != before:
            if stop_agent(home) is not None:
                stopped.append(now)
    return stopped
