"""seccam.imap: the IMAP client's error handling, against the loopback Dovecot and, for
server behaviour Dovecot never shows (no STARTTLS, a refused SELECT or EXPUNGE, a
connection dropped mid-command, a FETCH that omits sizes), a scripted IMAP server on
loopback. The happy path and TLS trust are also exercised through jobs/inbox in
tests/test_inbox.py.
"""

import dataclasses
import socket
import threading

import pytest

from seccam import imap
from seccam.config import Account
from seccam.errors import ConfigError


def account(host="127.0.0.1", port=143, security="plain", password="pw", ca_file=None, login="cam@seccam.test"):
    return Account(address=login, display_name="Front door", login=login, password=password,
                   password_file=None, smtp_host="127.0.0.1", smtp_port=25, smtp_security="plain",
                   imap_host=host, imap_port=port, imap_security=security, ca_file=ca_file, timeout_s=5)


class ScriptedImap:
    """A one-connection IMAP server on loopback that answers from ``script``.

    ``script`` maps a command ("LOGIN", "SELECT", "UID SEARCH", "UID FETCH", "UID STORE",
    "EXPUNGE", ...) to a list of untagged lines followed by the tagged status ("OK ...",
    "NO ...", "BAD ..."), or to "DROP" (close the connection without answering).
    Commands not in the script get "OK done".
    """

    def __init__(self, script, capabilities="IMAP4rev1 AUTH=PLAIN"):
        self.script = script
        self.capabilities = capabilities
        self.commands = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        conn, _ = self._listener.accept()
        with conn, conn.makefile("rb") as rfile:
            conn.sendall(f"* OK [CAPABILITY {self.capabilities}] scripted ready\r\n".encode())
            for line in rfile:
                tag, _, rest = line.decode().strip().partition(" ")
                words = rest.split(" ")
                command = " ".join(words[:2]).upper() if words[0].upper() == "UID" else words[0].upper()
                self.commands.append(command)
                answer = self.script.get(command, ["OK done"])
                if answer == "DROP":
                    return
                for untagged in answer[:-1]:
                    conn.sendall(b"* " + untagged.encode() + b"\r\n")
                conn.sendall(f"{tag} {answer[-1]}\r\n".encode())
                if command == "LOGOUT":
                    return

    def close(self):
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def scripted():
    servers = []

    def start(script, **kw):
        server = ScriptedImap(script, **kw)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


def connected(server):
    return imap.Imap(account(port=server.port)).connect()


def session(server):
    return imap.Imap(account(port=server.port))


# -- configuration and connecting --------------------------------------------------------
def test_an_account_without_imap_host_is_a_config_error():
    with pytest.raises(ConfigError, match="imap_host is not set"):
        imap.Imap(account(host=None))


def test_starttls_refuses_a_server_that_does_not_offer_it(scripted):
    server = scripted({})
    acc = dataclasses.replace(account(port=server.port), imap_security="starttls")
    with pytest.raises(imap.ImapPermanentError, match="does not offer STARTTLS"):
        imap.Imap(acc).connect()
    assert "LOGIN" not in server.commands  # the password was never sent


def test_implicit_tls_to_a_plain_text_port_is_a_temporary_tls_failure(mailserver):
    acc = account(port=mailserver.imap_port, security="tls", ca_file=mailserver.cafile)
    with pytest.raises(imap.ImapTemporaryError, match="TLS failed"):
        imap.Imap(acc).connect()


def test_an_inbox_the_server_will_not_open_is_temporary(scripted):
    server = scripted({"SELECT": ["NO [UNAVAILABLE] mailbox busy"]})
    with pytest.raises(imap.ImapTemporaryError, match="cannot open INBOX: .*mailbox busy"):
        connected(server)


# -- commands ----------------------------------------------------------------------------
def test_fetching_a_message_that_vanished_returns_none_and_closing_twice_is_harmless(mailserver):
    addr, password = mailserver.new_user("imap")
    acc = account(port=mailserver.imaps_port, security="tls", login=addr, password=password,
                  ca_file=mailserver.cafile)
    box = imap.Imap(acc).connect()
    assert box.list() == []
    assert box.fetch(4242, 1000) is None
    box.expunge()
    box.close()
    box.close()


@pytest.mark.parametrize("fetch_lines, sizes", [
    (["3 FETCH (UID 3 RFC822.SIZE 120)"], [(3, 120), (7, None)]),  # 7 vanished between SEARCH and FETCH
    ([], [(3, None), (7, None)]),                                    # both vanished
])
def test_list_reports_an_unknown_size_for_a_message_the_fetch_does_not_describe(scripted, fetch_lines, sizes):
    server = scripted({"UID SEARCH": ["SEARCH 7 3", "OK done"], "UID FETCH": fetch_lines + ["OK done"]})
    with session(server) as box:
        assert box.list() == sizes


def test_a_command_the_server_refuses_is_temporary_and_keeps_the_connection(scripted):
    server = scripted({"UID STORE": ["NO [SERVERBUG] store failed"],
                       "UID FETCH": ["BAD unknown command"]})
    with session(server) as box:
        with pytest.raises(imap.ImapTemporaryError, match="STORE failed: .*store failed"):
            box.delete(5)
        with pytest.raises(imap.ImapTemporaryError, match="FETCH failed: .*unknown command"):
            box.fetch(5, 100)
        assert box._conn is not None


def test_a_connection_dropped_during_a_command_is_temporary_and_closing_afterwards_is_quiet(scripted):
    server = scripted({"UID SEARCH": "DROP"})
    box = connected(server)
    with pytest.raises(imap.ImapTemporaryError, match="connection lost during SEARCH"):
        box.list()
    box.close()  # nothing left to close


def test_a_socket_that_fails_to_shut_down_does_not_hide_the_lost_connection(scripted, monkeypatch):
    import errno
    import imaplib

    def broken_shutdown(self):
        raise OSError(errno.EBADF, "Bad file descriptor")
    server = scripted({"UID SEARCH": "DROP"})
    box = connected(server)
    monkeypatch.setattr(imaplib.IMAP4, "shutdown", broken_shutdown)
    with pytest.raises(imap.ImapTemporaryError, match="connection lost during SEARCH"):
        box.list()


def test_a_refused_expunge_is_temporary(scripted):
    server = scripted({"EXPUNGE": ["NO expunge not allowed"]})
    with session(server) as box:
        with pytest.raises(imap.ImapTemporaryError, match="EXPUNGE failed: .*not allowed"):
            box.expunge()


def test_an_expunge_on_a_dropped_connection_is_temporary_and_close_does_not_raise(scripted):
    server = scripted({"EXPUNGE": "DROP"})
    box = connected(server)
    with pytest.raises(imap.ImapTemporaryError, match="EXPUNGE failed"):
        box.expunge()
    box.close()  # CLOSE/LOGOUT on a dead connection fail; close() must swallow that
    assert box._conn is None
