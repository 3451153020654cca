"""The recipient key store: which OpenPGP key the camera encrypts to, per address.

It owns ``STATE_DIR/keys/`` (one JSON record per address, replaced atomically:
temporary file + fsync + rename in the same directory + directory fsync),
``STATE_DIR/recipients.json`` (addresses that joined after set-up, e.g. by
onboarding) and the recipients' public keys in the GnuPG keyring (through
seccam.gpg, which it imports only when a key must be read or imported, so
``pending_changes`` for ``seccam status`` never starts gpg).

Rules it keeps (docs/security.md, "Who can change what"):

* Only recipients have keys here: addresses in ``[delivery] recipients`` or
  joined ones (:func:`recipients`); anything else is refused by name.
* A key is pinned, or a pinned key replaced, only by a person or a verified
  invite: ``seccam keys import`` (:meth:`KeyStore.import_key`, ``--replace``
  to replace), ``seccam keys accept`` (:meth:`KeyStore.accept`) after comparing
  fingerprints, or a completed Secure-Join (seccam.securejoin, which proves the
  invite secret a person handed out). A key seen in mail
  (:meth:`KeyStore.offer`: Autocrypt, gossip) is never pinned on its own, not
  even for a recipient who has no key yet: it is at most *pending*, for
  ``seccam status``, the heartbeat and a person to decide. Delta Chat files a
  chat by key; a forged mail must never redirect the pictures.
* Pending keys that only an insider could have produced (offered inside a
  message signed by the pinned key, or after a completed Secure-Join) are
  *verified*: no number of forged mails can push them out of the pending
  list, whose unverified part is capped at :data:`MAX_PENDING`.
* Offers carry a date (``when``, the Autocrypt effective date); an offer older
  than the newest one already considered for the address is ignored.

Record format (``keys/<address>.json``)::

    {"version": 1, "address": "owner@example.org", "fingerprint": "ABCD...",
     "source": "vcard:owner.vcf", "pinned": "2026-11-25T19:11:00Z", "last_seen": "..." | null,
     "pending": [{"fingerprint", "source", "first_seen", "last_seen", "count", "verified": bool,
                  "keydata" (base64)}],
     "history": [{"fingerprint", "pinned", "until", "why"}]}

Pending keys stay out of the keyring (their key data is in the record) so gpg
can never pick them up by accident.
"""

import base64
import contextlib
import datetime as _dt
import enum
import json
import logging
import time
import urllib.parse
from pathlib import Path

from . import durable
from .errors import DataError, TemporaryError

log = logging.getLogger("seccam.keys")

VERSION = 1
KEYS_DIR = "keys"
RECIPIENTS_FILE = "recipients.json"
# A flood of forged mail must not grow a record without bound; the oldest pending go first.
MAX_PENDING = 5
_LOCK_TIMEOUT_S = 30


class Outcome(enum.StrEnum):
    """What an offer or import did (logged, and shown by ``seccam keys import``)."""

    PINNED = "pinned"          # first key for the address (a person or a verified invite)
    UNCHANGED = "unchanged"    # the pinned key again (refreshed in the keyring)
    PENDING = "pending"        # a key a person has to decide on (seccam keys accept)
    ADOPTED = "adopted"        # a pending key accepted on the device (seccam keys accept)
    REPLACED = "replaced"      # manual import with replace=True
    STALE = "stale"            # dated before what was already seen for the address


class NotRecipientError(DataError):
    """The address is not one the camera sends to."""


def _iso(ts):
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(text):
    return _dt.datetime.fromisoformat(text).timestamp() if text else None


def normalize(address):
    address = (address or "").strip().lower()
    if address.count("@") != 1 or address.startswith("@") or address.endswith("@") or any(
            c.isspace() or c in "<>\"(),;:/\\" for c in address):
        raise DataError(f"not an e-mail address: {address!r}")
    return address


# -- recipients -----------------------------------------------------------------
def _recipients_path(state_dir):
    return Path(state_dir) / RECIPIENTS_FILE


def _joined(state_dir):
    path = _recipients_path(state_dir)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); fix or remove it") from None
    entries = obj.get("recipients", []) if isinstance(obj, dict) else []
    return [e["address"] for e in entries if isinstance(e, dict) and isinstance(e.get("address"), str)]


