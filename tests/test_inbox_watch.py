"""jobs/inbox --watch: IMAP IDLE until just before cron's next start, each arrival handled at once.

Against the loopback Dovecot (which offers IDLE): a command delivered while the job waits is
acted on while it still waits, not at its end; two overlapping runs take turns and never both
act; a server without IDLE is polled; a lost connection is reopened. Against a scripted IMAP
server: every answer RFC 2177 allows, and every one it does not, ends in a clear error and a
closed connection, never a hang. No timing is asserted: waits are on conditions, with timeouts.
"""

import socket
import threading
import time

import pytest

from seccam import imap, inbox
from helpers.commandkit import OWNER, cam, camera, logs, people  # noqa: F401 - fixtures


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Run(threading.Thread):
    """One inbox run in a thread (as a cron start would be), its result kept."""

    def __init__(self, cam, seconds, **kw):
        super().__init__(daemon=True)
        self.cam, self.until, self.kw = cam, time.time() + seconds, kw
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.cam.poll(until=self.until, **self.kw)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# -- against Dovecot ----------------------------------------------------------------------------
def test_a_command_that_arrives_while_the_job_waits_is_acted_on_at_once(cam):
    run = Run(cam, 8)
    run.start()
    wait_for(lambda: cam.spool.lock_held("inbox"), what="the run to start")
    time.sleep(0.5)  # let it reach IDLE; what arrives before is handled by its first pass anyway
    cam.command(cam.owner, "/disarm")
    wait_for(lambda: not cam.armed().armed, what="the disarm")
    assert run.is_alive()  # handled on arrival, long before the run's end
    wait_for(lambda: cam.sent(cam.owner, since=0), what="the announcement")
    run.join(40)
    assert run.error is None and run.result.commands == 1 and run.result.passes >= 2


def test_two_overlapping_runs_take_turns_and_never_both_act(cam):
    first, second = Run(cam, 4), Run(cam, 7)
    first.start()
    wait_for(lambda: cam.spool.lock_held("inbox"), what="the first run")
    second.start()
    cam.command(cam.owner, "/disarm 2h")
    cam.command(cam.owner, "/status")
    first.join(30)
    second.join(30)
    assert first.error is None and second.error is None
    assert second.result is not None  # it waited for the lock instead of giving up
    assert first.result.commands + second.result.commands == 2
    sent = cam.sent(cam.owner, since=0)
    assert sorted(s.subject for s in sent) == ["Disarmed", "Status"]  # each acted on once
    assert cam.mailserver.fetch_inbox(cam.address) == []


def test_more_mail_than_one_pass_takes_is_read_at_once_while_watching(cam, monkeypatch):
    monkeypatch.setattr(inbox, "MAX_PER_RUN", 1)
    cam.command(cam.owner, "/status")
    cam.command(cam.owner, "/help")
    result = cam.poll(until=time.time() + 6)
    assert result.commands == 2 and result.passes >= 2
    assert [s.subject for s in cam.sent(cam.owner, since=0)] == ["Status", "Help"]


def test_a_run_that_cannot_get_the_lock_before_its_end_gives_up(cam):
    with cam.spool.lock("inbox"):
        assert cam.poll(until=time.time() + 0.3) is None


class _NoIdleImap(imap.Imap):
    def can_idle(self):
        return False


class _RefusingImap(imap.Imap):
    refused = 0

    def idle(self, seconds):
        _RefusingImap.refused += 1
        self._drop()
        raise imap.NoIdle("IDLE refused: NO not today")


class _FlakyImap(imap.Imap):
    lost = 0

    def idle(self, seconds):
        if _FlakyImap.lost == 0:
            _FlakyImap.lost += 1
            self._drop()
            raise imap.ImapTemporaryError("connection lost during IDLE: reset")
        return super().idle(seconds)


@pytest.mark.parametrize("factory", [_NoIdleImap, _RefusingImap])
def test_without_idle_the_mailbox_is_polled(cam, factory, logs):
    naps = []
    run = Run(cam, 5, imap_factory=factory, sleep=lambda s: (naps.append(s), time.sleep(0.05)))
    run.start()
    wait_for(lambda: naps, what="a first nap")
    cam.command(cam.owner, "/disarm")
    wait_for(lambda: not cam.armed().armed, what="the disarm")
    run.join(30)
    assert run.error is None and run.result.passes > 2
    assert max(naps) <= inbox.POLL_S
    if factory is _RefusingImap:
        assert _RefusingImap.refused == 1 and "idle=refused" in logs.text  # asked once, then polled


