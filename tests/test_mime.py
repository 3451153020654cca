"""seccam.mime: the bytes of a camera message (docs/deltachat.md, chatmail filtermail)."""

import base64
import binascii
import datetime as dt
import email
import email.policy
import subprocess

import pytest

from helpers import sendkit
from seccam import mime

ENV = mime.Envelope(from_name="Front door", from_addr="cam@seccam.test", to=("owner@seccam.test",),
                    date=dt.datetime(2026, 11, 25, 19, 11, tzinfo=dt.timezone.utc),
                    message_id="<sc.abc@seccam.test>", subject="Motion: front")


# -- an independent port of chatmail filtermail's check (new packet format only, no partial lengths,
#    the armored payload framed by CRLF exactly as its older version requires) ----------------------
def filtermail_payload_ok(payload):
    i = 0
    while i < len(payload):
        if payload[i] & 0xC0 != 0xC0:
            return False
        tag = payload[i] & 0x3F
        i += 1
        if payload[i] < 192:
            length, i = payload[i], i + 1
        elif payload[i] < 224:
            length, i = ((payload[i] - 192) << 8) + payload[i + 1] + 192, i + 2
        elif payload[i] == 255:
            length, i = int.from_bytes(payload[i + 1:i + 5], "big"), i + 5
        else:
            return False
        i += length
        if i == len(payload):
            return tag == 18
        if tag not in (1, 3):
            return False
    return False


def filtermail_accepts(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if msg.get("subject") not in ("...", "[...]") or msg.get_content_type() != "multipart/encrypted":
        return False
    parts = list(msg.iter_parts())
    if len(parts) != 2 or any(p.is_multipart() for p in parts):
        return False
    if parts[0].get_content_type() != "application/pgp-encrypted" or parts[0].get_payload().strip() != "Version: 1":
        return False
    if parts[1].get_content_type() != "application/octet-stream":
        return False
    payload = parts[1].get_payload()
    prefix, suffix = "-----BEGIN PGP MESSAGE-----\r\n\r\n", "-----END PGP MESSAGE-----\r\n\r\n"
    if not payload.startswith(prefix) or not payload.endswith(suffix):
        return False
    body = payload.removeprefix(prefix).removesuffix(suffix).rpartition("=")[0]
    try:
        return filtermail_payload_ok(base64.b64decode(body))
    except (binascii.Error, IndexError):
        return False


@pytest.fixture(scope="module")
def keys():
    cam = sendkit.make_camera(recipients=("owner@seccam.test",))
    yield cam
    cam.close()


def test_gpg_output_reframed_passes_filtermail_and_still_decrypts(keys):
    gpg = keys.gpg()
    owner = keys.recipients[0]
    binary = gpg.encrypt_sign(b"x" * 200_000, [owner.fingerprint, keys.fingerprint], signer=keys.fingerprint,
                              armor=False)
    assert not filtermail_payload_ok(binary), "gpg 2.2 writes old-format/partial packets: reframing is needed"
    framed = mime.reframe(binary)
    assert filtermail_payload_ok(framed)
    assert mime.packet_tags(framed) == [1, 1, 18]
    plain, signer, _ = owner.decrypt(mime.armor(framed))
    assert plain == b"x" * 200_000 and signer == keys.fingerprint


def test_armor_is_read_back_by_gpg_with_checksum():
    data = bytes(range(256)) * 40
    armored = mime.armor(data)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\r\n\r\n")
    assert b"Version:" not in armored
    out = subprocess.run(["gpg", "--batch", "--dearmor"], input=armored, capture_output=True, check=True).stdout
    assert out == data
    assert mime.dearmor(armored) == data


def test_outer_message_has_the_delta_chat_headers_and_rfc3156_parts():
    armored = mime.armor(b"\xc1\x05\x03abcd\xd2\x03xyz")
    keydata = bytes(range(200)) * 3
    raw = mime.build_outer(ENV, f"addr=cam@seccam.test; prefer-encrypt=mutual; keydata="
                                f"{base64.b64encode(keydata).decode()}", armored)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")[:20])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert raw.startswith(b'From: "Front door" <cam@seccam.test>\r\n')
    assert msg["To"] == "owner@seccam.test"
    assert msg["Subject"] == "[...]"
    assert msg["Message-ID"] == "<sc.abc@seccam.test>"
    assert msg["Chat-Version"] == "1.0" and msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/encrypted"
    assert msg.get_param("protocol") == "application/pgp-encrypted"
    autocrypt = dict(mime.parse_key_header(str(msg["Autocrypt"])))
    assert autocrypt["addr"] == "cam@seccam.test" and autocrypt["prefer-encrypt"] == "mutual"
    assert base64.b64decode(autocrypt["keydata"]) == keydata
    assert filtermail_accepts(raw)


def test_inner_part_carries_protected_headers_text_and_attachment():
    att = mime.Attachment("front-20261125-191100.jpg", b"\xff\xd8" + bytes(range(256)) * 50 + b"\xff\xd9")
    raw = mime.build_inner(ENV, "Motion détectée\nCamera front", att)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed" and msg.get_param("protected-headers") == "v1"
    assert msg["Subject"] == "Motion: front" and msg["Chat-Version"] == "1.0"
    assert msg["From"].addresses[0].display_name == "Front door"
    assert msg["Date"] and msg["Message-ID"] == "<sc.abc@seccam.test>" and msg["To"] == "owner@seccam.test"
    assert "Chat-Group-ID" not in msg and "Autocrypt-Gossip" not in msg
    text, image = msg.iter_parts()
    assert text.get_content().replace("\r\n", "\n").rstrip("\n") == "Motion détectée\nCamera front"
    assert image.get_content_type() == "image/jpeg"
    assert image.get_content_disposition() == "attachment"
    assert image.get_filename() == "front-20261125-191100.jpg"
    assert image.get_content() == att.data


def test_group_headers_and_gossip_only_when_given():
    group = mime.Group("AbCdEfGhIjK_-1", "Haus", ("A" * 40, "B" * 40))
    raw = mime.build_inner(ENV, "x", gossip=[("a@seccam.test", b"key-a"), ("b@seccam.test", b"key-b")], group=group)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Chat-Group-ID"] == "AbCdEfGhIjK_-1" and msg["Chat-Group-Name"] == "Haus"
    assert msg["Chat-Group-Member-Fpr"] == "A" * 40 + " " + "B" * 40
    gossip = [dict(mime.parse_key_header(str(v))) for v in msg.get_all("Autocrypt-Gossip")]
    assert [(g["addr"], base64.b64decode(g["keydata"])) for g in gossip] == [("a@seccam.test", b"key-a"),
                                                                             ("b@seccam.test", b"key-b")]
    assert all("prefer-encrypt" not in g for g in gossip)


def test_non_ascii_display_name_and_subject_are_encoded_words():
    env = mime.Envelope("Haustür", "cam@seccam.test", ("o@seccam.test",), ENV.date, "<x@y>", "Bewegung: Tür")
    raw = mime.build_inner(env, "x")
    assert raw.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].display_name == "Haustür" and msg["Subject"] == "Bewegung: Tür"