def recipients(config):
    """Every address the camera sends to: the configured ones, then joined ones."""
    out = list(config.delivery.recipients)
    for address in _joined(config.state_dir):
        if address not in out:
            out.append(address)
    return tuple(out)


def allowed(config, address):
    try:
        return normalize(address) in recipients(config)
    except DataError:
        return False


def add_recipient(config, address, now=None):
    """Record that ``address`` joined (onboarding); return False if it already was a recipient."""
    address = normalize(address)
    if address in recipients(config):
        return False
    now = time.time() if now is None else now
    store = KeyStore(config.state_dir)
    with store.lock():
        path = _recipients_path(config.state_dir)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            obj = {"version": VERSION, "recipients": []}
        except (OSError, ValueError) as exc:  # pragma: no cover - recipients() read it just before; only
            # a concurrent writer breaking the file in between gets here
            raise DataError(f"{path}: unreadable ({exc}); fix or remove it") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("recipients", []), list):
            raise DataError(f"{path}: not a recipients file; fix or remove it")
        obj.setdefault("recipients", []).append({"address": address, "added": _iso(now)})
        _atomic_write(path, obj)
    log.info("event=recipient_added address=%s", address)
    return True


# -- the store ------------------------------------------------------------------
def open_store(config, gpg=None):
    """The store of ``config``, allowing its recipients (configured and joined)."""
    return KeyStore(config.state_dir, allowed=lambda address: allowed(config, address), gpg=gpg)


def pending_changes(config):
    """Pending key changes for ``seccam status`` and the heartbeat (no gpg involved)."""
    return KeyStore(config.state_dir).pending_changes()


def _atomic_write(path, obj):
    durable.replace_json(path, obj, 0o640)


