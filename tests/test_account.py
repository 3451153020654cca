"""``seccam account`` against the stand-in chatmail relay and the loopback Dovecot + SMTP server.

Invariants: nothing is written unless both logins worked; a failure is one line on stderr and
leaves the configuration byte for byte as it was (and no password file behind); the owner's
file keeps every line; the password is never in any output, log line or status.
"""

import json
import os
import stat
import tomllib

import pytest

from helpers.readable import repo_for_others
from helpers.setupkit import configured_address, example_config, relay, seccam  # noqa: F401 - fixture
from seccam import config as config_mod
from seccam import dclogin


def password_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".password"))


def secret_of(cfg):
    acc = config_mod.load(cfg).account
    return acc.read_password()


def assert_unchanged(directory, cfg, before):
    assert cfg.read_bytes() == before
    assert password_files(directory) == []
    assert not (directory / "state" / "gnupg").exists()


def test_new_makes_an_account_keeps_every_line_of_the_owners_file_and_makes_the_key(short_tmp, relay, mailserver):
    cfg = example_config(short_tmp)
    before = cfg.read_text()
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--name", "Front door", config=cfg)
    assert proc.returncode == 0, proc.stderr
    address = configured_address(cfg)
    mailserver.add_camera_address(address)
    assert address in relay.created and address.endswith("@localhost")
    out = proc.stdout
    assert f"made by the chatmail relay {relay.name}" in out and f"What the operator of {relay.name} can see" in out
    assert "Not the pictures" in out and "camera key: " in out and "(new; back it up" in out
    # The owner's file: every line still there, in order; only [account] added.
    after = cfg.read_text()
    it = iter(after.splitlines())
    assert all(line in it for line in before.splitlines())
    data = tomllib.loads(after)
    assert {k: v for k, v in data.items() if k != "account"} == tomllib.loads(before)
    acc = data["account"]
    assert acc["display_name"] == "Front door" and acc["imap_host"] == acc["smtp_host"] == "localhost"
    assert acc["imap_port"] == mailserver.imaps_port and acc["smtp_security"] == "tls"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    # The secret: its own file, root only here (the test config's group is root), not in the config.
    secret = short_tmp / f"{address}.password"
    assert acc["password_file"] == str(secret) and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() == mailserver.users[address] + "\n"
    assert mailserver.users[address] not in after
    assert (short_tmp / "localhost-ca.pem").read_bytes() == open(relay.cafile, "rb").read()
    # The camera key carries the new address; the account works for the jobs.
    keys = json.loads(seccam("keys", "list", "--json", config=cfg).stdout)
    assert keys["camera"]["uids"] == [address]
    check = seccam("account", "check", config=cfg)
    assert check.returncode == 0 and "IMAP localhost" in check.stdout and "IMAP and SMTP work" in check.stdout
    # Never the password: not in any output, not in the debug log, not in status.
    password = mailserver.users[address]
    for p in (proc, check, seccam("account", "show", config=cfg), seccam("account", "show", "--json", config=cfg),
              seccam("status", "--json", config=cfg)):
        assert password not in p.stdout + p.stderr


def test_the_password_file_is_readable_by_the_service_group(short_tmp, relay):
    cfg = example_config(short_tmp)
    os.chown(cfg, 0, 65534)  # root:nogroup, as install.sh makes it root:seccam
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg).returncode == 0
    secret = short_tmp / f"{configured_address(cfg)}.password"
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, 65534)
    assert (cfg.stat().st_uid, cfg.stat().st_gid) == (0, 65534)


def test_a_self_signed_relays_dclogin_url_is_used_and_certificates_are_still_checked(short_tmp, relay):
    relay.mode = "self-signed"
    cfg = example_config(short_tmp)
    proc = seccam("account", "new", f"DCACCOUNT:https://{relay.name}/new", "--ca-file", relay.cafile, config=cfg)
    assert proc.returncode == 0, proc.stderr
    assert f"servers: the dclogin_url of {relay.name}" in proc.stdout
    assert ("GET", "/.well-known/autoconfig/mail/config-v1.1.xml") not in relay.requests


