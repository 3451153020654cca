"""seccam.encrypt: image sets -> encrypted messages in outbox/new (real gpg, short homes)."""

import base64
import email
import email.policy
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from helpers import sendkit
from helpers.mailfixtures import check_pgp_mime
from seccam import encrypt, mime

SET1 = "20261125T191100.000001Z.11.aaaa-alarm"
SET2 = "20261125T191200.000001Z.12.bbbb-alarm"


@pytest.fixture
def cam():
    c = sendkit.make_camera(recipients=("owner@seccam.test",))
    yield c
    c.close()


@pytest.fixture
def group_cam():
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"))
    yield c
    c.close()


def outbox(spool):
    return [p.name for p in spool.items("outbox.new")]


def open_message(path, recipient):
    raw = path.read_bytes()
    outer = email.message_from_bytes(raw, policy=email.policy.default)
    inner, signer = sendkit.decrypt_message(raw, recipient)
    return raw, outer, inner, signer


def image_of(inner):
    parts = list(inner.iter_parts())
    images = [p for p in parts if p.get_content_type() == "image/jpeg"]
    return images[0].get_content() if images else None


def text_of(inner):
    return next(p for p in inner.iter_parts() if p.get_content_type() == "text/plain").get_content()


def test_alarm_set_becomes_every_preview_then_every_full_image_and_plaintext_is_removed(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET2)
    sendkit.make_set(spool, SET1)
    result = encrypt.process(cam.config, spool)
    assert (result.sets, result.messages) == (2, 8)
    assert outbox(spool) == [f"{s}.{nn}" for s in (SET1, SET2) for nn in
                             ("00.front.preview.eml", "01.yard.preview.eml", "02.front.full.eml", "03.yard.full.eml")]
    for state in ("sets.ready", "sets.active", "sets.held", "corrupt"):
        assert spool.items(state) == []
    assert list(spool.dir("tmp").iterdir()) == []


def test_messages_decrypt_for_the_owner_signed_by_the_camera_with_identical_images(cam):
    spool = cam.spool
    _, files = sendkit.make_set(spool, SET1)
    encrypt.process(cam.config, spool)
    owner = cam.recipients[0]
    expected = ["front.preview.jpg", "yard.preview.jpg", "front.jpg", "yard.jpg"]
    for path, fname in zip(spool.items("outbox.new"), expected):
        raw, outer, inner, signer = open_message(path, owner)
        assert check_pgp_mime(raw, gnupghome=str(owner.home), signer=cam.fingerprint) == []
        assert signer == cam.fingerprint
        assert raw.startswith(b'From: "Front door" <cam@seccam.test>\r\n')
        assert outer["To"] == "owner@seccam.test" and outer["Subject"] == "[...]"
        assert outer["Chat-Version"] == "1.0" and outer["Date"] == "Wed, 25 Nov 2026 19:11:00 +0000"
        ac = dict(mime.parse_key_header(str(outer["Autocrypt"])))
        assert ac["addr"] == "cam@seccam.test" and ac["prefer-encrypt"] == "mutual"
        assert base64.b64decode(ac["keydata"]) == cam.gpg().export_minimal(cam.fingerprint)
        for header in ("From", "To", "Date", "Message-ID"):
            assert str(inner[header]) == str(outer[header])
        assert inner.get_param("protected-headers") == "v1" and inner["Chat-Version"] == "1.0"
        assert inner["Subject"].startswith("Motion: ")
        assert "Chat-Group-ID" not in inner and "Autocrypt-Gossip" not in inner
        assert hashlib.sha256(image_of(inner)).digest() == hashlib.sha256(files[fname]).digest()
        # the plaintext JPEG is nowhere in the ciphertext
        assert files[fname][4:40] not in raw


