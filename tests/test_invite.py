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