@pytest.mark.parametrize("mode,code,message", [
    ("garbage", 65, "is not JSON; not a chatmail relay"),
    ("not-object", 65, "is not a JSON object"),
    ("missing-fields", 65, "the answer has no password"),
    ("wrong-domain", 69, "which is not on its own domain localhost; refusing it"),
    ("http-500", 75, "HTTP 500 Internal Server Error"),
    ("http-404", 69, "HTTP 404 Not Found"),
    ("reason", 69, "account creation is disabled on this relay"),
    ("redirect", 65, "HTTP 301 redirect"),
    ("hang", 75, "no answer within 1 s"),
    ("wrong-password", 69, r"the new account \w+@localhost does not work: IMAP localhost:\d+: login as .* failed"),
    ("no-autoconfig", 75, r"the new account \w+@localhost does not work: IMAP localhost:993: cannot connect"),
])
def test_a_relay_that_fails_changes_nothing_and_says_so_in_one_line(short_tmp, relay, mode, code, message):
    relay.mode = mode
    cfg = example_config(short_tmp)
    before = cfg.read_bytes()
    # Dovecot answers a refused login after 2 s (auth_failure_delay): only the hang gets a short timeout.
    timeout = "1" if mode == "hang" else "15"
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--timeout", timeout, config=cfg)
    assert proc.returncode == code, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("seccam: error: ")]
    assert __import__("re").search(message, line), line
    assert_unchanged(short_tmp, cfg, before)


def test_an_unreachable_relay_and_an_untrusted_certificate_change_nothing(short_tmp, relay):
    from test_relay import _closed_port
    cfg = example_config(short_tmp)
    before = cfg.read_bytes()
    proc = seccam("account", "new", f"localhost:{_closed_port()}", config=cfg)
    assert proc.returncode == 75 and "cannot connect: Connection refused" in proc.stderr
    proc = seccam("account", "new", relay.name, config=cfg)
    assert proc.returncode == 69 and "TLS certificate not trusted" in proc.stderr and "--ca-file" in proc.stderr
    proc = seccam("account", "new", relay.name, "--ca-file", str(short_tmp / "nope.pem"), config=cfg)
    assert proc.returncode == 65 and "cannot read the CA file" in proc.stderr
    (short_tmp / "x.pem").write_text("not a certificate")
    proc = seccam("account", "new", relay.name, "--ca-file", str(short_tmp / "x.pem"), config=cfg)
    assert proc.returncode == 65 and "not a PEM certificate" in proc.stderr
    assert_unchanged(short_tmp, cfg, before)
    assert relay.created == []


def test_an_existing_account_is_replaced_only_when_asked_and_after_a_warning_for_recipients(
        short_tmp, relay, mailserver):
    cfg = example_config(short_tmp)
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg).returncode == 0
    first = configured_address(cfg)
    before = cfg.read_bytes()
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg)
    assert proc.returncode == 64 and f"already has an account ({first}); re-run with --replace" in proc.stderr
    assert cfg.read_bytes() == before and len(relay.created) == 1
    # Without recipients --replace is enough; the old account's password file stays.
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", config=cfg)
    assert proc.returncode == 0 and f"replacing the account {first}" in proc.stdout
    second = configured_address(cfg)
    assert second != first and password_files(short_tmp) == sorted([f"{first}.password", f"{second}.password"])
    assert "camera key: " in proc.stdout and "(kept (its user id is" in proc.stdout
    # With recipients: the consequence for their chat is said, and it must be confirmed.
    cfg.write_text(cfg.read_text().replace("# [delivery]\n# recipients = [\"owner@example.org\"]",
                                           "[delivery]\nrecipients = [\"owner@example.org\"]"))
    before = cfg.read_bytes()
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", config=cfg)
    assert proc.returncode == 64 and "not confirmed (no terminal to ask); add --yes" in proc.stderr
    assert "this camera has recipients (owner@example.org)" in proc.stdout and "lands in the same chat" in proc.stdout
    assert cfg.read_bytes() == before
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", "--yes", config=cfg)
    assert proc.returncode == 0 and "this camera has recipients" in proc.stdout
    assert configured_address(cfg) not in (first, second)


