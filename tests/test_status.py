"""``seccam status`` (seccam.commands.status over seccam.health): open invites without their
secrets, mail the inbox set aside with its reason, and an open outage of jobs/send.

More status checks live next to what they report on: queues, cameras and the poller in
tests/test_capture.py, failed messages in tests/test_faults_smtp.py.
"""

import json
import socket
import textwrap
import time

import pytest

from conftest import write_config

from seccam import config, health, inbox
from seccam.invites import InviteStore
from seccam.spool import Spool

CAM = "cam@seccam.test"
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def load(path):
    cfg = config.load(path)
    return cfg, Spool(cfg.spool_dir).ensure()


def status(run, path):
    text = run("bin/seccam", "status", config=path)
    js = run("bin/seccam", "status", "--json", config=path)
    assert text.returncode == 0 and js.returncode == 0, text.stderr + js.stderr
    return text.stdout, json.loads(js.stdout)


def test_status_lists_open_invites_with_uses_left_and_expiry_but_never_their_secrets(config_path, run):
    cfg, _ = load(config_path)
    store = InviteStore(cfg.state_dir)
    anna = store.create(CAM, FPR, "Front door", uses=3, label="Anna's phone")
    plain = store.create(CAM, FPR, "Front door")
    revoked = store.create(CAM, FPR, "Front door", label="revoked one")
    store.revoke(revoked["id"])
    expired = store.create(CAM, FPR, "Front door", label="expired one", ttl_s=60, now=time.time() - 3600)
    store.add_pending(anna["id"], "anna@seccam.test", FPR)
    out, js = status(run, config_path)
    assert "invites     2 open (revoke with: seccam invite revoke ID)" in out
    assert f"  {anna['id']}  Anna's phone: 3 uses left, expires {anna['expires']}, 1 join(s) in progress" in out
    assert f"  {plain['id']}  (no label): 1 use left, expires {plain['expires']}" in out
    assert revoked["id"] not in out and expired["id"] not in out
    assert js["invites"]["count"] == 2
    assert sorted((i["id"], i["label"] or "", i["uses_left"], i["expires"]) for i in js["invites"]["open"]) == sorted(
        [(anna["id"], "Anna's phone", 3, anna["expires"]), (plain["id"], "", 1, plain["expires"])])
    for secret in (rec[k] for rec in (anna, plain, revoked, expired) for k in ("invitenumber", "auth")):
        assert secret not in out and secret not in json.dumps(js)


def test_status_without_invites_says_none_are_open(config_path, run):
    out, js = status(run, config_path)
    assert "invites     0 open" in out and js["invites"] == {"count": 0, "open": []}


def test_an_unreadable_invite_does_not_stop_status(config_path, run):
    cfg, _ = load(config_path)
    store = InviteStore(cfg.state_dir)
    good = store.create(CAM, FPR, "Front door", label="ok")
    (store.dir / "0badc0de.json").write_text('{"id": "0badc0de", "invitenumber": "x", "auth": "y", '
                                             '"address": "a", "expires": "not a time"}')
    (store.dir / "deadbeef.json").write_text("garbage")
    out, js = status(run, config_path)
    assert f"  {good['id']}  ok: 1 use left" in out
    assert "0badc0de  unreadable invite" in out and js["invites"]["count"] == 1


