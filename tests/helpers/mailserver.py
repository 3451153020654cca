"""Loopback mail system for tests (owned by the test-infrastructure helper).

``MailServer`` runs, on 127.0.0.1 only and on free ports it picks itself:

* Dovecot (imapd + lmtpd) started directly with ``dovecot -F -c CONF`` from a
  short temporary directory: passwd-file users, Maildir storage, IMAP with
  implicit TLS (``imaps_port``) and IMAP with STARTTLS/plain login
  (``imap_port``), LMTP on a unix socket (``lmtp_socket``), a fresh
  self-signed certificate (``cafile``; SAN IP:127.0.0.1, DNS:localhost);
* an aiosmtpd SMTP front in one background thread with three listeners:
  implicit TLS + AUTH (``smtps_port``), STARTTLS required + AUTH
  (``smtp_port``), plain with optional AUTH (``smtp_plain_port``).  Every
  message it receives is recorded in ``received`` (ReceivedMessage) and then
  delivered to Dovecot over LMTP.

Fault injection for fault-tolerance tests: ``smtp_behavior`` (see
``MailServer.smtp_behavior``), ``release_hang()``, ``stop_smtp()`` /
``start_smtp()`` (same ports).

Nothing here depends on pytest; see helpers.mailfixtures for the fixtures.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import logging
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

from aiosmtpd.smtp import SMTP, AuthResult

HOST = "127.0.0.1"
MAIL_USER = "scmail"
DEFAULT_DOMAIN = "seccam.test"
_REGISTRY: list = []  # every started MailServer until forget_stopped_servers()

logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's login_data deprecation noise


def registered_servers() -> list["MailServer"]:
    """MailServers started in this process and not yet forgotten (running or not)."""
    return list(_REGISTRY)


def forget_stopped_servers() -> None:
    """Drop stopped servers from the registry (mailfixtures does this after checking them)."""
    _REGISTRY[:] = [s for s in _REGISTRY if s.running]


@dataclass
class ReceivedMessage:
    """One message the SMTP front received (DATA completed)."""

    raw: bytes
    mail_from: str
    rcpt_tos: list
    port: int
    listener: str  # "ssl" (implicit TLS) | "starttls" | "plain"
    tls: bool
    auth_user: Optional[str]
    time: float = field(default_factory=time.time)
    # final SMTP reply we gave; None while hanging; "closed: ..." if the client
    # went away during a hang
    response: Optional[str] = None

    @property
    def accepted(self) -> bool:
        return bool(self.response) and self.response.startswith("250")

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (sockets held open together)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ensure_mail_user() -> tuple[int, int, str]:
    """uid, gid, name of the unprivileged user owning the Maildirs."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    try:
        pw = pwd.getpwnam(MAIL_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        r = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", MAIL_USER],
            capture_output=True, text=True)
        try:  # a parallel run may have created it first
            pw = pwd.getpwnam(MAIL_USER)
        except KeyError:
            raise RuntimeError(f"cannot create user {MAIL_USER}: {r.stderr.strip()}") from None
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def make_self_signed_cert(directory: str) -> tuple[str, str]:
    """Create cert.pem/key.pem (P-256, SAN IP:127.0.0.1, DNS:localhost)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("openssl not found (Debian package openssl)")
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


DH_FILE = "/usr/share/dovecot/dh.pem"


def dovecot_version(dovecot: str = "dovecot") -> tuple[int, int]:
    """(major, minor) of the Dovecot at ``dovecot`` (``dovecot --version``: "2.4.1-4 (7d8c0e5759)")."""
    out = subprocess.run([dovecot, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.split()[0].split(".")[:2]
    return int(major), int(minor)


# The settings whose names or syntax Dovecot 2.4 (Debian 13) changed from 2.3 (Debian 12), as
# (2.3 text, 2.4 text); everything else in the configuration is the same for both. %{...} is
# 2.4's variable syntax (%Ld = %{user | domain | lower}); braces are doubled for str.format.
_DOVECOT_DIFFERENCES = {
    "header": ("", "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"),
    "ssl_files": ("ssl_cert = <{certfile}\nssl_key = <{keyfile}\n",
                  "ssl_server_cert_file = {certfile}\nssl_server_key_file = {keyfile}\n"),
    "ssl_dh": ("ssl_dh = <{dh}\n", "ssl_server_dh_file = {dh}\n"),
    "cleartext": ("disable_plaintext_auth = no\n", "auth_allow_cleartext = yes\n"),
    "passdb": ("passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%Lu "
               "{passwd_dir}/%Ld/%Ln\n}}\n",
               "passdb passwd-file {{\n  default_password_scheme = PLAIN\n"
               "  passwd_file_path = {passwd_dir}/%{{user | domain | lower}}/%{{user | username | lower}}\n}}\n"),
    "userdb": ("userdb {{\n  driver = passwd-file\n  args = username_format=%Lu {passwd_dir}/%Ld/%Ln\n}}\n",
               "userdb passwd-file {{\n"
               "  passwd_file_path = {passwd_dir}/%{{user | domain | lower}}/%{{user | username | lower}}\n}}\n"),
    "mail": ("mail_home = {maildir_root}/%Ld/%Ln\nmail_location = maildir:~/Maildir\n",
             "mail_home = {maildir_root}/%{{user | domain | lower}}/%{{user | username | lower}}\n"
             "mail_driver = maildir\nmail_path = ~/Maildir\n"),
    "listen": ("address", "listen"),  # inet_listener's address setting
}


def dovecot_config(version: tuple[int, int], **v) -> str:
    """The loopback server's dovecot.conf for Dovecot ``version`` (2.3 or 2.4 syntax)."""
    new = version >= (2, 4)
    dh = DH_FILE if os.path.exists(DH_FILE) else None

    def part(name: str) -> str:
        return _DOVECOT_DIFFERENCES[name][new].format(dh=dh, **v)

    host = HOST
    return (part("header") + f"""\
# generated by tests/helpers/mailserver.py
instance_name = {v["name"]}
base_dir = {v["run_dir"]}
state_dir = {v["state_dir"]}
log_path = {v["log_path"]}
protocols = imap lmtp
listen = {host}
shutdown_clients = yes
default_internal_user = {v["internal_user"]}
default_login_user = {v["login_user"]}
ssl = yes
""" + part("ssl_files") + (part("ssl_dh") if dh else "") + """\
ssl_min_protocol = TLSv1.2
""" + part("cleartext") + """\
auth_mechanisms = plain login
auth_verbose = yes
""" + part("passdb") + part("userdb") + f"""\
mail_uid = {v["uid"]}
mail_gid = {v["gid"]}
first_valid_uid = {v["uid"]}
last_valid_uid = {v["uid"]}
first_valid_gid = {v["gid"]}
last_valid_gid = {v["gid"]}
""" + part("mail") + f"""\
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}
service imap-login {{
  inet_listener imap {{
    {part("listen")} = {host}
    port = {v["imap_port"]}
  }}
  inet_listener imaps {{
    {part("listen")} = {host}
    port = {v["imaps_port"]}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{v["domain"]}
}}
""")


