"""Reading the OpenPGP key out of a vCard (how an owner can hand the camera a key).

Delta Chat shares a contact as a vCard 4.0 whose ``KEY`` property is a data
URI: ``KEY:data:application/pgp-keys;base64,<base64>``. Older writers use
``KEY;TYPE=PGP;ENCODING=b:<base64>`` (3.0) or ``KEY;ENCODING=BASE64;TYPE=PGP:``
(2.1). This module reads those forms and the ``EMAIL`` property; it never
writes vCards and knows nothing about GnuPG.
"""

import base64
import binascii
import re

from .errors import DataError

MAX_KEY_BYTES = 64 * 1024
_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.S | re.I)


class Card:
    """One vCard: its e-mail addresses and the key bytes (or None)."""

    def __init__(self, emails, key):
        self.emails = emails
        self.key = key

    @property
    def email(self):
        return self.emails[0] if self.emails else None

    def __repr__(self):
        return f"Card(emails={self.emails!r}, key={'%d bytes' % len(self.key) if self.key else None})"


def looks_like_vcard(data):
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").upper()
    return head.startswith(b"BEGIN:VCARD")


def _unfold(text):
    # RFC 6350 3.2: a line starting with a space or tab continues the previous one.
    lines = []
    for line in re.split(r"\r\n|\n|\r", text):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return lines


def _split(line):
    """``group.NAME;PARAM=X:value`` -> (NAME upper, [params upper], value)."""
    # The name and parameters end at the first colon outside double quotes.
    in_quote = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_quote = not in_quote
        elif ch == ":" and not in_quote:
            head, value = line[:i], line[i + 1:]
            break
    else:
        return None, [], ""
    parts = head.split(";")
    name = parts[0].rsplit(".", 1)[-1].strip().upper()
    return name, [p.strip().upper() for p in parts[1:]], value


def _decode_b64(text, where):
    compact = re.sub(r"\s+", "", text)
    if len(compact) > MAX_KEY_BYTES * 4 // 3 + 8:
        raise DataError(f"{where}: KEY is larger than {MAX_KEY_BYTES} bytes")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{where}: KEY is not valid base64") from None


def _key_value(params, value, where):
    uri = _DATA_URI.match(value.strip())
    if uri:
        mediatype = uri.group("type").strip().lower()
        if mediatype and mediatype not in ("application/pgp-keys", "application/pgp"):
            raise DataError(f"{where}: KEY has media type {mediatype}, expected application/pgp-keys")
        if "base64" not in uri.group("params").lower():
            raise DataError(f"{where}: KEY data URI is not base64")
        return _decode_b64(uri.group("data"), where)
    joined = ";".join(params)
    if "ENCODING=B" in joined or "ENCODING=BASE64" in joined or "BASE64" in params:
        return _decode_b64(value, where)
    raise DataError(f"{where}: KEY is neither a data: URI nor base64 (an URL to a key is not fetched)")


def parse(data, where="vCard"):
    """Return the list of Cards in ``data`` (bytes or str)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{where}: not UTF-8") from None
    cards = []
    current = None
    for line in _unfold(data):
        if not line.strip():
            continue
        name, params, value = _split(line)
        if name == "BEGIN" and value.strip().upper() == "VCARD":
            current = {"emails": [], "key": None}
        elif name == "END" and value.strip().upper() == "VCARD" and current is not None:
            cards.append(Card(current["emails"], current["key"]))
            current = None
        elif current is None:
            continue
        elif name == "EMAIL" and value.strip():
            current["emails"].append(value.strip().lower())
        elif name == "KEY" and current["key"] is None:
            current["key"] = _key_value(params, value, where)
    if not cards:
        raise DataError(f"{where}: no complete vCard (BEGIN:VCARD ... END:VCARD) found")
    return cards