def test_a_broken_account_can_be_replaced_but_not_silently(short_tmp, relay, mailserver):
    cfg = example_config(short_tmp)
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg).returncode == 0
    os.unlink(short_tmp / f"{configured_address(cfg)}.password")
    assert seccam("status", config=cfg).returncode == 78
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg)
    assert proc.returncode == 64 and "an [account] that does not load" in proc.stderr
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", config=cfg)
    assert proc.returncode == 0, proc.stderr
    assert config_mod.load(cfg).account.address == configured_address(cfg)
    cfg.write_text(cfg.read_text() + "\nbogus = 1\n")  # broken outside [account]: the real error is shown
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, "--replace", config=cfg)
    assert proc.returncode == 78 and "bogus: unknown key" in proc.stderr


# -- set ---------------------------------------------------------------------------------------
def explicit(mailserver, imap="tls", smtp="tls"):
    imap_port = mailserver.imaps_port if imap == "tls" else mailserver.imap_port
    smtp_port = mailserver.smtps_port if smtp == "tls" else mailserver.smtp_port
    return ["--imap-host", "127.0.0.1", "--imap-port", imap_port, "--imap-security", imap,
            "--smtp-host", "127.0.0.1", "--smtp-port", smtp_port, "--smtp-security", smtp,
            "--ca-file", mailserver.cafile]


def test_set_with_explicit_hosts_checks_the_login_first_and_reads_the_password_without_echo(short_tmp, mailserver):
    cfg = example_config(short_tmp)
    before = cfg.read_bytes()
    addr, password = mailserver.new_user("camset")
    pwfile = short_tmp / "pw"
    pwfile.write_text("wrong\n")
    proc = seccam("account", "set", addr, "--password-file", pwfile, *explicit(mailserver), config=cfg)
    assert proc.returncode == 69 and f"{addr}: IMAP 127.0.0.1:{mailserver.imaps_port}: login as {addr} failed" in \
        proc.stderr and "SMTP 127.0.0.1" in proc.stderr and "nothing was changed" in proc.stderr
    assert_unchanged(short_tmp, cfg, before)
    proc = seccam("account", "set", addr, *explicit(mailserver), config=cfg)
    assert proc.returncode == 64 and "no terminal to ask for the password" in proc.stderr
    proc = seccam("account", "set", addr, "--password-file", "-", *explicit(mailserver, "starttls", "starttls"),
                  config=cfg, stdin=password + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "servers: given on the command line" in proc.stdout and password not in proc.stdout + proc.stderr
    acc = config_mod.load(cfg).account
    assert (acc.imap_port, acc.imap_security, acc.smtp_security) == (mailserver.imap_port, "starttls", "starttls")
    # The same address again (other servers) is an update, not a replacement.
    pwfile.write_text(password + "\n")
    proc = seccam("account", "set", addr.upper(), "--password-file", pwfile, *explicit(mailserver), config=cfg)
    assert proc.returncode == 0, proc.stderr
    assert config_mod.load(cfg).account.imap_security == "tls"
    assert password_files(short_tmp) == [f"{addr}.password"]
    assert seccam("account", "check", config=cfg).returncode == 0


def test_set_refuses_plain_text_to_another_host_and_bad_passwords_before_connecting(short_tmp, mailserver):
    cfg = example_config(short_tmp)
    before = cfg.read_bytes()
    pw = short_tmp / "pw"
    pw.write_text("x\n")
    proc = seccam("account", "set", "cam@example.org", "--password-file", pw, "--imap-host", "example.org",
                  "--imap-security", "plain", "--smtp-host", "example.org", config=cfg)
    assert proc.returncode == 69 and "IMAP without TLS to example.org was asked for" in proc.stderr
    for content, message in ((" pw\n", "begins or ends with white space"), ("\n", "is empty"),
                             (b"\xff\n", "not UTF-8")):
        pw.write_bytes(content if isinstance(content, bytes) else content.encode())
        proc = seccam("account", "set", "cam@example.org", "--password-file", pw, *explicit(mailserver), config=cfg)
        assert proc.returncode == 65 and message in proc.stderr
    pw.write_text("x\n")
    proc = seccam("account", "set", "cam@example.org", "--password-file", short_tmp / "none", config=cfg)
    assert proc.returncode == 65 and "cannot read the password file" in proc.stderr
    proc = seccam("account", "set", "not-an-address", "--password-file", pw, config=cfg)
    assert proc.returncode == 65 and "is not an email address" in proc.stderr
    proc = seccam("account", "set", "cam@example.org", "--password-file", pw, "--imap-host", "a b",
                  "--smtp-host", "x", config=cfg)
    assert proc.returncode == 65 and "is not a host name" in proc.stderr
    assert_unchanged(short_tmp, cfg, before)


def test_set_with_found_servers_outside_the_domain_asks_first(short_tmp, mailserver, monkeypatch, capsys):
    from seccam import cli, mailservers
    from seccam.commands import account as account_cmd
    from seccam.errors import UsageError
    from seccam.mailservers import Found, Server
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camfound")
    (short_tmp / "pw").write_text(password)
    found = Found(Server("127.0.0.1", mailserver.imaps_port, "tls"), Server("127.0.0.1", mailserver.smtps_port, "tls"),
                  None, "SRV records of seccam.test", confirm=True)
    monkeypatch.setattr(mailservers, "discover", lambda *a, **k: found)
    argv = ["--config", str(cfg), "account", "set", addr, "--password-file", str(short_tmp / "pw"),
            "--ca-file", mailserver.cafile]
    args = cli.build_parser().parse_args(argv)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UsageError, match="Send the password there: not confirmed"):
        account_cmd.run(args, None)
    assert "found in DNS (not authenticated)" in capsys.readouterr().out
    args = cli.build_parser().parse_args(argv + ["--yes"])
    assert account_cmd.run(args, None) == 0
    assert "servers: SRV records of seccam.test" in capsys.readouterr().out


