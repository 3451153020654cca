"""The armed state (seccam.armed) and ``seccam arm`` / ``seccam disarm`` from the Pi's shell.

Durations and times of day, the state in force (a disarm that ran out is armed), every change
announced exactly once with who made it, a damaged state file counting as armed, status and
the heartbeat saying "disarmed until ...".
"""

import json
import os
import time

import pytest
from conftest import CAMERAS_OK, write_config

from seccam import armed, config, events, health, heartbeat, replies
from seccam.spool import Spool

OWNER = "owner@seccam.test"


@pytest.fixture
def spool(short_tmp):
    return Spool(short_tmp / "spool").ensure()


def announcements(spool):
    out = []
    for path in spool.items("sets.ready"):
        meta = json.loads((path / "meta.json").read_text())
        assert meta["kind"] == "reply" and "to" not in meta  # to everyone
        out.append(meta["text"])
    return out


# -- durations and times -------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("30m", 1800), ("1h30m", 5400), ("90min", 5400),
                                           ("1d", 86400), ("1D2H", 93600), (" 5m ", 300)])
def test_durations(text, seconds):
    assert armed.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "-1h", "0m", "400d", "1.5h", "2h 30m"])
def test_a_bad_duration_says_what_is_accepted(text):
    with pytest.raises(armed.BadTime, match="30m, 2h|at most 366 days"):
        armed.parse_duration(text)


def test_a_time_of_day_is_the_next_time_the_clock_shows_it():
    now = time.time()
    for text in ("07:00", "7", "23:59", "0:00"):
        when = armed.parse_clock(text, now)
        hour, minute = (int(x) for x in (text.split(":") + ["0"])[:2])
        assert time.localtime(when)[3:5] == (hour, minute)
        assert now < when <= now + 86400 + 3600
    one_minute_ago = time.localtime(now - 60)
    assert armed.parse_clock(time.strftime("%H:%M", one_minute_ago), now) > now + 86400 - 3700  # tomorrow


@pytest.mark.parametrize("text", ["24:00", "7:60", "noon", "07:00:00", ""])
def test_a_bad_time_of_day_says_what_is_accepted(text):
    with pytest.raises(armed.BadTime, match="24-hour clock"):
        armed.parse_clock(text, time.time())


def test_what_disarm_understands():
    now = time.time()
    assert armed.parse_until([], now) is None
    assert armed.parse_until(["2h"], now) == now + 7200
    assert armed.parse_until(["until", "07:00"], now) == armed.parse_clock("07:00", now)
    assert armed.parse_until(["TILL", "7:00"], now) == armed.parse_clock("07:00", now)
    assert armed.parse_until(["07:00"], now) == armed.parse_clock("07:00", now)
    for words in (["until"], ["2h", "now"], ["until", "7", "am"]):
        with pytest.raises(armed.BadTime):
            armed.parse_until(words, now)


# -- the state ------------------------------------------------------------------------------------
def test_a_fresh_camera_is_armed(spool):
    state = armed.current(spool)
    assert state.armed and state.text() == "Armed." and armed.is_armed(spool)


def test_every_change_is_written_once_and_announced_once(spool):
    now = time.time()
    state, changed = armed.change(spool, False, OWNER, "chat", until=now + 3600, now=now)
    assert changed and not state.armed and state.announced
    assert armed.read(spool) == state
    assert not armed.is_armed(spool, now + 3599)
    [text] = announcements(spool)
    assert text.startswith(f"Disarmed by {OWNER} until ") and "/arm arms it again" in text
    # The same again changes nothing and announces nothing.
    assert armed.change(spool, False, OWNER, "chat", until=now + 3600, now=now + 1) == (state, False)
    assert len(announcements(spool)) == 1
    # A new end is a change.
    assert armed.change(spool, False, "bob@seccam.test", "chat", until=None, now=now + 2)[1]
    assert "until someone arms it again (/arm)" in announcements(spool)[-1]
    state, changed = armed.change(spool, True, OWNER, "shell", now=now + 3)
    assert changed and state.armed and state.via == "shell"
    assert announcements(spool)[-1] == f"Armed by {OWNER}: motion alarms are on."
    assert armed.change(spool, True, OWNER, "shell", now=now + 4)[1] is False


def test_a_disarm_that_ran_out_counts_as_armed_without_anybody_writing(spool):
    now = time.time()
    armed.change(spool, False, OWNER, "chat", until=now + 60, now=now)
    state = armed.current(spool, now + 61)
    assert state.armed and state.expired
    assert state.text().startswith(f"Armed (the disarm by {OWNER} ended at ")
    assert not armed.read(spool).armed  # the file itself was not rewritten
    # Arming it then changes nothing; disarming it again is a change.
    assert armed.change(spool, True, OWNER, "chat", now=now + 62)[1] is False
    assert armed.change(spool, False, OWNER, "chat", now=now + 63)[1] is True


