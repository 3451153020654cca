"""``seccam setup``: the guided first run, step by step, re-run, interactive and not.

The end-to-end run with a real Delta Chat scanning the invite is tests/test_e2e_setup.py;
here the owner's key comes from a file (or nobody joins), so every branch is reachable.
"""

import json
import re

import pytest

from helpers.setupkit import configured_address, example_config, relay, seccam  # noqa: F401 - fixture
from test_account import run_cli, terminal  # noqa: F401 - fixture

from seccam import config as config_mod
from seccam.commands import setup as setup_cmd


def with_recipient(cfg, address):
    cfg.write_text(cfg.read_text().replace("# [delivery]\n# recipients = [\"owner@example.org\"]",
                                           f"[delivery]\nrecipients = [\"{address}\"]"))


def test_nobody_joins_in_time_then_a_rerun_skips_what_is_done_and_shows_the_same_invite(short_tmp, relay):
    cfg = example_config(short_tmp)
    first = seccam("setup", "--yes", "--relay", relay.name, "--ca-file", relay.cafile, "--wait", "1", "--no-qr",
                   config=cfg)
    assert first.returncode == 75, first.stderr
    out = first.stdout
    assert "[1/4] The camera's mail account" in out and f"asking {relay.url}" in out
    assert "[2/4] The camera key" in out and "(new; back it up" in out
    assert "[3/4] Your Delta Chat" in out and "nobody joined within 1 s" in first.stderr
    link = re.search(r"^https://i\.delta\.chat/#\S+$", out, re.M).group()
    address = configured_address(cfg)
    assert "&a=" + address.replace("@", "%40") in link
    again = seccam("setup", "--yes", "--wait", "1", "--no-qr", config=cfg)
    assert again.returncode == 75
    assert f"done: {address}" in again.stdout and "(kept)" in again.stdout and link in again.stdout
    assert len(relay.created) == 1
    invites = json.loads(seccam("invite", "list", "--json", config=cfg).stdout)
    assert [(i["label"], i["status"]) for i in invites] == [("seccam setup", "open")]


def test_with_the_owners_key_in_place_setup_sends_the_test_alarm_once(short_tmp, relay, mailserver):
    from helpers import sendkit
    cfg = example_config(short_tmp)
    owner, _ = mailserver.new_user("owner")
    with_recipient(cfg, owner)
    # Recipients but no key looks like a new SD card without the key restored: asked first.
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg)
    assert proc.returncode == 64 and f"the camera has recipients ({owner}). A new key" in proc.stdout
    assert "seccam keys restore FILE" in proc.stdout and "Make a new camera key: not confirmed" in proc.stderr
    assert configured_address(cfg) in relay.created  # the account step itself is done
    assert seccam("keys", "init", config=cfg).returncode == 0
    mailserver.add_camera_address(configured_address(cfg))
    rec = sendkit.make_recipient(owner, config=config_mod.load(cfg))
    try:
        start = len(mailserver.received)
        proc = seccam("setup", "--yes", config=cfg)
        assert proc.returncode == 0, proc.stderr
        assert f"[3/4] Your Delta Chat\n  done: {owner}" in proc.stdout
        assert "sent in " in proc.stdout and f"done: alarms and an hourly heartbeat go to {owner}" in proc.stdout
        sent = [m for m in mailserver.received[start:] if owner in m.rcpt_tos]
        assert len(sent) == 2 and all(m.accepted for m in sent)  # a preview and the full picture, one camera
        assert all(sendkit.decrypt_message(m.raw, rec) for m in sent)
        again = seccam("setup", "--yes", config=cfg)
        assert again.returncode == 0 and "[4/4] A test alarm\n  done: sent " in again.stdout
        assert len([m for m in mailserver.received[start:] if owner in m.rcpt_tos]) == 2
    finally:
        sendkit.kill_agent(rec.home)
        __import__("shutil").rmtree(rec.home, ignore_errors=True)


def test_a_test_alarm_the_server_defers_is_reported_and_not_marked_done(short_tmp, relay, mailserver):
    from helpers import sendkit
    cfg = example_config(short_tmp)
    owner, _ = mailserver.new_user("owner")
    with_recipient(cfg, owner)
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--yes", config=cfg).returncode == 0
    mailserver.add_camera_address(configured_address(cfg))
    rec = sendkit.make_recipient(owner, config=config_mod.load(cfg))
    sendkit.kill_agent(rec.home)
    __import__("shutil").rmtree(rec.home, ignore_errors=True)
    mailserver.smtp_behavior = {"stage": "MAIL", "code": 451, "text": "4.3.0 try later"}
    proc = seccam("setup", "--yes", config=cfg)
    assert proc.returncode == 75 and "not sent yet: deferred: " in proc.stderr and "451" in proc.stderr
    assert not (short_tmp / "state" / "setup.json").exists()
    mailserver.smtp_behavior = None
    proc = seccam("setup", "--yes", "--no-test-alarm", config=cfg)
    assert proc.returncode == 0 and "skipped (--no-test-alarm)" in proc.stdout


def test_setup_with_an_existing_account_from_flags(short_tmp, mailserver):
    from test_account import explicit
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camflag")
    proc = seccam("setup", "--yes", "--address", addr, "--password-file", "-", *explicit(mailserver),
                  "--wait", "0.2", "--no-qr", "--name", "Shed", config=cfg, stdin=password + "\n")
    assert proc.returncode == 75 and "IMAP and SMTP login ok" in proc.stdout
    assert configured_address(cfg) == addr and config_mod.load(cfg).account.display_name == "Shed"


