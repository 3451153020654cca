"""End to end against a real Delta Chat core (2.65) on a loopback Dovecot + SMTP:

owner's vCard -> ``seccam keys import`` -> ``seccam trigger`` -> jobs/capture -> jobs/send
-> the owner's Delta Chat shows every camera's preview and full image with the padlock, as
images, byte-identical, from the camera's key-contact. Heartbeats likewise; two recipients
get one encrypted group. The owner's key also reaches the camera the Autocrypt way: an owner
with ``force_encryption`` turned off writes to the camera in clear text, jobs/inbox records
the key from the Autocrypt header as pending (mail never pins a key), a person compares the
fingerprint and accepts it, and the held alarm arrives with the padlock. And a forged replay:
the owner's own chat message to the camera, re-sent with the attacker's key in the outer
Autocrypt header, changes nothing: the next alarm still reaches the owner's Delta Chat with
the padlock. All seccam programs run as subprocesses (sys.executable).

The plaintext set is gone after encryption, so the reference image bytes come from the sent
messages decrypted with the camera's own key (the camera encrypts to itself too).
"""

import email
import email.policy
import hashlib
import json
import re
import time

import pytest

from conftest import CAMERAS_OK, run_ok, write_config

from helpers.deltachat import camera_messages

pytest.importorskip("deltachat_rpc_client")

TIMEOUT = 30


def camera_setup(short_tmp, mailserver, recipients, run, import_vcards=True):
    addr, password = mailserver.add_user(f"cam{short_tmp.name[-6:].lower()}@{mailserver.domain}")
    mailserver.add_camera_address(addr)
    rec = ", ".join(f'"{a.addr}"' for a in recipients)
    body = mailserver.account_toml(addr, password) + f"""
[delivery]
recipients = [{rec}]
group_name = "Home cameras"
"""
    path = write_config(short_tmp, body, cameras=CAMERAS_OK)
    proc = run("bin/seccam", "keys", "init", config=path)
    assert proc.returncode == 0, proc.stderr
    for acc in recipients if import_vcards else ():
        vcf = short_tmp / f"{acc.addr}.vcf"
        vcf.write_text(acc.vcard())
        proc = run("bin/seccam", "keys", "import", vcf, config=path)
        assert proc.returncode == 0, proc.stderr
    return addr, path


def camera_images(mailserver, cam_addr, since, home):
    """{Message-ID: sha256 of the JPEG} of what the camera sent, decrypted with its own key."""
    from seccam.gpg import Gpg
    gpg = Gpg(home)
    out = []
    for rec in mailserver.received[since:]:
        if rec.mail_from.lower() != cam_addr:
            continue
        outer = email.message_from_bytes(rec.raw, policy=email.policy.default)
        plain, signer, _ = gpg.decrypt_verify(outer.get_payload()[1].get_payload(decode=True))
        inner = email.message_from_bytes(plain, policy=email.policy.default)
        images = [p for p in inner.iter_parts() if p.get_content_type() == "image/jpeg"]
        sha = hashlib.sha256(images[0].get_content()).hexdigest() if images else None
        out.append((inner["Subject"], sha, signer))
    return out


def camera_fpr(state_home):
    from seccam.gpg import Gpg
    return Gpg(state_home).camera_key()


