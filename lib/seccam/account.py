"""The camera's mail account as a whole: its settings, the login check, and writing it down.

This module owns the ``[account]`` table of the configuration file when a
command writes it (``seccam account new|set|import``, ``seccam setup``), and
the secret beside it:

* :class:`Settings` is one complete account (address, password, servers,
  optional CA), however it was found: a chatmail relay's answer
  (seccam.relay), a ``dclogin:`` URL (seccam.dclogin), discovery
  (seccam.mailservers) or explicit hosts;
* :func:`check` logs in over IMAP and SMTP, exactly as jobs/inbox and
  jobs/send will (seccam.imap, seccam.transport: verified TLS, never plain
  text to another host), and names each failure; on a chatmail relay that
  first login is what creates the account;
* :func:`write` puts the password into ``<config dir>/<address>.password``
  (mode 0640, group of the configuration file, i.e. root and the service
  user only; written beside and renamed into place), then rewrites the one
  ``[account]`` table of the configuration with seccam.tomledit, keeping
  every comment and every other setting, checks that the result is a valid
  configuration, and replaces the file atomically with its owner and mode.
  If anything fails before the rename, the old configuration stands.

The password is never logged, printed or put into an error message.
"""

import dataclasses
import logging
import os
import re
import stat
import time
from pathlib import Path

from . import config as _config
from . import tomledit
from .errors import ConfigError, DataError, PermanentError, TemporaryError
from .mailservers import Server, default_port

log = logging.getLogger("seccam.account")

TABLE = "account"
# Keys of [account] that describe the account itself; a new account replaces all of them.
# display_name and timeout_s are the owner's choices and stay unless given.
ACCOUNT_KEYS = ("address", "login", "password", "password_file", "imap_host", "imap_port", "imap_security",
                "smtp_host", "smtp_port", "smtp_security", "ca_file")
_FILE_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")


@dataclasses.dataclass(frozen=True)
class Settings:
    address: str
    password: str
    imap: Server
    smtp: Server
    login: str | None = None
    ca_file: Path | None = None
    source: str = ""

    def __repr__(self):  # never show the password
        return f"Settings(address={self.address!r}, imap={self.imap}, smtp={self.smtp}, source={self.source!r})"

    def as_account(self, timeout_s=30.0, display_name="seccam"):
        """A :class:`seccam.config.Account` holding the password in memory (for the login check)."""
        return _config.Account(
            address=self.address, display_name=display_name, login=self.login or self.address,
            password=self.password, password_file=None,
            smtp_host=self.smtp.host, smtp_port=self.smtp.port, smtp_security=self.smtp.security,
            imap_host=self.imap.host, imap_port=self.imap.port, imap_security=self.imap.security,
            ca_file=self.ca_file, timeout_s=timeout_s)


def check_password(password, what="the password"):
    """A password that a password_file can hold: one line, no white space at its ends."""
    if not password:
        raise DataError(f"{what} is empty")
    if any(c in password for c in "\r\n\0"):
        raise DataError(f"{what} contains a line break; a password_file holds one line")
    if password != password.strip():
        raise DataError(f"{what} begins or ends with white space, which a password_file cannot keep")
    return password


def check_address(address):
    address = address.strip().lower()
    if not _config._ADDR_RE.match(address) and not re.fullmatch(r"[^@\s<>\"(),;:]+@\[[0-9a-f.:]+\]", address):
        raise DataError(f"{address!r} is not an email address")
    return address


def server(kind, host, port=None, security=None):
    """A :class:`Server`, filling in what a login URL or the command line left open."""
    if security is None:
        security = {143: "starttls", 587: "starttls"}.get(port, "tls")
    if security == "plain" and not _config._is_loopback(host):
        raise PermanentError(f"{kind.upper()} without TLS to {host} was asked for; seccam sends the password "
                             "and the camera's mail only over TLS")
    if any(c.isspace() or c in "/@?#" for c in host) or not host:
        raise DataError(f"{host!r} is not a host name")
    return Server(host.lower(), port or default_port(kind, security), security)


# -- the login check ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckResult:
    kind: str   # IMAP | SMTP
    where: str
    ok: bool
    message: str
    temporary: bool = False


def check(account):
    """Log in over IMAP (opening the INBOX) and SMTP (no mail sent); one result each."""
    from .imap import Imap
    from .transport import Smtp

    problem = _unreadable(account)
    if problem:
        return [CheckResult(kind, "-", False, problem) for kind in ("IMAP", "SMTP")]
    results = []
    for kind, where, make in (
            ("IMAP", f"{account.imap_host}:{account.imap_port}", lambda: Imap(account)),
            ("SMTP", f"{account.smtp_host}:{account.smtp_port}", lambda: Smtp(account))):
        if kind == "IMAP" and not account.imap_host:
            results.append(CheckResult(kind, "-", False, "account.imap_host is not set (the camera cannot read "
                                                          "invite answers and keys)"))
            continue
        try:
            client = make()
            client.connect()
            client.close()
        except (PermanentError, TemporaryError, ConfigError) as exc:
            results.append(CheckResult(kind, where, False, str(exc), temporary=exc.temporary))
            log.info("check=%s where=%s ok=false error=%r", kind, where, str(exc))
            continue
        results.append(CheckResult(kind, where, True, "login ok"))
        log.info("check=%s where=%s ok=true", kind, where)
    return results