def test_status_shows_mail_the_inbox_set_aside_with_its_reason(short_tmp, run):
    path = write_config(short_tmp, textwrap.dedent(f"""\
        [account]
        address = "{CAM}"
        password = "x"
        smtp_host = "127.0.0.1"
        smtp_security = "plain"
        """))
    cfg, spool = load(path)
    session = inbox._Session(cfg, spool, time.time, None)
    item = session.set_aside(b"From: <x@seccam.test>\r\n\r\nundecryptable\r\n",
                             "inbox: cannot decrypt mail from x@seccam.test: no secret key")
    assert item.parent == spool.dir("quarantine")
    # An older version set inbox mail aside in corrupt/: still counted there as such.
    spool.write("corrupt", b"old", suffix=health.INBOX_SET_ASIDE_SUFFIX)
    spool.write("corrupt", b"x")  # something else set aside, e.g. a broken event
    out, js = status(run, path)
    assert f"  {'quarantine':16} {1:5}  inbound mail the camera could not use" in out
    assert f"  {'corrupt':16} {2:5}  items set aside (need you), 1 of them mail the inbox set aside" in out
    assert f"      {item.name}: inbox: cannot decrypt mail from x@seccam.test: no secret key" in out
    quarantine = js["queues"]["quarantine"]
    assert quarantine["count"] == 1
    assert quarantine["reasons"][item.name].startswith("inbox: cannot decrypt mail from x@seccam.test")
    assert js["queues"]["corrupt"]["inbox_mail"] == 1
    text = health.summary_text(health.snapshot(cfg, spool, with_keys=False))
    assert "Mail the camera could not use, kept for you: 1 (see seccam status)." in text


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_shows_an_outage_with_its_last_error_and_what_waits(short_tmp, run):
    path = write_config(short_tmp, textwrap.dedent(f"""\
        [account]
        address = "{CAM}"
        password = "x"
        smtp_host = "127.0.0.1"
        smtp_port = {_closed_port()}
        smtp_security = "plain"
        timeout_s = 5
        """))
    cfg, spool = load(path)
    out, js = status(run, path)
    assert "OFFLINE" not in out and js["outage"] is None
    for n, kind in enumerate(("alarm", "heartbeat")):
        name = f"20261125T19110{n}.000001Z.11.aaaa-{kind}.00.front.full.eml"
        spool.write("outbox.new", f"From: <{CAM}>\r\nTo: <o@seccam.test>\r\nContent-Type: multipart/encrypted\r\n"
                    "\r\n-\r\n".encode(), name=name)
    for _ in range(2):
        assert run("jobs/send", config=path).returncode == 75
        for p in spool.items("outbox.deferred"):  # make them due again: a second attempt
            spool.move(p, "outbox.new")
    stamp = spool.read_state("outage")
    assert stamp and stamp["attempts"] == 2
    out, js = status(run, path)
    [first] = [line for line in out.splitlines() if line.startswith("OFFLINE")]
    assert first.startswith(f"OFFLINE since {stamp['since_iso']} (last error: {stamp['error']}), 2 messages waiting")
    assert "2 attempt(s), last at " in out and "seccam flush" in out
    o = js["outage"]
    assert (o["since"], o["last_error"], o["attempts"], o["waiting"]) == (stamp["since_iso"], stamp["error"], 2, 2)
    assert o["auth"] is False and o["last_attempt"]


def test_outage_of_a_refused_login_says_to_fix_the_password(config_path):
    cfg, spool = load(config_path)
    spool.write_state("outage", {"since": 1_700_000_000, "since_iso": "2023-11-14T22:13:20+00:00",
                                 "last_attempt": 1_700_000_600, "error": "535 authentication failed",
                                 "auth": True, "attempts": 3, "collapsed_heartbeats": 4})
    name = "20261125T191100.000001Z.11.aaaa-alarm.00.front.full.eml"
    spool.write("outbox.deferred", b"x", name=name)
    from seccam.commands.status import render
    # The clock is injected: the message's age (and so which branch formats it) never depends on
    # the day the tests run.
    now = health.name_time(name) + 2 * 86400 + 3 * 3600 + 59
    out = render(health.snapshot(cfg, spool, now=now, with_keys=False))
    assert ("OFFLINE since 2023-11-14T22:13:20+00:00 (last error: 535 authentication failed), "
            "1 message waiting") in out
    assert "fix the account password" in out and "4 stale heartbeat(s) dropped" in out
    assert "messages deferred (will retry), oldest 2d3h" in out
    for age, said in ((3 * 3600 + 125, "oldest 3h2m"), (125, "oldest 2m5s"), (7, "oldest 7s")):
        assert said in render(health.snapshot(cfg, spool, now=health.name_time(name) + age, with_keys=False))


