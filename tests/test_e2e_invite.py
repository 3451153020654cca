"""End to end: onboarding by invite against a real Delta Chat core (2.65) on loopback Dovecot + SMTP.

``seccam invite --wait`` prints the legacy Secure-Join link; the owner's core calls
``secure_join(link)``; the camera's inbox (run every second by ``--wait``) answers
vc-request and vc-request-with-auth; the owner's chat with the camera is accepted (no
contact request) and verified; the welcome message brings an image from every camera with
the padlock; a later ``seccam trigger`` + jobs/capture + jobs/send lands in the same chat.
Two family members joining with their own invites both receive the alarms. The time from
``seccam invite`` to the first encrypted image is measured and printed (done-when: < 60 s).
All seccam programs run as subprocesses (sys.executable).
"""

import json
import subprocess
import sys
import time

import pytest

from conftest import CAMERAS_OK, ROOT, run_ok, write_config

from helpers.deltachat import camera_messages

pytest.importorskip("deltachat_rpc_client")

TIMEOUT = 60


def camera_setup(short_tmp, mailserver, run):
    """A camera account on the loopback server (IMAP and SMTP over verified TLS), no recipients, a key."""
    addr, password = mailserver.add_user(f"cam{short_tmp.name[-6:].lower()}@{mailserver.domain}")
    mailserver.add_camera_address(addr)
    body = mailserver.account_toml(addr, password) + """
[delivery]
group_name = "Home cameras"
"""
    path = write_config(short_tmp, body, cameras=CAMERAS_OK)
    proc = run("bin/seccam", "keys", "init", config=path)
    assert proc.returncode == 0, proc.stderr
    return addr, path


def start_invite(config, *args):
    """``seccam invite --wait`` in the background; return (process, link)."""
    import os
    env = dict(os.environ, SECCAM_CONFIG=str(config), SECCAM_NO_SYSLOG="1", SECCAM_LOG_STDERR="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin/seccam"), "invite", "--no-qr", "--wait",
                             "--timeout", str(TIMEOUT), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        if line.startswith("https://i.delta.chat/#"):
            return proc, line.strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"no invite link; stderr: {proc.stderr.read()}")


def finish(proc):
    try:
        out, err = proc.communicate(timeout=TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def join(acc, config, cam_addr, *invite_args):
    """Invite ``acc`` and let it scan the link; return (seconds to the first image, welcome messages)."""
    t0 = time.monotonic()
    proc, link = start_invite(config, *invite_args)
    assert "&v=3" not in link and "&i=" in link and "&s=" in link
    acc.secure_join(link)
    acc.wait_for_securejoin_joined(timeout=TIMEOUT)
    t_joined = time.monotonic() - t0
    welcome = camera_messages(acc, cam_addr, 2, set(), TIMEOUT, lambda i: i.view_type == "Image", only_n=True)
    t_image = time.monotonic() - t0
    code, out, err = finish(proc)
    assert code == 0, f"invite --wait: {code}\n{out}\n{err}"
    assert f"joined: {acc.addr}" in out
    print(f"\n[timing] {acc.addr}: invite -> joined {t_joined:.1f} s, -> first encrypted image {t_image:.1f} s")
    return t_image, welcome


def test_owner_joins_by_invite_and_gets_encrypted_images_in_an_accepted_chat(short_tmp, mailserver, dc_owner, run):
    cam_addr, cfg = camera_setup(short_tmp, mailserver, run)
    seconds, welcome = join(dc_owner, cfg, cam_addr)
    assert seconds < 60
    for info in welcome:
        assert info.show_padlock and info.view_type == "Image"
        assert not info.is_contact_request
        assert info.sender_is_key_contact
    assert "joined by invite" in welcome[0].text
    chat_id = welcome[0].chat_id
    contact = dc_owner.account.get_contact_by_addr(cam_addr).get_snapshot()
    assert contact.is_key_contact and not contact.is_blocked

    # The owner is a recipient with the key Delta Chat has, pinned with source securejoin.
    listed = json.loads(run_ok(run, "bin/seccam", "keys", "list", "--json", config=cfg).stdout)
    owner = [r for r in listed["recipients"] if r["address"] == dc_owner.addr]
    assert owner and owner[0]["fingerprint"] == dc_owner.fingerprint() and owner[0]["source"] == "securejoin"

    # A later alarm lands in the same chat, with the padlock: preview and full image per camera.
    seen = {i.id for i in welcome}
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    alarm = camera_messages(dc_owner, cam_addr, 4, seen, TIMEOUT, only_n=True)
    assert all(i.show_padlock and i.view_type == "Image" and i.chat_id == chat_id for i in alarm)
    assert not any(i.is_contact_request for i in alarm)

    # The invite was single-use: it is used up now, and the mailbox was emptied.
    invites = json.loads(run_ok(run, "bin/seccam", "invite", "list", "--json", config=cfg).stdout)
    assert [(v["status"], v["used"]) for v in invites] == [("used", 1)]
    assert mailserver.fetch_inbox(cam_addr) == []


def test_two_family_members_join_with_their_own_invites_and_both_receive(
        short_tmp, mailserver, dc_account_factory, run):
    anna = dc_account_factory(name="Anna", prefix="anna")
    ben = dc_account_factory(name="Ben", prefix="ben")
    cam_addr, cfg = camera_setup(short_tmp, mailserver, run)
    join(anna, cfg, cam_addr, "--label", "Anna")
    join(ben, cfg, cam_addr, "--label", "Ben")

    seen_a = {m.id for c in anna.account.get_chatlist() for m in c.get_messages()}
    seen_b = {m.id for c in ben.account.get_chatlist() for m in c.get_messages()}
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    for acc, seen in ((anna, seen_a), (ben, seen_b)):
        alarm = camera_messages(acc, cam_addr, 4, seen, TIMEOUT, only_n=True)
        assert all(i.show_padlock and i.view_type == "Image" for i in alarm), acc.addr
        assert not any(i.is_contact_request for i in alarm), acc.addr
        assert len({i.chat_id for i in alarm}) == 1


def test_a_revoked_invite_scanned_by_a_real_delta_chat_is_rejected_and_nothing_pinned(
        short_tmp, mailserver, dc_owner, run):
    from seccam import config as config_mod, inbox, keys
    from seccam.spool import Spool
    cam_addr, cfg = camera_setup(short_tmp, mailserver, run)
    proc = run_ok(run, "bin/seccam", "invite", "--no-qr", config=cfg)
    link = proc.stdout.splitlines()[0]
    [view] = json.loads(run_ok(run, "bin/seccam", "invite", "list", "--json", config=cfg).stdout)
    run_ok(run, "bin/seccam", "invite", "revoke", view["id"], config=cfg)
    dc_owner.secure_join(link)
    config = config_mod.load(cfg)
    rejected = []
    deadline = time.monotonic() + TIMEOUT
    while not rejected and time.monotonic() < deadline:
        result = inbox.poll(config, Spool(config.spool_dir), welcome=False)
        rejected = result.rejected if result else []
        time.sleep(0.2)
    assert rejected == [("vc-request", "invite revoked")]
    assert keys.recipients(config) == ()
    assert keys.KeyStore(config.state_dir).records() == []
    assert mailserver.fetch_inbox(cam_addr) == []