class KeyStore:
    """Recipient keys under ``state_dir``. ``allowed(address) -> bool`` says who may
    have a key (default: nobody can be added; reading always works)."""

    def __init__(self, state_dir, allowed=None, gpg=None):
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / KEYS_DIR
        self._allowed = allowed or (lambda address: False)
        self._gpg = gpg

    def __repr__(self):
        return f"KeyStore({str(self.state_dir)!r})"

    @property
    def gpg(self):
        if self._gpg is None:
            from .gpg import Gpg, home_for
            self._gpg = Gpg(home_for(self.state_dir))
        return self._gpg

    def allowed(self, address):
        return bool(self._allowed(address))

    # -- files ----------------------------------------------------------------
    def _path(self, address):
        return self.dir / (urllib.parse.quote(address, safe="@.+-_") + ".json")

    @contextlib.contextmanager
    def lock(self):
        """Serialise read-modify-write of records (the inbox job and a person may both write)."""
        self.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        busy = TemporaryError(f"key store {self.dir} is locked by another process")
        with durable.locked(self.dir / ".lock", _LOCK_TIMEOUT_S, 0o640, lambda: busy):
            yield

    def _read(self, path):
        obj = durable.read_json(path, "key record")
        if obj is None:
            return None
        if not isinstance(obj.get("address"), str):
            raise DataError(f"{path}: not a key record")
        obj.setdefault("pending", [])
        obj.setdefault("history", [])
        return obj

    def record(self, address):
        """The record of ``address`` (a dict as in the module docstring) or None."""
        return self._read(self._path(normalize(address)))

    def records(self):
        """Every readable record, by address; unreadable ones are logged and skipped."""
        out = []
        for path in durable.json_files(self.dir):
            try:
                rec = self._read(path)
            except DataError as exc:
                log.warning("event=key_record_unreadable path=%s error=%r", path, str(exc))
                continue
            if rec is not None:
                out.append(rec)
        return out

    def _save(self, rec):
        _atomic_write(self._path(rec["address"]), rec)

    # -- checks ---------------------------------------------------------------
    def _check_address(self, address):
        address = normalize(address)
        if not self.allowed(address):
            raise NotRecipientError(f"{address} is not a recipient of this camera (add it to [delivery] "
                                    "recipients in the configuration first)")
        return address

    def check_key(self, keydata):
        """The KeyInfo of the one public key in ``keydata``; DataError if it is not exactly
        one public key that can encrypt."""
        from .gpg import GpgError
        try:
            keys = self.gpg.scan(keydata)
        except GpgError as exc:
            raise DataError(f"no usable OpenPGP public key: {exc}") from None
        if any(k.secret for k in keys):
            raise DataError("the key data holds a SECRET key; a recipient's key must be public "
                            "(the camera's own key is restored with `seccam keys restore`)")
        if len(keys) != 1:
            raise DataError(f"the key data holds {len(keys)} keys ({', '.join(k.fingerprint for k in keys)}); "
                            "expected one")
        if not keys[0].can_encrypt:
            raise DataError(f"key {keys[0].fingerprint} cannot encrypt (no valid encryption subkey: "
                            f"expired, revoked or signing-only)")
        return keys[0]

    def _import(self, keydata, fpr):
        imported = self.gpg.import_keys(keydata)
        if fpr not in imported:
            from .gpg import GpgError
            raise GpgError("import", f"expected key {fpr}, gpg imported {', '.join(imported)}")

    @staticmethod
    def _adopt(rec, fpr, source, now, why):
        if rec.get("fingerprint"):
            rec["history"].append({"fingerprint": rec["fingerprint"], "pinned": rec.get("pinned"),
                                   "until": _iso(now), "why": why})
        rec["fingerprint"] = fpr
        rec["source"] = source
        rec["pinned"] = _iso(now)
        rec["pending"] = [p for p in rec["pending"] if p["fingerprint"] != fpr]

    @staticmethod
    def _add_pending(rec, fpr, keydata, source, seen, verified=False):
        for entry in rec["pending"]:
            if entry["fingerprint"] == fpr:
                entry["last_seen"] = max(entry["last_seen"], _iso(seen))
                entry["count"] = entry.get("count", 1) + 1
                entry["keydata"] = base64.b64encode(keydata).decode("ascii")
                if verified or not entry.get("verified"):
                    entry["source"] = source
                entry["verified"] = bool(entry.get("verified") or verified)
                return
        rec["pending"].append({"fingerprint": fpr, "source": source, "first_seen": _iso(seen),
                               "last_seen": _iso(seen), "count": 1, "verified": bool(verified),
                               "keydata": base64.b64encode(keydata).decode("ascii")})
        # A flood of forged mail must not push out what only an insider could have sent:
        # verified entries are kept, the unverified ones are capped, oldest out first.
        keep = [p for p in rec["pending"] if p.get("verified")][-MAX_PENDING:]
        rest = sorted((p for p in rec["pending"] if not p.get("verified")), key=lambda p: p["last_seen"])
        rec["pending"] = sorted(keep + rest[-MAX_PENDING:], key=lambda p: p["first_seen"])

    def _new_record(self, address):
        return {"version": VERSION, "address": address, "fingerprint": None, "source": None, "pinned": None,
                "last_seen": None, "pending": [], "history": []}

    # -- changes --------------------------------------------------------------
    def offer(self, address, keydata, source, when=None, now=None, verified=False):
        """A key for ``address`` seen in mail (Autocrypt, gossip, a Secure-Join for an
        address that has another key). Never pins and never replaces a pin.

        The pinned key again is UNCHANGED (re-imported: it may carry a new
        encryption subkey or expiry, which only its owner can sign); any other
        key, also the first one for an address without a pin, is PENDING for a
        person (``verified`` marks offers only an insider could have made, see
        the module docstring). ``when`` is the message's effective date: an
        offer older than the newest one seen is STALE. Raises
        NotRecipientError, DataError (bad key data), GpgError.
        """
        address = self._check_address(address)
        now = time.time() if now is None else now
        seen = now if when is None else when
        keydata = bytes(keydata)
        info = self.check_key(keydata)
        fpr = info.fingerprint
        with self.lock():
            rec = self.record(address) or self._new_record(address)
            last = _ts(rec.get("last_seen"))
            if when is not None and last is not None and when < last:
                outcome = Outcome.STALE
            elif fpr == rec.get("fingerprint"):
                self._import(keydata, fpr)
                outcome = Outcome.UNCHANGED
            else:
                self._add_pending(rec, fpr, keydata, source, seen, verified)
                outcome = Outcome.PENDING
            if outcome is not Outcome.STALE:
                if when is not None:
                    rec["last_seen"] = _iso(max(when, last or when))
                self._save(rec)
        level = logging.WARNING if outcome is Outcome.PENDING else logging.INFO
        log.log(level, "event=key_offer outcome=%s address=%s fingerprint=%s source=%s verified=%s pinned=%s",
                outcome, address, fpr, source, "yes" if verified else "no", rec.get("fingerprint"))
        return outcome

    def import_key(self, address, keydata, source, replace=False, now=None):
        """A key a person imports on the device, or a completed Secure-Join: pins a first
        key, and replaces a different pinned key only with ``replace=True`` (else it is a
        verified PENDING entry for ``seccam keys accept``)."""
        address = self._check_address(address)
        now = time.time() if now is None else now
        keydata = bytes(keydata)
        info = self.check_key(keydata)
        fpr = info.fingerprint
        with self.lock():
            rec = self.record(address) or self._new_record(address)
            if not rec.get("fingerprint"):
                self._import(keydata, fpr)
                self._adopt(rec, fpr, source, now, "first key")
                outcome = Outcome.PINNED
            elif fpr == rec["fingerprint"]:
                self._import(keydata, fpr)
                outcome = Outcome.UNCHANGED
            elif replace:
                self._import(keydata, fpr)
                self._adopt(rec, fpr, source, now, f"replaced on the device ({source})")
                outcome = Outcome.REPLACED
            else:
                self._add_pending(rec, fpr, keydata, source, now, verified=True)
                outcome = Outcome.PENDING
            self._save(rec)
        log.info("event=key_import outcome=%s address=%s fingerprint=%s source=%s", outcome, address, fpr, source)
        return outcome

    def accept(self, address, fingerprint, now=None):
        """Adopt the pending key ``fingerprint`` for ``address`` (a person decided)."""
        from .gpg import check_fingerprint
        address = self._check_address(address)
        fpr = check_fingerprint(fingerprint)
        now = time.time() if now is None else now
        with self.lock():
            rec = self.record(address)
            if rec is None:
                raise DataError(f"no key is recorded for {address}")
            if rec.get("fingerprint") == fpr:
                return Outcome.UNCHANGED
            entry = next((p for p in rec["pending"] if p["fingerprint"] == fpr), None)
            if entry is None:
                known = ", ".join(p["fingerprint"] for p in rec["pending"]) or "none"
                raise DataError(f"{fpr} is not a pending key of {address} (pending: {known})")
            self._import(base64.b64decode(entry["keydata"]), fpr)
            self._adopt(rec, fpr, entry["source"], now, "accepted on the device")
            self._save(rec)
        log.info("event=key_accepted address=%s fingerprint=%s", address, fpr)
        return Outcome.ADOPTED

    # -- queries ----------------------------------------------------------------
    def pending_changes(self):
        """``[{"address", "pinned", "fingerprint", "source", "first_seen", "last_seen", "count",
        "verified"}]``."""
        out = []
        for rec in self.records():
            for p in rec["pending"]:
                out.append({"address": rec["address"], "pinned": rec.get("fingerprint"),
                            "fingerprint": p["fingerprint"], "source": p.get("source"),
                            "first_seen": p.get("first_seen"), "last_seen": p.get("last_seen"),
                            "count": p.get("count", 1), "verified": bool(p.get("verified"))})
        return out

    def pinned_addresses(self, fingerprint):
        """The recipients whose pinned key is ``fingerprint`` (normally one)."""
        try:
            from .gpg import check_fingerprint
            fingerprint = check_fingerprint(fingerprint)
        except DataError:
            return set()
        return {rec["address"] for rec in self.records()
                if rec.get("fingerprint") == fingerprint and self.allowed(rec["address"])}

    def encryption_fingerprints(self, addresses):
        """``{address: fingerprint}`` for the addresses whose pinned key is in the
        keyring and can encrypt now (not expired or revoked)."""
        pinned = {}
        for address in addresses:
            try:
                rec = self.record(address)
            except DataError as exc:
                log.warning("event=key_record_unreadable address=%s error=%r", address, str(exc))
                continue
            if rec and rec.get("fingerprint"):
                pinned[normalize(address)] = rec["fingerprint"]
        if not pinned:
            return {}
        usable = {k.fingerprint for k in self.gpg.list_keys(fingerprints=sorted(set(pinned.values())))
                  if k.can_encrypt}
        return {a: f for a, f in pinned.items() if f in usable}

    def missing(self, addresses):
        """The addresses without a usable pinned key (messages to them are held)."""
        have = self.encryption_fingerprints(addresses)
        return [a for a in addresses if normalize(a) not in have]
