"""The bytes of a camera message: PGP/MIME as Delta Chat and chatmail relays accept it.

This module owns the message format of docs/deltachat.md ("Recommended
format"). It never talks to GnuPG: :func:`build_inner` makes the plaintext MIME
entity that gets signed and encrypted, :func:`build_outer` wraps the ciphertext
in the two RFC 3156 parts. Everything is built by hand with CRLF line ends so
that the bytes are exactly what was tested:

* outer: ``From``, ``To``, ``Date``, ``Message-ID``, ``Subject: [...]``,
  ``MIME-Version``, ``Chat-Version: 1.0``, ``Autocrypt`` (the camera's key),
  ``multipart/encrypted; protocol="application/pgp-encrypted"``;
* inner: ``multipart/mixed; protected-headers="v1"`` with the real ``Subject``,
  ``From``, ``To``, ``Date``, ``Message-ID``, ``Chat-Version`` (plus the group
  headers and ``Autocrypt-Gossip`` for several recipients), a text/plain part
  and at most one attachment.

Chatmail's filtermail accepts an armored payload only if it starts with
``-----BEGIN PGP MESSAGE-----`` + an empty line (no armor headers), ends with
``-----END PGP MESSAGE-----`` + an empty line, and its packets are PKESK/SKESK
then one SEIPD, all in the new packet format with definite lengths. GnuPG 2.2
writes the PKESK with an old-format header and the SEIPD with partial lengths,
so :func:`reframe` rewrites the packet *framing* (never the packet bodies,
which the MDC and signatures cover) and :func:`armor` does the armoring.
"""

import base64
import dataclasses
import datetime as _dt
import email.utils
import hashlib
import quopri
import re
import secrets
from email.header import Header

CRLF = b"\r\n"
ENCRYPTED_SUBJECT = "[...]"


@dataclasses.dataclass(frozen=True)
class Envelope:
    """The headers a message shows inside (protected) and, partly, outside."""

    from_name: str
    from_addr: str
    to: tuple
    date: _dt.datetime
    message_id: str  # with the angle brackets
    subject: str


@dataclasses.dataclass(frozen=True)
class Group:
    """An encrypted Delta Chat group: its id, name and the members' fingerprints in ``To:`` order."""

    group_id: str
    name: str
    member_fprs: tuple


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    content_type: str = "image/jpeg"


# -- headers ---------------------------------------------------------------------
def _ascii_or_encoded(text):
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return Header(text, "utf-8").encode()
    return text


def format_address(name, addr):
    """``"Name" <addr>``, RFC 2047-encoding a non-ASCII name."""
    if not name:
        return addr
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{addr}>'
    return email.utils.formataddr((name, addr), charset="utf-8")


def format_date(when):
    return email.utils.format_datetime(when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc))


def make_message_id(domain, *parts):
    """A Message-ID derived from ``parts``: the same message built twice gets the same id.

    Delta Chat drops a message whose Message-ID it already has, so a message
    encrypted again after a crash is not shown twice. The hash keeps camera
    names and times out of the (unencrypted) outer header.
    """
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    token = base64.b32encode(digest[:20]).decode().lower()
    return f"<sc.{token}@{domain}>"


def _line(name, value):
    return f"{name}: {value}".encode("utf-8") + CRLF


def _fold_key_header(name, fields):
    """An Autocrypt-style header (``addr=...; keydata=BASE64``) folded to lines of <= 78 chars.

    The key data goes on continuation lines; receivers drop the folding white
    space from keydata (Autocrypt Level 1, 2.1).
    """
    head = [f"{k}={v}" for k, v in fields if k != "keydata"]
    keydata = next(v for k, v in fields if k == "keydata")
    keydata = re.sub(r"\s+", "", keydata)
    out = f"{name}: " + "; ".join(head) + "; keydata="
    chunks = [keydata[i:i + 76] for i in range(0, len(keydata), 76)]
    return (out + "".join("\r\n " + c for c in chunks)).encode("ascii") + CRLF


def parse_key_header(value):
    """Split an Autocrypt header value into ``[(key, value), ...]`` (whitespace folding removed)."""
    fields = []
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition("=")
        key = key.strip()
        fields.append((key, re.sub(r"\s+", "", val) if key == "keydata" else val.strip()))
    return fields


def autocrypt_fields(addr, keydata, prefer_encrypt=True):
    fields = [("addr", addr)]
    if prefer_encrypt:
        fields.append(("prefer-encrypt", "mutual"))
    fields.append(("keydata", base64.b64encode(keydata).decode("ascii")))
    return fields