def test_alarm_reaches_the_owner_as_encrypted_images_from_the_camera_key_contact(
        short_tmp, mailserver, dc_owner, run):
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner], run)
    home = short_tmp / "state" / "gnupg"
    since = len(mailserver.received)
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    sent = camera_images(mailserver, cam_addr, since, home)
    fpr = camera_fpr(home)
    assert [s for s, _, _ in sent] == ["Motion: front", "Motion: yard",  # every preview first
                                       "Motion: front (full size)", "Motion: yard (full size)"]
    assert all(signer == fpr for _, _, signer in sent)
    seen = set()
    got = camera_messages(dc_owner, cam_addr, 4, seen, TIMEOUT)
    for msg, (subject, sha, _) in zip(got, sent):
        assert msg.show_padlock, msg
        assert msg.view_type == "Image"
        assert msg.file_sha256 == sha
        assert msg.sender_addr == cam_addr and msg.sender_is_key_contact
        assert msg.sender_fingerprint == fpr
        assert msg.chat_name == "Front door"
    assert len({m.chat_id for m in got}) == 1
    assert "Motion detected" in got[0].text and "GPIO" not in got[0].text  # a trigger, not a PIR
    assert "Test alarm" in got[0].text

    # heartbeat: one message per camera with the health text, same chat
    since = len(mailserver.received)
    run_ok(run, "jobs/heartbeat", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    sent = camera_images(mailserver, cam_addr, since, home)
    assert [s for s, _, _ in sent] == ["Heartbeat: front", "Heartbeat: yard"]
    got = camera_messages(dc_owner, cam_addr, 2, seen, TIMEOUT)
    assert all(m.show_padlock and m.view_type == "Image" and m.chat_id == got[0].chat_id for m in got)
    assert [m.file_sha256 for m in got] == [sha for _, sha, _ in sent]
    assert got[0].text.startswith("Heartbeat")


def test_two_recipients_share_one_encrypted_group(short_tmp, mailserver, dc_owner, dc_account_factory, run):
    bob = dc_account_factory(name="Bob", prefix="bob")
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner, bob], run)
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    fpr = camera_fpr(short_tmp / "state" / "gnupg")
    for acc in (dc_owner, bob):
        got = camera_messages(acc, cam_addr, 4, set(), TIMEOUT)
        assert all(m.show_padlock and m.view_type == "Image" for m in got)
        assert all(m.sender_fingerprint == fpr for m in got)
        assert {m.chat_name for m in got} == {"Home cameras"}
        assert len({m.chat_id for m in got}) == 1
        chat = acc.account.get_chat_by_id(got[0].chat_id).get_basic_snapshot()
        assert chat.chat_type in ("Group", 120), chat
        members = {c.get_snapshot().address for c in acc.account.get_chat_by_id(got[0].chat_id).get_contacts()}
        assert {dc_owner.addr, bob.addr, cam_addr} <= {m.lower() for m in members} | {acc.addr}


def test_owner_key_reaches_the_camera_by_autocrypt_when_the_owner_writes_in_clear_text(
        short_tmp, mailserver, dc_owner, run):
    """Issue 3's second key route: Delta Chat with force_encryption=0 -> Autocrypt header -> pinned."""
    import json
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner], run, import_vcards=False)
    home = short_tmp / "state" / "gnupg"
    # Nothing can go out yet: the owner is a recipient without a key.
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    held = run(*("bin/seccam", "status", "--json"), config=cfg)
    assert json.loads(held.stdout)["queues"]["sets.held"]["count"] == 1
    since = len(mailserver.received)

    # A default profile refuses clear text ("e2e encryption unavailable"); this owner turned it off.
    from deltachat_rpc_client.rpc import JsonRpcError
    chat = dc_owner.account.create_contact(cam_addr, "Front door").create_chat()
    assert dc_owner.account.get_config("force_encryption") == "1"
    with pytest.raises(JsonRpcError, match="e2e encryption unavailable"):
        chat.send_text("refused")
    dc_owner.account.set_config("force_encryption", "0")
    msg = chat.send_text("Hello camera, this is my key.")
    dc_owner.wait_for_delivered(msg, timeout=TIMEOUT)
    rec = mailserver.wait_for_received(lambda m: m.mail_from.lower() == dc_owner.addr, timeout=TIMEOUT, start=since)
    assert mailserver.wait_for_response(rec).startswith("250")  # in the camera's mailbox now
    outer = email.message_from_bytes(rec.raw, policy=email.policy.default)
    assert outer.get_content_type() != "multipart/encrypted" and outer["Autocrypt"]  # clear text + key

    run_ok(run, "jobs/inbox", config=cfg)  # as cron runs it
    assert mailserver.fetch_inbox(cam_addr) == []  # read and deleted
    # Mail alone never pins a key: it is pending until a person compares and accepts it.
    listed = json.loads(run_ok(run, "bin/seccam", "keys", "list", "--json", config=cfg).stdout)
    owner = [r for r in listed["recipients"] if r["address"] == dc_owner.addr]
    assert owner and owner[0]["fingerprint"] is None
    assert [(p["fingerprint"], p["source"]) for p in owner[0]["pending"]] == [(dc_owner.fingerprint(), "autocrypt")]
    run_ok(run, "jobs/send", config=cfg)
    assert camera_images(mailserver, cam_addr, since, home) == []  # still held
    run_ok(run, "bin/seccam", "keys", "accept", dc_owner.addr, dc_owner.fingerprint(), config=cfg)
    listed = json.loads(run_ok(run, "bin/seccam", "keys", "list", "--json", config=cfg).stdout)
    owner = [r for r in listed["recipients"] if r["address"] == dc_owner.addr]
    assert owner[0]["fingerprint"] == dc_owner.fingerprint() and owner[0]["source"] == "autocrypt"

    # The held alarm goes out with the next jobs/send.
    run_ok(run, "jobs/send", config=cfg)
    sent = camera_images(mailserver, cam_addr, since, home)
    fpr = camera_fpr(home)
    assert [s for s, _, _ in sent] == ["Motion: front", "Motion: yard",  # every preview first
                                       "Motion: front (full size)", "Motion: yard (full size)"]
    got = camera_messages(dc_owner, cam_addr, 4, set(), TIMEOUT)
    for m, (_, sha, _) in zip(got, sent):
        assert m.show_padlock and m.view_type == "Image" and m.file_sha256 == sha
        assert m.sender_is_key_contact and m.sender_fingerprint == fpr
    assert len({m.chat_id for m in got}) == 1 and got[0].chat_id != chat.id  # the key-contact's chat


