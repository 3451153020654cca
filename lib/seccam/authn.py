"""Authority from mail: who really wrote an encrypted message, and may the camera act on it.

Anyone can send mail to the camera and write any outer header: ``From:``,
``Autocrypt:``, ``Date:``, ``Message-ID:``. Those are claims. This module owns
the one rule by which a message gains authority (docs/security.md, "Who can
change what"): an encrypted message counts as written by a recipient only if

1. gpg found a good signature in it (seccam.gpg.Decrypted: GOODSIG + VALIDSIG);
2. the signing key is the key *pinned* for a recipient (seccam.keys) and the
   inner, signed ``From:`` is exactly that recipient's address: a signature
   vouches for a sender only together with the address its key was pinned for;
3. the inner ``To:``/``Cc:`` name the camera's own address: a message the owner
   signed for somebody else, stripped of its encryption and re-encrypted to
   the camera ("surreptitious forwarding"), names that somebody else;
4. it is fresh: the signature's creation time and the inner ``Date:`` lie
   within ``window_s`` of the camera's clock;
5. it was not acted on before: :class:`Journal` keeps, per sender, the newest
   signature time acted on and the Message-IDs acted on, so a replayed
   ciphertext, or an older genuine message sent again, is refused.

Only headers of the decrypted part are read here; the caller hands over the
parsed inner message and gpg's result, never the outer headers.

The journal (``STATE_DIR/replay.json``, mode 0640, replaced atomically under
``STATE_DIR/.replay.lock``)::

    {"version": 1,
     "senders": {"owner@example.org": {"newest": 1796138376.0, "fingerprint": "ABCD..."}},
     "seen": [["<sha256 of the Message-ID, 32 hex>", 1796138376.0], ...]}

It only grows by one small entry per message acted on and forgets Message-IDs
older than twice the window (older messages are refused by rule 4 anyway),
keeping at most :data:`MAX_SEEN` of them.

A message is recorded *before* the caller acts on it (:meth:`Journal.admit`):
a job killed between the two has acted at most once, never twice.
"""

import dataclasses
import email.utils
import hashlib
import logging
import time
from pathlib import Path

from . import durable
from .errors import DataError, TemporaryError

log = logging.getLogger("seccam.authn")

VERSION = 1
JOURNAL_FILE = "replay.json"
# How far the signed time of a message may be from the camera's clock. Delta Chat
# sends at once when online; a phone that queued a message for longer than this
# must send it again (a stale "disarm" must not take effect hours later).
DEFAULT_WINDOW_S = 15 * 60
MAX_SEEN = 2000
_LOCK_TIMEOUT_S = 30


class NotAuthentic(Exception):
    """The message has no authority; ``str()`` says why (for the log line, never for a reply)."""


@dataclasses.dataclass(frozen=True)
class Sender:
    """A recipient proven to have written this message just now."""

    address: str        # the recipient (lower case), = the inner From:
    fingerprint: str    # their pinned key, which made the signature
    signed_at: float    # the signature's creation time (POSIX)
    message_id: str     # the inner Message-ID, as written

    @property
    def message_key(self):
        return message_key(self.message_id)