def test_a_connection_lost_while_waiting_is_opened_again(cam, logs):
    naps = []
    run = Run(cam, 6, imap_factory=_FlakyImap, sleep=lambda s: naps.append(s))
    run.start()
    wait_for(lambda: naps, what="the reconnect")
    time.sleep(0.5)
    cam.command(cam.owner, "/disarm")
    wait_for(lambda: not cam.armed().armed, what="the disarm")
    run.join(30)
    assert run.error is None and "state=reconnecting" in logs.text
    assert naps[0] == inbox.RECONNECT_S


def test_idle_returns_when_mail_arrives_and_when_the_time_is_up(cam):
    with imap.Imap(cam.config.account) as box:
        assert box.can_idle()
        started = time.monotonic()
        assert box.idle(0.3) is False and time.monotonic() - started < 10
        threading.Timer(0.5, lambda: cam.command(cam.owner, "hello")).start()
        assert box.idle(30) is True
        assert len(box.list()) == 1  # the connection is usable after IDLE


@pytest.mark.parametrize("now, period, expected", [
    (1000.0, 60, 1018.0),     # 1000 s = 16 min 40 s: until 2 s before 17:00
    (1013.0, 60, 1018.0),
    (1014.0, 60, None),       # 4 s left: one pass only
    (1019.5, 60, None),
    (1020.0, 60, 1078.0),     # a start right at the minute
    (1001.0, 20, 1018.0),
])
def test_watch_ends_margin_before_the_next_cron_start(now, period, expected):
    assert inbox.watch_until(now, period) == expected