@pytest.mark.parametrize("content, error", [
    (b"{broken", "not JSON"),
    (b'{"version": 1, "armed": "no"}', "not a version 1 armed state"),
    (b'{"version": 1, "armed": false, "until": "tomorrow"}', "until is not a time"),
])
def test_a_damaged_state_counts_as_armed_and_the_next_change_sets_it_aside(spool, content, error):
    (spool.dir("state") / "armed.json").write_bytes(content)
    state = armed.current(spool)
    assert state.armed and error in state.error
    assert state.text().startswith("Armed (the armed state could not be read")
    armed.change(spool, False, OWNER, "chat")
    assert not armed.current(spool).armed
    [aside] = spool.items("corrupt")
    assert aside.read_bytes() == content and "unreadable armed state" in spool.read_reason(aside)


def test_an_announcement_a_killed_run_left_unpublished_is_published_once(spool):
    now = time.time()
    state = armed.State(armed=False, until=None, by=OWNER, via="chat", changed=now, id="20261201T120000.000000Z.1.ab",
                        announced=False)
    armed._write(spool, state)
    assert armed.announce_pending(spool, now) is True
    assert armed.announce_pending(spool, now) is False
    assert len(announcements(spool)) == 1 and armed.read(spool).announced
    # Killed after publishing but before recording it: the queued one is not published again.
    armed._write(spool, state)
    assert armed.announce_pending(spool, now) is True
    assert len(announcements(spool)) == 1


def test_status_and_the_heartbeat_say_disarmed_until_and_count_the_motion(short_tmp):
    cfg = config.load(write_config(short_tmp, cameras=CAMERAS_OK))
    spool = Spool(cfg.spool_dir).ensure()
    armed.change(spool, False, OWNER, "chat", until=time.time() + 7200)
    events.record(spool, "pir", [(17, time.time())])
    snap = health.snapshot(cfg, spool)
    assert snap["armed"]["armed"] is False and snap["armed"]["motion_since"] == 1
    assert snap["armed"]["by"] == OWNER and snap["armed"]["until"]
    heartbeat.process(cfg, spool)
    [hb] = [p for p in spool.items("sets.ready") if p.name.endswith("-heartbeat.set")]
    text = json.loads((hb / "meta.json").read_text())["health"]["text"]
    assert text.splitlines()[1].startswith("DISARMED until ")
    assert "Motion events since: 1." in text