# -- import ------------------------------------------------------------------------------------
def test_import_takes_a_dclogin_url_from_stdin_or_the_command_line(short_tmp, mailserver):
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camdcl")
    url = dclogin.build(addr, "unused", ipw=password, ih="127.0.0.1", ip=mailserver.imaps_port, **{"is": "ssl"},
                        sh="127.0.0.1", sp=mailserver.smtp_port, ss="starttls", ic=3)
    proc = seccam("account", "import", "--ca-file", mailserver.cafile, config=cfg, stdin=url + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "asks to accept invalid certificates; seccam verifies them" in proc.stdout
    assert password not in proc.stdout + proc.stderr and "unused" not in proc.stdout + proc.stderr
    acc = config_mod.load(cfg).account
    assert (acc.address, acc.smtp_port, acc.smtp_security) == (addr, mailserver.smtp_port, "starttls")
    assert acc.read_password() == password
    url = dclogin.build(addr, password, ih="127.0.0.1", ip=mailserver.imaps_port, sh="127.0.0.1",
                        sp=mailserver.smtps_port, ic=3)
    proc = seccam("account", "import", url, config=cfg)
    assert proc.returncode == 69 and "TLS certificate not trusted" in proc.stderr and "--ca-file" in proc.stderr


@pytest.mark.parametrize("extra,code,message", [
    ({"su": "other"}, 69, "separate SMTP user"),
    ({"spw": "other"}, 69, "separate SMTP password"),
    ({"ih": "example.org", "is": "plain", "sh": "127.0.0.1"}, 69, "IMAP without TLS to example.org"),
])
def test_import_refuses_what_seccams_account_cannot_hold(short_tmp, mailserver, extra, code, message):
    cfg = example_config(short_tmp)
    before = cfg.read_bytes()
    url = dclogin.build("cam@seccam.test", "s3cret-pw", **{"ih": "127.0.0.1", "sh": "127.0.0.1", **extra})
    proc = seccam("account", "import", url, config=cfg)
    assert proc.returncode == code and message in proc.stderr and "s3cret-pw" not in proc.stderr
    proc = seccam("account", "import", "dclogin:cam@seccam.test?p=s3cret-pw&v=7", config=cfg)
    assert proc.returncode == 65 and "version 7" in proc.stderr and "s3cret-pw" not in proc.stderr
    assert seccam("account", "import", config=cfg, stdin="\n").returncode == 64
    assert_unchanged(short_tmp, cfg, before)


# -- show and check ----------------------------------------------------------------------------
def test_show_and_check_name_the_account_and_what_fails_never_the_password(short_tmp, mailserver):
    from conftest import write_config
    addr, password = mailserver.new_user("camshow")
    cfg = write_config(short_tmp, mailserver.account_toml(addr, password))
    show = seccam("account", "show", config=cfg)
    assert f"address:       {addr}" in show.stdout and f"password:      in {cfg} itself" in show.stdout
    info = json.loads(seccam("account", "show", "--json", config=cfg).stdout)
    assert info["password"] == "in the configuration file" and info["imap"]["port"] == mailserver.imaps_port
    assert password not in show.stdout + json.dumps(info)
    check = seccam("account", "check", config=cfg)
    assert check.returncode == 0 and f"SMTP 127.0.0.1:{mailserver.smtps_port}: ok" in check.stdout
    cfg.write_text(cfg.read_text().replace(password, "wrong-one"))
    check = seccam("account", "check", config=cfg)
    assert check.returncode == 69
    assert f"IMAP 127.0.0.1:{mailserver.imaps_port}: FAILED: " in check.stdout and "login as" in check.stdout
    assert f"SMTP 127.0.0.1:{mailserver.smtps_port}: FAILED: " in check.stdout
    text = cfg.read_text().replace(f"imap_port = {mailserver.imaps_port}", "imap_port = 1")
    cfg.write_text(text.replace(f"smtp_port = {mailserver.smtps_port}", "smtp_port = 1"))
    assert seccam("account", "check", config=cfg).returncode == 75
    cfg.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("imap_")))
    check = seccam("account", "check", config=cfg)
    assert "IMAP -: FAILED: account.imap_host is not set" in check.stdout
    assert "IMAP:          not set" in seccam("account", "show", config=cfg).stdout
    cfg.write_text(f'spool_dir = "{short_tmp}/spool"\nstate_dir = "{short_tmp}/state"\n')
    for sub in ("show", "check"):
        proc = seccam("account", sub, config=cfg)
        assert proc.returncode == 78 and "no [account] yet" in proc.stderr


