"""seccam.autocrypt: header parsing and building, and the Level 1 update rules with a real key store."""

import base64
import email
import email.message
import email.policy
import email.utils
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from helpers.gpghome import OwnerKey, short_dir  # noqa: E402,F401
from seccam import autocrypt, errors  # noqa: E402
from seccam.autocrypt import AutocryptError, Ignored, build_header, parse_header, process_incoming  # noqa: E402
from seccam.keys import KeyStore, Outcome  # noqa: E402

OWNER = "owner@example.org"
CAM = "cam@example.org"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def owner():
    key = OwnerKey(OWNER)
    yield key
    key.close()


@pytest.fixture(scope="module")
def forger():
    key = OwnerKey(OWNER)
    yield key
    key.close()


@pytest.fixture
def store(short_dir):
    return KeyStore(short_dir, allowed=lambda a: a == OWNER)


def message(keydata=None, sender=OWNER, addr=OWNER, date=NOW - 60, headers=None, extra=()):
    msg = email.message.EmailMessage()
    msg["From"] = f"Owner <{sender}>"
    msg["To"] = CAM
    if date is not None:
        msg["Date"] = email.utils.formatdate(date)
    for value in headers if headers is not None else [build_header(addr, keydata)]:
        msg["Autocrypt"] = value
    for name, value in extra:
        msg[name] = value
    msg.set_content("hi")
    # What the inbox sees: the bytes as they arrive, parsed again.
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)


B64 = base64.b64encode(b"\x99\x01key").decode()


# -- parsing ----------------------------------------------------------------------
def test_parse_valid_header_with_folding_whitespace():
    h = parse_header(f"addr=Owner@Example.ORG; prefer-encrypt=mutual; keydata=\r\n {B64[:4]}\r\n {B64[4:]}")
    assert (h.addr, h.prefer_encrypt, h.keydata) == (OWNER, "mutual", b"\x99\x01key")


def test_parse_defaults_and_unknown_prefer_encrypt_mean_no_preference():
    assert parse_header(f"addr={OWNER}; keydata={B64}").prefer_encrypt == "nopreference"
    assert parse_header(f"addr={OWNER}; prefer-encrypt=yes-please; keydata={B64}").prefer_encrypt == "nopreference"


def test_parse_ignores_non_critical_attributes():
    assert parse_header(f"addr={OWNER}; _verified=1; _x=y; keydata={B64}").addr == OWNER


