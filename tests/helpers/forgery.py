"""Attack material for the key-authority tests: what an outsider can build.

Everything here uses real gpg. The people:

* the *owner*: a recipient whose key the camera has pinned; sends mail the way
  Delta Chat does (PGP/MIME, signed and encrypted in one pass, protected
  headers inside: ``From``, ``To``, ``Date``, ``Message-ID``, ``Autocrypt``);
* the *attacker* (Mallory): knows the camera's address and public key (both are
  in every camera message), has a key of his own, may be a member of the
  family group or the camera's mail provider (so he sees ciphertexts), and may
  get ordinary encrypted mail from the owner.

Functions return raw RFC 5322 bytes ready for SMTP.
"""

import datetime as _dt
import os
import subprocess
import tempfile

from seccam import autocrypt, mime


def _now():
    return _dt.datetime.now(_dt.timezone.utc)


def inner_message(sender, to, text="hello camera", autocrypt_keydata=None, date=None, message_id=None,
                  extra_headers=()):
    """The protected inner part of a chat message (what gets signed and encrypted)."""
    env = mime.Envelope(from_name="", from_addr=sender, to=tuple(to), date=date or _now(),
                        message_id=message_id or f"<{os.urandom(8).hex()}@seccam.test>", subject="chat")
    headers = list(extra_headers)
    if autocrypt_keydata is not None:
        headers.append(("Autocrypt", autocrypt.build_header(sender, autocrypt_keydata)))
    return mime.build_inner(env, text, headers=tuple(headers))


def wrap(armored, sender, to, autocrypt_value, message_id=None, date=None):
    """An RFC 3156 message around ``armored`` with the outer headers given (any of them forged)."""
    env = mime.Envelope(from_name="", from_addr=sender, to=tuple(to), date=date or _now(),
                        message_id=message_id or f"<{os.urandom(8).hex()}@seccam.test>", subject="[...]")
    armored = armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return mime.build_outer(env, autocrypt_value, armored)


def chat_message(gpg, signer, recipients_fprs, sender, to, **inner_kw):
    """A message as the owner's Delta Chat sends it: (raw, armored ciphertext)."""
    inner = inner_message(sender, to, autocrypt_keydata=gpg.export_minimal(signer), **inner_kw)
    armored = gpg.encrypt_sign(inner, list(recipients_fprs), signer=signer)
    raw = wrap(armored, sender, to, autocrypt.build_header(sender, gpg.export_minimal(signer)))
    return raw, armored


def armored_of(raw):
    """The armored OpenPGP message inside an RFC 3156 message."""
    start = raw.index(b"-----BEGIN PGP MESSAGE-----")
    end = raw.index(b"-----END PGP MESSAGE-----") + len(b"-----END PGP MESSAGE-----")
    return raw[start:end] + b"\r\n"


def _gpg(home, *args, data):
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--trust-model", "always", *args],
                          input=data, capture_output=True, check=True).stdout


def unwrap(home, armored):
    """``gpg --unwrap``: the signed packets inside an encrypted message, as its recipient gets them."""
    return _gpg(home, "--unwrap", data=armored)


def rewrap(home, packets, recipient_fprs):
    """Encrypt already-signed packets to other recipients without touching them (``--no-literal``)."""
    args = []
    for fpr in recipient_fprs:
        args += ["-r", fpr]
    return _gpg(home, "--armor", "--no-literal", "--encrypt", *args, data=packets)


def bad_signature(home, signer, recipient_fprs, plaintext):
    """Valid encryption around a one-pass signed message whose literal data was changed after signing."""
    signed = _gpg(home, "--sign", "--local-user", signer, "--compress-algo", "none", data=plaintext)
    marker = plaintext[-16:]
    assert marker in signed, "the literal data must be visible to tamper with it"
    tampered = signed.replace(marker, bytes(b ^ 0x01 for b in marker), 1)
    return rewrap(home, tampered, recipient_fprs)


def short_home(prefix="scx"):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")