def test_interactive_setup_with_an_existing_account(short_tmp, mailserver, terminal, capsys):
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camia")
    terminal.extend(["2", "Garden", addr, password])
    from test_account import explicit
    code = run_cli(["--config", str(cfg), "setup", "--wait", "0.2", "--no-qr",
                    *map(str, explicit(mailserver))])
    assert code == 75
    out = capsys.readouterr().out
    assert "an existing account: its address and an app password" in out and "IMAP and SMTP login ok" in out
    acc = config_mod.load(cfg).account
    assert (acc.address, acc.display_name) == (addr, "Garden") and password not in out


def test_interactive_setup_with_a_login_url_and_with_a_relay(short_tmp, mailserver, relay, terminal, capsys):
    from seccam import dclogin
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camil")
    url = dclogin.build(addr, password, ih="127.0.0.1", ip=mailserver.imaps_port, sh="127.0.0.1",
                        sp=mailserver.smtps_port)
    terminal.extend(["9", "3", "seccam", url])
    assert run_cli(["--config", str(cfg), "setup", "--wait", "0.2", "--no-qr", "--ca-file", mailserver.cafile]) == 75
    out = capsys.readouterr().out
    assert "please answer 1, 2 or 3" in out and config_mod.load(cfg).account.display_name == "seccam"
    other = short_tmp / "other"
    other.mkdir()
    cfg2 = example_config(other)
    terminal.extend(["1", "", relay.name])
    assert run_cli(["--config", str(cfg2), "setup", "--wait", "0.2", "--no-qr", "--ca-file", relay.cafile]) == 75
    assert configured_address(cfg2) in relay.created


def test_setup_without_a_terminal_uses_the_suggested_relay_and_the_flags(short_tmp, mailserver, monkeypatch, capsys):
    from seccam.commands import account as account_cmd
    asked = []

    def fake(current, rel, ca_file, args, how, make_key=True):
        asked.append((rel.url, how, make_key))
        raise SystemExit(3)
    monkeypatch.setattr(account_cmd, "create_on_relay", fake)
    cfg = example_config(short_tmp)
    with pytest.raises(SystemExit):
        run_cli(["--config", str(cfg), "setup", "--yes"])
    assert asked == [("https://nine.testrun.org/new", "seccam setup", False)]
    assert "relay: nine.testrun.org (the suggested one; choose another with --relay" in capsys.readouterr().out
    addr, password = mailserver.new_user("camdl")
    from seccam import dclogin
    url = dclogin.build(addr, password, ih="127.0.0.1", ip=mailserver.imaps_port, sh="127.0.0.1",
                        sp=mailserver.smtps_port)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(url + "\n"))
    assert run_cli(["--config", str(cfg), "setup", "--yes", "--dclogin", "-", "--ca-file", mailserver.cafile,
                    "--wait", "0.2", "--no-qr"]) == 75
    assert configured_address(cfg) == addr


def test_setup_says_why_it_cannot_wait_for_a_join_without_imap(short_tmp, mailserver):
    from conftest import write_config
    addr, password = mailserver.new_user("camnoimap")
    account = "\n".join(line for line in mailserver.account_toml(addr, password).splitlines()
                         if not line.startswith("imap_"))
    cfg = write_config(short_tmp, account + "\n")
    proc = seccam("setup", "--yes", config=cfg)
    assert proc.returncode == 78 and "account.imap_host is not set" in proc.stderr
    assert "[2/4] The camera key" in proc.stdout


def test_setup_stops_at_a_broken_account_and_a_bad_wait(short_tmp, relay):
    cfg = example_config(short_tmp)
    assert seccam("setup", "--wait", "0", config=cfg).returncode == 64
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg).returncode == 0
    (short_tmp / f"{configured_address(cfg)}.password").unlink()
    proc = seccam("setup", "--yes", config=cfg)
    assert proc.returncode == 78 and "replace it: sudo seccam account new --replace" in proc.stdout
    assert "cannot read" in proc.stderr


# -- what became of the test alarm ------------------------------------------------------------------
def test_await_alarm_reads_the_spool(short_tmp, capsys):
    from seccam.spool import Spool
    spool = Spool(short_tmp / "spool").ensure()
    name = "20261201T000000.000000Z.1.abcd.json"
    assert setup_cmd._await_alarm(spool, name, lambda: None, timeout_s=0, sleep=lambda s: None) == \
        "waiting: not captured within 0 s"
    spool.write("events.done", b"{}", name=name)
    prefix = name.removesuffix(".json") + "-alarm"
    spool.write("outbox.new", b"x", name=prefix + ".00.eml")
    assert setup_cmd._await_alarm(spool, name, lambda: None, timeout_s=0, sleep=lambda s: None) == \
        "waiting: not sent within 0 s"
    for state, text in (("outbox.deferred", "deferred: the server did not take it yet"),
                        ("outbox.failed", f"refused by the server: {prefix}.01.eml"),
                        ("sets.held", "held: waiting for a key")):
        spool.write(state, b"x", name=prefix + ".01.eml")
        assert setup_cmd._await_alarm(spool, name, lambda: None, timeout_s=0) == text
    for state in ("outbox.deferred", "outbox.failed", "sets.held"):
        spool.remove(spool.dir(state) / (prefix + ".01.eml"))
    # The next send run takes it: then it is sent.
    sent = lambda: spool.remove(spool.dir("outbox.new") / (prefix + ".00.eml"))  # noqa: E731
    assert setup_cmd._await_alarm(spool, name, sent, timeout_s=5, sleep=lambda s: None) == "sent"


def test_a_send_error_is_shown_and_the_spool_decides(monkeypatch, capsys):
    from seccam.errors import PermanentError

    class Broken:
        @staticmethod
        def work(cfg):
            raise PermanentError("gpg broke")
    setup_cmd._send(None, Broken)
    assert "(gpg broke)" in capsys.readouterr().err
