"""seccam.send (jobs/send): outbox -> SMTP, against a real aiosmtpd on loopback."""

import email
import os
import shutil
import time

import pytest

from helpers import sendkit
from helpers.mailfixtures import check_pgp_mime
from seccam import encrypt, send
from seccam.errors import ConfigError, PermanentError, TemporaryError
from seccam.transport import SmtpPermanentError

SET1 = "20261125T191100.000001Z.11.aaaa-alarm"
SET2 = "20261125T191200.000001Z.12.bbbb-alarm"
NOW = 1_800_000_000.0


@pytest.fixture
def sink():
    with sendkit.SmtpSink("plain") as s:
        yield s


@pytest.fixture
def cam(sink):
    c = sendkit.make_camera(account=sendkit.account_toml(port=sink.port, security="plain", timeout=5))
    yield c
    c.close()


def queued(spool, state="outbox.new"):
    return [p.name for p in spool.items(state)]


def message_ids(spool):
    return {p.name: email.message_from_bytes(p.read_bytes())["Message-ID"] for p in spool.items("outbox.new")}


def test_send_delivers_everything_in_outbox_order_over_one_connection(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET2)
    sendkit.make_set(spool, SET1)
    encrypt.process(cam.config, spool)
    order = [mid for _, mid in sorted(message_ids(spool).items())]
    assert send.work(cam.config) == 0
    assert [email.message_from_bytes(r.data)["Message-ID"] for r in sink.received] == order
    assert sink.connections == 1 and len(order) == 8
    for rec in sink.received:
        assert rec.mail_from == sendkit.CAMERA_ADDR and rec.rcpt_tos == ["owner@seccam.test"]
        assert check_pgp_mime(rec.data, gnupghome=str(cam.recipients[0].home), signer=cam.fingerprint) == []
    for state in ("outbox.new", "outbox.active", "outbox.deferred", "outbox.failed", "sets.ready"):
        assert spool.items(state) == []


def test_send_encrypts_ready_sets_first(cam, sink):
    sendkit.make_set(cam.spool, SET1, cameras=(("front", True),))
    assert send.work(cam.config) == 0
    assert len(sink.received) == 2 and cam.spool.items("sets.ready") == []


def test_nothing_to_do_opens_no_connection(cam, sink):
    assert send.work(cam.config) == 0
    assert sink.connections == 0