def test_an_incident_arrives_as_first_alarm_an_update_and_the_closing_sheets_with_the_padlock(
        short_tmp, mailserver, dc_owner, run):
    """Continuous motion is one incident: the first alarm, an update, then the summary with the sheets."""
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner], run)
    text = cfg.read_text()
    # Every trigger its own capture (cooldown 0), every follow-up capture an update (pace 0), a short gap.
    cfg.write_text(text.replace("[delivery]", "[sensors]\ncooldown_s = 0\n\n[incident]\ngap_s = 3\n"
                                "update_pace_s = [0]\n\n[delivery]", 1))
    home = short_tmp / "state" / "gnupg"
    since = len(mailserver.received)
    for _ in range(2):
        run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)   # the first alarm, then a capture kept and shown in an update
    run_ok(run, "jobs/send", config=cfg)
    deadline = time.monotonic() + 60
    while True:                                # the incident ends once the gap has passed (cron: every minute)
        run_ok(run, "jobs/incident", config=cfg)
        status = json.loads(run_ok(run, "bin/seccam", "status", "--json", config=cfg).stdout)
        if status["incident"]["closed"] == 1:
            break
        assert time.monotonic() < deadline, status["incident"]
        time.sleep(0.5)
    run_ok(run, "jobs/send", config=cfg)
    sent = camera_images(mailserver, cam_addr, since, home)
    subjects = [s for s, _, _ in sent]
    assert subjects[:5] == ["Motion: front", "Motion: yard", "Motion: front (full size)",
                            "Motion: yard (full size)", "Motion continues"]
    assert re.fullmatch(r"Incident ended: \d+ s, 2 events", subjects[5]) and subjects[6] == "Incident sheet 2 of 2"
    fpr = camera_fpr(home)
    got = camera_messages(dc_owner, cam_addr, 7, set(), TIMEOUT)
    assert len(got) == 7 and len({m.chat_id for m in got}) == 1
    for msg, (_, sha, _) in zip(got, sent):
        assert msg.show_padlock and msg.view_type == "Image", msg
        assert msg.file_sha256 == sha and msg.sender_fingerprint == fpr and msg.chat_name == "Front door"
    assert got[4].text.startswith("Motion continues at Front door: 2 events since ")
    assert got[5].text.startswith("Motion ended at Front door.") and "Sheet 1 of 2: front, 1 capture" in got[5].text
    assert got[6].text.startswith("Sheet 2 of 2: yard, 1 capture")


