"""Real Delta Chat core (deltachat-rpc-server 2.65) as a reading client in tests
(owned by the test-infrastructure helper).

``DCRunner`` starts one ``deltachat-rpc-server`` (from the test venv) with a
short accounts dir under /tmp and creates accounts on a
helpers.mailserver.MailServer.  ``DCAccount`` wraps a deltachat_rpc_client
Account (unknown attributes are delegated to it) with event waits that have
timeouts, message summaries, the own vCard / public key / fingerprint.

No fixed sleeps: every wait reads the account's event queue with a deadline.
Needs /opt/seccam-test-venv (deltachat-rpc-client and -server 2.65.0).
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

if TYPE_CHECKING:  # imported lazily: the OpenPGP helpers here work without the venv
    from deltachat_rpc_client import Account, Chat, Contact, Message
    from deltachat_rpc_client._utils import AttrDict

DEFAULT_TIMEOUT = 20.0


def rpc_server_path() -> str:
    """$SECCAM_DC_RPC_SERVER, else next to the running interpreter (the venv), else PATH."""
    env = os.environ.get("SECCAM_DC_RPC_SERVER")
    if env:
        return env
    candidates = [os.path.join(os.path.dirname(sys.executable), "deltachat-rpc-server"),
                  "/opt/seccam-test-venv/bin/deltachat-rpc-server"]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which("deltachat-rpc-server")
    if not found:
        raise RuntimeError("deltachat-rpc-server not found; run tests/run to create the test venv")
    return found


# ------------------------------------------------------------------ OpenPGP bits
def packets(data: bytes):
    """Yield (tag, body) of binary OpenPGP packets (RFC 4880/9580 framing)."""
    i = 0
    while i < len(data):
        hdr = data[i]
        if not hdr & 0x80:
            raise ValueError(f"not an OpenPGP packet at offset {i}")
        if hdr & 0x40:  # new format
            tag = hdr & 0x3F
            i += 1
            first = data[i]
            if first < 192:
                length, i = first, i + 1
            elif first < 224:
                length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
            elif first == 255:
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:  # partial body lengths: collect chunks
                body = b""
                while 224 <= first < 255:
                    chunk = 1 << (first & 0x1F)
                    body += data[i + 1:i + 1 + chunk]
                    i += 1 + chunk
                    first = data[i]
                if first < 192:
                    length, i = first, i + 1
                elif first < 224:
                    length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
                else:
                    length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
                yield tag, body + data[i:i + length]
                i += length
                continue
        else:  # old format
            tag = (hdr >> 2) & 0x0F
            ltype = hdr & 3
            i += 1
            if ltype == 3:
                length = len(data) - i
            else:
                n = (1, 2, 4)[ltype]
                length, i = int.from_bytes(data[i:i + n], "big"), i + n
        yield tag, data[i:i + length]
        i += length


def packet_tags(data: bytes) -> list[int]:
    """Packet tags of a binary OpenPGP stream, e.g. [1, 18] for PKESK + SEIPD."""
    return [tag for tag, _ in packets(data)]


def v4_fingerprint(keydata: bytes) -> str:
    """Upper-case hex fingerprint of the first (primary, v4) key packet in keydata."""
    for tag, body in packets(keydata):
        if tag in (6, 5):  # public key / secret key
            if body[0] != 4:
                raise ValueError(f"key version {body[0]} not supported")
            if tag == 5:
                raise ValueError("secret key given; pass the public key")
            return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    raise ValueError("no public key packet")


def key_from_vcard(vcard: str) -> bytes:
    """Binary OpenPGP public key from a vCard's KEY:data:application/pgp-keys;base64 line."""
    unfolded = re.sub(r"\r?\n[ \t]", "", vcard)
    m = re.search(r"^KEY:data:application/pgp-keys;base64\\?,(\S+)", unfolded, re.M)
    if not m:
        raise ValueError("vCard has no KEY line")
    return base64.b64decode(m.group(1))