def test_show_names_a_password_file_it_cannot_stat_and_check_runs_as_the_spool_owner(short_tmp, relay):
    cfg = example_config(short_tmp)
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg).returncode == 0
    (short_tmp / "spool").mkdir(exist_ok=True)
    os.chown(short_tmp / "spool", 65534, 65534)
    # The check switches to the spool's owner, who must still be able to import seccam: from a
    # clone in a 0700 home, the code runs from a copy that the user nobody can read (helpers.readable).
    check = seccam("account", "check", config=cfg, repo=repo_for_others())
    # nobody cannot read root's 0600 password file: exactly what the jobs would hit, named
    assert check.returncode == 69 and "checking as user nobody" in check.stdout
    assert "IMAP -: FAILED: " in check.stdout and "cannot read password_file: Permission denied" in check.stdout
    from seccam.commands.account import describe
    acc = config_mod.load(cfg).account
    os.unlink(acc.password_file)
    assert describe(acc)["password_file_mode"] == "unreadable: No such file or directory"


def test_writing_errors_and_unknown_owners_are_named(short_tmp, monkeypatch):
    from seccam import account
    from seccam.commands.account import _name
    from seccam.errors import ConfigError
    from seccam.mailservers import Server
    settings = account.Settings("a@b.org", "pw", Server("i", 993, "tls"), Server("s", 465, "tls"))
    with pytest.raises(ConfigError, match="configuration file not found"):
        account.write(short_tmp / "missing.toml", settings)
    (short_tmp / "bad.toml").write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="cannot read"):
        account.write(short_tmp / "bad.toml", settings)
    with pytest.raises(ConfigError, match="cannot write: No such file or directory; nothing was changed"):
        account._replace_file(short_tmp / "no" / "dir", b"x", 0o600, -1, -1)
    assert _name(lambda ident: (_ for _ in ()).throw(KeyError(ident)), 4242) == "4242"
    assert "pw" not in repr(settings)