class _Handler:
    """aiosmtpd handler: fault injection, recording, LMTP delivery."""

    def __init__(self, server: "MailServer", listener: str, port: int):
        self.ms = server
        self.listener = listener
        self.port = port

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        fault = self.ms._take_fault("MAIL")
        if fault:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        fault = self.ms._take_fault("RCPT")
        if fault:
            return fault
        if address.lower() not in self.ms.users:
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        rec = ReceivedMessage(
            raw=bytes(envelope.original_content),
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            port=self.port,
            listener=self.listener,
            tls=self.listener == "ssl" or server._tls_protocol is not None,
            auth_user=session.auth_data if session.authenticated else None,
        )
        self.ms._record(rec)
        behavior = self.ms.smtp_behavior
        if behavior and behavior.get("stage", "").upper() == "DATA" and behavior.get("hang"):
            self.ms._take_fault("DATA")  # counts "times"
            try:
                await self.ms._hang()
            except asyncio.CancelledError:  # aiosmtpd cancels us when the client goes
                self.ms._respond(rec, "closed: client disconnected during hang")
                raise
            return self.ms._respond(rec, "451 4.4.2 hang released")
        fault = self.ms._take_fault("DATA")
        if fault:
            return self.ms._respond(rec, fault)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.ms._deliver_lmtp, rec)
        except Exception as exc:  # noqa: BLE001 - report as temporary failure
            return self.ms._respond(rec, f"451 4.3.0 local delivery failed: {exc}")
        return self.ms._respond(rec, "250 2.0.0 OK delivered")