def test_jobs_inbox_watch_ends_before_the_next_start(cam, run):
    started = time.time()
    proc = run("jobs/inbox", "--watch", "--period", "8", config=cam.path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < 8 + 5  # ended by itself, about 2 s before the next 8 s mark


@pytest.mark.parametrize("period", ["7", "soon"])
def test_a_period_too_short_to_watch_is_a_usage_error(cam, run, period):
    proc = run("jobs/inbox", "--watch", "--period", period, config=cam.path)
    assert proc.returncode == 2 and "expected whole seconds, at least 8" in proc.stderr


# -- against a scripted server ---------------------------------------------------------------------
class IdleServer:
    """One connection: LOGIN, SELECT, CAPABILITY as usual; IDLE answered from ``script``.

    script: {"greeting": capabilities before login, "capability": after login (None: CAPABILITY fails),
             "idle": first line ("+ idling" or "NO ..."), "during": lines sent at once after it,
             "hold": seconds before "during" is sent, "done": lines (untagged then tagged) after
             DONE, "extra": bytes after those, "close_after_idle": bool}
    """

    def __init__(self, script):
        self.script = script
        self.commands = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            self._converse()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client drops the connection on an error: what several tests ask of it

    def _converse(self):
        conn, _ = self._listener.accept()
        s = self.script
        logged_in = False
        with conn, conn.makefile("rb") as rfile:
            conn.sendall(b"* OK ready\r\n")
            for line in rfile:
                tag, _, rest = line.decode().strip().partition(" ")
                command = rest.split(" ")[0].upper()
                self.commands.append(command)
                if command == "LOGIN":
                    logged_in = True
                if command == "CAPABILITY":
                    caps = s.get("capability", s.get("greeting", "IMAP4rev1 IDLE")) if logged_in \
                        else s.get("greeting", "IMAP4rev1 IDLE")
                    if caps is None:
                        conn.sendall(f"{tag} BAD not now\r\n".encode())
                        continue
                    conn.sendall(f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode())
                elif command == "IDLE":
                    first = s.get("idle", "+ idling")
                    conn.sendall((first if first[0] in "+*" else f"{tag} {first}").encode() + b"\r\n")
                    if not first.startswith("+"):
                        continue
                    time.sleep(s.get("hold", 0))
                    for untagged in s.get("during", []):
                        conn.sendall(untagged.encode() + b"\r\n")
                    if s.get("close_after_idle"):
                        return
                    if rfile.readline().strip() != b"DONE":
                        return
                    # One write, so that "extra" arrives with the tagged answer: bytes sent later
                    # stay in the socket for imaplib, which is right, and would make the test racy.
                    conn.sendall(b"".join((a if a.startswith("*") else f"{tag} {a}").encode() + b"\r\n"
                                          for a in s.get("done", ["OK idle done"])) + s.get("extra", b""))
                elif command == "NOOP" and s.get("unsolicited"):
                    conn.sendall(f"{tag} OK noop\r\n".encode() + s["unsolicited"])
                else:
                    conn.sendall(f"{tag} OK done\r\n".encode())
                    if command == "LOGOUT":
                        return


def _account(port):
    from seccam.config import Account
    return Account(address="cam@seccam.test", display_name="cam", login="cam@seccam.test", password="pw",
                   password_file=None, smtp_host="127.0.0.1", smtp_port=25, smtp_security="plain",
                   imap_host="127.0.0.1", imap_port=port, imap_security="plain", ca_file=None, timeout_s=2)


def scripted_idle(script, seconds=0.2):
    server = IdleServer(script)
    box = imap.Imap(_account(server.port)).connect()
    try:
        return box.idle(seconds), box, server
    except imap.ImapTemporaryError as exc:
        return exc, box, server


@pytest.mark.parametrize("script, news", [
    ({}, False),
    ({"during": ["* 3 EXISTS"]}, True),
    ({"during": ["* 1 RECENT"], "hold": 0.05}, True),
    ({"during": ["* OK Still here"]}, False),
    ({"during": ["* 2 EXPUNGE"]}, True),
    ({"done": ["* 4 EXISTS", "OK idle done"]}, True),
])
def test_what_the_server_says_during_idle(script, news):
    result, box, _ = scripted_idle(script)
    assert result is news
    assert box._conn is not None  # still connected, ready for the next command
    box.close()


@pytest.mark.parametrize("script, error", [
    ({"idle": "NO [UNAVAILABLE] not now"}, "IDLE refused"),
    ({"idle": "* BAD what"}, "unexpected answer to IDLE"),
    ({"idle": "+ idling", "during": ["* BYE shutting down"], "close_after_idle": True}, "connection lost"),
    ({"done": ["NO idle failed"]}, "IDLE ended with"),
    ({"extra": b"* 9 EXISTS\r\n"}, "unexpected data after IDLE"),
    ({"during": ["* " + "x" * 70000]}, "a line longer than"),
])
def test_anything_rfc_2177_does_not_allow_ends_the_connection(script, error):
    result, box, _ = scripted_idle(script)
    assert isinstance(result, imap.ImapTemporaryError) and error in str(result)
    assert isinstance(result, imap.NoIdle) == (error == "IDLE refused")
    assert box._conn is None
    box.close()  # closing a dropped connection is harmless


def test_a_server_that_never_answers_idle_or_done_is_left(monkeypatch):
    server = IdleServer({"idle": "+ idling", "done": []})
    box = imap.Imap(_account(server.port)).connect()
    with pytest.raises(imap.ImapTemporaryError, match="no answer to DONE"):
        box.idle(0.1)
    server = IdleServer({"idle": "+ idling", "hold": 3, "close_after_idle": True})
    box = imap.Imap(_account(server.port)).connect()
    monkeypatch.setattr(imap._Lines, "line", lambda self, deadline: None)
    with pytest.raises(imap.ImapTemporaryError, match="no answer to IDLE"):
        box.idle(0.1)


def test_idle_is_offered_by_the_greeting_or_after_login():
    for script, offered in (({"greeting": "IMAP4rev1", "capability": "IMAP4rev1 IDLE"}, True),
                            ({"greeting": "IMAP4rev1", "capability": None}, False),
                            ({"greeting": "IMAP4rev1 IDLE", "capability": None}, True),
                            ({"greeting": "IMAP4rev1", "capability": "IMAP4rev1"}, False)):
        server = IdleServer(script)
        box = imap.Imap(_account(server.port)).connect()
        assert box.can_idle() is offered and box.can_idle() is offered
        assert server.commands.count("CAPABILITY") == 2  # imaplib's before login, ours once after it
        box.close()


def test_news_the_server_sent_before_idle_is_not_waited_for():
    server = IdleServer({"unsolicited": b"* 5 EXISTS\r\n"})
    box = imap.Imap(_account(server.port)).connect()
    box._conn.noop()
    time.sleep(0.2)  # the unsolicited line is on its way into imaplib's buffer
    assert box.idle(5) is True
    assert "IDLE" not in server.commands
    box.close()
