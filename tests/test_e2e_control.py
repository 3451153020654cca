"""Commands typed into the camera's chat in a real Delta Chat core (2.65), end to end.

The owner's Delta Chat writes into the camera chat (as in tests/test_e2e_deltachat.py's replay
test); jobs/inbox, jobs/capture and jobs/send run as cron and the path units would run them.
What the owner sees: ``/snap`` brings the pictures into the same chat with the padlock, marked
as requested by the owner; ``/disarm 1h`` is announced, a motion event then brings nothing and
the heartbeat says disarmed; ``/arm`` is announced and alarms come back; ``/status`` and
``/help`` answer. With two recipients, a member's command in the group is answered in the
group (both see it), and one in the member's 1:1 chat with the camera only there.
"""

import pytest

from conftest import run_ok, write_config

from helpers.deltachat import camera_messages

pytest.importorskip("deltachat_rpc_client")

TIMEOUT = 30
ONE_CAMERA = """
[[camera]]
name = "front"
device = "test"
resolution = "320x240"
"""


def camera_setup(short_tmp, mailserver, recipients, run):
    addr, password = mailserver.add_user(f"cam{short_tmp.name[-6:].lower()}@{mailserver.domain}")
    mailserver.add_camera_address(addr)
    rec = ", ".join(f'"{a.addr}"' for a in recipients)
    body = mailserver.account_toml(addr, password) + f'[delivery]\nrecipients = [{rec}]\ngroup_name = "Home"\n'
    path = write_config(short_tmp, body, cameras=ONE_CAMERA)
    run_ok(run, "bin/seccam", "keys", "init", config=path)
    for acc in recipients:
        vcf = short_tmp / f"{acc.addr}.vcf"
        vcf.write_text(acc.vcard())
        run_ok(run, "bin/seccam", "keys", "import", vcf, config=path)
    return addr, path


def alarm(run, cfg):
    run_ok(run, "bin/seccam", "trigger", "-q", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)


def typed(acc, chat, text):
    """``acc`` types ``text`` into ``chat``; returns once the server has it for the camera."""
    msg = chat.send_text(text)
    acc.wait_for_delivered(msg, timeout=TIMEOUT)
    return msg


def camera_sent(mailserver, cam_addr, since):
    return [r for r in mailserver.received[since:] if r.mail_from.lower() == cam_addr]


def test_the_owner_commands_the_camera_from_its_chat(short_tmp, mailserver, dc_owner, run):
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner], run)
    alarm(run, cfg)
    seen = set()
    got = camera_messages(dc_owner, cam_addr, 2, seen, TIMEOUT)
    chat = dc_owner.account.get_chat_by_id(got[0].chat_id)
    chat.accept()

    # /snap: the pictures, in the same chat, with the padlock, marked as requested by the owner.
    typed(dc_owner, chat, "/snap")
    run_ok(run, "jobs/inbox", config=cfg)
    run_ok(run, "jobs/capture", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    got = camera_messages(dc_owner, cam_addr, 2, seen, TIMEOUT)
    assert all(m.show_padlock and m.view_type == "Image" and m.chat_id == chat.id for m in got)
    assert got[0].text.startswith("Snapshot ") and f"requested by {dc_owner.addr} (/snap)" in got[0].text

    # /disarm 1h: announced; motion then brings nothing; the heartbeat says disarmed.
    typed(dc_owner, chat, "/disarm 1h")
    run_ok(run, "jobs/inbox", config=cfg)
    [said] = camera_messages(dc_owner, cam_addr, 1, seen, TIMEOUT)
    assert said.show_padlock and said.chat_id == chat.id
    assert said.text.startswith(f"Disarmed by {dc_owner.addr} until ")
    since = len(mailserver.received)
    alarm(run, cfg)
    assert camera_sent(mailserver, cam_addr, since) == []
    run_ok(run, "jobs/heartbeat", config=cfg)
    run_ok(run, "jobs/send", config=cfg)
    [hb] = camera_messages(dc_owner, cam_addr, 1, seen, TIMEOUT)
    assert hb.text.startswith("Heartbeat") and "DISARMED until " in hb.text
    assert "Motion events since: 1." in hb.text

    # /arm: announced; alarms are back.
    typed(dc_owner, chat, "/arm")
    run_ok(run, "jobs/inbox", config=cfg)
    [said] = camera_messages(dc_owner, cam_addr, 1, seen, TIMEOUT)
    assert said.text == f"Armed by {dc_owner.addr}: motion alarms are on."
    alarm(run, cfg)
    got = camera_messages(dc_owner, cam_addr, 2, seen, TIMEOUT)
    assert got[0].text.startswith("Motion detected") and all(m.chat_id == chat.id for m in got)

    # /status and /help answer; ordinary conversation does not.
    typed(dc_owner, chat, "Thanks!")
    typed(dc_owner, chat, "/Status")
    typed(dc_owner, chat, "/help")
    run_ok(run, "jobs/inbox", config=cfg)
    got = camera_messages(dc_owner, cam_addr, 2, seen, TIMEOUT)
    assert [m.text.splitlines()[0].split()[0] for m in got] == ["Status", "Commands"]
    assert "Armed (since " in got[0].text and "Last motion: " in got[0].text
    assert all(m.show_padlock and m.chat_id == chat.id for m in got)


def test_a_group_member_is_answered_where_they_asked(short_tmp, mailserver, dc_owner, dc_account_factory, run):
    bob = dc_account_factory(name="Bob", prefix="bob")
    cam_addr, cfg = camera_setup(short_tmp, mailserver, [dc_owner, bob], run)
    alarm(run, cfg)
    seen = {dc_owner.addr: set(), bob.addr: set()}
    chats = {}
    for acc in (dc_owner, bob):
        got = camera_messages(acc, cam_addr, 2, seen[acc.addr], TIMEOUT)
        chats[acc.addr] = acc.account.get_chat_by_id(got[0].chat_id)
        chats[acc.addr].accept()

    typed(bob, chats[bob.addr], "/status")
    run_ok(run, "jobs/inbox", config=cfg)
    for acc in (dc_owner, bob):
        [answer] = camera_messages(acc, cam_addr, 1, seen[acc.addr], TIMEOUT,
                                   predicate=lambda m: m.text.startswith("Status"))
        assert answer.chat_id == chats[acc.addr].id and answer.show_padlock  # in the group, for both

    contact = bob.account.get_contact_by_addr(cam_addr)
    one_to_one = contact.create_chat()
    assert one_to_one.id != chats[bob.addr].id
    since = len(mailserver.received)
    typed(bob, one_to_one, "/help")
    run_ok(run, "jobs/inbox", config=cfg)
    [answer] = camera_messages(bob, cam_addr, 1, seen[bob.addr], TIMEOUT)
    assert answer.chat_id == one_to_one.id and answer.show_padlock and answer.text.startswith("Commands")
    [out] = camera_sent(mailserver, cam_addr, since)
    assert [a.lower() for a in out.rcpt_tos] == [bob.addr]  # the owner got nothing