def test_status_and_heartbeat_show_a_key_change_waiting_for_the_owner(short_tmp, run):
    from helpers.sendkit import kill_agent
    from seccam import keys
    from seccam.gpg import Gpg
    path = write_config(short_tmp, '[delivery]\nrecipients = ["owner@seccam.test"]\n')
    cfg, spool = load(path)
    phone = Gpg(short_tmp / "phone")
    try:
        old, new = (phone.generate_camera_key("owner@seccam.test") for _ in range(2))
        store = keys.open_store(cfg)
        store.import_key("owner@seccam.test", phone.export_armored(old), source="test")
        assert store.offer("owner@seccam.test", phone.export_minimal(new), source="autocrypt") == keys.Outcome.PENDING
    finally:
        kill_agent(short_tmp / "phone")
    out, js = status(run, path)
    assert (f"KEY: A different key for owner@seccam.test waits for you: {new}, from unauthenticated mail: "
            "anyone could have sent it. Compare it with the fingerprint owner@seccam.test's Delta Chat shows, "
            f"then: seccam keys accept owner@seccam.test {new}") in out
    assert [(c["address"], c["pinned"], c["fingerprint"], c["verified"]) for c in js["key_changes"]] == [
        ("owner@seccam.test", old, new, False)]
    text = health.summary_text(health.snapshot(cfg, spool))
    assert f"A different key for owner@seccam.test waits for you: {new}, from unauthenticated mail" in text
    assert "then accept on the camera: seccam keys accept ADDRESS FINGERPRINT." in text


@pytest.mark.parametrize("pinned, verified, says", [
    (False, False, "A key for owner@seccam.test waits for you: FPR, from unauthenticated mail"),
    (False, True, "A key for owner@seccam.test waits for you: FPR, from a completed invite or a person's import"),
    (True, True, "A different key for owner@seccam.test waits for you: FPR, offered in a message signed by the "
                 "current key"),
])
def test_a_pending_key_says_where_it_came_from(pinned, verified, says):
    change = {"address": "owner@seccam.test", "fingerprint": "FPR", "pinned": "OLD" if pinned else None,
              "verified": verified}
    assert health.key_change_text(change).startswith(says)


def test_status_and_heartbeat_report_an_unreadable_key_store_and_invite_list(config_path, run):
    cfg, spool = load(config_path)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / "keys").write_text("a file where the key store's directory belongs")
    (cfg.state_dir / "invites").write_text("a file where the invites' directory belongs")
    out, js = status(run, config_path)
    assert "keys: cannot read key store: [Errno 20] Not a directory" in out
    assert "invites     cannot read invites: [Errno 20] Not a directory" in out
    assert js["invites"]["count"] == 0 and js["key_changes"][0]["error"].startswith("cannot read key store")
    assert "\nfree disk " in out  # the rest of the report is still there
    text = health.summary_text(health.snapshot(cfg, spool))
    assert "Key store: cannot read key store: [Errno 20] Not a directory" in text


def test_an_item_whose_name_carries_no_time_is_counted_without_an_age(config_path):
    cfg, spool = load(config_path)
    spool.write("corrupt", b"notes", name="README")
    spool.write("corrupt", b"x", name="20261125T191100")  # the time, but not the microseconds
    info = health.snapshot(cfg, spool, with_keys=False)["queues"]["corrupt"]
    assert info["count"] == 2 and "oldest_age_s" not in info
    assert health.name_time("20261125T191100.000001Z.1.ab") == 1795633860.000001


def test_status_and_heartbeat_name_a_recipient_whose_alarms_wait_for_a_key(run):
    from helpers import sendkit
    from seccam import encrypt
    c = sendkit.make_camera(recipients=("owner@seccam.test", "bob@seccam.test"), import_keys=False)
    try:
        sendkit.import_recipient(c.config, c.recipients[0])
        for n in (1, 2):
            sendkit.make_set(c.spool, f"20261125T19110{n}.000001Z.11.aaaa-alarm")
        encrypt.process(c.config, c.spool)
        (c.spool.dir("sets.held") / "junk-to-x-alarm.set").mkdir()  # unreadable: skipped, not fatal
        snap = health.snapshot(c.config, c.spool, with_keys=False)
        assert snap["held_for"] == {"bob@seccam.test": 2}
        assert "No usable key for bob@seccam.test: 2 alarm(s) wait for it" in health.summary_text(snap)
        out, js = status(run, c.config_path)
        assert "NO KEY for bob@seccam.test: 2 alarm(s) held for them alone" in out
        assert js["held_for"] == {"bob@seccam.test": 2}
    finally:
        c.close()