def message_key(message_id):
    """The journal's key for a Message-ID (no raw IDs on disk; they may carry names)."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "replace")).hexdigest()[:32]


def _addresses(message, *names):
    values = []
    for name in names:
        values += [str(v) for v in message.get_all(name) or []]
    return [a.strip().lower() for _, a in email.utils.getaddresses(values) if a]


def _single(message, name):
    values = message.get_all(name) or []
    return str(values[0]).strip() if len(values) == 1 else None


def _date(message):
    value = _single(message, "Date")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp()


def authenticate(inner, decrypted, pinned_addresses, camera_address, now, window_s=DEFAULT_WINDOW_S):
    """The :class:`Sender` of a decrypted message, or NotAuthentic.

    ``inner`` is the decrypted part parsed (email.message.Message), ``decrypted``
    seccam.gpg.Decrypted, ``pinned_addresses(fingerprint)`` the recipients whose
    pinned key that is (a set, normally of one), ``camera_address`` the camera's
    own address, ``now`` the camera's clock (POSIX).
    """
    if not decrypted.signer:
        raise NotAuthentic("not signed by a known key")
    owners = pinned_addresses(decrypted.signer)
    if not owners:
        raise NotAuthentic(f"signed by {decrypted.signer}, which is no recipient's pinned key")
    senders = _addresses(inner, "From")
    if len(senders) != 1:
        raise NotAuthentic("no single From address inside the encrypted part")
    owner = senders[0]
    if owner not in owners:
        raise NotAuthentic(f"signed with the key pinned for {', '.join(sorted(owners))}, but the signed From "
                           f"is {owner}")
    if camera_address.lower() not in _addresses(inner, "To", "Cc"):
        raise NotAuthentic("the signed To/Cc do not name the camera (written for someone else)")
    message_id = _single(inner, "Message-ID")
    if not message_id:
        raise NotAuthentic("no Message-ID inside the encrypted part")
    date = _date(inner)
    if date is None:
        raise NotAuthentic("no valid Date inside the encrypted part")
    signed_at = decrypted.signed_at
    if signed_at is None:  # pragma: no cover - gpg prints the time in every VALIDSIG line
        raise NotAuthentic("no signature time")
    for what, when in (("signature", signed_at), ("Date", date)):
        if abs(when - now) > window_s:
            raise NotAuthentic(f"{what} is {int(now - when)} s from the camera's clock "
                               f"(more than {int(window_s)} s: stale, replayed or a wrong clock)")
    return Sender(address=owner, fingerprint=decrypted.signer, signed_at=signed_at, message_id=message_id)


class Journal:
    """The replay journal under ``state_dir`` (see the module docstring)."""

    def __init__(self, state_dir, window_s=DEFAULT_WINDOW_S):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_FILE
        self.window_s = window_s

    def _read(self):
        try:
            obj = durable.read_json(self.path, "replay journal")
        except DataError as exc:
            # A damaged journal must not open the door to replays: refuse until a person looks.
            raise TemporaryError(str(exc)) from None
        if obj is None:
            return {"version": VERSION, "senders": {}, "seen": []}
        if not isinstance(obj.get("senders"), dict) or not isinstance(obj.get("seen"), list):
            raise TemporaryError(f"{self.path}: not a replay journal; fix or remove it")
        return obj

    def newest(self, address):
        """The newest signature time acted on for ``address`` (POSIX), or None."""
        entry = self._read()["senders"].get(address)
        return entry.get("newest") if isinstance(entry, dict) else None

    def admit(self, sender, now=None):
        """Record ``sender``'s message as acted on; False (and nothing recorded) if it is a
        replay: its Message-ID was acted on before, or its signature is older than the newest
        one already acted on for that sender. Raises TemporaryError (lock, disk)."""
        now = time.time() if now is None else now
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = TemporaryError(f"replay journal {self.path} is locked by another process")
        with durable.locked(self.state_dir / ".replay.lock", _LOCK_TIMEOUT_S, 0o640, lambda: busy):
            obj = self._read()
            key = sender.message_key
            if any(isinstance(s, list) and s and s[0] == key for s in obj["seen"]):
                log.warning("event=replay_refused address=%s reason=message-id-seen", sender.address)
                return False
            entry = obj["senders"].get(sender.address)
            newest = entry.get("newest") if isinstance(entry, dict) else None
            if isinstance(newest, (int, float)) and sender.signed_at < newest:
                log.warning("event=replay_refused address=%s reason=older-than-newest signed_at=%d newest=%d",
                            sender.address, sender.signed_at, newest)
                return False
            obj["senders"][sender.address] = {"newest": max(sender.signed_at, newest or 0.0),
                                              "fingerprint": sender.fingerprint}
            horizon = now - 2 * self.window_s
            seen = [s for s in obj["seen"] if isinstance(s, list) and len(s) == 2
                    and isinstance(s[1], (int, float)) and s[1] >= horizon]
            seen.append([key, sender.signed_at])
            obj["seen"] = seen[-MAX_SEEN:]
            durable.replace_json(self.path, obj, 0o640)
        return True