# -- seccam arm / disarm --------------------------------------------------------------------------
def test_disarm_and_arm_from_the_shell(short_tmp, run):
    path = write_config(short_tmp, cameras=CAMERAS_OK)
    spool = Spool(short_tmp / "spool")
    proc = run("bin/seccam", "disarm", "--for", "2h", config=path, env={"SUDO_USER": "pi"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("DISARMED until ") and "by the camera's shell (user pi)" in proc.stdout
    state = armed.current(spool)
    assert not state.armed and state.via == "shell" and abs(state.until - time.time() - 7200) < 60
    proc = run("bin/seccam", "disarm", "--for", "2h", config=path)
    assert proc.returncode == 0 and not proc.stdout.startswith("Nothing")  # a new end
    proc = run("bin/seccam", "arm", "--by", "the night  schedule", config=path)
    assert proc.returncode == 0 and proc.stdout.startswith("Armed (since ")
    assert "by the night schedule" in proc.stdout
    assert announcements(spool)[-1] == "Armed by the night schedule: motion alarms are on."
    proc = run("bin/seccam", "arm", config=path)
    assert proc.returncode == 0 and proc.stdout.startswith("Nothing changed: Armed (since ")
    proc = run("bin/seccam", "disarm", "--until", "07:00", config=path, env={"SUDO_USER": "", "LOGNAME": "anna"})
    assert proc.returncode == 0 and "(user anna)" in proc.stdout
    assert time.localtime(armed.current(spool).until)[3:5] == (7, 0)
    proc = run("bin/seccam", "disarm", config=path)
    assert proc.returncode == 0 and "until someone arms it again (/arm)" in proc.stdout
    status = run("bin/seccam", "status", config=path)
    assert "DISARMED    DISARMED until someone arms it again" in status.stdout
    assert "motion events since: 0; arm again: seccam arm (or /arm)" in status.stdout
    assert len(announcements(spool)) == 5


@pytest.mark.parametrize("args, message", [(("--for", "2x"), "cannot read the duration '2x'"),
                                           (("--until", "25:00"), "cannot read the time '25:00'"),
                                           (("--for", "1h", "--until", "07:00"), "not allowed with argument")])
def test_a_bad_disarm_is_a_usage_error_that_changes_nothing(short_tmp, run, args, message):
    path = write_config(short_tmp, cameras=CAMERAS_OK)
    proc = run("bin/seccam", "disarm", *args, config=path)
    assert proc.returncode == (2 if "allowed" in message else 64), proc.stderr
    assert message in proc.stderr
    assert armed.current(Spool(short_tmp / "spool")).armed


def test_from_the_shell_the_announcement_is_sent_at_once(short_tmp, run, mailserver):
    from helpers.commandkit import Person
    addr, password = mailserver.new_user("cam")
    mailserver.add_camera_address(addr)
    if OWNER not in mailserver.users:
        mailserver.add_user(OWNER)
    path = write_config(short_tmp, mailserver.account_toml(addr, password) + f'[delivery]\nrecipients = ["{OWNER}"]\n',
                        cameras=CAMERAS_OK)
    assert run("bin/seccam", "keys", "init", config=path).returncode == 0
    owner = Person(OWNER)
    try:
        key = short_tmp / "owner.asc"
        key.write_bytes(owner.gpg.export_armored(owner.fpr))
        proc = run("bin/seccam", "keys", "import", key, "--address", OWNER, config=path)
        assert proc.returncode == 0, proc.stderr
        since = len(mailserver.received)
        proc = run("bin/seccam", "disarm", "--for", "1h", config=path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        sent = [r for r in mailserver.received[since:] if r.mail_from.lower() == addr]
        assert len(sent) == 1 and sent[0].accepted and sent[0].rcpt_tos == [OWNER]
        # Without a server the change still holds and the announcement waits in the spool.
        mailserver.stop_smtp()
        try:
            proc = run("bin/seccam", "arm", config=path)
        finally:
            mailserver.start_smtp()
        assert proc.returncode == 0 and "the announcement waits in the spool" in proc.stderr
        assert armed.current(Spool(short_tmp / "spool")).armed
        assert Spool(short_tmp / "spool").items("outbox.deferred")
    finally:
        owner.close()


def test_replies_clean_only_what_is_old(spool):
    old = spool.make_tmp_dir(replies.TMP_SUFFIX)
    young = spool.make_tmp_dir(replies.TMP_SUFFIX)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert replies.clean(spool) == 1
    assert young.exists() and not old.exists()


def test_a_reply_that_cannot_be_written_leaves_nothing_behind(short_tmp):
    """A real ENOSPC (a full tmpfs) is a DiskFullError; any other failure a TemporaryError."""
    import shutil
    import subprocess

    from seccam.errors import DiskFullError, TemporaryError
    mnt = short_tmp / "fs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")  # CI runs as root: it can
    try:
        spool = Spool(mnt / "spool").ensure()
        with pytest.raises(OSError):
            (mnt / "filler").write_bytes(b"x" * 100_000)
        with pytest.raises(DiskFullError, match="no space left"):
            replies.publish(spool, replies.new_id(), "x" * 5000, "Status")
        assert list(spool.dir("tmp").iterdir()) == [] and spool.items("sets.ready") == []
        (mnt / "filler").unlink()
        shutil.rmtree(spool.dir("sets.ready"))
        with pytest.raises(TemporaryError, match="writing reply"):
            replies.publish(spool, replies.new_id(), "x", "Status")
        assert list(spool.dir("tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_times_for_people():
    now = time.time()
    assert armed.clock(None) == "?"
    assert armed.clock(now) == time.strftime("%H:%M", time.localtime(now))
    assert armed.clock(now + 3 * 86400) == time.strftime("%a %H:%M", time.localtime(now + 3 * 86400))
    assert armed.clock(now + 30 * 86400) == time.strftime("%Y-%m-%d %H:%M", time.localtime(now + 30 * 86400))


def test_the_end_of_a_disarm_is_recorded_and_announced_once(spool):
    now = time.time()
    armed.change(spool, False, OWNER, "chat", until=now + 60, now=now)
    assert armed.expire(spool, now + 30) is False  # not yet
    assert armed.expire(spool, now + 90) is True
    state = armed.read(spool)
    assert state.armed and state.via == "timer" and state.by == OWNER and state.changed == now + 60
    assert state.text().startswith("Armed (since ") and f"when the disarm by {OWNER} ended" in state.text()
    assert announcements(spool)[-1].startswith(f"Armed again: the disarm by {OWNER} ended at ")
    assert armed.expire(spool, now + 120) is False and len(announcements(spool)) == 2
    armed.change(spool, False, OWNER, "chat", now=now + 130)  # until armed: never runs out
    assert armed.expire(spool, now + 10 ** 6) is False