def _unreadable(account):
    """What this user cannot read of the account's files, named (the TLS libraries would only say
    "Permission denied" while connecting)."""
    try:
        account.read_password()
        if account.ca_file is not None:
            with open(account.ca_file, "rb"):
                pass
    except ConfigError as exc:
        return str(exc)
    except OSError as exc:
        return f"{account.ca_file}: cannot read ca_file: {exc.strerror}"
    return None


def require_login(settings, timeout_s, after_creation=False):
    """Check both logins; raise one line naming what failed (nothing has been written yet)."""
    results = check(settings.as_account(timeout_s))
    failed = [r for r in results if not r.ok]
    if not failed:
        return results
    what = "; ".join(f"{r.kind} {r.message}" for r in failed)
    hint = ""
    if any("TLS certificate not trusted" in r.message for r in failed) and settings.ca_file is None:
        hint = " (a server with its own CA: give it with --ca-file)"
    if after_creation:
        what = f"the new account {settings.address} does not work: {what}"
    else:
        what = f"{settings.address}: {what}"
    cls = TemporaryError if all(r.temporary for r in failed) else PermanentError
    raise cls(what + hint + "; nothing was changed")


# -- writing it down ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Written:
    config_path: Path
    password_file: Path
    ca_file: Path | None


def file_safe(text):
    return _FILE_SAFE.sub("_", text).lstrip(".") or "account"


def password_path(config_path, address):
    return Path(config_path).parent / f"{file_safe(address)}.password"


def write(config_path, settings, display_name=None, comments=(), now=None):
    """Write the password file, the CA copy and ``[account]``; return :class:`Written`.

    The configuration is only replaced once the new text is a valid
    configuration; the password file is named after the address, so the
    account in the old configuration keeps its own password file.
    """
    config_path = Path(config_path).resolve()  # a symlinked configuration: write its target
    try:
        st = config_path.stat()
        text = config_path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: configuration file not found (install.sh creates it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    secret = password_path(config_path, settings.address)
    secret_mode = 0o640 if st.st_gid != 0 else 0o600
    try:
        previous = secret.read_bytes()
    except OSError:
        previous = None
    owner = 0 if os.geteuid() == 0 else -1
    _replace_file(secret, (settings.password + "\n").encode(), secret_mode, owner, st.st_gid)
    try:
        return _write_config(config_path, text, st, settings, secret, display_name, comments)
    except BaseException:
        # The old configuration stands; so does the old password file (or none).
        if previous is None:
            os.unlink(secret)
        else:
            _replace_file(secret, previous, secret_mode, owner, st.st_gid)
        raise


def _write_config(config_path, text, st, settings, secret, display_name, comments):
    mode = stat.S_IMODE(st.st_mode)
    ca_copy = None
    if settings.ca_file is not None:
        ca_copy = _keep_ca(config_path, settings)
    values = {"address": settings.address}
    if display_name:
        values["display_name"] = display_name
    if settings.login and settings.login != settings.address:
        values["login"] = settings.login
    values.update({"password_file": str(secret),
                   "imap_host": settings.imap.host, "imap_port": settings.imap.port,
                   "imap_security": settings.imap.security,
                   "smtp_host": settings.smtp.host, "smtp_port": settings.smtp.port,
                   "smtp_security": settings.smtp.security})
    if ca_copy is not None:
        values["ca_file"] = str(ca_copy)
    drop = set(ACCOUNT_KEYS) - set(values)
    new_text = tomledit.set_table(text, TABLE, values, drop=drop, comments=comments, what=str(config_path))
    _config.parse(new_text, config_path, mode=mode)  # a valid configuration, or ConfigError and nothing written
    _replace_file(config_path, new_text.encode("utf-8"), mode, st.st_uid, st.st_gid)
    log.info("event=account_written address=%s config=%s password_file=%s", settings.address, config_path,
             secret)
    return Written(config_path, secret, ca_copy)


def read_ca(path):
    """The PEM certificate(s) in ``path``; DataError naming the file if it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the CA file: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise DataError(f"{path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return data


def _keep_ca(config_path, settings):
    """The CA certificate, copied beside the configuration (the service user must read it, and the
    file given on the command line may be in a private home directory or a temporary one)."""
    data = read_ca(settings.ca_file)
    dest = Path(config_path).parent / f"{file_safe(settings.imap.host)}-ca.pem"
    if not (dest.exists() and dest.read_bytes() == data):
        _replace_file(dest, data, 0o644, 0 if os.geteuid() == 0 else -1, 0 if os.geteuid() == 0 else -1)
    return dest


def _replace_file(path, data, mode, uid, gid):
    """seccam.durable's atomic replacement, with exactly ``mode`` and owner (as root), and an error
    that says what was (not) done."""
    from . import durable
    path = Path(path)
    try:
        durable.replace_bytes(path, data, mode, owner=(uid, gid))
    except TemporaryError as exc:
        hint = " (run with sudo)" if exc.errno in (1, 13) and os.geteuid() != 0 else ""
        raise ConfigError(f"{path}: cannot write: {str(exc).partition(': ')[2]}{hint}; nothing was changed") from None


def written_comment(how, now=None):
    when = time.strftime("%Y-%m-%d", time.localtime(now))
    return [f"The camera's mail account, written by `{how}` on {when}.",
            "The password is in password_file (readable by root and the seccam group only)."]
