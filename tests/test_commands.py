"""Commands from the chat through the camera's real inbox (loopback Dovecot, real gpg).

Each message is built as a recipient's Delta Chat sends it (helpers.commandkit), delivered
over SMTP, read by ``inbox.poll`` over verified TLS; the answers go out through the real
encrypt and send steps and are decrypted with the recipient's key.

The positive side: every command is acted on and answered in the chat it came from. The
negative side, each as an invariant: the armed state is unchanged, no request is queued,
nothing is queued or sent, and the mail is gone from the mailbox (a stranger learns nothing):
a command in clear text; from a non-recipient; signed by a pending key; with a forged outer
From; a replayed ciphertext of a genuine earlier command; a genuine command older than the
freshness window; a quoted reply with /disarm on a later line.
"""

import time

import pytest

from seccam import armed, autocrypt, keys
from helpers import forgery
from helpers.commandkit import BOB, OWNER, cam, camera, logs, people  # noqa: F401 - fixtures


def texts(sent):
    return [s.text for s in sent]


# -- acted on and answered ---------------------------------------------------------------------
def test_disarm_for_a_while_then_arm_each_announced_with_who(cam):
    cam.command(cam.owner, "/disarm 1h")
    result = cam.poll()
    assert result.commands == 1 and result.answers == 1
    state = cam.armed()
    assert not state.armed and state.by == OWNER and state.via == "chat"
    assert 3590 < state.until - time.time() <= 3600
    [sent] = cam.sent(cam.owner)
    assert sent.text.startswith(f"Disarmed by {OWNER} until ") and "motion is recorded" in sent.text
    assert sent.to == (OWNER,) and not sent.group and not sent.image
    cam.command(cam.owner, "/ARM")  # case does not matter
    cam.poll()
    assert cam.armed().armed and cam.armed().by == OWNER
    assert texts(cam.sent(cam.owner)) == [f"Armed by {OWNER}: motion alarms are on."]
    assert cam.queued() == {}
    assert cam.mailserver.fetch_inbox(cam.address) == []


@pytest.mark.parametrize("words, hours", [("until 07:00", None), ("", None), ("90m", 1.5), ("1d", 24)])
def test_disarm_reads_a_duration_a_time_or_nothing(cam, words, hours):
    cam.command(cam.owner, f"/disarm {words}".strip())
    cam.poll()
    state = cam.armed()
    assert not state.armed
    if words.startswith("until"):
        assert time.localtime(state.until)[3:5] == (7, 0) and 0 < state.until - time.time() <= 86400 + 3600
    elif hours is None:
        assert state.until is None
        assert "until someone arms it again (/arm)" in cam.sent(cam.owner)[0].text
    else:
        assert abs(state.until - time.time() - hours * 3600) < 60


def test_the_inbox_announces_when_a_disarm_ran_out(cam):
    armed.change(cam.spool, False, OWNER, "chat", until=time.time() - 5)
    cam.poll()
    sent = cam.sent(cam.owner)
    assert [s.subject for s in sent] == ["Disarmed", "Armed"]
    assert sent[1].text.startswith(f"Armed again: the disarm by {OWNER} ended at ")
    cam.poll()
    assert cam.sent(cam.owner) == []


def test_a_command_that_changes_nothing_gets_a_short_answer_and_no_announcement(cam):
    cam.command(cam.owner, "/arm")
    result = cam.poll()
    assert result.answers == 1
    assert texts(cam.sent(cam.owner)) == ["Nothing changed: Armed."]
    assert armed.read(cam.spool).id is None  # never written


def test_status_answers_with_the_health_summary(cam):
    cam.command(cam.owner, "/status")
    cam.poll()
    [sent] = cam.sent(cam.owner)
    assert sent.subject == "Status"
    lines = sent.text.splitlines()
    assert lines[0].startswith("Status ") and lines[1] == "Armed."
    for part in ("Cameras: front", "Motion sensors:", "Last motion: never", "Messages waiting to be sent",
                 "Free disk:"):
        assert any(line.startswith(part) for line in lines), (part, lines)


def test_status_while_disarmed_says_until_when_and_counts_motion(cam):
    from seccam import events
    armed.change(cam.spool, False, OWNER, "chat", until=time.time() + 7200)
    cam.spool.items("sets.ready")  # the announcement waits there; the poll sends it with the answer
    events.record(cam.spool, "pir", [(17, time.time())])
    cam.command(cam.owner, "/status")
    cam.poll()
    sent = cam.sent(cam.owner)
    assert [s.subject for s in sent] == ["Disarmed", "Status"]
    assert "DISARMED until " in sent[1].text and "Motion events since: 1." in sent[1].text


def test_help_and_an_unknown_command_answer_in_one_line_each(cam):
    cam.command(cam.owner, "/help")
    cam.command(cam.owner, "/open-the-door now")
    cam.poll()
    sent = cam.sent(cam.owner)
    assert sent[0].subject == "Help" and "/snap" in sent[0].text and "/disarm" in sent[0].text
    assert "Who may /arm and /disarm: every recipient." in sent[0].text
    assert sent[1].text.strip() == ("Unknown command /open-the-door. Commands: /snap [CAMERA], /status, /arm, "
                                    "/disarm [2h | until 07:00], /help.")