# -- what blocks alarms comes first ---------------------------------------------------------------
OWNER = "owner@seccam.test"
ACCOUNT = f"""\
[account]
address = "{CAM}"
password = "x"
smtp_host = "127.0.0.1"
smtp_security = "plain"
"""


def _blockers(out):
    lines = out.splitlines()
    assert lines[0].startswith(("BLOCKED ", "ready ")), out
    return lines[:lines.index(next(line for line in lines if line.startswith("spool ")))]


def test_status_leads_with_everything_that_blocks_alarms(config_path, run):
    out, js = status(run, config_path)
    assert [b["kind"] for b in js["blockers"]] == ["no-account", "no-recipients", "no-camera-key"]
    head = _blockers(out)
    assert head[0] == "BLOCKED     no alarm can be sent until these are fixed:"
    assert head[1] == f"  - no [account] in {config_path}: the camera has no mail account to send from"
    assert "  - the camera has no key: it cannot sign or encrypt" in head
    assert "      fix: sudo seccam keys init  (or put a backup back: sudo seccam keys restore FILE)" in head
    assert len(head) == 1 + 2 * len(js["blockers"])


def test_a_recipient_without_a_usable_key_blocks_alarms_until_it_has_one(short_tmp, run):
    from helpers.sendkit import kill_agent
    from seccam import keys
    from seccam.gpg import Gpg
    path = write_config(short_tmp, ACCOUNT + f'[delivery]\nrecipients = ["{OWNER}", "friend@seccam.test"]\n')
    cfg, _ = load(path)
    assert run("bin/seccam", "keys", "init", config=path).returncode == 0
    out, js = status(run, path)
    assert [(b["kind"], b["message"].split(":")[0]) for b in js["blockers"]] == [
        ("recipient-without-key", OWNER), ("recipient-without-key", "friend@seccam.test")]
    assert _blockers(out)[1] == (f"  - {OWNER}: no key for it on the camera; every alarm is held until one of them "
                                 "has a key")
    phone = Gpg(short_tmp / "phone")
    try:
        for address in (OWNER, "friend@seccam.test"):
            fpr = phone.generate_camera_key(address)
            keys.open_store(cfg).import_key(address, phone.export_armored(fpr), source="test")
    finally:
        kill_agent(short_tmp / "phone")
    Gpg(cfg.state_dir / "gnupg").delete_key(fpr)  # friend's pinned key is gone from the keyring
    out, js = status(run, path)
    assert [b["message"] for b in js["blockers"]] == [
        "friend@seccam.test: its key is expired, revoked or not usable; its alarms are held until it has one "
        "(the others get theirs)"]
    # Importing the pinned key again puts it back into the keyring.
    assert keys.open_store(cfg).import_key("friend@seccam.test", phone.export_armored(fpr), source="test") \
        == keys.Outcome.UNCHANGED
    out, js = status(run, path)
    assert js["blockers"] == []
    assert out.splitlines()[0] == ("ready       alarms can be sent: account, camera key and a usable key for "
                                   "every recipient")


def test_a_check_that_fails_is_shown_as_a_blocker_and_the_rest_still_runs(short_tmp, run):
    path = write_config(short_tmp, ACCOUNT + f'[delivery]\nrecipients = ["{OWNER}"]\n')
    cfg, _ = load(path)
    (cfg.state_dir / "gnupg").parent.mkdir(parents=True, exist_ok=True)
    (cfg.state_dir / "gnupg").write_text("a file where the GnuPG home belongs")
    out, js = status(run, path)
    assert [b["kind"] for b in js["blockers"]] == ["check-failed", "check-failed"]
    assert js["blockers"][0]["message"].startswith(f"cannot check the camera key: cannot create GnuPG home "
                                                   f"{cfg.state_dir / 'gnupg'}")
    assert "\nfree disk " in out
