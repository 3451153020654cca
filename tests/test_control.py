"""seccam.control without mail: what counts as a command, and where its answer goes.

The messages are what the inbox hands over after authentication: the decrypted inner part.
Everything through the real inbox, with real gpg and the loopback server, is in
tests/test_commands.py.
"""

import email
import email.policy
import re

import pytest
from conftest import write_config

from seccam import config, control, encrypt


def message(text=None, headers="", content_type="text/plain; charset=utf-8", raw=None):
    body = raw if raw is not None else (
        f"From: <owner@seccam.test>\r\nTo: <cam@seccam.test>\r\n{headers}Content-Type: {content_type}\r\n\r\n{text}")
    if isinstance(body, str):
        body = body.encode("utf-8")
    return email.message_from_bytes(body, policy=email.policy.compat32)


@pytest.mark.parametrize("text, name, args", [
    ("/snap", "snap", ()),
    ("/SNAP Front", "snap", ("Front",)),
    ("  \r\n\r\n/disarm until 07:00\r\nthanks", "disarm", ("until", "07:00")),
    ("\ufeff/status", "status", ()),
    ("/Disarm   2h  ", "disarm", ("2h",)),
    ("/", "", ()),
    ("/x" + "y" * 200, "x" + "y" * 200, ()),
])
def test_the_first_line_is_the_command(text, name, args):
    cmd = control.parse(message(text))
    assert (cmd.name, cmd.args) == (name, args)
    assert len(cmd.line) <= 80


@pytest.mark.parametrize("text", ["hello /snap", "> /disarm\r\n/disarm", "thanks\r\n/disarm", "", " ", "snap",
                                  "\r\n\r\n"])
def test_anything_else_is_conversation(text):
    assert control.parse(message(text)) is None


def test_edits_and_deletions_are_never_commands():
    assert control.parse(message("/disarm", headers="Chat-Edit: <a@b>\r\n")) is None
    assert control.parse(message("/disarm", headers="Chat-Delete: <a@b>\r\n")) is None


def test_the_text_is_the_first_plain_part_that_is_no_attachment():
    raw = ("From: <owner@seccam.test>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=x.txt\r\n\r\n/disarm\r\n"
           "--b\r\nContent-Type: image/jpeg\r\n\r\n/arm\r\n"
           "--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           "/snap caf=E9\r\n--b--\r\n")
    cmd = control.parse(message(raw=raw))
    assert cmd.name == "snap" and cmd.args == ("café",)


def test_an_unknown_charset_is_read_as_utf8_and_no_text_is_no_command():
    assert control.parse(message("/status", content_type="text/plain; charset=x-unheard-of")).name == "status"
    assert control.parse(message("/status", content_type="image/png")) is None
    assert control.text_of(message(raw=b"From: <a@b>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n")) \
        is None


@pytest.fixture
def two(short_tmp):
    return config.load(write_config(short_tmp, '[delivery]\nrecipients = ["owner@seccam.test", "bob@seccam.test"]\n'))


def test_the_answer_goes_to_the_chat_the_command_came_from(two, short_tmp):
    fpr = "A" * 40
    ours = encrypt.group_id(two, fpr)
    key = lambda: fpr  # noqa: E731
    assert control.chat_of(two, message("/x", headers=f"Chat-Group-ID: {ours}\r\n"), "bob@seccam.test", key) is None
    assert control.chat_of(two, message("/x"), "bob@seccam.test", key) == "bob@seccam.test"
    assert control.chat_of(two, message("/x", headers="Chat-Group-ID: someoneElsesGroup\r\n"), "bob@seccam.test",
                           key) == "bob@seccam.test"
    twice = f"Chat-Group-ID: {ours}\r\nChat-Group-ID: {ours}\r\n"
    assert control.chat_of(two, message("/x", headers=twice), "bob@seccam.test", key) == "bob@seccam.test"
    assert control.chat_of(two, message("/x", headers=f"Chat-Group-ID: {ours}\r\n"), "bob@seccam.test",
                           lambda: None) == "bob@seccam.test"  # no camera key: no group to answer in
    one = config.load(write_config(short_tmp, '[delivery]\nrecipients = ["owner@seccam.test"]\n'))
    assert control.chat_of(one, message("/x"), "owner@seccam.test", key) is None  # the only chat there is


def test_help_names_the_cameras_and_who_may_arm(two, short_tmp):
    text = control.help_text(two)
    assert "(front, yard)" in text and "Who may /arm and /disarm: every recipient." in text
    cfg = config.load(write_config(short_tmp, '[control]\narm_disarm = []\n', cameras=""))
    text = control.help_text(cfg)
    assert "(none configured)" in text and "Who may /arm and /disarm: nobody." in text


def test_a_snap_without_cameras_says_so(short_tmp):
    from seccam.spool import Spool
    cfg = config.load(write_config(short_tmp, "", cameras=""))
    spool = Spool(cfg.spool_dir).ensure()
    ctx, fields = control.handle(cfg, spool, "owner@seccam.test", message("/snap"))
    assert fields == "command='snap' outcome=no-camera" and ctx.answers == 1 and ctx.requests == 0
    assert control.handle(cfg, spool, "owner@seccam.test", message("hello")) is None
    ctx, fields = control.handle(cfg, spool, "owner@seccam.test", message("/snap a b"))
    assert "no-camera" in fields


def test_one_snap_for_a_camera_named_twice(short_tmp):
    from seccam import snap
    from seccam.spool import Spool
    cfg = config.load(write_config(short_tmp))
    spool = Spool(cfg.spool_dir).ensure()
    control.handle(cfg, spool, "owner@seccam.test", message("/snap yard YARD front"))
    [path] = spool.items("requests.new")
    assert snap.load(path)["cameras"] == ["yard", "front"]


@pytest.mark.parametrize("body, problem", [
    ('[control]\nenabled = "yes"\n', "control.enabled: expected true or false"),
    ('[control]\narm_disarm = "owner@seccam.test"\n', "control.arm_disarm: expected a list of email addresses"),
    ('[control]\nwindow_s = 5\n', "control.window_s: must be at least 30"),
    ('[control]\nwindow = 60\n', "control.window: unknown key"),
    ('control = 1\n', "control: expected a table [control]"),
])
def test_a_bad_control_table_is_a_one_line_config_error(short_tmp, body, problem):
    from seccam.errors import ConfigError
    with pytest.raises(ConfigError, match=re.escape(problem)):
        config.load(write_config(short_tmp, body))


def test_control_defaults_and_values(short_tmp):
    cfg = config.load(write_config(short_tmp))
    assert (cfg.control.enabled, cfg.control.arm_disarm, cfg.control.window_s) == (True, None, 900.0)
    cfg = config.load(write_config(short_tmp, '[control]\nenabled = false\narm_disarm = ["A@B.org"]\nwindow_s = 60\n'))
    assert (cfg.control.enabled, cfg.control.arm_disarm, cfg.control.window_s) == (False, ("a@b.org",), 60.0)