@pytest.mark.parametrize("value, why", [
    (f"addr={OWNER}; type=1; keydata={B64}", "unknown critical"),
    (f"addr={OWNER}; keydata=!!notbase64!!", "not valid base64"),
    (f"addr={OWNER}; keydata=QUJDR", "not valid base64"),
    (f"addr={OWNER}", "without keydata"),
    (f"keydata={B64}", "without addr"),
    (f"addr={OWNER}; addr=x@example.org; keydata={B64}", "given twice"),
    (f"addr={OWNER}; broken; keydata={B64}", "without a value"),
    (f"addr=not-an-address; keydata={B64}", "not an address"),
    (f"addr={OWNER}; keydata=" + "A" * (autocrypt.MAX_KEYDATA * 4 // 3 + 8), "larger than"),
    ("addr=a@b.c; keydata=" + "A" * autocrypt.MAX_HEADER_CHARS, "too large"),
])
def test_parse_rejects_invalid_headers(value, why):
    with pytest.raises(AutocryptError, match=why) as info:
        parse_header(value)
    assert isinstance(info.value, errors.DataError)


# -- building ---------------------------------------------------------------------
@pytest.mark.parametrize("size", [33, 400, 3000])
@pytest.mark.parametrize("policy", [email.policy.SMTP, email.policy.default, email.policy.compat32])
def test_built_header_survives_any_email_policy(size, policy):
    keydata = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
    msg = email.message.EmailMessage(policy=policy) if policy is not email.policy.compat32 else email.message.Message()
    msg["From"] = CAM
    msg["Autocrypt"] = build_header(CAM, keydata)
    raw = msg.as_bytes(policy=policy)
    assert b"=?" not in raw
    assert max(len(line) for line in raw.splitlines()) <= 78
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    header = parse_header(parsed["Autocrypt"])
    assert (header.addr, header.prefer_encrypt, header.keydata) == (CAM, "mutual", keydata)


def test_gossip_header_has_no_prefer_encrypt():
    value = build_header(OWNER, b"key", prefer_encrypt=None)
    assert "prefer-encrypt" not in value and parse_header(value).keydata == b"key"


def test_build_rejects_bad_input():
    for args in [(OWNER, b""), ("two words@example.org", b"k"), (OWNER, b"k" * (autocrypt.MAX_KEYDATA + 1))]:
        with pytest.raises(ValueError):
            build_header(*args)


# -- the update rules ---------------------------------------------------------------
def test_first_header_offers_the_key_for_a_person_to_accept_but_never_pins_it(store, owner):
    assert process_incoming(message(owner.export()), store, NOW) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] is None
    assert [(p["fingerprint"], p["source"], p["verified"]) for p in rec["pending"]] == [(owner.fpr, "autocrypt", False)]
    assert rec["last_seen"] == autocrypt_iso(NOW - 60)


def pin(store, key):
    """A person on the Pi imported the key (the only way besides a verified invite)."""
    assert store.import_key(OWNER, key.export(), "file") == Outcome.PINNED


def autocrypt_iso(ts):
    import datetime as dt
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_forged_message_with_other_key_leaves_pin_and_records_pending(store, owner, forger):
    pin(store, owner)
    assert process_incoming(message(owner.export()), store, NOW) == Outcome.UNCHANGED
    assert process_incoming(message(forger.export(), date=NOW), store, NOW + 1) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] == owner.fpr
    assert [p["fingerprint"] for p in rec["pending"]] == [forger.fpr]
    assert store.encryption_fingerprints([OWNER]) == {OWNER: owner.fpr}


def test_new_key_in_mail_signed_by_pinned_key_is_only_a_verified_pending_change(store, owner, forger):
    """The owner's new key arrives in mail signed by the old one: a person still decides."""
    cam = store.gpg
    cam_fpr = cam.generate_camera_key(CAM)
    pin(store, owner)
    inner = message(forger.export(), date=NOW)  # the "new device" key, in a header of the signed message
    armored = owner.encrypt_sign(inner.as_bytes(), cam.export_minimal(cam_fpr))
    plaintext, signer, _ = cam.decrypt_verify(armored)
    assert signer == owner.fpr
    decrypted = email.message_from_bytes(plaintext, policy=email.policy.default)
    assert process_incoming(decrypted, store, NOW + 1, verified=True) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] == owner.fpr
    assert [(p["fingerprint"], p["source"], p["verified"]) for p in rec["pending"]] == \
        [(forger.fpr, "autocrypt-signed", True)]


def test_addr_must_equal_from(store, owner):
    msg = message(owner.export(), sender="other@example.org")
    assert process_incoming(msg, store, NOW) == Ignored.ADDR_MISMATCH
    assert store.record(OWNER) is None


def test_addr_is_compared_case_insensitively(store, owner):
    assert process_incoming(message(owner.export(), sender="OWNER@example.ORG"), store, NOW) == Outcome.PENDING


def test_two_headers_are_ignored(store, owner, forger):
    msg = message(headers=[build_header(OWNER, owner.export()), build_header(OWNER, forger.export())])
    assert process_incoming(msg, store, NOW) == Ignored.SEVERAL_HEADERS
    assert store.record(OWNER) is None


def test_no_header_is_ignored(store):
    assert process_incoming(message(headers=[]), store, NOW) == Ignored.NO_HEADER


