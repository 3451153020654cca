"""pytest fixtures for the loopback mail system and Delta Chat core (owned by the
test-infrastructure helper).  Registered by tests/conftest.py through
``pytest_plugins = ["helpers.mailfixtures"]``.

Fixtures:
  mailserver        session-scoped helpers.mailserver.MailServer
  dc_runner         session-scoped helpers.deltachat.DCRunner (one rpc server)
  dc_owner          fresh Delta Chat account on ``mailserver``, online (DCAccount)
  dc_account_factory  callable(**kw) -> DCAccount, more fresh online accounts
  assert_no_plaintext (autouse) after each test, every message an SMTP front
                    received from a camera address (``mailserver.camera_addresses``,
                    envelope sender or From:) must pass check_pgp_mime();
                    opt out with @pytest.mark.allow_plaintext.
Also exported: check_pgp_mime(raw_bytes, gnupghome=None, signer=None) -> list[str].
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import email.utils
import re
import shutil
import subprocess
import tempfile
from typing import Optional

import pytest

from .mailserver import MailServer, forget_stopped_servers, registered_servers

__all__ = ["check_pgp_mime", "dearmor", "gpg_packet_tags"]  # fixtures: see module docstring


# ------------------------------------------------------------------ PGP/MIME check
def dearmor(armored: str) -> tuple[list[str], bytes]:
    """(armor header lines, binary data) of an ASCII-armored block."""
    lines = armored.replace("\r\n", "\n").strip().split("\n")
    if not lines or not lines[0].startswith("-----BEGIN PGP "):
        raise ValueError("no armor BEGIN line")
    try:
        end = next(i for i, ln in enumerate(lines) if ln.startswith("-----END PGP "))
    except StopIteration:
        raise ValueError("no armor END line") from None
    body = lines[1:end]
    try:
        blank = body.index("")
    except ValueError:
        raise ValueError("no blank line after armor headers") from None
    headers, data = body[:blank], body[blank + 1:]
    data = [ln for ln in data if not ln.startswith("=")]  # CRC24 line
    return headers, base64.b64decode("".join(data), validate=True)


def gpg_packet_tags(armored: bytes) -> list[int]:
    """Packet tags as listed by ``gpg --list-packets`` (empty throw-away homedir)."""
    gpg = shutil.which("gpg") or "/usr/bin/gpg"
    home = tempfile.mkdtemp(prefix="sc-lp-", dir="/tmp")
    try:
        r = subprocess.run([gpg, "--homedir", home, "--batch", "--no-tty", "--list-packets"],
                           input=armored, capture_output=True, timeout=30)
        # exit status 2 is expected: no secret key to decrypt
        return [int(t) for t in re.findall(rb"^# off=\d+ ctb=[0-9a-f]+ tag=(\d+)", r.stdout, re.M)]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _gpg_decrypt(armored: bytes, gnupghome: str) -> tuple[bytes, str]:
    r = subprocess.run(["gpg", "--homedir", gnupghome, "--batch", "--no-tty",
                        "--status-fd", "2", "--trust-model", "always", "--decrypt"],
                       input=armored, capture_output=True, timeout=60)
    return r.stdout, r.stderr.decode("utf-8", "replace")


def check_pgp_mime(raw: bytes, gnupghome: Optional[str] = None,
                   signer: Optional[str] = None) -> list[str]:
    """Problems that make raw not an RFC 3156 PGP/MIME message as seccam must send.

    Structure: multipart/encrypted; protocol="application/pgp-encrypted", exactly two
    parts, the first application/pgp-encrypted with "Version: 1", the second an
    armored PGP MESSAGE without a "Version:" armor header whose packets are
    PKESK/SKESK then exactly one SEIPD (tag 18) -- checked with ``gpg --list-packets``
    and an independent packet parser.  With gnupghome (holding a recipient's secret
    key) it also decrypts and requires a good signature (by signer's fingerprint if
    given).  Returns [] when all is well.
    """
    from .deltachat import packets  # pure-python parser; needs no deltachat_rpc_client

    problems: list[str] = []
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # noqa: BLE001
        return [f"unparseable message: {exc}"]
    if msg.get_content_type() != "multipart/encrypted":
        return [f"Content-Type is {msg.get_content_type()}, not multipart/encrypted"]
    if msg.get_param("protocol") != "application/pgp-encrypted":
        problems.append(f"protocol parameter is {msg.get_param('protocol')!r}")
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return problems + [f"expected 2 MIME parts, got {len(parts) if isinstance(parts, list) else 0}"]
    control, payload = parts
    if control.get_content_type() != "application/pgp-encrypted":
        problems.append(f"first part is {control.get_content_type()}")
    control_text = control.get_payload(decode=True) or b""
    if not re.search(rb"^Version: 1\s*$", control_text, re.M):
        problems.append(f"first part lacks 'Version: 1': {control_text[:60]!r}")
    if payload.get_content_type() != "application/octet-stream":
        problems.append(f"second part is {payload.get_content_type()}")
    armored = payload.get_payload(decode=True) or b""
    text = armored.decode("ascii", "replace")
    if not text.lstrip().startswith("-----BEGIN PGP MESSAGE-----"):
        return problems + ["second part is not an armored PGP MESSAGE"]
    try:
        headers, binary = dearmor(text)
    except ValueError as exc:
        return problems + [f"bad armor: {exc}"]
    if any(h.lower().startswith("version:") for h in headers):
        problems.append("armor has a 'Version:' header line")

    def judge(tags: list[int], source: str) -> None:
        if not tags:
            problems.append(f"{source}: no packets")
            return
        esk = 0
        while esk < len(tags) and tags[esk] in (1, 3):
            esk += 1
        if esk == 0:
            problems.append(f"{source}: no PKESK/SKESK before the data packet: {tags}")
        if tags[esk:] != [18]:
            problems.append(f"{source}: expected exactly one SEIPD (tag 18) after the "
                            f"session key packets, got {tags}")

    try:
        pkts = list(packets(binary))
        judge([tag for tag, _ in pkts], "packets")
        # what GnuPG 2.2 writes and reads: PKESK v3, SKESK v4, SEIPD v1 (not RFC 9580's
        # PKESK v6 / SEIPD v2, which Delta Chat uses between its own keys)
        want = {1: 3, 3: 4, 18: 1}
        for tag, body in pkts:
            if tag in want and body and body[0] != want[tag]:
                problems.append(f"packet tag {tag} has version {body[0]}, expected {want[tag]}")
    except (ValueError, IndexError) as exc:
        problems.append(f"packet parse error: {exc}")
    # gpg cannot skip a data packet it does not understand and then lists garbage
    # as further packets: judge its listing up to the first data packet only.
    gtags = gpg_packet_tags(armored)
    if 18 in gtags:
        gtags = gtags[:gtags.index(18) + 1]
    judge(gtags, "gpg --list-packets")

    if gnupghome:
        plain, status = _gpg_decrypt(armored, gnupghome)
        if "[GNUPG:] DECRYPTION_OKAY" not in status:
            problems.append("gpg could not decrypt the payload")
        m = re.search(r"^\[GNUPG:\] VALIDSIG (\S+) .* (\S+)$", status, re.M)
        if "[GNUPG:] GOODSIG" not in status or not m:
            problems.append("payload is not signed with a good signature")
        elif signer and signer.upper() not in (m.group(1).upper(), m.group(2).upper()):
            problems.append(f"signed by {m.group(2)}, expected {signer}")
    return problems


# ------------------------------------------------------------------ pytest wiring
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_plaintext: the test may send non-PGP/MIME mail from camera addresses")


@pytest.fixture(scope="session")
def mailserver():
    """Session-wide loopback Dovecot + SMTP front (helpers.mailserver.MailServer)."""
    with MailServer() as ms:
        yield ms


@pytest.fixture(scope="session")
def dc_runner():
    """Session-wide deltachat-rpc-server (helpers.deltachat.DCRunner)."""
    from .deltachat import DCRunner

    with DCRunner() as runner:
        yield runner


@pytest.fixture
def dc_account_factory(dc_runner, mailserver):
    """Callable creating fresh online Delta Chat accounts on ``mailserver``.

    factory(name=None, security="ssl", online=True, prefix="dc", addr=None, password=None)
    """
    made = []

    def factory(**kw):
        acc = dc_runner.new_account(mailserver, **kw)
        made.append(acc)
        return acc

    yield factory
    for acc in made:
        dc_runner.remove_account(acc)


@pytest.fixture
def dc_owner(dc_account_factory):
    """A fresh Delta Chat account ("Owner") on ``mailserver``, online before anything is sent."""
    return dc_account_factory(name="Owner", prefix="owner")


def _is_camera_message(server: MailServer, rec) -> bool:
    cams = {a.lower() for a in server.camera_addresses}
    if not cams:
        return False
    if (rec.mail_from or "").lower() in cams:
        return True
    try:
        from_header = rec.message.get("From", "")
    except Exception:  # noqa: BLE001 - unparseable: judge by envelope only
        return False
    return any(addr.lower() in cams for _, addr in email.utils.getaddresses([str(from_header)]))


@pytest.fixture(autouse=True)
def assert_no_plaintext(request):
    """Every message a camera address sent during the test must be PGP/MIME (check_pgp_mime)."""
    baseline = {id(s): len(s.received) for s in registered_servers()}
    yield
    servers = registered_servers()
    problems = []
    if not request.node.get_closest_marker("allow_plaintext"):
        for s in servers:
            for rec in s.received[baseline.get(id(s), 0):]:
                if _is_camera_message(s, rec):
                    for p in check_pgp_mime(rec.raw):
                        problems.append(f"{rec.mail_from} -> {rec.rcpt_tos} (port {rec.port}): {p}")
    # leave running servers in a neutral state for the next test
    for s in servers:
        if s.running:
            s.release_hang()
            s.smtp_behavior = None
            s.start_smtp()
    forget_stopped_servers()
    if problems:
        pytest.fail("camera mail that is not PGP/MIME encrypted:\n  " + "\n  ".join(problems),
                    pytrace=False)


@contextlib.contextmanager
def sending_camera(mailserver, timeout):
    """A sendkit camera whose account is on ``mailserver`` (STARTTLS, verified against its CA).

    On a normal exit, beyond the suite-wide structure check, every message the camera sent
    must decrypt with the camera's own key (it encrypts to itself) and carry its good signature.
    """
    from helpers import sendkit
    for addr, pw in ((sendkit.CAMERA_ADDR, sendkit.PASSWORD), ("owner@seccam.test", None)):
        if addr not in mailserver.users:  # the server lives for the whole session
            mailserver.add_user(addr, pw)
    mailserver.add_camera_address(sendkit.CAMERA_ADDR)
    c = sendkit.make_camera(account=sendkit.account_toml(port=mailserver.smtp_port, security="starttls",
                                                         ca_file=mailserver.cafile, timeout=timeout))
    c.mailserver = mailserver
    c.start = len(mailserver.received)
    try:
        yield c
        for rec in mailserver.received[c.start:]:
            if rec.mail_from == sendkit.CAMERA_ADDR:
                assert check_pgp_mime(rec.raw, gnupghome=str(c.home), signer=c.fingerprint) == []
    finally:
        c.close()