def _common_headers(env, to=None):
    return (_line("From", format_address(env.from_name, env.from_addr))
            + _line("To", ", ".join(env.to if to is None else to))
            + _line("Date", format_date(env.date))
            + _line("Message-ID", env.message_id))


def _boundary():
    return "sc-" + secrets.token_hex(12)


# -- inner (protected) part -----------------------------------------------------------
def _text_part(text):
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    raw = text.encode("utf-8")
    if raw.isascii() and all(len(line) <= 998 for line in raw.split(CRLF)):
        cte, body = "7bit", raw
    else:
        # quopri works on LF lines (a CR would become "=0D"); the wire form is CRLF again.
        encoded = quopri.encodestring(raw.replace(CRLF, b"\n"))
        cte, body = "quoted-printable", encoded.replace(b"\n", CRLF)
    return (b'Content-Type: text/plain; charset="utf-8"' + CRLF
            + _line("Content-Transfer-Encoding", cte) + CRLF + body)


def _attachment_part(att):
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", att.filename):
        raise ValueError(f"unsafe attachment file name {att.filename!r}")
    body = base64.encodebytes(att.data).replace(b"\n", CRLF)
    return (_line("Content-Type", f'{att.content_type}; name="{att.filename}"')
            + _line("Content-Disposition", f'attachment; filename="{att.filename}"')
            + b"Content-Transfer-Encoding: base64" + CRLF + CRLF + body)


def build_inner(env, text, attachment=None, group=None, gossip=(), headers=()):
    """The plaintext MIME entity to sign and encrypt (bytes, CRLF).

    ``gossip`` is ``[(address, keydata_bytes), ...]`` for ``Autocrypt-Gossip``
    (the encrypt step passes it only with ``group``; Secure-Join replies
    gossip the joiner's key in a 1:1 message). ``headers`` are extra protected
    headers ``[(name, ascii value), ...]`` (e.g. ``Secure-Join``).
    """
    boundary = _boundary()
    out = bytearray()
    out += _line("Content-Type", f'multipart/mixed; protected-headers="v1";\r\n boundary="{boundary}"')
    out += _line("Subject", _ascii_or_encoded(env.subject))
    out += _common_headers(env)
    out += _line("Chat-Version", "1.0")
    for name, value in headers:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,76}", name) or not re.fullmatch(r"[\x20-\x7e]{0,900}", value):
            raise ValueError(f"unsafe protected header {name!r}")
        out += _line(name, value)
    if group is not None:
        out += _line("Chat-Group-ID", group.group_id)
        out += _line("Chat-Group-Name", _ascii_or_encoded(group.name))
        out += _line("Chat-Group-Member-Fpr", " ".join(group.member_fprs))
    for addr, keydata in gossip:
        out += _fold_key_header("Autocrypt-Gossip", autocrypt_fields(addr, keydata, prefer_encrypt=False))
    out += CRLF
    for part in [_text_part(text)] + ([_attachment_part(attachment)] if attachment else []):
        out += b"--" + boundary.encode() + CRLF + part
        if not part.endswith(CRLF):  # pragma: no cover - both part builders end with CRLF; kept so that
            out += CRLF               # a new kind of part can never glue its last line to the delimiter
    out += b"--" + boundary.encode() + b"--" + CRLF
    return bytes(out)


# -- outer part -----------------------------------------------------------------------
def build_outer(env, autocrypt_value, armored, to=None):
    """The complete RFC 5322 message (bytes, CRLF): outer headers + the two RFC 3156 parts.

    ``autocrypt_value`` is the ``Autocrypt:`` header value for the camera
    (``addr=...; prefer-encrypt=mutual; keydata=...``); ``armored`` comes from
    :func:`armor`. ``to`` replaces ``env.to`` in the outer ``To:`` (which is also
    the SMTP envelope): a group message delivered to one member only.
    """
    boundary = _boundary()
    if not armored.endswith(CRLF):
        armored += CRLF
    out = bytearray()
    out += _common_headers(env, to)
    out += _line("Subject", ENCRYPTED_SUBJECT)
    out += _line("MIME-Version", "1.0")
    out += _line("Chat-Version", "1.0")
    out += _fold_key_header("Autocrypt", parse_key_header(autocrypt_value))
    out += _line("Content-Type", 'multipart/encrypted; protocol="application/pgp-encrypted";'
                 f'\r\n boundary="{boundary}"')
    out += CRLF
    out += b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)" + CRLF
    out += b"--" + boundary.encode() + CRLF
    out += b"Content-Type: application/pgp-encrypted" + CRLF
    out += b"Content-Description: PGP/MIME version identification" + CRLF + CRLF
    out += b"Version: 1" + CRLF + CRLF
    out += b"--" + boundary.encode() + CRLF
    out += b'Content-Type: application/octet-stream; name="encrypted.asc"' + CRLF
    out += b"Content-Description: OpenPGP encrypted message" + CRLF
    out += b'Content-Disposition: inline; filename="encrypted.asc"' + CRLF + CRLF
    # The empty line after the END line belongs to the payload (older filtermail requires it);
    # the CRLF before the closing delimiter belongs to the delimiter.
    out += armored + CRLF + CRLF
    out += b"--" + boundary.encode() + b"--" + CRLF
    return bytes(out)