def armor_public_key(keydata: bytes) -> str:
    """ASCII-armored public key block (no Version header) for binary keydata."""
    b64 = base64.b64encode(keydata).decode()
    crc = 0xB704CE
    for byte in keydata:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    crc_b64 = base64.b64encode((crc & 0xFFFFFF).to_bytes(3, "big")).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + "\n".join(lines)
            + f"\n={crc_b64}\n-----END PGP PUBLIC KEY BLOCK-----\n")


# ------------------------------------------------------------------ messages
@dataclass
class MsgInfo:
    """What a test usually asserts on about a received Delta Chat message."""

    id: int
    text: str
    subject: str
    show_padlock: bool
    view_type: str
    file: Optional[str]
    file_name: Optional[str]
    file_sha256: Optional[str]
    chat_id: int
    chat_name: str
    is_contact_request: bool
    sender_addr: str
    sender_name: str
    sender_is_key_contact: bool
    sender_fingerprint: Optional[str]
    is_info: bool
    snapshot: AttrDict


def contact_fingerprint(contact: Contact) -> Optional[str]:
    """Fingerprint of the key Delta Chat has for contact (via its vCard), or None."""
    try:
        return v4_fingerprint(key_from_vcard(contact.make_vcard()))
    except ValueError:
        return None


