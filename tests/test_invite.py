"""``seccam invite`` and the invite records (seccam.invites): link format, secrets, uses, expiry,
list, show, revoke, QR code output, ``--wait`` timing out, and pruning."""

import json
import logging
import re
import stat
import urllib.parse

import pytest

from seccam import invites
from seccam.errors import UsageError
from seccam.invites import InviteStore

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
NOW = 1_790_000_000.0


@pytest.fixture
def store(short_tmp):
    return InviteStore(short_tmp / "state")


# -- records -------------------------------------------------------------------------------
def test_link_has_the_legacy_format_without_v3(store):
    rec = store.create("cam+1@example.org", FPR, "Front door é", now=NOW)
    link = invites.link(rec)
    assert link.startswith(f"https://i.delta.chat/#{FPR}&i=")
    assert "&v=" not in link
    fields = dict(p.split("=", 1) for p in link.split("#", 1)[1].split("&")[1:])
    assert list(fields) == ["i", "s", "a", "n"]
    assert fields["i"] == rec["invitenumber"] and fields["s"] == rec["auth"]
    assert urllib.parse.unquote_plus(fields["a"]) == "cam+1@example.org"
    assert fields["a"] == "cam%2B1%40example.org"
    assert urllib.parse.unquote_plus(fields["n"]) == "Front door é"


def test_long_names_are_shortened_like_delta_chat_does():
    assert invites.shorten_name("x" * 30) == "x" * 24 + "_"
    assert invites.shorten_name("short") == "short"


def test_secrets_are_random_and_shaped_like_delta_chats(store):
    recs = [store.create("cam@example.org", FPR, "cam", now=NOW) for _ in range(20)]
    tokens = [r["invitenumber"] for r in recs] + [r["auth"] for r in recs]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == 24 and re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in tokens)
    assert len({r["id"] for r in recs}) == 20


def test_invite_is_single_use_and_expires_after_24_hours_by_default(store):
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)
    assert rec["uses"] == 1 and invites.status(rec, NOW) == invites.OPEN
    assert invites.status(rec, NOW + 24 * 3600 - 1) == invites.OPEN
    assert invites.status(rec, NOW + 24 * 3600) == invites.EXPIRED
    rec = store.complete(rec["id"], "a@example.org", FPR, now=NOW + 5)
    assert invites.status(rec, NOW + 6) == invites.USED


def test_records_are_private_files(store):
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((store.dir / f"{rec['id']}.json").stat().st_mode) == 0o600
    assert not [p for p in store.dir.iterdir() if p.name.endswith(".tmp")]


def test_lookups_find_only_exact_secrets(store):
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)
    assert store.find_by_invitenumber(rec["invitenumber"])["id"] == rec["id"]
    assert store.find_by_auth(rec["auth"])["id"] == rec["id"]
    assert store.find_by_auth(rec["invitenumber"]) is None
    assert store.find_by_invitenumber(rec["invitenumber"][:-1]) is None
    assert store.find_by_auth("") is None and store.find_by_auth(None) is None


def test_pending_joins_per_invite_are_bounded(store):
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)
    for i in range(invites.MAX_PENDING + 5):
        store.add_pending(rec["id"], f"p{i}@example.org", FPR, now=NOW + i)
    pending = store.get(rec["id"])["pending"]
    assert len(pending) == invites.MAX_PENDING and pending[-1]["address"] == f"p{invites.MAX_PENDING + 4}@example.org"


def test_prune_forgets_long_closed_invites_and_returns_unfinished_keys(store):
    old = store.create("cam@example.org", FPR, "cam", ttl_s=60, now=NOW)
    store.add_pending(old["id"], "a@example.org", FPR, now=NOW)
    fresh = store.create("cam@example.org", FPR, "cam", now=NOW)
    assert store.prune(now=NOW + 120) == [FPR]
    assert store.get(old["id"])["pending"] == []
    assert store.prune(now=NOW + 120 + invites.KEEP_CLOSED_S + 1) == []
    assert store.get(old["id"]) is None
    assert store.get(fresh["id"]) is not None  # closed (expired) for less than KEEP_CLOSED_S


