"""Autocrypt Level 1 headers: parsing, building, and the update rules for incoming mail.

This module owns the ``Autocrypt:`` (and ``Autocrypt-Gossip:``) header format
and the Level 1 rules deciding whether an incoming message may offer a key;
what happens to an offered key (pinning, pending changes) is seccam.keys'
business. It never talks to gpg itself.

Header rules kept (Autocrypt Level 1, "The Autocrypt Header"):

* attributes ``addr`` and ``keydata`` are required, ``prefer-encrypt`` is
  optional (``mutual``; anything else means no preference);
* an unknown attribute whose name starts with ``_`` is non-critical and
  ignored; any other unknown (critical) attribute makes the header invalid;
* ``keydata`` is base64 and may contain whitespace (header folding);
  it is limited to :data:`MAX_KEYDATA` bytes;
* ``addr`` is compared case-insensitively.

Update rules kept by :func:`process_incoming`: ignore multipart/report and
auto-submitted mail; the message must have exactly one Autocrypt header and
its ``addr`` must be the From address; the effective date is
``min(Date, now)``; an offer older than what was already seen is ignored.
"""

import base64
import binascii
import datetime as _dt
import email.utils
import enum
import re

from .errors import DataError

MAX_KEYDATA = 64 * 1024
# Base64 of MAX_KEYDATA plus folding whitespace and the other attributes.
MAX_HEADER_CHARS = MAX_KEYDATA * 4 // 3 + 4096
_KNOWN = ("addr", "prefer-encrypt", "keydata")
_CHUNK = 72


class AutocryptError(DataError):
    """An Autocrypt header is invalid (and must be ignored as a whole)."""


class Ignored(enum.StrEnum):
    """Why process_incoming did not offer a key (for the log line)."""

    NO_HEADER = "no-header"
    SEVERAL_HEADERS = "several-headers"
    INVALID_HEADER = "invalid-header"
    NO_FROM = "no-from"
    ADDR_MISMATCH = "addr-mismatch"
    AUTO_REPLY = "auto-reply"
    REPORT = "report"
    NOT_RECIPIENT = "not-recipient"
    BAD_KEY = "bad-key"


class Header:
    """A parsed Autocrypt header: ``addr`` (lower case), ``prefer_encrypt``
    ("mutual" or "nopreference"), ``keydata`` (bytes)."""

    __slots__ = ("addr", "prefer_encrypt", "keydata")

    def __init__(self, addr, prefer_encrypt, keydata):
        self.addr = addr
        self.prefer_encrypt = prefer_encrypt
        self.keydata = keydata

    def __repr__(self):
        return f"Header(addr={self.addr!r}, prefer_encrypt={self.prefer_encrypt!r}, keydata={len(self.keydata)} bytes)"


def parse_header(value):
    """Parse one Autocrypt header value; raise AutocryptError if it is invalid."""
    if not isinstance(value, str):
        value = str(value)
    if len(value) > MAX_HEADER_CHARS:
        raise AutocryptError(f"Autocrypt header too large ({len(value)} characters)")
    attrs = {}
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, val = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise AutocryptError(f"Autocrypt attribute without a value: {part[:40]!r}")
        if name.startswith("_"):
            continue  # non-critical: ignore what we do not know
        if name not in _KNOWN:
            raise AutocryptError(f"unknown critical Autocrypt attribute {name!r}")
        if name in attrs:
            raise AutocryptError(f"Autocrypt attribute {name!r} given twice")
        attrs[name] = val.strip()
    for name in ("addr", "keydata"):
        if not attrs.get(name):
            raise AutocryptError(f"Autocrypt header without {name}")
    addr = attrs["addr"].lower()
    if addr.count("@") != 1 or any(c.isspace() or c in "<>\"" for c in addr):
        raise AutocryptError(f"Autocrypt addr is not an address: {attrs['addr'][:80]!r}")
    compact = re.sub(r"\s+", "", attrs["keydata"])
    if len(compact) > (MAX_KEYDATA + 2) // 3 * 4:
        raise AutocryptError(f"Autocrypt keydata larger than {MAX_KEYDATA} bytes")
    try:
        keydata = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise AutocryptError("Autocrypt keydata is not valid base64") from None
    if not keydata:  # pragma: no cover - keydata is non-empty (checked above) and valid base64 never decodes to b""
        raise AutocryptError("Autocrypt keydata is empty")
    prefer = "mutual" if attrs.get("prefer-encrypt", "").lower() == "mutual" else "nopreference"
    return Header(addr, prefer, keydata)


