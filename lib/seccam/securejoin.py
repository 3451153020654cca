"""The camera's side (the inviter, "Alice") of Delta Chat's legacy Secure-Join.

This module owns the protocol decisions of docs/deltachat.md ("Secure-Join
invite") and the replies' contents; it neither reads nor sends mail (that is
seccam.inbox) and keeps its state in seccam.invites and seccam.keys.

1. ``vc-request`` (clear text, from the joiner): ``Secure-Join-Invitenumber``
   must name an *open* invite (not revoked, not expired, uses left) and the
   message must carry exactly one valid Autocrypt header for its From address.
   The joiner's key is imported into the keyring (so the reply can be
   encrypted to it and step 3's signature checked) but **not pinned**; the
   invite remembers ``(address, fingerprint)`` as pending.
2. Reply ``vc-auth-required``: signed by the camera key, encrypted to the
   joiner and the camera, protected headers ``Secure-Join``,
   ``Chat-Version`` and ``Autocrypt-Gossip`` with the joiner's own key (the
   core ignores the step without it), the camera's Autocrypt header outside.
3. ``vc-request-with-auth`` (encrypted and signed, from the joiner): accepted
   only if ``Secure-Join-Auth`` is the auth secret of an open invite, the
   sender is pending on that invite, the good signature's key =
   ``Secure-Join-Fingerprint`` = the key of step 1, and the encrypted part
   gossips the camera's own key (as Delta Chat checks on its side: a signed
   message forwarded by someone else would not). Then the address becomes
   a recipient (seccam.keys.add_recipient), its key is pinned (source
   ``securejoin``; a *different* already pinned key is never replaced: it
   becomes a pending change for ``seccam keys accept``), and one use of the
   invite is consumed.
4. Reply ``vc-contact-confirm`` (same form as step 2).

Anything else is rejected with a reason, logged, and changes nothing. The
secrets (invite number, auth secret) never appear in a log line.
"""

import dataclasses
import datetime as _dt
import email.utils
import logging
import secrets
import time

from . import autocrypt, mime
from .errors import DataError, SeccamError

log = logging.getLogger("seccam.securejoin")

REQUEST = "vc-request"
AUTH_REQUIRED = "vc-auth-required"
REQUEST_WITH_AUTH = "vc-request-with-auth"
CONTACT_CONFIRM = "vc-contact-confirm"
SOURCE = "securejoin"


@dataclasses.dataclass
class Handled:
    """What one Secure-Join message led to (for the inbox's log line and its next steps)."""

    step: str
    outcome: str                 # "replied" | "joined" | "rejected" | "key-pending"
    reason: str = ""
    address: str | None = None
    fingerprint: str | None = None
    invite: str | None = None
    reply: bytes | None = None   # an encrypted message for ``address``, to send now
    welcome: bool = False        # a new recipient: send the welcome message

    def log_fields(self):
        fields = [f"step={self.step}", f"outcome={self.outcome}"]
        for key in ("invite", "address", "fingerprint"):
            if getattr(self, key):
                fields.append(f"{key}={getattr(self, key)}")
        if self.reason:
            fields.append(f"reason={self.reason!r}")
        return " ".join(fields)


def step_of(message):
    """The Secure-Join step a parsed message claims (``vc-request`` if it names an
    invite number), or None. Headers are only claims: the handlers check them."""
    if message.get("Secure-Join-Invitenumber") is not None:
        return REQUEST
    value = message.get("Secure-Join")
    return str(value).strip().lower() if value is not None else None


def _single_from(message):
    pairs = email.utils.getaddresses([str(v) for v in message.get_all("From") or []])
    addrs = [a.strip().lower() for _, a in pairs if a]
    return addrs[0] if len(addrs) == 1 else None


def _header(message, name):
    values = message.get_all(name) or []
    if len(values) != 1:
        return None
    return "".join(str(values[0]).split())