def msg_info(message: Message) -> MsgInfo:
    snap = message.get_snapshot()
    chat = snap.chat.get_basic_snapshot()
    sender = snap.sender.get_snapshot()
    sha = None
    if snap.file:
        with open(snap.file, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
    return MsgInfo(
        id=snap.id, text=snap.text, subject=snap.get("subject", ""),
        show_padlock=snap.show_padlock, view_type=snap.view_type,
        file=snap.file, file_name=snap.get("file_name"), file_sha256=sha,
        chat_id=snap.chat_id, chat_name=chat.name,
        is_contact_request=chat.is_contact_request,
        sender_addr=sender.address, sender_name=sender.display_name,
        sender_is_key_contact=sender.is_key_contact,
        sender_fingerprint=contact_fingerprint(snap.sender) if sender.is_key_contact else None,
        is_info=snap.is_info, snapshot=snap,
    )


# ------------------------------------------------------------------ accounts
class DCAccount:
    """A configured Delta Chat account on a MailServer.

    Attributes: account (deltachat_rpc_client.Account), addr, password, runner.
    Unknown attributes are delegated to the Account (create_contact, get_chatlist...).
    """

    def __init__(self, runner: "DCRunner", account: Account, addr: str, password: str):
        self.runner = runner
        self.account = account
        self.addr = addr
        self.password = password
        self.online = False
        self.errors: list[str] = []  # Error/Warning events seen by wait_for_event

    def __getattr__(self, name):
        if name == "account":  # not yet set: avoid recursion
            raise AttributeError(name)
        return getattr(self.account, name)

    def __repr__(self) -> str:
        return f"<DCAccount {self.addr} id={self.account.id}>"

    # events ---------------------------------------------------------------
    def wait_for_event(self, match: Union[str, Callable[[AttrDict], bool], None] = None,
                       timeout: float = DEFAULT_TIMEOUT) -> AttrDict:
        """Consume events until one matches (kind name or predicate); TimeoutError otherwise.

        Error events are remembered in self.errors for diagnostics.
        """
        from deltachat_rpc_client._utils import AttrDict

        q = self.account._rpc.get_queue(self.account.id)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.addr}: no event {match!r} within {timeout}s; "
                                   f"last errors: {self.errors[-5:]}")
            try:
                ev = AttrDict(q.get(timeout=remaining))
            except queue.Empty:
                continue
            if ev.kind in ("Error", "Warning"):
                self.errors.append(f"{ev.kind}: {ev.get('msg')}")
            if match is None or (ev.kind == match if isinstance(match, str) else match(ev)):
                return ev

    def clear_events(self) -> None:
        self.account.clear_all_events()

    def bring_online(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """start_io and wait until the inbox loop reached IDLE once.

        A fresh account records the inbox position on this first connection and
        never fetches mail that was already there: call before mail is sent to it.
        """
        self.account.start_io()
        self.wait_for_event("ImapInboxIdle", timeout)
        self.online = True

    def stop(self) -> None:
        if self.online:
            self.account.stop_io()
            self.online = False

    def wait_for_incoming_msg(self, timeout: float = DEFAULT_TIMEOUT,
                              predicate: Optional[Callable[[MsgInfo], bool]] = None) -> MsgInfo:
        """Wait for an IncomingMsg event (optionally one whose MsgInfo matches)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.wait_for_event("IncomingMsg", max(0.0, deadline - time.monotonic()))
            info = msg_info(self.account.get_message_by_id(ev.msg_id))
            if predicate is None or predicate(info):
                return info

    def wait_for_securejoin_joined(self, timeout: float = DEFAULT_TIMEOUT) -> AttrDict:
        """Joiner side: wait for SecurejoinJoinerProgress 1000."""
        return self.wait_for_event(
            lambda e: e.kind == "SecurejoinJoinerProgress" and e.progress == 1000, timeout)

    def wait_for_securejoin_inviter_done(self, timeout: float = DEFAULT_TIMEOUT) -> AttrDict:
        return self.wait_for_event(
            lambda e: e.kind == "SecurejoinInviterProgress" and e.progress == 1000, timeout)

    def wait_for_delivered(self, message: Message, timeout: float = DEFAULT_TIMEOUT) -> AttrDict:
        """Wait for MsgDelivered of an outgoing message (MsgFailed raises)."""
        ev = self.wait_for_event(
            lambda e: e.kind in ("MsgDelivered", "MsgFailed") and e.msg_id == message.id, timeout)
        if ev.kind == "MsgFailed":
            raise AssertionError(f"message {message.id} failed: {message.get_info()}")
        return ev

    # keys / contacts ------------------------------------------------------
    def vcard(self) -> str:
        """The account's own vCard (EMAIL, FN, KEY:data:application/pgp-keys;base64,...)."""
        return self.account.self_contact.make_vcard()

    def public_key(self) -> bytes:
        """Own public key, binary OpenPGP (from the vCard)."""
        return key_from_vcard(self.vcard())

    def public_key_armored(self) -> str:
        return armor_public_key(self.public_key())

    def fingerprint(self) -> str:
        """Own key fingerprint, 40 upper-case hex digits."""
        return v4_fingerprint(self.public_key())

    def export_self_keys(self, directory: str) -> list[str]:
        """Export own public+secret keys (armored files) to directory; returns paths."""
        os.makedirs(directory, exist_ok=True)
        self.account.export_self_keys(directory)
        return sorted(os.path.join(directory, n) for n in os.listdir(directory))

    def import_vcard(self, vcard: str) -> list[Contact]:
        return self.account.import_vcard(vcard)

    def chat_with_vcard(self, vcard: str) -> Chat:
        """Import a vCard (with key) and return the 1:1 chat with that contact."""
        [contact] = self.account.import_vcard(vcard)
        return contact.create_chat()

    def secure_join(self, invite: str) -> Chat:
        """Start a Secure-Join as the joiner (returns at once; see wait_for_securejoin_joined)."""
        return self.account.secure_join(invite)


class DCRunner:
    """One deltachat-rpc-server process plus the accounts created with it.

    with DCRunner() as runner:
        owner = runner.new_account(mailserver)          # configured and online
    """

    def __init__(self, accounts_dir: Optional[str] = None):
        self._own_dir = accounts_dir is None
        self.basedir = accounts_dir  # a short mkdtemp under /tmp unless given
        self.rpc = None  # deltachat_rpc_client.Rpc
        self.dc = None  # deltachat_rpc_client.DeltaChat
        self.accounts: list[DCAccount] = []

    def __enter__(self) -> "DCRunner":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "DCRunner":
        from deltachat_rpc_client import DeltaChat, Rpc

        server = rpc_server_path()
        if self.basedir is None:
            self.basedir = tempfile.mkdtemp(prefix="sc-dc-", dir="/tmp")
        rpc = Rpc(accounts_dir=os.path.join(self.basedir, "accounts"), rpc_server_path=server)
        try:
            rpc.start()
        except BaseException:
            self.close()
            raise
        self.rpc = rpc
        self.dc = DeltaChat(self.rpc)
        return self

    def close(self) -> None:
        for acc in list(self.accounts):
            try:
                acc.stop()
            except Exception:  # noqa: BLE001 - best-effort teardown
                pass
        self.accounts.clear()
        if self.rpc is not None:
            try:
                self.rpc.close()
            finally:
                proc = self.rpc.process
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except Exception:  # noqa: BLE001
                        proc.kill()
                for stream in (proc.stdout, proc.stderr, proc.stdin):
                    if stream:
                        stream.close()
                self.rpc = None
        if self._own_dir and self.basedir:
            shutil.rmtree(self.basedir, ignore_errors=True)
            self.basedir = None

    def new_account(self, mailserver, name: Optional[str] = None, security: str = "ssl",
                    online: bool = True, addr: Optional[str] = None,
                    password: Optional[str] = None, prefix: str = "dc",
                    timeout: float = DEFAULT_TIMEOUT) -> DCAccount:
        """Create a mail user (unless addr given and known) and a Delta Chat account for it.

        security: "ssl" (implicit TLS IMAP+SMTP), "starttls" or "plain".
        """
        if addr is None:
            addr, password = mailserver.new_user(prefix)
        elif addr.lower() not in mailserver.users:
            addr, password = mailserver.add_user(addr, password)
        else:
            password = password or mailserver.users[addr.lower()]
        imap_port = {"ssl": mailserver.imaps_port, "starttls": mailserver.imap_port,
                     "plain": mailserver.imap_port}[security]
        smtp_port = mailserver.smtp_params(security)["port"]
        account = self.dc.add_account()
        acc = DCAccount(self, account, addr, password)
        self.accounts.append(acc)
        if name:
            account.set_config("displayname", name)
        account.add_or_update_transport({
            "addr": addr, "password": password,
            "imapServer": mailserver.host, "imapPort": imap_port, "imapSecurity": security,
            "smtpServer": mailserver.host, "smtpPort": smtp_port, "smtpSecurity": security,
            "certificateChecks": "acceptInvalidCertificates",
        })
        if online:
            acc.bring_online(timeout)
        return acc

    def remove_account(self, acc: DCAccount) -> None:
        acc.stop()
        if acc in self.accounts:
            self.accounts.remove(acc)
        acc.account.remove()


def camera_messages(acc, cam_addr, n, seen, timeout, predicate=lambda info: True, only_n=False):
    """The next ``n`` non-info messages from ``cam_addr`` that are not in ``seen``, oldest first.

    Only the first message of a contact-request chat raises IncomingMsg, so this
    reads the chats, using any event as the wake-up, until ``timeout``. It returns
    everything found once there are ``n`` (so a test can see an unexpected extra),
    or exactly the first ``n`` with ``only_n``; what it returns is added to ``seen``.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = []
        for chat in acc.account.get_chatlist():
            for m in chat.get_messages():
                if m.id in seen:
                    continue
                info = msg_info(m)
                if info.sender_addr == cam_addr and not info.is_info and predicate(info):
                    got.append(info)
        if len(got) >= n:
            got.sort(key=lambda i: i.id)
            got = got[:n] if only_n else got
            seen.update(i.id for i in got)
            return got
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{acc.addr}: {len(got)} of {n} camera messages; errors: {acc.errors[-5:]}")
        try:
            acc.wait_for_event(None, timeout=min(1.0, remaining))
        except TimeoutError:
            pass