def test_snap_queues_a_request_for_the_capture_job(cam):
    cam.command(cam.owner, "/snap FRONT")
    result = cam.poll()
    assert result.requests == 1 and result.answers == 0
    [path] = cam.spool.items("requests.new")
    from seccam import snap
    req = snap.load(path)
    assert (req["by"], req["cameras"], req["to"], req["command"]) == (OWNER, ["front"], None, "/snap FRONT")
    assert cam.sent(cam.owner) == []  # the pictures are the answer (tests/test_snap.py)


@pytest.mark.parametrize("text, answer", [
    ("/snap garage", "No camera named 'garage'. Cameras: front."),
    ("/disarm 2x", "cannot read the duration '2x': say 30m, 2h, 1h30m or 1d. Nothing changed."),
    ("/disarm until 25:00", "cannot read the time '25:00'"),
    ("/arm now", "/arm takes no argument. Nothing changed."),
])
def test_a_bad_argument_is_answered_and_changes_nothing(cam, text, answer):
    cam.command(cam.owner, text)
    cam.poll()
    [sent] = cam.sent(cam.owner)
    assert sent.text.startswith(answer)
    assert cam.armed().armed and cam.spool.items("requests.new") == []


def test_a_group_command_is_answered_in_the_group_and_a_1to1_command_in_that_chat(camera, people):
    cam = camera(recipients=(OWNER, BOB))
    owner, bob = people(OWNER), people(BOB)
    cam.pin(owner)
    cam.pin(bob)
    cam.command(bob, "/help", group=True, to=[cam.address, OWNER])
    cam.poll()
    [sent] = cam.sent(owner)
    assert sent.group and set(sent.to) == {OWNER, BOB}  # the group, both members
    cam.command(bob, "/status")  # in Bob's 1:1 chat with the camera
    cam.poll()
    [sent] = cam.sent(bob)
    assert not sent.group and sent.to == (BOB,) and sent.subject == "Status"
    # A change made in a 1:1 chat is announced to everyone, and answered where it was asked.
    cam.command(bob, "/disarm 2h")
    cam.poll()
    sent = cam.sent(bob)
    assert [(s.group, s.to) for s in sent] == [(True, (OWNER, BOB)), (False, (BOB,))]
    assert sent[0].text.startswith(f"Disarmed by {BOB} until ")
    assert sent[1].text.startswith("Done: DISARMED until ") and "(announced in the group)" in sent[1].text


def test_a_snap_from_a_1to1_chat_names_that_chat(camera, people):
    cam = camera(recipients=(OWNER, BOB))
    owner, bob = people(OWNER), people(BOB)
    cam.pin(owner)
    cam.pin(bob)
    cam.command(bob, "/snap")
    cam.command(owner, "/snap", group=True, to=[cam.address, BOB])
    cam.poll()
    from seccam import snap
    assert [snap.load(p)["to"] for p in cam.spool.items("requests.new")] == [BOB, None]


def test_arm_and_disarm_can_be_kept_to_some_recipients(camera, people):
    cam = camera(recipients=(OWNER, BOB), extra=f'[control]\narm_disarm = ["{OWNER}"]\n')
    owner, bob = people(OWNER), people(BOB)
    cam.pin(owner)
    cam.pin(bob)
    cam.command(bob, "/disarm", group=True)
    cam.command(bob, "/snap", group=True)  # everything else stays open to every recipient
    cam.poll()
    assert cam.armed().armed
    [sent] = cam.sent(owner)
    assert sent.text.startswith(f"Only {OWNER} may arm or disarm this camera")
    assert len(cam.spool.items("requests.new")) == 1
    cam.command(owner, "/disarm", group=True)
    cam.poll()
    assert not cam.armed().armed


def test_with_commands_turned_off_every_command_gets_one_line_and_does_nothing(camera, people):
    cam = camera(extra="[control]\nenabled = false\n")
    owner = people(OWNER)
    cam.pin(owner)
    cam.command(owner, "/disarm")
    cam.poll()
    assert cam.armed().armed
    assert texts(cam.sent(owner)) == ["Commands are turned off on this camera ([control] enabled = false)."]


def test_conversation_in_the_chat_gets_no_answer(cam):
    cam.command(cam.owner, "Thanks, all good here. I'll /disarm it later.")
    result = cam.poll()
    assert result.commands == 0 and cam.sent(cam.owner) == [] and cam.queued() == {}


def test_an_edit_of_an_earlier_message_is_not_a_command(cam):
    cam.command(cam.owner, "/disarm", extra_headers=[("Chat-Edit", "<earlier@seccam.test>")])
    cam.poll()
    assert cam.armed().armed and cam.sent(cam.owner) == []