class MailServer:
    """Dovecot + aiosmtpd on loopback.  Use as a context manager.

    Attributes: host, domain, imap_port (plain login + STARTTLS), imaps_port
    (implicit TLS), smtp_port (STARTTLS required, AUTH required), smtps_port
    (implicit TLS, AUTH required), smtp_plain_port (no TLS, AUTH optional),
    lmtp_socket, cafile (PEM of the self-signed cert), users {addr: password},
    received [ReceivedMessage], camera_addresses (set of lower-case envelope
    senders whose mail must be PGP/MIME; see mailfixtures), smtp_behavior,
    tmpdir, dovecot_conf, dovecot_log.

    smtp_behavior: None (normal) or a dict
      {"stage": "MAIL"|"RCPT"|"DATA", "code": 451, "text": "4.3.0 try later"}
      {"stage": "DATA", "hang": True}   # no final reply to DATA until
                                          # release_hang()/stop_smtp()/close()
    optionally with "times": N (apply N times, then back to None).
    """

    def __init__(self, domain: str = DEFAULT_DOMAIN):
        self.host = HOST
        self.domain = domain
        self.users: dict[str, str] = {}
        self.received: list[ReceivedMessage] = []
        self.camera_addresses: set[str] = set()
        self.smtp_behavior: Optional[dict] = None
        self.running = False
        self._cond = threading.Condition()
        self._fault_lock = threading.Lock()
        self._dovecot: Optional[subprocess.Popen] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._servers: list = []
        self._conns: "weakref.WeakSet[SMTP]" = weakref.WeakSet()
        self._hang_event: Optional[asyncio.Event] = None
        self._counter = 0
        self.tmpdir: Optional[str] = None

    # ---------------------------------------------------------------- life cycle
    def __enter__(self) -> "MailServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "MailServer":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(dovecot):
            raise RuntimeError("dovecot not found (Debian packages dovecot-imapd dovecot-lmtpd)")
        self.tmpdir = tempfile.mkdtemp(prefix="sc-", dir="/tmp")
        os.chmod(self.tmpdir, 0o755)
        d = self.tmpdir
        uid, gid, uname = _ensure_mail_user()
        self.certfile, self.keyfile = make_self_signed_cert(d)
        self.cafile = self.certfile
        (self.imap_port, self.imaps_port, self.smtp_port, self.smtps_port,
         self.smtp_plain_port) = free_ports(5)
        self.maildir_root = os.path.join(d, "mail")
        os.mkdir(self.maildir_root, 0o700)
        os.chown(self.maildir_root, uid, gid)
        # One passwd-file per user: Dovecot rereads a changed passwd-file at most
        # once a second, but opens a file it has not seen yet on first lookup.
        self.passwd_dir = os.path.join(d, "passwd")
        os.mkdir(self.passwd_dir, 0o755)  # read by the auth process (user dovecot)
        for sub in ("run", "state"):
            os.mkdir(os.path.join(d, sub), 0o755)
        self.dovecot_log = os.path.join(d, "dovecot.log")
        self.dovecot_conf = os.path.join(d, "dovecot.conf")
        self.lmtp_socket = os.path.join(d, "run", "lmtp")
        if os.geteuid() == 0 and _user_exists("dovecot") and _user_exists("dovenull"):
            internal_user, login_user = "dovecot", "dovenull"
        else:
            internal_user = login_user = uname
        with open(self.dovecot_conf, "w") as f:
            f.write(dovecot_config(
                dovecot_version(dovecot), name=os.path.basename(d), run_dir=f"{d}/run", state_dir=f"{d}/state",
                log_path=self.dovecot_log, internal_user=internal_user, login_user=login_user,
                certfile=self.certfile, keyfile=self.keyfile, passwd_dir=self.passwd_dir,
                maildir_root=self.maildir_root, uid=uid, gid=gid, imap_port=self.imap_port,
                imaps_port=self.imaps_port, domain=self.domain))
        os.chmod(self.dovecot_conf, 0o600)
        with open(self.dovecot_log, "ab") as log:
            self._dovecot = subprocess.Popen(
                [dovecot, "-F", "-c", self.dovecot_conf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        _REGISTRY.append(self)
        self.running = True
        self._wait_dovecot_ready(timeout=20)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="mailserver-smtp", daemon=True)
        self._loop_thread.start()
        self.start_smtp()

    def _wait_dovecot_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {self.imap_port, self.imaps_port}
        while True:
            if self._dovecot.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self._dovecot.returncode}:\n{self.log_tail()}")
            for port in list(pending):
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    pending.discard(port)
                except OSError:
                    pass
            if not pending and os.path.exists(self.lmtp_socket):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.dovecot_log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        """Stop SMTP and Dovecot, remove the temporary directory.  Idempotent."""
        self.running = False
        if self._loop is not None:
            try:
                self.stop_smtp()
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop_thread.join(10)
                if not self._loop_thread.is_alive():
                    self._loop.close()
                self._loop = None
        if self._dovecot is not None:
            # SIGTERM the master; it needs ~1.1 s, up to 6 s when a login process
            # still waits on a stats handshake: then kill the whole process group.
            if self._dovecot.poll() is None:
                self._dovecot.terminate()
                try:
                    self._dovecot.wait(1.5)
                except subprocess.TimeoutExpired:  # master and children: own group
                    os.killpg(self._dovecot.pid, signal.SIGKILL)
                    self._dovecot.wait(10)
            self._dovecot = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    # ---------------------------------------------------------------- users
    def add_user(self, addr: str, password: Optional[str] = None) -> tuple[str, str]:
        """Create a mailbox user at runtime (usable at once for IMAP, SMTP, LMTP)."""
        addr = addr.lower()
        password = password or secrets.token_urlsafe(12)
        if ":" in addr or ":" in password or "\n" in addr + password:
            raise ValueError("':' and newlines are not allowed in user or password")
        if addr in self.users:
            raise ValueError(f"user {addr} exists")
        local, _, domain = addr.partition("@")
        if not local or not domain or "/" in addr or addr.startswith("."):
            raise ValueError(f"bad address {addr!r}")
        ddir = os.path.join(self.passwd_dir, domain)
        os.makedirs(ddir, mode=0o755, exist_ok=True)
        path = os.path.join(ddir, local)
        with open(path + ".tmp", "w") as f:
            f.write(f"{addr}:{{PLAIN}}{password}::::::\n")
        os.chmod(path + ".tmp", 0o644)
        os.rename(path + ".tmp", path)
        self.users[addr] = password
        return addr, password

    def create_account(self, addr: str, password: str) -> tuple[str, str]:
        """Create a user as a chatmail relay does: any printable password (chatmail's include ':'
        and other punctuation, which a {PLAIN} passwd-file line cannot hold), stored as a salted
        SHA-256 hash ({SSHA256}, a scheme Dovecot 2.3 and 2.4 both know). Usable at once."""
        import base64
        import hashlib
        addr = addr.lower()
        if not password.isprintable() or not password or "\n" in addr or ":" in addr:
            raise ValueError("bad user or password")
        if addr in self.users:
            raise ValueError(f"user {addr} exists")
        local, _, domain = addr.partition("@")
        if not local or not domain or "/" in addr or addr.startswith("."):
            raise ValueError(f"bad address {addr!r}")
        salt = secrets.token_bytes(8)
        digest = base64.b64encode(hashlib.sha256(password.encode() + salt).digest() + salt).decode()
        ddir = os.path.join(self.passwd_dir, domain)
        os.makedirs(ddir, mode=0o755, exist_ok=True)
        path = os.path.join(ddir, local)
        with open(path + ".tmp", "w") as f:
            f.write(f"{addr}:{{SSHA256}}{digest}::::::\n")
        os.chmod(path + ".tmp", 0o644)
        os.rename(path + ".tmp", path)
        self.users[addr] = password
        return addr, password

    def new_user(self, prefix: str = "user") -> tuple[str, str]:
        """Create a user with a unique address prefixN@domain; returns (addr, password)."""
        with self._cond:
            self._counter += 1
            n = self._counter
        return self.add_user(f"{prefix}{n}@{self.domain}")

    def add_camera_address(self, addr: str) -> None:
        """Declare addr as a seccam sender: its mail must be PGP/MIME (mailfixtures)."""
        self.camera_addresses.add(addr.lower())

    def account_toml(self, addr: str, password: str, imap_security: str = "tls", ca: bool = True,
                     timeout_s: float = 20) -> str:
        """The ``[account]`` table of a camera on this server: SMTP over implicit TLS, IMAP over
        ``imap_security``, certificates verified against this server's CA unless ``ca`` is False."""
        imap_port = self.imaps_port if imap_security == "tls" else self.imap_port
        lines = ["[account]", f'address = "{addr}"', 'display_name = "Front door"', f'password = "{password}"',
                 'smtp_host = "127.0.0.1"', f"smtp_port = {self.smtps_port}", 'smtp_security = "tls"',
                 'imap_host = "127.0.0.1"', f"imap_port = {imap_port}", f'imap_security = "{imap_security}"',
                 f"timeout_s = {timeout_s}"]
        if ca:
            lines.append(f'ca_file = "{self.cafile}"')
        return "\n".join(lines) + "\n"

    def maildir(self, addr: str) -> str:
        local, _, domain = addr.lower().partition("@")
        return os.path.join(self.maildir_root, domain, local, "Maildir")

    # ---------------------------------------------------------------- clients
    def ssl_context(self) -> ssl.SSLContext:
        """Client context that verifies our certificate."""
        return ssl.create_default_context(cafile=self.cafile)

    def smtp_params(self, security: str = "starttls") -> dict:
        """host/port for 'ssl' | 'starttls' | 'plain'."""
        port = {"ssl": self.smtps_port, "starttls": self.smtp_port,
                "plain": self.smtp_plain_port}[security]
        return {"host": self.host, "port": port}

    def fetch_inbox(self, addr: str, password: Optional[str] = None) -> list[bytes]:
        """All messages in addr's INBOX, fetched with imaplib over implicit TLS."""
        password = password or self.users[addr.lower()]
        with imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(),
                               timeout=10) as imap:
            imap.login(addr, password)
            imap.select("INBOX", readonly=True)
            typ, data = imap.search(None, "ALL")
            out = []
            for num in data[0].split():
                typ, parts = imap.fetch(num, "(BODY.PEEK[])")
                out.append(parts[0][1])
            imap.logout()
            return out

    def wait_for_received(self, predicate: Callable[[ReceivedMessage], bool] = lambda m: True,
                          timeout: float = 10, start: int = 0) -> ReceivedMessage:
        """First ReceivedMessage at index >= start matching predicate; waits (Condition)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.received[start:]:
                    if predicate(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching message within {timeout}s "
                                       f"({len(self.received) - start} received)")
                self._cond.wait(remaining)

    def wait_for_response(self, rec: ReceivedMessage, timeout: float = 10) -> str:
        """Wait until the SMTP front has answered DATA for rec; return the reply."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while rec.response is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no DATA response yet")
                self._cond.wait(remaining)
            return rec.response

    def wait_for_hang(self, timeout: float = 10, start: int = 0) -> ReceivedMessage:
        """Wait until a message is being held by a DATA hang."""
        return self.wait_for_received(lambda m: m.response is None and self._hanging,
                                      timeout=timeout, start=start)

    # ---------------------------------------------------------------- SMTP front
    def start_smtp(self) -> None:
        """(Re)start the three SMTP listeners on the same ports."""
        fut = asyncio.run_coroutine_threadsafe(self._start_servers(), self._loop)
        fut.result(15)

    def stop_smtp(self) -> None:
        """Close the SMTP listeners and drop open SMTP connections (ports then refuse)."""
        if self._loop is None or not self._loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(self._stop_servers(), self._loop)
        fut.result(15)

    def release_hang(self) -> None:
        """End a DATA hang: held messages get 451, later ones behave normally."""
        self.smtp_behavior = None
        if self._loop is not None and self._hang_event is not None:
            self._loop.call_soon_threadsafe(self._hang_event.set)

    @property
    def _hanging(self) -> bool:
        return self._hang_event is not None and not self._hang_event.is_set() and self._hang_waiters > 0

    _hang_waiters = 0

    async def _hang(self) -> None:
        if self._hang_event is None or self._hang_event.is_set():
            self._hang_event = asyncio.Event()
        ev = self._hang_event
        self._hang_waiters += 1
        with self._cond:
            self._cond.notify_all()
        try:
            await ev.wait()
        finally:
            self._hang_waiters -= 1

    async def _start_servers(self) -> None:
        if self._servers:
            return
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(self.certfile, self.keyfile)
        loop = asyncio.get_running_loop()
        specs = [
            ("ssl", self.smtps_port, server_ctx,
             dict(auth_required=True, auth_require_tls=False)),
            ("starttls", self.smtp_port, None,
             dict(tls_context=server_ctx, require_starttls=True, auth_required=True)),
            ("plain", self.smtp_plain_port, None,
             dict(auth_required=False, auth_require_tls=False)),
        ]
        for listener, port, implicit_ctx, kw in specs:
            handler = _Handler(self, listener, port)

            def factory(handler=handler, kw=kw):
                with warnings.catch_warnings():  # AUTH without STARTTLS on the TLS port is fine
                    warnings.simplefilter("ignore", UserWarning)
                    smtp = SMTP(handler, hostname="localhost", loop=loop,
                                authenticator=self._authenticate,
                                auth_exclude_mechanism=["CRAM-MD5"], **kw)
                self._conns.add(smtp)
                return smtp

            srv = await loop.create_server(factory, host=HOST, port=port, ssl=implicit_ctx,
                                           reuse_address=True)
            self._servers.append(srv)

    async def _stop_servers(self) -> None:
        servers, self._servers = self._servers, []
        for srv in servers:
            srv.close()
        if self._hang_event is not None:
            self._hang_event.set()
        for smtp in list(self._conns):
            for t in (getattr(smtp, "transport", None), getattr(smtp, "_original_transport", None)):
                if t is not None:
                    t.abort()
        for srv in servers:
            await srv.wait_closed()

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if mechanism not in ("PLAIN", "LOGIN"):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = self.users.get(login.lower()) == password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _take_fault(self, stage: str) -> Optional[str]:
        with self._fault_lock:
            b = self.smtp_behavior
            if not b or b.get("stage", "").upper() != stage:
                return None
            times = b.get("times")
            if times is not None:
                if times <= 1:
                    self.smtp_behavior = None
                else:
                    b["times"] = times - 1
            if b.get("hang"):
                return None
            return f"{b.get('code', 451)} {b.get('text', 'injected failure')}"

    def _record(self, rec: ReceivedMessage) -> None:
        with self._cond:
            self.received.append(rec)
            self._cond.notify_all()

    def _respond(self, rec: ReceivedMessage, response: str) -> str:
        with self._cond:
            rec.response = response
            self._cond.notify_all()
        return response

    def _deliver_lmtp(self, rec: ReceivedMessage) -> None:
        for rcpt in rec.rcpt_tos:  # one transaction per recipient: one reply each
            with smtplib.LMTP(self.lmtp_socket, timeout=30) as lmtp:
                lmtp.sendmail(rec.mail_from, [rcpt], rec.raw)