# -- the paths a person at a terminal takes (in-process, with a scripted terminal) -----------------
@pytest.fixture
def terminal(monkeypatch):
    """Make stdin a terminal whose answers (input() and getpass()) come from a list."""
    answers = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": answers.pop(0))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": answers.pop(0))
    return answers


def run_cli(argv):
    from seccam import cli
    args = cli.build_parser().parse_args(argv)
    return args.module.run(args, None)


def test_at_a_terminal_the_password_and_the_login_url_are_asked_for_and_a_replacement_confirmed(
        short_tmp, mailserver, terminal, capsys):
    from seccam.errors import UsageError
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camtty")
    terminal.append(password)
    assert run_cli(["--config", str(cfg), "account", "set", addr, *map(str, explicit(mailserver))]) == 0
    other, other_pw = mailserver.new_user("camtty")
    url = dclogin.build(other, other_pw, ih="127.0.0.1", ip=mailserver.imaps_port, sh="127.0.0.1",
                        sp=mailserver.smtps_port)
    cfg.write_text(cfg.read_text().replace("# [delivery]\n# recipients = [\"owner@example.org\"]",
                                           "[delivery]\nrecipients = [\"owner@example.org\"]"))
    terminal.extend([url, "n"])
    with pytest.raises(UsageError, match="not confirmed; nothing was changed"):
        run_cli(["--config", str(cfg), "account", "import", "--replace", "--ca-file", mailserver.cafile])
    assert configured_address(cfg) == addr
    terminal.extend([url, "yes"])
    assert run_cli(["--config", str(cfg), "account", "import", "--replace", "--ca-file", mailserver.cafile]) == 0
    assert configured_address(cfg) == other
    out = capsys.readouterr().out
    assert f"Its password stays in {short_tmp}/{addr}.password" in out
    assert password not in out and other_pw not in out


def test_without_a_relay_the_suggested_one_is_used_and_said(short_tmp, monkeypatch, capsys):
    from seccam.commands import account as account_cmd
    asked = []
    monkeypatch.setattr(account_cmd, "create_on_relay", lambda current, rel, *a, **k: asked.append(rel.url))
    cfg = example_config(short_tmp)
    assert run_cli(["--config", str(cfg), "account", "new"]) == 0
    assert asked == ["https://nine.testrun.org/new"]
    assert "relay: nine.testrun.org (the suggested one; any other works" in capsys.readouterr().out


def test_a_login_url_without_servers_finds_them_and_a_login_name_is_kept(short_tmp, mailserver, monkeypatch):
    from seccam import account, mailservers
    from seccam.mailservers import Found, Server
    found = Found(Server("127.0.0.1", mailserver.imaps_port, "tls"),
                  Server("127.0.0.1", mailserver.smtps_port, "tls"), None, "autoconfig https://x")
    monkeypatch.setattr(mailservers, "discover", lambda *a, **k: found)
    cfg = example_config(short_tmp)
    addr, password = mailserver.new_user("camnoh")
    url = dclogin.build(addr, password)
    assert run_cli(["--config", str(cfg), "account", "import", url, "--ca-file", mailserver.cafile]) == 0
    assert config_mod.load(cfg).account.imap_port == mailserver.imaps_port
    # A login name other than the address is written (and shown); the check of it is the server's.
    settings = account.Settings(addr, password, found.imap, found.smtp, login="camlogin")
    account.write(cfg, settings)
    assert config_mod.load(cfg).account.login == "camlogin"
    assert "login:         camlogin" in seccam("account", "show", config=cfg).stdout