def build_header(address, keydata, prefer_encrypt="mutual"):
    """The value of an ``Autocrypt:`` header (``prefer_encrypt=None`` for ``Autocrypt-Gossip:``).

    The base64 is split by spaces into words of at most 72 characters so that
    any header folder (email.policy.default/SMTP or compat32) can wrap it at 78
    columns without encoded-words; receivers strip the whitespace. Set it with ``msg["Autocrypt"] = build_header(...)``.
    """
    if not keydata:
        raise ValueError("empty keydata")
    if len(keydata) > MAX_KEYDATA:
        raise ValueError(f"keydata larger than {MAX_KEYDATA} bytes")
    if any(c.isspace() or c in ";<>\"" for c in address) or address.count("@") != 1:
        raise ValueError(f"not an address: {address!r}")
    b64 = base64.b64encode(bytes(keydata)).decode("ascii")
    # No word may pass 78 columns, "keydata=" included, or Python's folder
    # turns the header into RFC 2047 encoded-words that no Autocrypt reader decodes.
    first = _CHUNK - len("keydata=")
    folded = " ".join([b64[:first]] + [b64[i:i + _CHUNK] for i in range(first, len(b64), _CHUNK)])
    parts = [f"addr={address}"]
    if prefer_encrypt:
        parts.append(f"prefer-encrypt={prefer_encrypt}")
    parts.append(f"keydata={folded}")
    return "; ".join(parts)


def _from_address(message):
    values = message.get_all("From") or []
    pairs = email.utils.getaddresses([str(v) for v in values])
    addrs = [a for _, a in pairs if a]
    if len(addrs) != 1:
        return None
    return addrs[0].strip().lower()


def effective_date(message, now):
    """min(Date, now) as a POSIX time; ``now`` if Date is missing or unparsable."""
    value = message.get("Date")
    if value is None:
        return now
    try:
        date = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return now
    if date.tzinfo is None:  # "-0000": time zone unknown; treat as UTC
        date = date.replace(tzinfo=_dt.timezone.utc)
    return min(date.timestamp(), now)


def is_auto_reply(message):
    value = message.get("Auto-Submitted")
    return value is not None and str(value).strip().split(";")[0].strip().lower() != "no"


def process_incoming(message, store, now, verified=False):
    """Apply the Autocrypt Level 1 update rules to ``message`` (an email.message.Message).

    ``store`` is a seccam.keys.KeyStore, ``now`` a POSIX time. ``verified``:
    ``message`` is the inner part of mail that seccam.authn proved to be
    written by the recipient it names (the offer may become a verified pending
    key). Mail never pins a key (seccam.keys).
    Returns a seccam.keys.Outcome (the key was offered) or an :class:`Ignored`
    reason; both are strings for the log line. GpgError and TemporaryError pass.
    """
    from .keys import NotRecipientError

    if message.get_content_type() == "multipart/report":
        return Ignored.REPORT
    if is_auto_reply(message):
        return Ignored.AUTO_REPLY
    headers = message.get_all("Autocrypt") or []
    if not headers:
        return Ignored.NO_HEADER
    if len(headers) > 1:
        return Ignored.SEVERAL_HEADERS
    sender = _from_address(message)
    if sender is None:
        return Ignored.NO_FROM
    try:
        header = parse_header(headers[0])
    except AutocryptError:
        return Ignored.INVALID_HEADER
    if header.addr != sender:
        return Ignored.ADDR_MISMATCH
    when = effective_date(message, now)
    try:
        return store.offer(header.addr, header.keydata, source="autocrypt-signed" if verified else "autocrypt",
                           when=when, now=now, verified=verified)
    except NotRecipientError:
        return Ignored.NOT_RECIPIENT
    except DataError:
        return Ignored.BAD_KEY