# -- OpenPGP framing --------------------------------------------------------------------
def packets(binary):
    """Yield ``(tag, body)`` for each top-level packet, joining partial-length chunks."""
    i, n = 0, len(binary)
    while i < n:
        ctb = binary[i]
        i += 1
        if not ctb & 0x80:
            raise ValueError(f"not an OpenPGP packet at offset {i - 1}")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            body = bytearray()
            while True:
                first = binary[i]
                if first < 192:
                    length, i = first, i + 1
                elif first < 224:
                    length, i = ((first - 192) << 8) + binary[i + 1] + 192, i + 2
                elif first == 255:
                    length, i = int.from_bytes(binary[i + 1:i + 5], "big"), i + 5
                else:  # partial body length: a chunk, then more length octets
                    chunk = 1 << (first & 0x1F)
                    body += binary[i + 1:i + 1 + chunk]
                    i += 1 + chunk
                    continue
                body += binary[i:i + length]
                i += length
                break
        else:  # old format
            tag = (ctb >> 2) & 0x0F
            ltype = ctb & 0x03
            if ltype == 3:
                body, i = binary[i:], n
            else:
                size = (1, 2, 4)[ltype]
                length = int.from_bytes(binary[i:i + size], "big")
                i += size
                body = binary[i:i + length]
                i += length
        if i > n:
            raise ValueError("truncated OpenPGP packet")
        yield tag, bytes(body)


def _new_header(tag, length):
    if length < 192:
        size = bytes([length])
    elif length < 8384:
        length -= 192
        size = bytes([(length >> 8) + 192, length & 0xFF])
    else:
        size = b"\xff" + length.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + size


def reframe(binary):
    """Rewrite the top-level packet headers in the new format with definite lengths.

    Only the framing changes; each packet body is kept byte for byte.
    """
    out = bytearray()
    for tag, body in packets(binary):
        out += _new_header(tag, len(body)) + body
    return bytes(out)


def packet_tags(binary):
    return [tag for tag, _ in packets(binary)]


def _crc24_table():
    """RFC 4880 6.1's CRC-24, one table entry per byte value."""
    table = []
    for value in range(256):
        crc = value << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


def _crc24(data, table=_CRC24_TABLE):
    # Table-driven: the bit-by-bit loop cost 164 ms for one 333 kB image in
    # pure Python, eight times gpg's own time (docs/performance.md).
    crc = 0xB704CE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


def armor(binary):
    """ASCII armor (RFC 4880 6.2) for a PGP MESSAGE: no armor headers, CRLF, 64 columns."""
    b64 = base64.b64encode(binary)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    crc = base64.b64encode(_crc24(binary).to_bytes(3, "big"))
    return (b"-----BEGIN PGP MESSAGE-----" + CRLF + CRLF + CRLF.join(lines) + CRLF
            + b"=" + crc + CRLF + b"-----END PGP MESSAGE-----" + CRLF)


def dearmor(armored):
    """The binary inside an armored block (armor headers and checksum dropped)."""
    text = armored.decode("ascii") if isinstance(armored, bytes) else armored
    lines = text.replace("\r\n", "\n").strip().split("\n")
    if not lines[0].startswith("-----BEGIN PGP"):
        raise ValueError("not ASCII-armored")
    body = lines[1:lines.index(next(ln for ln in lines if ln.startswith("-----END PGP")))]
    if "" in body:
        body = body[body.index("") + 1:]
    return base64.b64decode("".join(ln for ln in body if not ln.startswith("=")))