def test_camera_can_read_its_own_messages(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    encrypt.process(cam.config, spool)
    raw = spool.items("outbox.new")[0].read_bytes()
    armored = email.message_from_bytes(raw, policy=email.policy.default).get_payload()[1].get_payload(decode=True)
    plain, signer, _ = cam.gpg().decrypt_verify(armored)
    assert signer == cam.fingerprint and b"protected-headers" in plain


def test_payload_is_one_pass_pkesk_then_seipd_in_the_format_filtermail_accepts(cam):
    from test_mime import filtermail_accepts
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    encrypt.process(cam.config, spool)
    raw = spool.items("outbox.new")[0].read_bytes()
    assert filtermail_accepts(raw)
    armored = email.message_from_bytes(raw, policy=email.policy.default).get_payload()[1].get_payload(decode=True)
    listing = subprocess.run(["gpg", "--homedir", str(cam.home), "--batch", "--list-packets"], input=armored,
                             capture_output=True).stdout.decode()
    top = [line for line in listing.splitlines() if line.startswith(":")]
    # owner + camera: two PKESKs, then one SEIPD holding the one-pass signature and the data
    assert top[0].startswith(":pubkey enc packet") and top[1].startswith(":pubkey enc packet")
    assert top[2].startswith(":encrypted data packet")
    assert ":onepass_sig packet" in listing
    assert "aead" not in listing.lower()


def test_failed_camera_is_named_in_the_first_message(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", False), ("yard", True)))
    encrypt.process(cam.config, spool)
    assert outbox(spool) == [f"{SET1}.00.yard.preview.eml", f"{SET1}.01.yard.full.eml"]
    _, _, inner, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    text = text_of(inner)
    assert "Camera front failed: no image written" in text
    assert "GPIO 17" in text and "GPIO 27" in text and "Motion detected 2026-11-25" in text


def test_alarm_with_every_camera_failed_still_sends_a_text(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", False), ("yard", False)))
    encrypt.process(cam.config, spool)
    assert outbox(spool) == [f"{SET1}.00.all.text.eml"]
    _, _, inner, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    assert image_of(inner) is None
    assert "No camera worked" in text_of(inner) and "Camera yard failed" in text_of(inner)


def test_heartbeat_sends_one_message_per_camera_with_the_health_text(cam):
    spool = cam.spool
    hb = "20261125T200000.000001Z.13.cccc-heartbeat"
    _, files = sendkit.make_set(spool, hb, kind="heartbeat", health_text="Disk 12% used; 3 alarms today.")
    encrypt.process(cam.config, spool)
    assert outbox(spool) == [f"{hb}.00.front.full.eml", f"{hb}.01.yard.full.eml"]
    _, _, first, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    assert "Disk 12% used; 3 alarms today." in text_of(first) and "Heartbeat" in text_of(first)
    assert image_of(first) == files["front.jpg"]


def test_heartbeat_can_send_previews_to_save_mobile_data(cam):
    spool = cam.spool
    hb = "20261125T200000.000001Z.13.cccc-heartbeat"
    _, files = sendkit.make_set(spool, hb, kind="heartbeat", health_text="ok")
    text = cam.config.path.read_text() + '\n[delivery]\nheartbeat_image = "preview"\n' \
        if "[delivery]" not in cam.config.path.read_text() else \
        cam.config.path.read_text().replace("[delivery]", '[delivery]\nheartbeat_image = "preview"')
    cam.config.path.write_text(text)
    from seccam import config as _config
    encrypt.process(_config.load(cam.config.path), spool)
    assert outbox(spool) == [f"{hb}.00.front.preview.eml", f"{hb}.01.yard.preview.eml"]
    _, _, first, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    assert image_of(first) == files["front.preview.jpg"]


def test_heartbeat_with_every_camera_failed_is_one_text_with_the_health(cam):
    spool = cam.spool
    hb = "20261125T200000.000001Z.13.cccc-heartbeat"
    sendkit.make_set(spool, hb, kind="heartbeat", cameras=(("front", False),), health_text="Camera front down.")
    encrypt.process(cam.config, spool)
    assert outbox(spool) == [f"{hb}.00.all.text.eml"]
    _, _, inner, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    assert "Camera front down." in text_of(inner)


def _set_health(set_path, text):
    import json
    meta = json.loads((set_path / "meta.json").read_text())
    meta["health"] = {"text": text}
    (set_path / "meta.json").write_text(json.dumps(meta))


def test_welcome_after_a_join_is_one_full_image_per_camera_opening_with_connected(cam):
    from seccam import budget, inbox, send
    spool = cam.spool
    path = inbox.send_welcome(cam.config, spool, ["owner@seccam.test"])
    set_id = path.name.removesuffix(".set")
    assert set_id.endswith("-welcome") and encrypt.load_meta(path)["kind"] == "welcome"
    encrypt.process(cam.config, spool)
    names = outbox(spool)
    assert names == [f"{set_id}.00.front.full.eml", f"{set_id}.01.yard.full.eml"]
    _, _, first, signer = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    _, _, second, _ = open_message(spool.items("outbox.new")[1], cam.recipients[0])
    lines = text_of(first).splitlines()
    assert lines[0].startswith("Connected ") and lines[0].endswith(": seccam will send its alarms and heartbeats here.")
    assert "Heartbeat" not in text_of(first)
    assert "owner@seccam.test joined by invite" in text_of(first) and "Cameras: front ok, yard ok." in text_of(first)
    # The health text once, in the first; the picture's time (meta.json "captured") in every one.
    [line] = text_of(second).splitlines()[1:]
    assert re.fullmatch(r"Camera yard, picture taken \d\d:\d\d:\d\d \S+", line)
    assert (first["Subject"], second["Subject"]) == ("Connected: front", "Connected: yard")
    assert image_of(first)[:3] == b"\xff\xd8\xff" and signer == cam.fingerprint
    # jobs/send ranks it after alarms and before heartbeats; the spool budget prunes it with the alarms, last.
    assert [send.kind_of(n) for n in names] == [1, 1]
    assert budget.classify(names[0]) == ("alarm", "full") and budget.classify(path.name) == ("alarm", "set")


def test_welcome_always_sends_the_full_image_even_when_heartbeats_send_previews(cam):
    spool = cam.spool
    wid = "20261125T200000.000001Z.13.cccc-welcome"
    set_path, files = sendkit.make_set(spool, wid, kind="welcome")
    _set_health(set_path, "owner@seccam.test joined by invite.")
    cam.config_path.write_text(cam.config_path.read_text().replace("[delivery]",
                                                                   '[delivery]\nheartbeat_image = "preview"'))
    encrypt.process(cam.reload(), spool)
    assert outbox(spool) == [f"{wid}.00.front.full.eml", f"{wid}.01.yard.full.eml"]
    _, _, first, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    assert image_of(first) == files["front.jpg"]


def test_welcome_with_every_camera_failed_is_one_text_with_the_health(cam):
    spool = cam.spool
    wid = "20261125T200000.000001Z.13.cccc-welcome"
    set_path, _ = sendkit.make_set(spool, wid, kind="welcome", cameras=(("front", False),))
    _set_health(set_path, "owner@seccam.test joined by invite.")
    encrypt.process(cam.config, spool)
    assert outbox(spool) == [f"{wid}.00.all.text.eml"]
    _, _, inner, _ = open_message(spool.items("outbox.new")[0], cam.recipients[0])
    text = text_of(inner)
    assert text.startswith("Connected ") and "No camera worked." in text and "Camera front failed" in text
    assert "owner@seccam.test joined by invite." in text and inner["Subject"] == "Connected: no image"


def test_two_recipients_make_one_encrypted_group_with_gossip(group_cam):
    spool = group_cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    sendkit.make_set(spool, SET2, cameras=(("front", True),))
    encrypt.process(group_cam.config, spool)
    owner, bob = group_cam.recipients
    ids = set()
    for path in spool.items("outbox.new"):
        for reader in (owner, bob):
            raw, outer, inner, signer = open_message(path, reader)
            assert signer == group_cam.fingerprint
            assert outer["To"] == "owner@seccam.test, bob@seccam.test"
            assert inner["Chat-Group-Name"] == "seccam"
            assert inner["Chat-Group-Member-Fpr"] == f"{owner.fingerprint} {bob.fingerprint}"
            gossip = [dict(mime.parse_key_header(str(v))) for v in inner.get_all("Autocrypt-Gossip")]
            assert [g["addr"] for g in gossip] == ["owner@seccam.test", "bob@seccam.test"]
            assert base64.b64decode(gossip[1]["keydata"]) == group_cam.gpg().export_minimal(bob.fingerprint)
            ids.add(inner["Chat-Group-ID"])
    assert len(ids) == 1
    (gid,) = ids
    assert 11 <= len(gid) <= 32 and all(c.isalnum() or c in "_-" for c in gid)
    assert gid == encrypt.group_id(group_cam.config, group_cam.fingerprint)


def test_configured_group_id_and_name_are_used():
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"),
                            delivery_extra='group_id = "My_Group-12345"\ngroup_name = "Haus"\n')
    try:
        sendkit.make_set(c.spool, SET1, cameras=(("front", True),))
        encrypt.process(c.config, c.spool)
        _, _, inner, _ = open_message(c.spool.items("outbox.new")[0], c.recipients[1])
        assert inner["Chat-Group-ID"] == "My_Group-12345" and inner["Chat-Group-Name"] == "Haus"
    finally:
        c.close()


def test_a_recipient_without_a_key_holds_only_its_own_copy_until_its_key_is_imported():
    """Issue 10, hole 4: recipients are independent."""
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        spool = c.spool
        owner, bob = c.recipients
        sendkit.import_recipient(c.config, owner)
        _, files = sendkit.make_set(spool, SET1)
        result = encrypt.process(c.config, spool)
        # The owner's alarm goes at once, encrypted to the owner (and the camera) only.
        assert (result.sets, result.messages, result.held) == (1, 4, 1)
        for path in spool.items("outbox.new"):
            raw, outer, inner, signer = open_message(path, owner)
            assert signer == c.fingerprint and outer["To"] == "owner@seccam.test"
            assert inner["Chat-Group-Member-Fpr"] == owner.fingerprint  # a group, even while bob has no key
            with pytest.raises(Exception):
                sendkit.decrypt_message(raw, bob)
        # Bob's copy waits, with a reason that names him and what to do; images are hard links.
        (held,) = spool.items("sets.held")
        assert held.name == encrypt.copy_id(SET1, "bob@seccam.test") + ".set"
        reason = spool.read_reason(held)
        assert "bob@seccam.test" in reason and "owner@seccam.test" not in reason
        assert "seccam keys import FILE" in reason
        assert (held / "front.jpg").read_bytes() == files["front.jpg"]
        assert encrypt.process(c.config, spool).held == 0 and spool.items("sets.held") == [held]
        for path in spool.items("outbox.new"):
            spool.remove(path)  # sent
        # Bob's key arrives: his copy goes to him alone, in the same group, now with both members.
        sendkit.import_recipient(c.config, bob)
        result = encrypt.process(c.config, spool)
        assert (result.released, result.sets, result.messages) == (1, 1, 4)
        assert spool.items("sets.held") == [] and not os.path.exists(str(held) + ".reason")
        for path in spool.items("outbox.new"):
            assert path.name.startswith(encrypt.copy_id(SET1, "bob@seccam.test") + ".")
            raw, outer, inner, signer = open_message(path, bob)
            assert outer["To"] == "bob@seccam.test"  # the SMTP envelope: bob only
            assert str(inner["To"]) == "owner@seccam.test, bob@seccam.test"
            assert inner["Chat-Group-Member-Fpr"] == f"{owner.fingerprint} {bob.fingerprint}"
            assert inner["Chat-Group-ID"] == encrypt.group_id(c.config, c.fingerprint)
            with pytest.raises(Exception):
                sendkit.decrypt_message(raw, owner)
        first = open_message(spool.items("outbox.new")[0], bob)[2]
        assert "held until your key reached the camera" in text_of(first)
    finally:
        c.close()


def test_a_killed_run_never_makes_a_second_copy_for_a_recipient_without_a_key():
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        spool = c.spool
        sendkit.import_recipient(c.config, c.recipients[0])
        path, _ = sendkit.make_set(spool, SET1)
        crypto = encrypt.prepare(c.config)
        meta = encrypt.load_meta(path)
        assert encrypt._hold_copy(spool, path, SET1, meta, "bob@seccam.test") == 1
        # as if killed before the set was removed: the rerun sees the copy and makes none
        assert encrypt._hold_copy(spool, path, SET1, meta, "bob@seccam.test") == 0
        (path / (".held-for-" + encrypt.copy_id(SET1, "bob@seccam.test"))).unlink()
        assert encrypt._hold_copy(spool, path, SET1, meta, "bob@seccam.test") == 0  # found in sets/held
        result = encrypt.process(c.config, spool, crypto=crypto)
        assert result.held == 0 and len(spool.items("sets.held")) == 1
    finally:
        c.close()


def test_heartbeats_are_not_kept_for_a_recipient_without_a_key():
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        sendkit.import_recipient(c.config, c.recipients[0])
        sendkit.make_set(c.spool, "20261125T191100.000001Z.11.aaaa-heartbeat", kind="heartbeat")
        result = encrypt.process(c.config, c.spool)
        assert (result.sets, result.held) == (1, 0) and c.spool.items("sets.held") == []
    finally:
        c.close()


def test_nobody_with_a_key_holds_the_whole_set_and_the_first_key_releases_it():
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        spool = c.spool
        sendkit.make_set(spool, SET1)
        assert encrypt.process(c.config, spool).held == 1
        (held,) = spool.items("sets.held")
        assert held.name == SET1 + ".set"
        assert "owner@seccam.test, bob@seccam.test" in spool.read_reason(held)
        sendkit.import_recipient(c.config, c.recipients[0])
        result = encrypt.process(c.config, spool)
        assert (result.released, result.sets, result.messages, result.held) == (1, 1, 4, 1)
        assert [p.name for p in spool.items("sets.held")] == [encrypt.copy_id(SET1, "bob@seccam.test") + ".set"]
    finally:
        c.close()


def test_held_plaintext_is_deleted_after_hold_days_and_counted():
    c = sendkit.make_camera(recipients=("owner@seccam.test",), import_keys=False,
                            delivery_extra="hold_days = 2\n")
    try:
        spool = c.spool
        sendkit.make_set(spool, SET1)  # created 2026-11-25 19:11 UTC
        sendkit.make_set(spool, SET2)
        t0 = 1795_000_000  # 2026-11-18: before the sets were made
        assert encrypt.process(c.config, spool, now=t0).held == 2
        day = 86400
        created = 1795633860  # 2026-11-25T19:11:00Z
        assert encrypt.process(c.config, spool, now=created + 2 * day - 1).expired == 0
        result = encrypt.process(c.config, spool, now=created + 2 * day + 30)
        assert result.expired == 1 and [p.name for p in spool.items("sets.held")] == [SET2 + ".set"]
        pruned = spool.read_state("pruned")
        assert pruned["count"] == 1 and pruned["recent"][0]["name"] == SET1 + ".set"
    finally:
        c.close()


def test_no_recipients_holds_with_a_reason():
    c = sendkit.make_camera(recipients=())
    try:
        sendkit.make_set(c.spool, SET1)
        assert encrypt.process(c.config, c.spool).held == 1
        assert "no recipients" in c.spool.read_reason(c.spool.items("sets.held")[0])
    finally:
        c.close()


def test_no_camera_key_holds_with_keys_init_hint():
    c = sendkit.make_camera(with_key=False)
    try:
        sendkit.make_set(c.spool, SET1)
        assert encrypt.process(c.config, c.spool).held == 1
        assert "seccam keys init" in c.spool.read_reason(c.spool.items("sets.held")[0])
        assert c.gpg().camera_key() is None  # never generated behind the owner's back
    finally:
        c.close()


@pytest.mark.parametrize("meta", ["{not json", '{"version": 1, "kind": "alarm"}',
                                  '{"version": 1, "kind": "alarm", "created": "2026-11-25T19:11:00+00:00",'
                                  ' "cameras": [{"name": "../x", "ok": false}]}'])
def test_malformed_meta_is_set_aside_and_the_next_set_still_goes_out(cam, meta):
    spool = cam.spool
    sendkit.make_set(spool, SET1, meta_override=meta)
    sendkit.make_set(spool, SET2, cameras=(("front", True),))
    result = encrypt.process(cam.config, spool)
    assert result.set_aside == 1 and result.sets == 1
    assert [p.name.split(".", 1)[0] for p in spool.items("outbox.new")] == ["20261125T191200"] * 2
    (corrupt,) = spool.items("corrupt")
    assert corrupt.name.endswith(f"{SET1}.set") and "malformed image set" in spool.read_reason(corrupt)


KILL_AFTER_FIRST = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{lib!r}]
    from seccam import config, encrypt, spool as spool_mod
    cfg = config.load({cfg!r})
    real = spool_mod.Spool.write
    def write(self, state, data, suffix="", name=None):
        path = real(self, state, data, suffix, name)
        if {when!r} == "before-mark":
            os._exit(9)          # killed between publishing and recording the message
        return path
    spool_mod.Spool.write = write
    real_mark = encrypt._mark_published
    def mark(set_path, name):
        real_mark(set_path, name)
        if len(list(set_path.glob(".published-*"))) == 2:
            os._exit(9)          # killed after two messages
    encrypt._mark_published = mark
    encrypt.process(cfg, spool_mod.Spool(cfg.spool_dir))
""")


@pytest.mark.parametrize("when", ["before-mark", "after-two"])
def test_killed_mid_set_rerun_publishes_each_message_exactly_once(cam, when):
    spool = cam.spool
    sendkit.make_set(spool, SET1)
    script = KILL_AFTER_FIRST.format(lib=str(sendkit.ROOT / "lib"), cfg=str(cam.config_path), when=when)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert len(spool.items("sets.active")) == 1
    first = outbox(spool)
    assert len(first) == (1 if when == "before-mark" else 2)
    before = {n: (spool.dir("outbox.new") / n).read_bytes() for n in first}
    if when == "after-two":
        # jobs/send already sent (and removed) the first one: it must not come back
        spool.remove(spool.dir("outbox.new") / first[0])
    result = encrypt.process(cam.config, spool)
    names = outbox(spool)
    expected = [f"{SET1}.00.front.preview.eml", f"{SET1}.01.yard.preview.eml",
                f"{SET1}.02.front.full.eml", f"{SET1}.03.yard.full.eml"]
    assert names == (expected if when == "before-mark" else expected[1:])
    assert result.messages == 4 - len(first)
    for name, raw in before.items():  # published messages untouched
        if (spool.dir("outbox.new") / name).exists():
            assert (spool.dir("outbox.new") / name).read_bytes() == raw
    assert spool.items("sets.active") == [] and spool.items("sets.ready") == []


def test_message_built_twice_has_the_same_message_id(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    sendkit.make_set(spool, SET1.replace("aaaa", "aaab"), cameras=(("front", True),))
    meta = encrypt.load_meta(spool.items("sets.ready")[0])
    crypto = encrypt.prepare(cam.config)
    item = encrypt.plan(meta, spool.items("sets.ready")[0])[0]
    ids = {email.message_from_bytes(encrypt.build_message(crypto, SET1, meta, item))["Message-ID"]
           for _ in range(2)}
    other = email.message_from_bytes(encrypt.build_message(crypto, SET2, meta, item))["Message-ID"]
    assert len(ids) == 1 and other not in ids


def test_capture_job_prepares_encryption_while_the_cameras_expose(cam, monkeypatch):
    """jobs/capture loads GnuPG and the keys during the capture, and the encrypt step uses that."""
    from seccam import capture, events
    calls = []
    real = encrypt.prepare
    monkeypatch.setattr(encrypt, "prepare", lambda config, gpg=None: calls.append(1) or real(config, gpg))
    events.record(cam.spool, "trigger")
    prewarm = capture.Prewarm(cam.config)
    published = capture.process(cam.config, cam.spool, while_waiting=prewarm)
    assert len(published) == 1 and prewarm.crypto is not None and calls == [1]
    assert capture.hand_to_encrypt(cam.config, cam.spool, prewarm.crypto) == 0
    assert calls == [1]  # prepared once, during the capture
    assert [p.name.rsplit(".", 3)[-2] for p in cam.spool.items("outbox.new")] == \
        ["preview", "preview", "full", "full"]


def test_prewarm_without_keys_leaves_the_encrypt_step_to_hold_the_set(cam, monkeypatch):
    from seccam import capture, events
    for rec in cam.recipients:
        cam.gpg().delete_key(rec.fingerprint)
    events.record(cam.spool, "trigger")
    prewarm = capture.Prewarm(cam.config)
    capture.process(cam.config, cam.spool, while_waiting=prewarm)
    assert prewarm.crypto is None
    assert capture.hand_to_encrypt(cam.config, cam.spool, prewarm.crypto) == 0
    [held] = cam.spool.items("sets.held")
    assert "no usable key" in cam.spool.read_reason(held)


def test_no_account_holds_with_a_reason(short_tmp):
    from conftest import write_config

    from seccam import config as config_mod
    from seccam.spool import Spool
    cfg = config_mod.load(write_config(short_tmp, '[delivery]\nrecipients = ["owner@seccam.test"]\n'))
    spool = Spool(cfg.spool_dir).ensure()
    sendkit.make_set(spool, SET1)
    assert encrypt.process(cfg, spool).held == 1
    (held,) = spool.items("sets.held")
    assert "no [account]" in spool.read_reason(held) and (held / "front.jpg").exists()


def test_the_reason_of_a_held_set_follows_the_current_problem():
    c = sendkit.make_camera(with_key=False, import_keys=False)
    try:
        spool = c.spool
        sendkit.make_set(spool, SET1)
        assert encrypt.process(c.config, spool).held == 1
        (held,) = spool.items("sets.held")
        assert "seccam keys init" in spool.read_reason(held)
        c.gpg().generate_camera_key(sendkit.CAMERA_ADDR)  # the owner fixed that; the next problem shows
        result = encrypt.process(c.config, spool)
        assert (result.held, result.released) == (0, 0) and spool.items("sets.held") == [held]
        assert spool.read_reason(held).startswith("no usable key for owner@seccam.test")
    finally:
        c.close()


def test_gpg_failing_mid_set_returns_the_set_to_ready_untouched(cam):
    from seccam.gpg import GpgError
    spool = cam.spool
    _, files = sendkit.make_set(spool, SET1)
    crypto = encrypt.prepare(cam.config)  # as jobs/capture does while the cameras expose
    cam.gpg().delete_key(cam.recipients[0].fingerprint)  # meanwhile the owner's key goes
    with pytest.raises(GpgError, match="encrypt"):
        encrypt.process(cam.config, spool, crypto=crypto)
    (ready,) = spool.items("sets.ready")
    assert {p.name for p in ready.iterdir()} == set(files) | {"meta.json"}
    assert spool.items("sets.active") == [] and outbox(spool) == []
    assert list(spool.dir("tmp").iterdir()) == []
    assert encrypt.process(cam.config, spool).held == 1  # the next run says why it waits


def test_a_created_time_without_zone_is_taken_as_utc(cam):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),), created="2026-11-25T19:11:00")
    encrypt.process(cam.config, spool)
    outer = email.message_from_bytes(spool.items("outbox.new")[0].read_bytes(), policy=email.policy.default)
    assert outer["Date"] == "Wed, 25 Nov 2026 19:11:00 +0000"


GOOD_META = {"version": 1, "kind": "alarm", "id": SET1, "created": "2026-11-25T19:11:00+00:00", "events": [],
             "cameras": [{"name": "front", "ok": True, "full": "front.jpg", "preview": "front.preview.jpg"}]}


@pytest.mark.parametrize("change, reason", [
    (None, "meta.json is missing"),
    ({"version": 2}, "unsupported version 2"),
    ({"kind": "party"}, "unknown kind 'party'"),
    ({"created": "yesterday"}, "missing or invalid created time"),
    ({"cameras": {"front": {}}}, "cameras is not a list"),
    ({"cameras": [{"name": "front"}]}, r"cameras\[0\].ok is not true/false"),
    ({"cameras": [{"name": "front", "ok": True, "full": "../../etc/passwd", "preview": "p.jpg"}]},
     r"cameras\[0\].full is not a file name"),
    ({"events": "motion"}, "events is not a list"),
    ({"health": "fine"}, "health is not an object"),
])
def test_meta_checks_name_what_is_wrong(short_tmp, change, reason):
    import json

    from seccam.spool import SpoolFormatError
    if change is not None:
        (short_tmp / "meta.json").write_text(json.dumps({**GOOD_META, **change}))
    with pytest.raises(SpoolFormatError, match=reason):
        encrypt.load_meta(short_tmp)


def test_alarm_text_names_each_sensor_and_skips_what_it_cannot_read(short_tmp):
    import datetime
    meta = {**GOOD_META, "cameras": [],
            "_created": datetime.datetime(2026, 11, 25, 19, 11, tzinfo=datetime.timezone.utc)}
    meta["events"] = ["not an event",
                      {"source": "pir", "sensors": [{"pin": 17, "active_at": "not a time"}, "junk"]},
                      {"source": "button", "sensors": []},
                      {"source": "trigger"}]
    (item,) = encrypt.plan(meta, short_tmp)
    lines = item.text.splitlines()
    assert lines[2:] == ["Motion sensors: GPIO 17 at ?", "Button", "Test alarm (seccam trigger)"]


def test_each_picture_message_says_when_the_picture_was_taken_not_when_the_set_was_made(short_tmp, monkeypatch):
    """Early capture: the frames come before the confirmation; the text gives the frame's time."""
    import datetime
    monkeypatch.setenv("TZ", "Europe/Berlin")
    import time
    time.tzset()
    try:
        meta = {**GOOD_META, "_created": datetime.datetime(2026, 11, 25, 19, 11, 5, tzinfo=datetime.timezone.utc),
                "cameras": [{"name": "front", "ok": True, "full": "front.jpg", "preview": "front.preview.jpg",
                             "captured": "2026-11-25T19:11:01.250000+00:00"},
                            {"name": "yard", "ok": True, "full": "yard.jpg", "preview": "yard.preview.jpg"}]}
        for name in ("front.jpg", "front.preview.jpg", "yard.jpg", "yard.preview.jpg"):
            (short_tmp / name).write_bytes(b"x")
        planned = encrypt.plan(meta, short_tmp)
        texts = {(p.camera, p.kind): p.text for p in planned}
        assert "Camera front, picture taken 20:11:01 CET (preview; full size follows)" in texts["front", "preview"]
        assert texts["front", "full"].endswith("20:11:05 CET, picture taken 20:11:01 CET")
        assert "Camera yard (preview; full size follows)" in texts["yard", "preview"]  # no time known: none given
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_camera_whose_image_is_missing_from_the_set_is_reported_as_failed(short_tmp):
    from seccam.spool import Spool
    path, _ = sendkit.make_set(Spool(short_tmp).ensure(), SET1)
    (path / "front.jpg").unlink()  # e.g. removed by hand, or a capture bug
    planned = encrypt.plan(encrypt.load_meta(path), path)
    assert [(p.camera, p.kind) for p in planned] == [("yard", "preview"), ("yard", "full")]
    assert "Camera front failed: image missing from the set" in planned[0].text


def test_held_sets_that_are_odd_are_never_lost():
    """A held copy whose meta is unreadable is released like a whole set (and then set aside by the
    usual check); a held set whose name carries no time is never expired; a copy's reason is kept
    current; 'for' is only valid on an alarm."""
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        spool = c.spool
        sendkit.import_recipient(c.config, c.recipients[0])
        sendkit.make_set(spool, SET1)
        encrypt.process(c.config, spool)
        (copy,) = spool.items("sets.held")
        spool.write_reason(copy, "an older reason")
        odd = spool.dir("sets.held") / "no-time-to-x-alarm.set"
        odd.mkdir()
        (odd / "meta.json").write_text("{broken")
        result = encrypt.process(c.config, spool, now=4_000_000_000)  # far beyond hold_days for SET1's copy
        assert not copy.exists() and not odd.exists() and result.set_aside == 1  # released (unreadable = whole set), then set aside
        assert any("no-time-to-x-alarm" in p.name for p in spool.items("corrupt"))
        # The copy of SET1 expired (created 2026): nothing else was removed by age.
        assert result.expired == 1 and spool.items("sets.held") == []
        sendkit.make_set(spool, SET2)
        encrypt.process(c.config, spool)
        (copy,) = spool.items("sets.held")
        spool.write_reason(copy, "an older reason")
        encrypt.process(c.config, spool)
        assert spool.read_reason(copy) == encrypt.missing_key_reason("bob@seccam.test")
        weird = spool.dir("sets.held") / "not-a-time.set"
        weird.mkdir()
        assert encrypt._created(weird.name) is None
    finally:
        c.close()


@pytest.mark.parametrize("meta_for, kind", [(5, "alarm"), ("bob@seccam.test", "heartbeat")])
def test_a_for_field_that_is_not_one_address_of_an_alarm_is_malformed(cam, meta_for, kind):
    path, _ = sendkit.make_set(cam.spool, SET1, kind=kind)
    meta = json.loads((path / "meta.json").read_text())
    meta["for"] = meta_for
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(encrypt.SpoolFormatError, match="for is not one recipient's address"):
        encrypt.load_meta(path)