def test_a_failed_write_leaves_the_old_password_file_and_an_unreadable_recipients_file_is_named(
        short_tmp, mailserver, capsys):
    from seccam import account
    from seccam.commands.account import recipients_of
    from seccam.errors import ConfigError, DataError
    from seccam.mailservers import Server
    cfg = example_config(short_tmp)
    settings = account.Settings("cam@seccam.test", "first", Server("i", 993, "tls"), Server("s", 465, "tls"))
    account.write(cfg, settings)
    secret = short_tmp / "cam@seccam.test.password"
    cfg.write_text(cfg.read_text().replace('address = "cam@seccam.test"', 'address = "cam@seccam.test"\ntypo = 1'))
    before = cfg.read_bytes()
    with pytest.raises(ConfigError, match="account.typo: unknown key"):
        account.write(cfg, account.Settings("cam@seccam.test", "second", settings.imap, settings.smtp))
    assert secret.read_text() == "first\n" and cfg.read_bytes() == before
    with pytest.raises(ConfigError):
        account.write(cfg, account.Settings("new@seccam.test", "x", settings.imap, settings.smtp))
    assert not (short_tmp / "new@seccam.test.password").exists()
    for ca, message in ((short_tmp / "none.pem", "cannot read the CA file"), (secret, "not a PEM certificate")):
        with pytest.raises(DataError, match=message):
            account.write(cfg, account.Settings("cam@seccam.test", "x", settings.imap, settings.smtp, ca_file=ca))
    with pytest.raises(DataError, match="contains a line break"):
        account.check_password("a\nb")
    cfg.write_text(cfg.read_text().replace("typo = 1\n", "").replace(
        "# [delivery]\n# recipients = [\"owner@example.org\"]", "[delivery]\nrecipients = [\"owner@example.org\"]"))
    (short_tmp / "state").mkdir(exist_ok=True)
    (short_tmp / "state" / "recipients.json").write_text("{broken")
    assert recipients_of(config_mod.load(cfg)) == ("owner@example.org", "(and those in an unreadable recipients file)")
    missing_ca = account.Settings("a@b.org", "pw", Server("127.0.0.1", 1, "tls"), Server("127.0.0.1", 1, "tls"),
                                  ca_file=short_tmp / "none.pem")
    [imap, smtp] = account.check(missing_ca.as_account())
    assert not imap.ok and "cannot read ca_file: No such file or directory" in imap.message


def test_a_config_broken_outside_account_is_reported_as_it_is(short_tmp, relay):
    cfg = example_config(short_tmp)
    cfg.write_text(cfg.read_text() + "\nbogus = 1\n")
    proc = seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=cfg)
    assert proc.returncode == 78 and "bogus: unknown key" in proc.stderr and relay.created == []


def test_the_end_of_input_at_a_question_is_a_clear_refusal(monkeypatch):
    import types
    from seccam.commands import account as account_cmd
    from seccam.commands import setup as setup_cmd
    from seccam.errors import UsageError

    def eof(prompt=""):
        raise EOFError
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", eof)
    monkeypatch.setattr("getpass.getpass", eof)
    with pytest.raises(UsageError, match="not confirmed; nothing was changed"):
        account_cmd.confirm("Replace?", types.SimpleNamespace(yes=False))
    with pytest.raises(UsageError, match="end of input"):
        account_cmd.ask_secret("password: ")
    with pytest.raises(UsageError, match="end of input"):
        setup_cmd._ask("Choice", "1")


def test_a_symlinked_configuration_is_edited_where_it_points(short_tmp, relay):
    real = short_tmp / "real"
    real.mkdir()
    target = example_config(real)
    link = short_tmp / "seccam.toml"
    link.symlink_to(target)
    assert seccam("account", "new", relay.name, "--ca-file", relay.cafile, config=link).returncode == 0
    assert link.is_symlink() and configured_address(target) in relay.created
    assert (real / f"{configured_address(target)}.password").exists()