# -- ignored: state unchanged, nothing queued or sent, the mail gone ------------------------------
def assert_ignored(cam, reader):
    assert cam.armed().armed and armed.read(cam.spool).id is None
    assert cam.queued() == {}
    assert cam.sent(reader) == []
    assert cam.mailserver.fetch_inbox(cam.address) == []


def test_a_command_in_clear_text_is_ignored(cam, logs):
    value = autocrypt.build_header(OWNER, cam.owner.gpg.export_minimal(cam.owner.fpr))
    raw = (f"From: <{OWNER}>\r\nTo: <{cam.address}>\r\nSubject: x\r\nDate: "
           f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\nMessage-ID: <{time.time_ns()}@x>"
           f"\r\nAutocrypt: {value}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n/disarm\r\n").encode()
    cam.deliver(raw)
    result = cam.poll()
    assert result.commands == 0
    assert "command='/disarm' command_ignored='clear text'" in logs.text
    assert_ignored(cam, cam.owner)


def test_a_command_from_someone_who_is_no_recipient_is_ignored(cam, people):
    stranger = people("stranger@seccam.test")
    stranger.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    cam.command(stranger, "/disarm")
    result = cam.poll()
    assert result.ignored == 1 and result.commands == 0
    assert_ignored(cam, cam.owner)


def test_a_command_signed_by_a_pending_key_is_ignored(cam, people):
    new_phone = people(OWNER)
    store = keys.open_store(cam.config, cam.gpg)
    assert store.offer(OWNER, new_phone.gpg.export_minimal(new_phone.fpr), "autocrypt") == keys.Outcome.PENDING
    new_phone.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    cam.command(new_phone, "/disarm")
    result = cam.poll()
    assert result.ignored == 1
    assert_ignored(cam, cam.owner)


def test_a_command_with_a_forged_outer_from_is_ignored(cam, people):
    mallory = people("mallory@seccam.test")
    mallory.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    # Signed by Mallory, but claiming to be the owner outside and inside.
    inner = forgery.inner_message(OWNER, [cam.address], text="/disarm")
    armored = mallory.gpg.encrypt_sign(inner, [cam.fpr], signer=mallory.fpr)
    cam.deliver(forgery.wrap(armored, OWNER, [cam.address], autocrypt.build_header(
        OWNER, mallory.gpg.export_minimal(mallory.fpr))), envelope_from=OWNER)
    assert cam.poll().ignored == 1
    assert_ignored(cam, cam.owner)


def test_a_replayed_ciphertext_of_a_genuine_command_is_ignored(cam):
    disarm = cam.command(cam.owner, "/disarm")
    cam.poll()
    cam.command(cam.owner, "/arm")
    cam.poll()
    assert cam.armed().armed and len(cam.sent(cam.owner)) == 2
    cam.deliver(disarm)  # the same bytes again
    cam.deliver(forgery.wrap(forgery.armored_of(disarm), OWNER, [cam.address], "addr=x; keydata=AAAA"))
    result = cam.poll()
    assert result.ignored == 2 and result.commands == 0
    assert cam.armed().armed and cam.armed().by == OWNER
    assert cam.queued() == {} and cam.sent(cam.owner) == []


def test_a_genuine_command_older_than_the_freshness_window_is_ignored(cam):
    cam.command(cam.owner, "/disarm")
    # The camera reads it 16 minutes after it was signed (the default window is 15).
    result = cam.poll(now=time.time() + 16 * 60)
    assert result.ignored == 1
    assert_ignored(cam, cam.owner)


def test_the_freshness_window_is_configurable(camera, people):
    cam = camera(extra="[control]\nwindow_s = 3600\n")
    owner = people(OWNER)
    cam.pin(owner)
    cam.command(owner, "/disarm")
    cam.poll(now=time.time() + 16 * 60)
    assert not cam.armed().armed


def test_a_quoted_reply_with_disarm_on_a_later_line_is_ignored(cam):
    cam.command(cam.owner, "> Motion detected 2026-12-01 16:18:49 UTC\n> Camera front\n\nthanks\n/disarm")
    cam.command(cam.owner, "ok\n/disarm")
    result = cam.poll()
    assert result.commands == 0
    assert_ignored(cam, cam.owner)


def test_a_command_the_owner_signed_for_someone_else_is_ignored(cam, people):
    """The unwrap-and-rewrap of issue 10: the owner's /disarm to Mallory, re-encrypted to the camera."""
    mallory = people("mallory@seccam.test")
    for a, b in ((cam.owner, mallory), (mallory, cam.owner)):
        a.gpg.import_keys(b.gpg.export_armored(b.fpr))
    mallory.gpg.import_keys(cam.gpg.export_armored(cam.fpr))
    _, armored = forgery.chat_message(cam.owner.gpg, cam.owner.fpr, [mallory.fpr], OWNER, [mallory.address],
                                      text="/disarm")
    rewrapped = forgery.rewrap(mallory.home, forgery.unwrap(mallory.home, armored), [cam.fpr])
    cam.deliver(forgery.wrap(rewrapped, OWNER, [cam.address], "addr=x; keydata=AAAA"))
    assert cam.poll().ignored == 1
    assert_ignored(cam, cam.owner)