@pytest.mark.parametrize("text,seconds", [("24h", 86400), ("30m", 1800), ("90s", 90), ("7d", 604800),
                                          ("600", 600), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert invites.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "0", "31d", "5w"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError):
        invites.parse_duration(text)


def test_unreadable_record_is_skipped_with_a_warning(store, caplog, monkeypatch):
    # An entry point run earlier in this process may have stopped "seccam" propagating to the root logger.
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    store.create("cam@example.org", FPR, "cam", now=NOW)
    (store.dir / "deadbeef.json").write_text("{not json")
    assert len(store.all()) == 1
    assert "invite_unreadable" in caplog.text


def test_the_store_names_its_directory(store):
    assert repr(store) == f"InviteStore({str(store.dir)!r})"


def test_a_state_dir_that_cannot_hold_the_invites_is_a_temporary_error(short_tmp):
    (short_tmp / "state").write_text("a file, not a directory")
    with pytest.raises(invites.TemporaryError, match="cannot create"):
        InviteStore(short_tmp / "state").create("cam@example.org", FPR, "cam", now=NOW)


def test_a_store_locked_by_another_process_for_too_long_is_a_temporary_error(store, monkeypatch):
    import fcntl
    import os
    store.create("cam@example.org", FPR, "cam", now=NOW)
    monkeypatch.setattr(invites, "_LOCK_TIMEOUT_S", 0.2)
    fd = os.open(store.dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(invites.TemporaryError, match="locked by another process"):
            store.create("cam@example.org", FPR, "cam", now=NOW)
    finally:
        os.close(fd)
    assert len(store.all()) == 1


def test_a_failed_write_keeps_the_old_record_and_leaves_no_temporary_file(store, monkeypatch):
    import errno
    import os
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(invites.TemporaryError, match="No space left"):
        store.add_pending(rec["id"], "a@example.org", FPR, now=NOW)
    monkeypatch.undo()
    assert store.get(rec["id"])["pending"] == []
    assert sorted(p.name for p in store.dir.iterdir()) == [".lock", f"{rec['id']}.json"]


def test_a_json_file_that_is_not_an_invite_is_refused_and_skipped(store):
    (store.dir).mkdir(parents=True)
    (store.dir / "0badc0de.json").write_text('["not", "an", "invite"]')
    with pytest.raises(invites.DataError, match=r"not a JSON object \(invite record expected\)"):
        store.get("0badc0de")
    assert store.all() == []


@pytest.mark.parametrize("ttl_s", [0, invites.MAX_TTL_S + 1])
def test_an_expiry_out_of_range_is_a_usage_error(store, ttl_s):
    with pytest.raises(UsageError, match="expiry must be"):
        store.create("cam@example.org", FPR, "cam", ttl_s=ttl_s, now=NOW)


def test_a_new_invite_never_reuses_the_id_of_an_existing_one(store, monkeypatch):
    import secrets
    store.dir.mkdir(parents=True)
    (store.dir / "deadbeef.json").write_text("{}")
    ids = iter(["deadbeef"])
    real = secrets.token_hex
    monkeypatch.setattr(invites.secrets, "token_hex", lambda n=None: next(ids, None) or real(n))
    rec = store.create("cam@example.org", FPR, "cam", now=NOW)
    assert rec["id"] != "deadbeef" and (store.dir / "deadbeef.json").read_text() == "{}"


def test_protocol_steps_on_a_vanished_invite_are_data_errors(store):
    with pytest.raises(invites.DataError, match="vanished"):
        store.add_pending("00000000", "a@example.org", FPR, now=NOW)
    with pytest.raises(invites.DataError, match="vanished"):
        store.complete("00000000", "a@example.org", FPR, now=NOW)


# -- the command ---------------------------------------------------------------------------------
ACCOUNT = """
    [account]
    address = "cam@seccam.test"
    display_name = "Front door"
    password = "x"
    smtp_host = "127.0.0.1"
    smtp_security = "plain"
    imap_host = "127.0.0.1"
    imap_security = "plain"
    """


@pytest.fixture
def cam_config(short_tmp, run):
    from conftest import write_config
    path = write_config(short_tmp, ACCOUNT)
    proc = run("bin/seccam", "keys", "init", config=path)
    assert proc.returncode == 0, proc.stderr
    return path


def invite_ids(run, config):
    proc = run("bin/seccam", "invite", "list", "--json", config=config)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_invite_prints_link_and_terminal_qr_and_writes_a_png(cam_config, short_tmp, run):
    png = short_tmp / "invite.png"
    proc = run("bin/seccam", "invite", "--png", png, "--uses", "2", "--expires", "2h", "--label", "Anna",
               config=cam_config)
    assert proc.returncode == 0, proc.stderr
    links = [ln for ln in proc.stdout.splitlines() if ln.startswith("https://i.delta.chat/#")]
    assert len(links) == 1 and "&v=3" not in links[0] and "&n=Front+door" in links[0]
    assert "\u2588" in proc.stdout or "\u2580" in proc.stdout  # qrencode's UTF-8 blocks
    assert png.read_bytes().startswith(b"\x89PNG")
    assert png.stat().st_mode & 0o777 == 0o600  # the picture carries both secrets
    [view] = invite_ids(run, cam_config)
    assert (view["uses"], view["label"], view["status"]) == (2, "Anna", "open")


def test_list_never_shows_the_secrets(cam_config, short_tmp, run):
    proc = run("bin/seccam", "invite", "--no-qr", config=cam_config)
    link = proc.stdout.splitlines()[0]
    secrets_ = re.search(r"&i=([^&]+)&s=([^&]+)", link).groups()
    for args in (("invite", "list"), ("invite", "list", "--json")):
        out = run("bin/seccam", *args, config=cam_config).stdout
        assert not any(s in out for s in secrets_)
    [view] = invite_ids(run, cam_config)
    assert "auth" not in view and "invitenumber" not in view


def test_show_repeats_the_link_and_revoke_closes_the_invite(cam_config, run):
    proc = run("bin/seccam", "invite", "--no-qr", config=cam_config)
    link = proc.stdout.splitlines()[0]
    [view] = invite_ids(run, cam_config)
    shown = run("bin/seccam", "invite", "show", view["id"], "--no-qr", config=cam_config)
    assert shown.returncode == 0 and shown.stdout.splitlines()[0] == link
    revoked = run("bin/seccam", "invite", "revoke", view["id"], config=cam_config)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert invite_ids(run, cam_config)[0]["status"] == "revoked"
    shown = run("bin/seccam", "invite", "show", view["id"], config=cam_config)
    assert shown.returncode == 65 and "revoked" in shown.stderr
    unknown = run("bin/seccam", "invite", "revoke", "00000000", config=cam_config)
    assert unknown.returncode == 65 and "no invite" in unknown.stderr
    assert run("bin/seccam", "invite", "revoke", "../x", config=cam_config).returncode == 64


def test_invite_without_a_camera_key_says_what_to_do(short_tmp, run):
    from conftest import write_config
    path = write_config(short_tmp, ACCOUNT)
    proc = run("bin/seccam", "invite", config=path)
    assert proc.returncode == 69 and "seccam keys init" in proc.stderr


def test_invite_without_imap_is_a_config_error(short_tmp, run):
    from conftest import write_config
    path = write_config(short_tmp, ACCOUNT.replace('imap_host = "127.0.0.1"', ""))
    proc = run("bin/seccam", "invite", config=path)
    assert proc.returncode == 78 and "imap_host" in proc.stderr


def test_bad_arguments_are_usage_errors(cam_config, run):
    assert run("bin/seccam", "invite", "--expires", "soon", config=cam_config).returncode == 64
    assert run("bin/seccam", "invite", "--uses", "0", config=cam_config).returncode == 64
    assert invite_ids(run, cam_config) == []


def test_wait_gives_up_after_the_timeout_and_keeps_the_invite(short_tmp, mailserver, run):
    from conftest import write_config
    addr, password = mailserver.new_user("camw")
    path = write_config(short_tmp, f"""
        [account]
        address = "{addr}"
        password = "{password}"
        smtp_host = "127.0.0.1"
        smtp_port = {mailserver.smtps_port}
        smtp_security = "tls"
        imap_host = "127.0.0.1"
        imap_port = {mailserver.imaps_port}
        imap_security = "tls"
        ca_file = "{mailserver.cafile}"
        """)
    assert run("bin/seccam", "keys", "init", config=path).returncode == 0
    proc = run("bin/seccam", "invite", "--no-qr", "--wait", "--timeout", "2", config=path)
    assert proc.returncode == 75, proc.stderr
    assert "nobody joined within 2 s" in proc.stderr
    assert invite_ids(run, path)[0]["status"] == "open"


def test_invite_without_an_account_is_a_config_error(short_tmp, run):
    from conftest import write_config
    proc = run("bin/seccam", "invite", config=write_config(short_tmp))
    assert proc.returncode == 78 and "[account] is missing" in proc.stderr


def test_a_wait_timeout_that_is_not_positive_is_a_usage_error(cam_config, run):
    proc = run("bin/seccam", "invite", "--wait", "--timeout", "0", config=cam_config)
    assert proc.returncode == 64 and "--timeout must be positive" in proc.stderr
    assert invite_ids(run, cam_config) == []


def test_list_without_invites_says_how_to_create_one_and_show_of_an_unknown_id_fails(cam_config, run):
    proc = run("bin/seccam", "invite", "list", config=cam_config)
    assert proc.returncode == 0 and proc.stdout.strip() == "no invites (create one with: seccam invite)"
    proc = run("bin/seccam", "invite", "show", "00000000", config=cam_config)
    assert proc.returncode == 65 and "no invite 00000000" in proc.stderr


# -- QR code rendering ----------------------------------------------------------------------------
def test_without_qrencode_the_link_still_works_but_a_png_cannot_be_written(short_tmp, monkeypatch):
    import io
    from seccam.commands import invite as invite_cmd
    from seccam.errors import DataError
    monkeypatch.setenv("PATH", str(short_tmp))  # no qrencode on it
    out = io.StringIO()
    invite_cmd.render_qr("https://i.delta.chat/#x", out=out)
    assert "install qrencode" in out.getvalue()
    with pytest.raises(DataError, match="qrencode is not installed"):
        invite_cmd.render_qr("https://i.delta.chat/#x", png=short_tmp / "qr.png", terminal=False, out=out)


def test_qrencode_failures_are_reported_for_the_terminal_and_fatal_for_the_png(short_tmp):
    import io
    from seccam.commands import invite as invite_cmd
    from seccam.errors import DataError
    out = io.StringIO()
    invite_cmd.render_qr("https://i.delta.chat/#" + "x" * 8000, out=out)  # too long for any QR code
    assert out.getvalue().startswith("(qrencode failed: ")
    with pytest.raises(DataError, match="cannot write .*missing/qr.png: No such file or directory"):
        invite_cmd.render_qr("https://i.delta.chat/#x", png=short_tmp / "missing" / "qr.png", terminal=False)
    with pytest.raises(DataError, match="qrencode could not make"):
        invite_cmd.render_qr("https://i.delta.chat/#" + "x" * 8000, png=short_tmp / "qr.png", terminal=False)
    assert not (short_tmp / "qr.png").exists()


def test_an_existing_png_becomes_private_and_a_symlink_is_not_followed(short_tmp):
    from seccam.commands import invite as invite_cmd
    from seccam.errors import DataError
    png = short_tmp / "old.png"
    png.write_bytes(b"old")
    png.chmod(0o644)
    invite_cmd.render_qr("https://i.delta.chat/#x", png=png, terminal=False)
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_mode & 0o777 == 0o600
    target = short_tmp / "target"
    target.write_text("keep")
    (short_tmp / "link.png").symlink_to(target)
    with pytest.raises(DataError, match="cannot write"):
        invite_cmd.render_qr("https://i.delta.chat/#x", png=short_tmp / "link.png", terminal=False)
    assert target.read_text() == "keep"


# -- --wait --------------------------------------------------------------------------------------
def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_config(short_tmp, mailserver, password=None, port=None):
    from conftest import write_config
    from seccam import config as config_mod
    addr, real_password = mailserver.new_user("camw")
    return config_mod.load(write_config(short_tmp, f"""
        [account]
        address = "{addr}"
        password = "{password or real_password}"
        smtp_host = "127.0.0.1"
        smtp_port = {mailserver.smtps_port}
        smtp_security = "tls"
        imap_host = "127.0.0.1"
        imap_port = {port or mailserver.imaps_port}
        imap_security = "tls"
        ca_file = "{mailserver.cafile}"
        """))


def test_wait_warns_once_about_an_unreachable_mailbox_and_stops_when_the_invite_is_revoked(
        short_tmp, mailserver, capsys):
    from seccam.commands import invite as invite_cmd
    config = _wait_config(short_tmp, mailserver, port=_free_port())
    store = InviteStore(config.state_dir)
    rec = store.create(config.account.address, FPR, "cam")
    store.revoke(rec["id"])
    assert invite_cmd._wait(config, rec["id"], timeout_s=5, interval_s=0.01) == 75
    err = capsys.readouterr().err
    assert err.count("(retrying)") == 1 and "cannot connect" in err
    assert f"invite {rec['id']} was revoked" in err


def test_wait_warns_once_while_the_mailbox_stays_unreachable(short_tmp, mailserver, capsys):
    from seccam.commands import invite as invite_cmd
    config = _wait_config(short_tmp, mailserver, port=_free_port())
    rec = InviteStore(config.state_dir).create(config.account.address, FPR, "cam")
    assert invite_cmd._wait(config, rec["id"], timeout_s=0.3, interval_s=0.01) == 75
    err = capsys.readouterr().err
    assert err.count("(retrying)") == 1 and "nobody joined within 0.3 s" in err


def test_wait_stops_at_a_permanent_failure_such_as_a_refused_login(short_tmp, mailserver):
    from seccam.commands import invite as invite_cmd
    from seccam.imap import ImapPermanentError
    config = _wait_config(short_tmp, mailserver, password="wrong")
    rec = InviteStore(config.state_dir).create(config.account.address, FPR, "cam")
    with pytest.raises(ImapPermanentError, match="login"):
        invite_cmd._wait(config, rec["id"], timeout_s=5, interval_s=0.01)


def test_a_json_object_without_the_invite_fields_is_refused(store):
    store.dir.mkdir(parents=True, exist_ok=True)
    (store.dir / "0badc0de.json").write_text('{"id": "0badc0de"}')
    with pytest.raises(invites.DataError, match="not an invite record"):
        store.get("0badc0de")
    assert store.all() == []
