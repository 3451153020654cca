"""Secure-Join invites: what ``seccam invite`` hands out and what jobs/inbox checks.

This module owns ``STATE_DIR/invites/``: one JSON record per invite
(``<ID>.json``, mode 0600, replaced atomically: temporary file + fsync +
rename + directory fsync) and a lock file that serialises read-modify-write
between the inbox job and a person revoking an invite. It also owns the
invite link format (Delta Chat's legacy "setup contact" QR code)::

    https://i.delta.chat/#FINGERPRINT&i=INVITENUMBER&s=AUTHSECRET&a=ADDRESS&n=NAME

never with ``&v=3`` (v3 joins start with an RFC 9580 message GnuPG 2.2 cannot
read; docs/deltachat.md).

Record format::

    {"version": 1, "id": "3f2a9c1d", "label": "Anna's phone" | null, "name": "Front door",
     "address": "cam@example.org", "fingerprint": "CAMERA KEY FPR",
     "invitenumber": "...", "auth": "...",            # the secrets: never logged, never listed
     "created": ISO, "expires": ISO, "uses": 1, "used": 0, "revoked": ISO | null,
     "pending": [{"address", "fingerprint", "requested"}],   # step 1 seen, step 3 not yet
     "joins": [{"address", "fingerprint", "time"}]}

Invariants:

* invite number and auth secret are 24 random URL-safe characters each
  (``secrets.token_urlsafe(18)``, the shape of Delta Chat's own tokens) and
  are compared in constant time;
* an invite is *open* while it is not revoked, not expired and has uses
  left; only open invites are answered (:func:`status`);
* a completed join consumes one use (:meth:`InviteStore.complete`);
* at most :data:`MAX_PENDING` joins wait between step 1 and step 3 per
  invite (the oldest is dropped), so a flood cannot grow a record;
* closed invites are deleted :data:`KEEP_CLOSED_S` after they closed.
"""

import contextlib
import datetime as _dt
import hmac
import logging
import os
import re
import secrets
import time
import urllib.parse
from pathlib import Path

from . import durable
from .errors import DataError, TemporaryError, UsageError

log = logging.getLogger("seccam.invites")