def test_a_replayed_owner_message_with_a_forged_autocrypt_key_does_not_redirect_the_next_alarm(
        short_tmp, mailserver, dc_owner, run):
    """Issue 10, hole 1a, end to end: the owner types into the camera chat; the camera's mail
    provider (or a group co-member) re-sends that ciphertext with the attacker's key in the
    outer Autocrypt header. The pin holds and the next alarm arrives with the padlock."""
    import json
    from helpers import forgery
    from seccam import autocrypt
    from seccam.gpg import Gpg
    from helpers.sendkit import kill_agent, short_dir
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner], run)
    # Two test alarms a minute apart must both be alarms: no incident joins them.
    cfg.write_text(cfg.read_text() + "\n[incident]\ngap_s = 0\n")
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    seen = set()
    got = camera_messages(dc_owner, cam_addr, 4, seen, TIMEOUT)
    chat = dc_owner.account.get_chat_by_id(got[0].chat_id)
    chat.accept()
    since = len(mailserver.received)
    msg = chat.send_text("Thanks, camera. All good here.")
    dc_owner.wait_for_delivered(msg, timeout=TIMEOUT)
    rec = mailserver.wait_for_received(lambda m: m.mail_from.lower() == dc_owner.addr, timeout=TIMEOUT, start=since)
    assert mailserver.wait_for_response(rec).startswith("250")
    assert email.message_from_bytes(rec.raw).get_content_type() == "multipart/encrypted"
    proc = run_ok(run, "jobs/inbox", "-v", config=cfg)
    # Delta Chat's own message passes the camera's authentication (the replay journal has it).
    assert (short_tmp / "state" / "replay.json").exists(), proc.stderr
    journal = json.loads((short_tmp / "state" / "replay.json").read_text())
    assert journal["senders"][dc_owner.addr]["fingerprint"] == dc_owner.fingerprint()

    mallory_home = short_dir("scm")
    try:
        mallory = Gpg(mallory_home)
        mallory_fpr = mallory.generate_camera_key(dc_owner.addr)
        evil = autocrypt.build_header(dc_owner.addr, mallory.export_minimal(mallory_fpr))
        forged = forgery.wrap(forgery.armored_of(rec.raw), dc_owner.addr, [cam_addr], evil)
        _smtp_deliver(mailserver, cam_addr, forged)
        run_ok(run, "jobs/inbox", config=cfg)
        assert mailserver.fetch_inbox(cam_addr) == []
        listed = json.loads(run_ok(run, "bin/seccam", "keys", "list", "--json", config=cfg).stdout)
        owner = [r for r in listed["recipients"] if r["address"] == dc_owner.addr]
        assert owner[0]["fingerprint"] == dc_owner.fingerprint()
        assert mallory_fpr not in {p["fingerprint"] for p in owner[0]["pending"]}  # the outer header is not read

        since = len(mailserver.received)
        run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
        run_ok(run, "jobs/capture", config=cfg)
        run_ok(run, "jobs/send", config=cfg)
        fpr = camera_fpr(short_tmp / "state" / "gnupg")
        got = camera_messages(dc_owner, cam_addr, 4, seen, TIMEOUT)
        assert all(m.show_padlock and m.view_type == "Image" and m.sender_fingerprint == fpr for m in got)
        assert len({m.chat_id for m in got}) == 1 and got[0].chat_id == chat.id
        for out in mailserver.received[since:]:
            if out.mail_from.lower() == cam_addr:
                with pytest.raises(Exception):
                    mallory.decrypt_verify(forgery.armored_of(out.raw))
    finally:
        kill_agent(mallory_home)
        import shutil
        shutil.rmtree(mallory_home, ignore_errors=True)


def _smtp_deliver(mailserver, to, raw):
    import smtplib
    with smtplib.SMTP(mailserver.host, mailserver.smtp_plain_port, timeout=10) as s:
        s.sendmail("relay@seccam.test", [to], raw)