def test_message_id_is_deterministic_and_opaque():
    a = mime.make_message_id("seccam.test", "FPR", "set1", 0, "front", "preview")
    assert a == mime.make_message_id("seccam.test", "FPR", "set1", 0, "front", "preview")
    assert a != mime.make_message_id("seccam.test", "FPR", "set1", 1, "front", "full")
    assert "front" not in a and a.endswith("@seccam.test>")


def test_unsafe_attachment_name_is_refused():
    with pytest.raises(ValueError):
        mime.build_inner(ENV, "x", mime.Attachment("../etc/passwd", b"x"))


def test_key_header_parsing_ignores_empty_fields():
    assert mime.parse_key_header("addr=a@seccam.test;; prefer-encrypt=mutual; keydata=a2V5\r\n ZGF0YQ==;") == [
        ("addr", "a@seccam.test"), ("prefer-encrypt", "mutual"), ("keydata", "a2V5ZGF0YQ==")]


def test_autocrypt_fields_say_prefer_encrypt_mutual_unless_told_not_to():
    assert mime.autocrypt_fields("a@seccam.test", b"key") == [
        ("addr", "a@seccam.test"), ("prefer-encrypt", "mutual"), ("keydata", "a2V5")]
    assert ("prefer-encrypt", "mutual") not in mime.autocrypt_fields("a@seccam.test", b"key", prefer_encrypt=False)


@pytest.mark.parametrize("name, value", [("Bad Name", "x"), ("Secure-Join", "two\r\nlines"), ("X", "é")])
def test_unsafe_protected_headers_are_refused(name, value):
    with pytest.raises(ValueError, match="unsafe protected header"):
        mime.build_inner(ENV, "x", headers=[(name, value)])


def test_an_armored_payload_without_a_final_line_break_still_ends_its_line():
    armored = mime.armor(b"\xc1\x05\x03abcd\xd2\x03xyz").rstrip(b"\r\n")
    raw = mime.build_outer(ENV, "addr=cam@seccam.test; keydata=a2V5", armored)
    assert b"-----END PGP MESSAGE-----\r\n\r\n\r\n--sc-" in raw  # as with a CRLF-terminated payload
    assert filtermail_accepts(raw)


def test_packet_framing_reads_every_length_form_and_refuses_garbage():
    big = b"a" * 9000
    five_octet = bytes([0xC0 | 11, 0xFF]) + len(big).to_bytes(4, "big") + big
    assert mime.packet_tags(five_octet) == [11] and mime.reframe(five_octet) == five_octet
    indeterminate = bytes([0x80 | (11 << 2) | 3]) + b"literal to the end"
    assert mime.reframe(indeterminate) == bytes([0xC0 | 11, 18]) + b"literal to the end"
    with pytest.raises(ValueError, match="not an OpenPGP packet at offset 0"):
        mime.packet_tags(b"\x00garbage")
    with pytest.raises(ValueError, match="truncated OpenPGP packet"):
        mime.packet_tags(bytes([0x80 | (11 << 2) | 0, 10]) + b"abc")


def test_dearmor_refuses_text_that_is_not_armored():
    with pytest.raises(ValueError, match="not ASCII-armored"):
        mime.dearmor(b"hello\r\n")
