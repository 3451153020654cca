"""seccam.send (jobs/send): outbox -> SMTP, against a real aiosmtpd on loopback."""

import email
import os
import shutil
import time

import pytest

from helpers import sendkit
from helpers.mailfixtures import check_pgp_mime
from seccam import encrypt, send
from seccam.errors import PermanentError, TemporaryError
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