VERSION = 1
INVITES_DIR = "invites"
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
MAX_USES = 100
MAX_PENDING = 10
KEEP_CLOSED_S = 30 * 24 * 3600
TOKEN_BYTES = 18          # 24 URL-safe characters, like Delta Chat's create_id()
LINK_PREFIX = "https://i.delta.chat/#"
_NAME_MAX = 25            # Delta Chat shortens n= to 25 characters too
_ID_RE = re.compile(r"^[0-9a-f]{8}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LOCK_TIMEOUT_S = 30

OPEN, EXPIRED, REVOKED, USED = "open", "expired", "revoked", "used"


def _iso(ts):
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(text):
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_duration(text):
    """``"24h"``, ``"30m"``, ``"7d"``, ``"90s"`` or plain seconds -> seconds (UsageError if not)."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise UsageError(f"not a duration: {text!r} (examples: 90s, 30m, 24h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0 or seconds > MAX_TTL_S:
        raise UsageError(f"duration {text!r} must be more than 0 and at most {MAX_TTL_S // 86400} days")
    return seconds


def new_token():
    return secrets.token_urlsafe(TOKEN_BYTES)


def _quote(text):
    # As Delta Chat encodes a= and n=: everything but letters, digits, '.' and '_'; a space becomes '+'.
    return urllib.parse.quote(text, safe="._").replace("%20", "+")


def shorten_name(name, length=_NAME_MAX):
    return name if len(name) <= length else name[:length - 1] + "_"


def link(record):
    """The invite link of ``record`` (contains the secrets: show it only to the person who asked)."""
    return (f"{LINK_PREFIX}{record['fingerprint']}&i={record['invitenumber']}&s={record['auth']}"
            f"&a={_quote(record['address'])}&n={_quote(shorten_name(record['name']))}")


def status(record, now=None):
    """``open``, ``expired``, ``revoked`` or ``used`` (the first that applies, revoked first)."""
    now = time.time() if now is None else now
    if record.get("revoked"):
        return REVOKED
    if record.get("used", 0) >= record.get("uses", 1):
        return USED
    if now >= _ts(record["expires"]):
        return EXPIRED
    return OPEN


def closed_since(record):
    """When the invite stopped being open (POSIX time), or None while it is open by use and revocation."""
    if record.get("revoked"):
        return _ts(record["revoked"])
    if record.get("used", 0) >= record.get("uses", 1) and record.get("joins"):
        return _ts(record["joins"][-1]["time"])
    return _ts(record["expires"])


def public_view(record, now=None):
    """The record without its secrets (for ``seccam invite list``)."""
    view = {k: v for k, v in record.items() if k not in ("invitenumber", "auth")}
    view["status"] = status(record, now)
    return view


class InviteStore:
    """The invite records under ``state_dir``."""

    def __init__(self, state_dir):
        self.dir = Path(state_dir) / INVITES_DIR

    def __repr__(self):
        return f"InviteStore({str(self.dir)!r})"

    # -- files ----------------------------------------------------------------
    def _path(self, invite_id):
        if not _ID_RE.match(invite_id or ""):
            raise UsageError(f"not an invite id: {invite_id!r} (see seccam invite list)")
        return self.dir / f"{invite_id}.json"

    def _ensure(self):
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TemporaryError(f"cannot create {self.dir}: {exc.strerror}") from None

    @contextlib.contextmanager
    def lock(self):
        """Serialise read-modify-write of records (inbox job, invite --wait, revoke)."""
        self._ensure()
        busy = TemporaryError(f"invites {self.dir} are locked by another process")
        with durable.locked(self.dir / ".lock", _LOCK_TIMEOUT_S, 0o600, lambda: busy):
            yield

    def _write(self, record):
        durable.replace_json(self._path(record["id"]), record, 0o600)

    def _read(self, path):
        obj = durable.read_json(path, "invite record")
        if obj is None:
            return None
        if not all(isinstance(obj.get(k), str) for k in ("id", "invitenumber", "auth", "expires", "address")):
            raise DataError(f"{path}: not an invite record; remove it")
        obj.setdefault("pending", [])
        obj.setdefault("joins", [])
        return obj

    def get(self, invite_id):
        return self._read(self._path(invite_id))

    def all(self):
        """Every readable invite, oldest first; unreadable ones are logged and skipped."""
        out = []
        for path in durable.json_files(self.dir):
            try:
                rec = self._read(path)
            except DataError as exc:
                log.warning("event=invite_unreadable path=%s error=%r", path, str(exc))
                continue
            if rec is not None:
                out.append(rec)
        out.sort(key=lambda r: r.get("created", ""))
        return out

    # -- life cycle -----------------------------------------------------------
    def create(self, address, fingerprint, name, uses=1, ttl_s=DEFAULT_TTL_S, label=None, now=None):
        """A new open invite for the camera key ``fingerprint`` at ``address``; return its record."""
        if not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise UsageError(f"--uses must be 1-{MAX_USES}, got {uses}")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise UsageError(f"expiry must be more than 0 and at most {MAX_TTL_S // 86400} days")
        now = time.time() if now is None else now
        record = {"version": VERSION, "id": secrets.token_hex(4), "label": label, "name": name,
                  "address": address, "fingerprint": fingerprint,
                  "invitenumber": new_token(), "auth": new_token(),
                  "created": _iso(now), "expires": _iso(now + ttl_s), "uses": uses, "used": 0,
                  "revoked": None, "pending": [], "joins": []}
        with self.lock():
            while self._path(record["id"]).exists():
                record["id"] = secrets.token_hex(4)
            self._write(record)
        log.info("event=invite_created invite=%s uses=%d expires=%s", record["id"], uses, record["expires"])
        return record

    def revoke(self, invite_id, now=None):
        """Revoke an invite; return its record (DataError if unknown)."""
        now = time.time() if now is None else now
        with self.lock():
            record = self.get(invite_id)
            if record is None:
                raise DataError(f"no invite {invite_id} (see seccam invite list)")
            if not record.get("revoked"):
                record["revoked"] = _iso(now)
                record["pending"] = []
                self._write(record)
                log.info("event=invite_revoked invite=%s", invite_id)
        return record

    # -- lookups (constant time in the secret) --------------------------------------
    def _find(self, field, value):
        if not isinstance(value, str) or not value:
            return None
        found = None
        for record in self.all():
            if hmac.compare_digest(record[field].encode(), value.encode()):
                found = record
        return found

    def find_by_invitenumber(self, invitenumber):
        return self._find("invitenumber", invitenumber)

    def find_by_auth(self, auth):
        return self._find("auth", auth)

    # -- protocol state -----------------------------------------------------------
    def add_pending(self, invite_id, address, fingerprint, now=None):
        """Step 1 was answered for ``address`` with key ``fingerprint``: remember it for step 3."""
        now = time.time() if now is None else now
        with self.lock():
            record = self.get(invite_id)
            if record is None:
                raise DataError(f"invite {invite_id} vanished")
            pending = [p for p in record["pending"] if p.get("address") != address]
            pending.append({"address": address, "fingerprint": fingerprint, "requested": _iso(now)})
            record["pending"] = pending[-MAX_PENDING:]
            self._write(record)
        return record

    def complete(self, invite_id, address, fingerprint, now=None):
        """Step 3 succeeded: consume one use, record the join, drop the pending entry."""
        now = time.time() if now is None else now
        with self.lock():
            record = self.get(invite_id)
            if record is None:
                raise DataError(f"invite {invite_id} vanished")
            record["pending"] = [p for p in record["pending"] if p.get("address") != address]
            record["joins"].append({"address": address, "fingerprint": fingerprint, "time": _iso(now)})
            record["used"] = record.get("used", 0) + 1
            if status(record, now) != OPEN:
                record["pending"] = []
            self._write(record)
        log.info("event=invite_used invite=%s used=%d uses=%d", invite_id, record["used"], record["uses"])
        return record

    def prune(self, now=None, keep_s=KEEP_CLOSED_S):
        """Delete invites closed for longer than ``keep_s``; return the pending key
        fingerprints they held (keys imported at step 1 whose join never finished)."""
        now = time.time() if now is None else now
        orphans = []
        with self.lock():
            for record in self.all():
                if status(record, now) == OPEN:
                    continue
                if record["pending"]:
                    orphans.extend(p["fingerprint"] for p in record["pending"] if p.get("fingerprint"))
                    record["pending"] = []
                    self._write(record)
                if now - closed_since(record) > keep_s:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path(record["id"]))
                    log.info("event=invite_deleted invite=%s status=%s", record["id"], status(record, now))
        return orphans