class Inviter:
    """Runs the protocol for ``config`` with the camera key in ``gpg``.

    ``invites`` is a seccam.invites.InviteStore, ``store`` the recipient
    KeyStore (seccam.keys.open_store).
    """

    def __init__(self, config, gpg, invites, store, now=None):
        self.config = config
        self.gpg = gpg
        self.invites = invites
        self.store = store
        self.now = now if now is not None else time.time
        self._camera_fpr = None

    @property
    def camera_fpr(self):
        if self._camera_fpr is None:
            self._camera_fpr = self.gpg.camera_key()
            if self._camera_fpr is None:
                raise DataError("the camera has no key (seccam keys init)")
        return self._camera_fpr

    # -- step 1 -> 2 -------------------------------------------------------------------
    def handle_request(self, message):
        """A clear-text ``vc-request``; returns Handled with a ``vc-auth-required`` reply."""
        from .invites import OPEN, status

        sender = _single_from(message)
        result = Handled(REQUEST, "rejected", address=sender)
        if sender is None:
            result.reason = "no single From address"
            return result
        number = _header(message, "Secure-Join-Invitenumber")
        invite = self.invites.find_by_invitenumber(number) if number else None
        if invite is None:
            result.reason = "unknown invite number"
            return result
        result.invite = invite["id"]
        state = status(invite, self.now())
        if state != OPEN:
            result.reason = f"invite {state}"
            return result
        headers = message.get_all("Autocrypt") or []
        if len(headers) != 1:
            result.reason = f"{len(headers)} Autocrypt headers (expected 1)"
            return result
        try:
            header = autocrypt.parse_header(headers[0])
        except DataError as exc:
            result.reason = f"invalid Autocrypt header: {exc}"
            return result
        if header.addr != sender:
            result.reason = "Autocrypt addr is not the From address"
            return result
        try:
            info = self.store.check_key(header.keydata)
        except DataError as exc:
            result.reason = f"unusable key: {exc}"
            return result
        fpr = info.fingerprint
        result.fingerprint = fpr
        # Into the keyring, not into the key store: nothing is pinned before step 3.
        imported = self.gpg.import_keys(header.keydata)
        if fpr not in imported:  # pragma: no cover - gpg imports the key it just scanned from these bytes
            result.reason = "gpg did not import the offered key"
            return result
        self.invites.add_pending(invite["id"], sender, fpr, now=self.now())
        result.reply = self.build_reply(AUTH_REQUIRED, sender, fpr)
        result.outcome = "replied"
        return result

    # -- step 3 -> 4 -------------------------------------------------------------------
    def handle_request_with_auth(self, outer, inner, signer):
        """An encrypted ``vc-request-with-auth``: ``outer`` the message as received,
        ``inner`` the decrypted part (parsed), ``signer`` the good signature's primary
        key fingerprint (None if unsigned or unknown)."""
        from .invites import OPEN, status

        # The outer headers are claims; the address that joins is the signed inner From.
        sender = _single_from(inner)
        result = Handled(REQUEST_WITH_AUTH, "rejected", address=sender)
        if sender is None or _single_from(outer) != sender:
            result.reason = "From address missing inside the encrypted part, or different outside"
            return result
        if str(inner.get("Secure-Join", "")).strip().lower() != REQUEST_WITH_AUTH:
            result.reason = "Secure-Join header is not protected by the encryption"
            return result
        if signer is None:
            result.reason = "not signed by a known key"
            return result
        auth = _header(inner, "Secure-Join-Auth")
        invite = self.invites.find_by_auth(auth) if auth else None
        if invite is None:
            result.reason = "wrong auth secret"
            return result
        result.invite = invite["id"]
        claimed = _header(inner, "Secure-Join-Fingerprint")
        try:
            from .gpg import check_fingerprint
            claimed = check_fingerprint(claimed or "")
        except DataError:
            result.reason = "no valid Secure-Join-Fingerprint"
            return result
        result.fingerprint = claimed
        if not self._gossips_camera_key(inner):
            result.reason = "no Autocrypt-Gossip of the camera key (not meant for this camera)"
            return result
        already = any(j.get("address") == sender and j.get("fingerprint") == claimed == signer
                      for j in invite["joins"])
        state = status(invite, self.now())
        if already:
            # The same joiner again (e.g. our confirmation was lost): confirm, change nothing.
            result.outcome = "replied"
            result.reason = "already joined with this key"
            result.reply = self.build_reply(CONTACT_CONFIRM, sender, claimed)
            return result
        if state != OPEN:
            result.reason = f"invite {state}"
            return result
        pending = next((p for p in invite["pending"] if p.get("address") == sender), None)
        if pending is None:
            result.reason = "no vc-request from this address for this invite"
            return result
        if not (signer == claimed == pending.get("fingerprint")):
            result.reason = "fingerprint mismatch (signer, Secure-Join-Fingerprint and vc-request key differ)"
            return result
        return self._join(invite, sender, claimed, result)

    def _gossips_camera_key(self, inner):
        """True if the encrypted part gossips the camera's own key, as Delta Chat does: a
        signed message re-encrypted to the camera by someone else (surreptitious forwarding)
        would name another recipient."""
        address = self.config.account.address
        for value in inner.get_all("Autocrypt-Gossip") or []:
            try:
                header = autocrypt.parse_header(value)
            except DataError:
                continue
            if header.addr != address:
                continue
            try:
                if self.camera_fpr in self.gpg.fingerprints_of(header.keydata):
                    return True
            except SeccamError:
                continue
        return False

    def _join(self, invite, address, fpr, result):
        from . import keys

        now = self.now()
        keys.add_recipient(self.config, address, now=now)
        outcome = self.store.import_key(address, self.gpg.export_minimal(fpr), source=SOURCE, now=now)
        if outcome == keys.Outcome.PENDING:
            # A different key is pinned for this address: a person decides (seccam keys accept).
            result.outcome = "key-pending"
            result.reason = "a different key is pinned for this address; seccam keys accept ADDRESS FINGERPRINT"
            return result
        self.invites.complete(invite["id"], address, fpr, now=now)
        result.outcome = "joined"
        result.welcome = True
        result.reply = self.build_reply(CONTACT_CONFIRM, address, fpr)
        return result

    # -- replies ------------------------------------------------------------------------
    def build_reply(self, step, address, fpr):
        """A Secure-Join message ``step`` to ``address`` (key ``fpr``), signed and encrypted."""
        account = self.config.account
        camera_fpr = self.camera_fpr
        domain = account.address.rpartition("@")[2]
        env = mime.Envelope(
            from_name=account.display_name, from_addr=account.address, to=(address,),
            date=_dt.datetime.fromtimestamp(self.now(), _dt.timezone.utc),
            message_id=mime.make_message_id(domain, camera_fpr, step, address, secrets.token_hex(8)),
            subject=f"Secure-Join: {step}",
        )
        joiner_key = self.gpg.export_minimal(fpr)
        inner = mime.build_inner(env, f"Secure-Join: {step}",
                                 headers=(("Secure-Join", step),), gossip=((address, joiner_key),))
        binary = self.gpg.encrypt_sign(inner, [fpr, camera_fpr], signer=camera_fpr, armor=False)
        armored = mime.armor(mime.reframe(binary))
        value = autocrypt.build_header(account.address, self.gpg.export_minimal(camera_fpr))
        return mime.build_outer(env, value, armored)