def test_send_defers_on_451_and_retries_when_due(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    sink.replies = ["451 4.3.0 greylisted, try again later"]
    with pytest.raises(TemporaryError, match="1 message.*deferred.*451"):
        send.work(cam.config, now=NOW)
    (deferred,) = spool.items("outbox.deferred")
    assert deferred.name == f"{SET1}.00.front.preview.eml"
    # Postfix-style backoff: the message's age, clamped to [1 min, 15 min]; this one is old.
    assert deferred.stat().st_mtime == send.next_attempt(deferred.name, NOW) == NOW + send.BACKOFF_MAX_S
    assert "451" in spool.read_reason(deferred) and "next attempt" in spool.read_reason(deferred)
    assert len(sink.received) == 1  # the full-size message went out; the preview waits
    assert send.work(cam.config, now=NOW + 10) == 75 and len(sink.received) == 1
    assert send.work(cam.config, now=NOW + send.BACKOFF_MAX_S) == 0
    assert len(sink.received) == 2 and spool.items("outbox.deferred") == []
    assert not os.path.exists(str(deferred) + ".reason")


def test_message_stays_in_the_outbox_until_the_server_says_250(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    encrypt.process(cam.config, spool)
    seen = []
    sink.on_data = lambda envelope: seen.append((queued(spool, "outbox.active"), queued(spool, "outbox.new")))
    assert send.work(cam.config) == 0
    assert seen == [([f"{SET1}.00.front.preview.eml"], [f"{SET1}.01.front.full.eml"]),
                    ([f"{SET1}.01.front.full.eml"], [])]


def test_send_moves_a_permanently_refused_message_to_failed(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    sink.replies = ["554 5.7.1 message refused"]
    with pytest.raises(PermanentError, match="554"):
        send.work(cam.config)
    (failed,) = spool.items("outbox.failed")
    assert "554" in spool.read_reason(failed)
    assert len(sink.received) == 1 and spool.items("outbox.new") == []


def test_unreachable_server_defers_every_message_and_empties_outbox_new():
    port = sendkit.free_port()
    c = sendkit.make_camera(account=sendkit.account_toml(port=port, security="plain", timeout=5))
    try:
        sendkit.make_set(c.spool, SET1)
        with pytest.raises(TemporaryError, match="4 message"):
            send.work(c.config, now=NOW)
        assert len(c.spool.items("outbox.deferred")) == 4
        assert c.spool.items("outbox.new") == [] and c.spool.items("outbox.active") == []
    finally:
        c.close()


def test_refused_login_defers_every_message_and_raises_permanent(sink):
    c = sendkit.make_camera(account=sendkit.account_toml(port=sink.port, security="plain", timeout=5)
                            .replace(sendkit.PASSWORD, "wrong-password"))
    try:
        sendkit.make_set(c.spool, SET1, cameras=(("front", True),))
        with pytest.raises(SmtpPermanentError, match="login"):
            send.work(c.config, now=NOW)
        assert len(c.spool.items("outbox.deferred")) == 2 and c.spool.items("outbox.new") == []
        assert sink.received == []
    finally:
        c.close()


def test_message_left_active_by_a_dead_run_is_sent(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    encrypt.process(cam.config, spool)
    first = spool.items("outbox.new")[0]
    spool.claim(first, "outbox.active")
    assert send.work(cam.config) == 0
    assert len(sink.received) == 2 and spool.items("outbox.active") == []


def test_a_plaintext_file_in_the_outbox_is_never_sent(cam, sink):
    spool = cam.spool
    spool.write("outbox.new", b"From: cam@seccam.test\r\nTo: owner@seccam.test\r\nSubject: hi\r\n\r\nplain\r\n",
                name="x.eml")
    assert send.work(cam.config) == 0
    assert sink.received == [] and spool.items("outbox.new") == []
    (corrupt,) = spool.items("corrupt")
    assert "not an encrypted message" in spool.read_reason(corrupt)


def test_a_stray_file_in_outbox_new_is_set_aside(cam, sink):
    spool = cam.spool
    spool.write("outbox.new", b"junk", name="notes.txt")
    assert send.work(cam.config) == 0
    assert spool.items("outbox.new") == [] and len(spool.items("corrupt")) == 1


def test_second_send_job_exits_quietly_while_one_runs(cam, sink):
    spool = cam.spool
    sendkit.make_set(spool, SET1, cameras=(("front", True),))
    with spool.lock("send"):
        assert send.work(cam.config) == 0
    assert sink.received == [] and len(spool.items("sets.ready")) == 1


def test_envelope_comes_from_the_outer_headers():
    raw = (b'From: "Front door" <cam@seccam.test>\r\nTo: a@seccam.test, "B" <b@seccam.test>\r\n'
           b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=x\r\n\r\n')
    assert send.envelope(raw) == ("cam@seccam.test", ["a@seccam.test", "b@seccam.test"])


def test_jobs_send_runs_end_to_end_as_a_subprocess(cam, sink, run):
    sendkit.make_set(cam.spool, SET1)
    start = time.monotonic()
    proc = run("jobs/send", config=cam.config_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    assert len(sink.received) == 4
    assert time.monotonic() - start < 30


def test_jobs_send_deferred_exit_75_and_one_line_on_stderr(run):
    port = sendkit.free_port()
    c = sendkit.make_camera(account=sendkit.account_toml(port=port, security="plain", timeout=5))
    try:
        sendkit.make_set(c.spool, SET1, cameras=(("front", True),))
        proc = run("jobs/send", config=c.config_path)
        assert proc.returncode == 75, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("seccam-send: error:")]
        assert len(errors) == 1 and errors[0].startswith("seccam-send: error: 2 message(s) deferred")
        assert sendkit.PASSWORD not in proc.stderr
        again = run("jobs/send", config=c.config_path)  # same outage, nothing due: no new line
        assert (again.returncode, again.stderr) == (75, "")
    finally:
        c.close()


def test_jobs_send_without_account_is_a_config_error(run, short_tmp):
    path = sendkit.write_config(short_tmp, ["owner@seccam.test"], account="")
    proc = run("jobs/send", config=path)
    assert proc.returncode == 78
    assert proc.stderr.startswith("seccam-send: error:") and "[account]" in proc.stderr
    shutil.rmtree(short_tmp / "spool", ignore_errors=True)


@pytest.fixture
def journal(caplog, monkeypatch):
    """What seccam logs (INFO and up), as lines."""
    import logging
    # An entry point run earlier in this process may have stopped "seccam" propagating to the root logger.
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)
    caplog.set_level(logging.INFO, logger="seccam")
    return lambda: [(r.name, r.levelname, r.getMessage()) for r in caplog.records]


def fake_message(spool, name, state="outbox.new", to="owner@seccam.test"):
    """An outbox file as the encrypt step writes it (the body does not matter to jobs/send)."""
    raw = (f"From: <{sendkit.CAMERA_ADDR}>\r\nTo: <{to}>\r\nContent-Type: multipart/encrypted; "
           f'protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n--b--\r\n').encode()
    return spool.write(state, raw, name=name)


def keyless_camera(root, port=None, gnupg_usable=True):
    """A configuration and spool without any key (no gpg needed), its account on ``port``.

    ``gnupg_usable=False``: a state_dir too long for a GnuPG home, so every gpg step fails.
    """
    from seccam import config as config_mod
    from seccam.gpg import MAX_HOME_LEN
    from seccam.spool import Spool
    path = sendkit.write_config(root, ["owner@seccam.test"],
                                account=sendkit.account_toml(port=port or sendkit.free_port(), security="plain",
                                                             timeout=5))
    if not gnupg_usable:
        path.write_text(path.read_text().replace(f'state_dir = "{root}/state"',
                                                 f'state_dir = "{root}/{"s" * MAX_HOME_LEN}"'))
    cfg = config_mod.load(path)
    return cfg, Spool(cfg.spool_dir).ensure()


def test_flush_waits_for_a_running_send_job_then_fails_temporarily(short_tmp, monkeypatch):
    import argparse
    from seccam.spool import LockBusy
    cfg, spool = keyless_camera(short_tmp)
    monkeypatch.setattr(send, "FLUSH_LOCK_WAIT_S", 0.3)
    with spool.lock("send"):  # a send job is running
        start = time.monotonic()
        with pytest.raises(LockBusy, match="another send job is running"):
            send.work(cfg, argparse.Namespace(flush=True))
        assert time.monotonic() - start >= 0.3


def test_send_delivers_the_outbox_even_when_encryption_fails(short_tmp, sink, journal):
    cfg, spool = keyless_camera(short_tmp, sink.port, gnupg_usable=False)
    sendkit.make_set(spool, SET2)
    fake_message(spool, f"{SET1}.00.front.preview.eml")
    # the configuration error of the encrypt step is raised after sending: one line on stderr, exit 78
    with pytest.raises(ConfigError, match="GnuPG home") as exc:
        send.work(cfg)
    assert exc.value.exit_code == 78
    assert len(sink.received) == 1 and spool.items("outbox.new") == []
    assert [p.name for p in spool.items("sets.ready")] == [f"{SET2}.set"]  # waits for a fixed configuration
    assert any(m.startswith("step=encrypt error=") and "GnuPG home" in m for _, _, m in journal())


def test_send_says_in_the_journal_why_sets_are_held(short_tmp, journal):
    cfg, spool = keyless_camera(short_tmp)
    sendkit.make_set(spool, SET1)
    assert send.work(cfg) == 0  # nothing to send; the held set is not a failure of this job
    (held,) = spool.items("sets.held")
    warnings = [m for name, level, m in journal() if name == "seccam.send" and level == "WARNING"]
    assert warnings == [f"step=encrypt held_sets=1 reason={spool.read_reason(held)!r}"]
    assert "seccam keys init" in warnings[0]


@pytest.mark.parametrize("headers, why", [
    ("To: <a@seccam.test>\r\n", "no single From: address"),
    ("From: <a@seccam.test>, <b@seccam.test>\r\nTo: <c@seccam.test>\r\n", "no single From: address"),
    ("From: <a@seccam.test>\r\n", "no To: address"),
])
def test_an_outbox_file_without_a_usable_envelope_is_set_aside(short_tmp, sink, headers, why):
    cfg, spool = keyless_camera(short_tmp, sink.port)
    raw = (headers + "Content-Type: multipart/encrypted; boundary=b\r\n\r\n--b--\r\n").encode()
    with pytest.raises(ValueError, match=why):
        send.envelope(raw)
    spool.write("outbox.new", raw, name=f"{SET1}.00.front.preview.eml")
    assert send.work(cfg) == 0 and sink.received == []
    (corrupt,) = spool.items("corrupt")
    assert spool.read_reason(corrupt) == f"unsendable outbox file: {why}"


def test_heartbeats_queued_during_an_outage_collapse_into_the_newest_and_the_outage_counts_them(short_tmp):
    cfg, spool = keyless_camera(short_tmp)
    outage = {"since": NOW - 600, "since_iso": "x", "last_attempt": NOW - 10, "error": "cannot connect",
              "auth": False, "attempts": 3, "collapsed_heartbeats": 1}
    spool.write_state("outage", outage)  # the last probe was 10 s ago: no connection this run
    old, new = "20261125T190000.000001Z.1.aaaa-heartbeat", "20261125T200000.000001Z.1.bbbb-heartbeat"
    for set_id in (old, new):
        for n, camera in enumerate(("front", "yard")):
            os.utime(fake_message(spool, f"{set_id}.{n:02d}.{camera}.full.eml", "outbox.deferred"),
                     (NOW + 50, NOW + 50))
    assert send.deliver(cfg, spool, now=NOW) == 75  # still waiting, no news
    assert queued(spool, "outbox.deferred") == [f"{new}.00.front.full.eml", f"{new}.01.yard.full.eml"]
    assert spool.read_state("outage") == {**outage, "collapsed_heartbeats": 2}


def test_back_online_summary_that_cannot_be_encrypted_waits_and_the_alarms_still_go(short_tmp, sink, journal):
    cfg, spool = keyless_camera(short_tmp, sink.port, gnupg_usable=False)
    spool.write_state("outage", {"since": NOW - 600, "since_iso": "x", "last_attempt": NOW - 120,
                                 "error": "cannot connect", "auth": False, "attempts": 2})
    fake_message(spool, f"{SET1}.00.front.preview.eml", "outbox.deferred")
    assert send.deliver(cfg, spool, now=NOW) == 0
    assert len(sink.received) == 1 and spool.read_state("outage") is None
    (summary,) = spool.items("sets.ready")
    assert summary.name.endswith("-summary.set") and "Back online" in (summary / "meta.json").read_text()
    assert any(m.startswith("step=encrypt-summary error=") for _, _, m in journal())


def test_a_summary_a_killed_send_job_was_writing_is_removed_by_the_next(cam):
    leftover = cam.spool.make_tmp_dir(send.SUMMARY_TMP_SUFFIX)
    (leftover / "meta.json").write_text("{half")
    assert send.work(cam.config) == 0
    assert not leftover.exists()