def test_older_message_is_ignored(store, owner, forger):
    pin(store, owner)
    process_incoming(message(owner.export(), date=NOW - 60), store, NOW)
    assert process_incoming(message(forger.export(), date=NOW - 3600), store, NOW) == Outcome.STALE
    assert store.record(OWNER)["pending"] == []


def test_future_date_counts_as_now(store, owner, forger):
    process_incoming(message(owner.export(), date=NOW + 86400), store, NOW)
    assert store.record(OWNER)["last_seen"] == autocrypt_iso(NOW)
    # a later message dated correctly is not "older" than a forged future date
    assert process_incoming(message(forger.export(), date=NOW + 10), store, NOW + 10) == Outcome.PENDING


def test_missing_or_bad_date_counts_as_now(store, owner):
    msg = message(owner.export(), date=None)
    assert autocrypt.effective_date(msg, NOW) == NOW
    msg = message(owner.export(), date=None, extra=[("Date", "not a date")])
    assert autocrypt.effective_date(msg, NOW) == NOW
    assert process_incoming(msg, store, NOW) == Outcome.PENDING


@pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "Auto-Replied; owner-email=x"])
def test_auto_replies_are_ignored(store, owner, value):
    msg = message(owner.export(), extra=[("Auto-Submitted", value)])
    assert process_incoming(msg, store, NOW) == Ignored.AUTO_REPLY
    assert store.record(OWNER) is None


def test_auto_submitted_no_is_processed(store, owner):
    assert process_incoming(message(owner.export(), extra=[("Auto-Submitted", "no")]), store, NOW) == Outcome.PENDING


def test_multipart_report_is_ignored(store, owner):
    raw = (f"From: {OWNER}\r\nTo: {CAM}\r\nAutocrypt: {build_header(OWNER, owner.export())}\r\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\ndelivery failed\r\n"
           "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
           "Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--b--\r\n")
    parsed = email.message_from_bytes(raw.encode(), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert process_incoming(parsed, store, NOW) == Ignored.REPORT
    assert store.record(OWNER) is None


@pytest.mark.parametrize("header", [
    f"addr={OWNER}; keydata=!!!",
    f"addr={OWNER}; critical=1; keydata={B64}",
    f"addr={OWNER}; keydata=" + "QUFB" * (autocrypt.MAX_KEYDATA // 3 + 10),
])
def test_invalid_headers_are_ignored(store, header):
    assert process_incoming(message(headers=[header]), store, NOW) == Ignored.INVALID_HEADER
    assert store.record(OWNER) is None


def test_valid_base64_that_is_no_key_is_bad_key(store):
    assert process_incoming(message(b"\x99\x00 not a key"), store, NOW) == Ignored.BAD_KEY


def test_sender_who_is_not_a_recipient_is_ignored(store, owner):
    msg = message(owner.export(), sender="stranger@example.org", addr="stranger@example.org")
    assert process_incoming(msg, store, NOW) == Ignored.NOT_RECIPIENT


def test_from_with_two_addresses_is_ignored(store, owner):
    msg = message(owner.export())
    msg.replace_header("From", f"{OWNER}, other@example.org")
    assert process_incoming(msg, store, NOW) == Ignored.NO_FROM


def test_outcomes_are_strings_for_the_log():
    assert f"result={Ignored.AUTO_REPLY}" == "result=auto-reply"
    assert f"result={Outcome.PENDING}" == "result=pending"


def test_a_header_shows_its_key_size_not_the_key():
    header = autocrypt.parse_header("addr=a@example.org; keydata=" + base64.b64encode(b"secret-ish key").decode())
    assert repr(header) == "Header(addr='a@example.org', prefer_encrypt='nopreference', keydata=14 bytes)"


def test_a_header_object_is_parsed_as_its_text(owner):
    from email.header import Header
    header = parse_header(Header(build_header(OWNER, owner.export())))
    assert header.addr == OWNER and header.keydata == owner.export()
