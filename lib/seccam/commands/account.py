"""``seccam account``: the camera's mail account.

Usage::

    seccam account new [RELAY] [--name NAME] [--ca-file CA] [--replace] [--yes]
    seccam account set ADDRESS [--password-file FILE] [--login LOGIN]
                       [--imap-host HOST [--imap-port N] [--imap-security S]]
                       [--smtp-host HOST [--smtp-port N] [--smtp-security S]] [...]
    seccam account import 'dclogin:...' | -   [...]
    seccam account show [--json]
    seccam account check

``new`` asks a chatmail relay for an account (``RELAY``, ``https://RELAY/new``
or the ``DCACCOUNT:`` URL a relay shows; without one, the relay suggested in
docs/setup.md), logs in once over IMAP and SMTP (which creates it), writes
``[account]`` and the password file, and makes the camera key if there is
none. ``set`` and ``import`` do the same for an account that exists. Nothing
is written before both logins worked. An existing ``[account]`` is replaced
only with ``--replace`` (the same address with new settings needs none), and
a camera with recipients only after saying what that does to their chat.

These commands write /etc/seccam (root's) and so keep the invoking user's
privileges until the configuration is written; files named on the command line
(``--password-file``, ``--ca-file``) are read as that user. Then they switch to
the spool's owner, as every other command does, for the camera key.
The logic lives in seccam.account, seccam.relay, seccam.dclogin and
seccam.mailservers; this module talks to the person.
"""

import argparse
import json
import sys

HELP = "the camera's mail account: new (from a chatmail relay), set, import dclogin:, show, check"
# Loads the configuration itself: it writes it as root before dropping privileges.
NEEDS_CONFIG = False

SECURITIES = ("tls", "starttls", "plain")


def _common(parser):
    # Also accept --config/-v after the subcommand; SUPPRESS keeps a value given before it.
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_writing_arguments(parser, setup=False):
    """Options of every command that writes [account] (also used by ``seccam setup``)."""
    parser.add_argument("--name", metavar="NAME",
                        help="the camera's name, which Delta Chat shows as the chat's name (account.display_name)")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="a CA certificate to verify the relay or mail server with (a self-signed server); "
                             "certificates are always verified")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="network timeout for each step (default 30)")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask: accept what is shown (for scripts)")
    if not setup:
        parser.add_argument("--replace", action="store_true",
                            help="replace the [account] the configuration already has")


def add_server_arguments(parser):
    parser.add_argument("--password-file", metavar="FILE",
                        help="read the password from FILE ('-': standard input) instead of asking for it")
    parser.add_argument("--login", metavar="LOGIN", help="the login name, if it is not the address")
    for kind in ("imap", "smtp"):
        parser.add_argument(f"--{kind}-host", metavar="HOST",
                            help=f"the {kind.upper()} server (default: found like mail clients find it)")
        parser.add_argument(f"--{kind}-port", type=int, metavar="PORT", help=f"the {kind.upper()} port")
        parser.add_argument(f"--{kind}-security", choices=SECURITIES,
                            help="tls (default), starttls, or plain (loopback only)")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="account_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("new", help="get a new account from a chatmail relay and configure it")
    p.add_argument("relay", nargs="?", metavar="RELAY",
                   help="a chatmail relay: its name, https://RELAY/new or DCACCOUNT:... "
                        "(default: the one docs/setup.md suggests)")
    add_writing_arguments(p)
    _common(p)
    p = sub.add_parser("set", help="configure an existing account (classic provider or chatmail)")
    p.add_argument("address", metavar="ADDRESS")
    add_server_arguments(p)
    add_writing_arguments(p)
    _common(p)
    p = sub.add_parser("import", help="configure the account of a Delta Chat login URL (dclogin:...)")
    p.add_argument("url", nargs="?", metavar="URL",
                   help="the dclogin: URL; '-' or nothing reads it from standard input (keeps it out of the "
                        "shell history)")
    add_writing_arguments(p)
    _common(p)
    p = sub.add_parser("show", help="show the account (never the password)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p = sub.add_parser("check", help="log in over IMAP and SMTP and say what fails")
    _common(p)


def run(args, config):
    handler = {"new": _new, "set": _set, "import": _import, "show": _show,
               "check": _check}[args.account_command]
    return handler(args)


# -- the configuration as it is now ------------------------------------------------------
class Current:
    """The configuration before the change. ``address`` is the configured account's address (None: no
    [account]); ``broken`` the error of an [account] that does not load (the rest does)."""

    def __init__(self, path, config, address=None, broken=None):
        self.path = path
        self.config = config
        self.address = address
        self.broken = broken

    @property
    def has_account(self):
        return self.address is not None or self.broken is not None


def load_current(config_arg):
    from .. import config as _config
    from .. import tomledit
    from ..errors import ConfigError

    path = _config.resolve_path(config_arg)
    try:
        cfg = _config.load(path)
        return Current(path, cfg, cfg.account.address if cfg.account else None)
    except ConfigError as exc:
        error = exc
    # An [account] that no longer loads (its password file is gone, a typo) must not lock the owner
    # out of replacing it: the rest of the file must be fine, though.
    try:
        text = path.read_bytes().decode("utf-8")
        rest = tomledit.remove_table(text, "account")
        if rest == text:
            raise error
        cfg = _config.parse(rest, path)
    except (ConfigError, OSError, UnicodeDecodeError):
        raise error from None
    return Current(path, cfg, None, broken=error)


def recipients_of(cfg):
    from .. import keys
    from ..errors import DataError
    try:
        return keys.recipients(cfg)
    except DataError:  # an unreadable recipients file must not hide the configured ones
        return tuple(cfg.delivery.recipients) + ("(and those in an unreadable recipients file)",)


def refuse_existing(current, args, new_address=None):
    """Stop unless replacing the configured account is what the person asked for."""
    from ..errors import UsageError
    if not current.has_account:
        return
    if new_address is not None and new_address == current.address:
        return  # the same account with new settings (a changed password, other servers)
    old = current.address or f"an [account] that does not load ({current.broken})"
    if not getattr(args, "replace", False):
        raise UsageError(f"{current.path} already has an account ({old}); re-run with --replace to switch the "
                         "camera to another one (seccam account show shows it)")
    who = recipients_of(current.config)
    if not who:
        print(f"replacing the account {old}")
        return
    acc = current.config.account
    print(replacement_warning(current.address, who, acc.password_file if acc is not None else None))
    confirm("Switch the camera to a new address anyway?", args)


def replacement_warning(old, who, password_file=None):
    """What a new account does to the recipients' chat (measured with Delta Chat core 2.65)."""
    keep = f" Its password stays in {password_file}." if password_file else ""
    return (f"warning: this camera has recipients ({', '.join(who)}), who know it as {old or 'its old address'}. "
            "With a new account it writes from a new address. Its key stays, and Delta Chat (2.x) knows the "
            "camera by its key: the next message from the new address lands in the same chat, which then "
            "follows the new address. Until that message arrives, whatever they send to the camera goes to the "
            "old address, which the camera no longer reads (send one at once: sudo seccam trigger). Older "
            f"Delta Chat versions (1.x) may show a new chat.{keep}")


def confirm(question, args):
    from ..errors import UsageError
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question.rstrip('?')}: not confirmed (no terminal to ask); add --yes to confirm")
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")
    return True


def _ca_file(args):
    from pathlib import Path

    from .. import account
    if not args.ca_file:
        return None
    path = Path(args.ca_file).absolute()
    account.read_ca(path)  # read as the invoking user, before anything else happens
    return path


# -- writing and what follows ------------------------------------------------------------------
def finish(current, settings, args, how, extra_lines=(), make_key=True):
    """Write [account], then (as the spool's owner) make the camera key; print what was done."""
    import textwrap

    from .. import account, runtime
    from .. import config as _config

    written = account.write(current.path, settings, display_name=args.name,
                            comments=account.written_comment(how))
    login = f", login {settings.login}" if settings.login and settings.login != settings.address else ""
    print(f"  account: {settings.address}{login}")
    print(f"  IMAP {settings.imap}, SMTP {settings.smtp} (servers: {settings.source})")
    print(f"  written to {written.config_path} [account]; the password is in {written.password_file} "
          "(root and the seccam group only)")
    if written.ca_file:
        print(f"  certificates are verified with {written.ca_file}")
    for line in extra_lines:
        print(textwrap.fill(line, width=100, initial_indent="  ", subsequent_indent="  "))
    cfg = _config.load(current.path)
    runtime.become_spool_owner(cfg)
    if make_key:
        ensure_camera_key(cfg, args, say=lambda line: print("  " + line))
    return cfg


def ensure_camera_key(cfg, args, say=print):
    """Make the camera key if there is none; return (fingerprint, made_now).

    A camera that already has recipients but no key is most likely a new SD card whose key
    backup has not been restored yet: a new key would start a new chat for all of them, so
    that needs a confirmation."""
    from ..gpg import Gpg, home_for
    gpg = Gpg(home_for(cfg.state_dir))
    fpr = gpg.camera_key()
    who = recipients_of(cfg) if not fpr else ()
    if who:
        say(f"warning: there is no camera key, but the camera has recipients ({', '.join(who)}). A new key "
            "is a new contact and a new chat for them. Moving to a new SD card? Restore the key first: "
            "sudo seccam keys restore FILE (docs/operations.md).")
        confirm("Make a new camera key?", args)
    if fpr:
        info = gpg.key_info(fpr)
        uids = [u.lower() for u in info.uids] if info else []
        note = "" if not uids or cfg.account.address in uids else \
            f" (its user id is {', '.join(uids)}; Delta Chat goes by the key, which stays)"
        say(f"camera key: {fpr} (kept{note})")
        return fpr, False
    fpr = gpg.generate_camera_key(cfg.account.address)
    say(f"camera key: {fpr} (new; back it up: sudo seccam keys export-secret --output FILE)")
    return fpr, True


# -- new -----------------------------------------------------------------------------------------
def settings_from_relay(new, ca_file, timeout_s):
    """Where the relay's account lives: its dclogin_url's hosts, else its autoconfig, else the relay itself."""
    from .. import account, mailservers
    login = new.login_url
    if login is not None and (login.imap_host or login.smtp_host):
        return settings_from_login(login, ca_file, timeout_s, source=f"the dclogin_url of {new.relay.name}",
                                   origin=new.relay.origin)
    found = mailservers.discover(new.address, ca_file=ca_file, timeout_s=timeout_s, origin=new.relay.origin,
                                 lookup=lambda name: [])
    return account.Settings(address=new.address, password=new.password, imap=found.imap, smtp=found.smtp,
                            login=found.login, ca_file=ca_file, source=found.source)


def _new(args):
    from .. import relay as _relay

    current = load_current(getattr(args, "config", None))
    refuse_existing(current, args)
    ca_file = _ca_file(args)
    rel = _relay.parse_relay(args.relay or _relay.DEFAULT_RELAY)
    if not args.relay:
        print(f"relay: {rel.name} (the suggested one; any other works: seccam account new RELAY, "
              f"a list: {_relay.RELAY_LIST})")
    create_on_relay(current, rel, ca_file, args, how="seccam account new")
    return 0


def create_on_relay(current, rel, ca_file, args, how, make_key=True):
    from .. import account
    from .. import relay as _relay
    print(f"  asking {rel.url} for a new account ...", flush=True)
    new = _relay.request_account(rel, ca_file=ca_file, timeout_s=args.timeout)
    settings = settings_from_relay(new, ca_file, args.timeout)
    if new.login_url is not None and new.login_url.accepts_invalid_certificates:
        print(f"  note: {rel.name} asks clients to accept invalid certificates; seccam verifies them anyway"
              + (f" (against {ca_file})" if ca_file else ""))
    account.require_login(settings, args.timeout, after_creation=True)
    return finish(current, settings, args, how, make_key=make_key,
                  extra_lines=[f"made by the chatmail relay {rel.name}; IMAP and SMTP login ok",
                               _relay.operator_notice(rel.name)])


# -- set -----------------------------------------------------------------------------------------
def read_password(args, address):
    """The password: --password-file (read as the invoking user), else asked for without echo."""
    from .. import account
    from ..errors import DataError, UsageError
    source = getattr(args, "password_file", None)
    if source:
        try:
            if source == "-":
                text = sys.stdin.readline()
            else:
                with open(source, encoding="utf-8") as fh:
                    text = fh.readline()
        except OSError as exc:
            raise DataError(f"{source}: cannot read the password file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise DataError(f"{source}: the password file is not UTF-8 text") from None
        return account.check_password(text.rstrip("\r\n"), f"the password in {source}")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: give it with --password-file FILE (or - for "
                         "standard input)")
    return account.check_password(ask_secret(f"password of {address} (not shown): "), "the password")


def ask_secret(prompt):
    """Ask at the terminal without echo; the end of input is a clear refusal, not a traceback."""
    import getpass

    from ..errors import UsageError
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise UsageError("no answer (end of input); nothing was changed") from None


def settings_explicit_or_found(address, password, args, login=None, ca_file=None, found=None, source=None):
    """Settings from explicit --imap-host/--smtp-host, completed (or replaced) by discovery."""
    from .. import account, mailservers
    explicit = {kind: getattr(args, f"{kind}_host", None) for kind in ("imap", "smtp")}
    if not all(explicit.values()) and found is None:
        print(f"looking for the servers of {mailservers.domain_of(address)} ...", flush=True)
        found = mailservers.discover(address, ca_file=ca_file, timeout_s=min(args.timeout, 10.0))
        if found.confirm:
            print(f"found in DNS (not authenticated): IMAP {found.imap}, SMTP {found.smtp}")
            confirm(f"These servers are outside {mailservers.domain_of(address)}. Send the password there?", args)
    servers = {}
    for kind in ("imap", "smtp"):
        if explicit[kind]:
            servers[kind] = account.server(kind, explicit[kind], getattr(args, f"{kind}_port", None),
                                           getattr(args, f"{kind}_security", None))
        else:
            servers[kind] = getattr(found, kind)
    if all(explicit.values()):
        source = source or "given on the command line"
    else:
        source = source or found.source
        login = login or found.login
    return account.Settings(address=address, password=password, imap=servers["imap"], smtp=servers["smtp"],
                            login=getattr(args, "login", None) or login, ca_file=ca_file, source=source)


def _set(args):
    from .. import account

    current = load_current(getattr(args, "config", None))
    address = account.check_address(args.address)
    refuse_existing(current, args, new_address=address)
    ca_file = _ca_file(args)
    password = read_password(args, address)
    settings = settings_explicit_or_found(address, password, args, ca_file=ca_file)
    account.require_login(settings, args.timeout)
    finish(current, settings, args, "seccam account set", extra_lines=["IMAP and SMTP login ok"])
    return 0


# -- import --------------------------------------------------------------------------------------
def read_login_url(args):
    from ..errors import UsageError
    url = args.url
    if url in (None, "-"):
        if url is None and sys.stdin.isatty():
            url = ask_secret("dclogin: URL (not shown): ")
        elif url == "-" or not sys.stdin.isatty():
            url = sys.stdin.readline()
    if not url or not url.strip():
        raise UsageError("no dclogin: URL given")
    return url.strip()


def settings_from_login(login, ca_file, timeout_s, source="the dclogin: URL", origin=None):
    """Settings from a decoded dclogin URL; servers it leaves open are found as for ``set``."""
    from .. import account, mailservers
    from ..errors import PermanentError
    user = login.imap_user or login.address
    password = login.imap_password or login.password
    if login.smtp_user and login.smtp_user != user:
        raise PermanentError("the login URL has a separate SMTP user (su=); seccam uses one login for IMAP and "
                             "SMTP: use seccam account set with --login")
    if login.smtp_password and login.smtp_password != password:
        raise PermanentError("the login URL has a separate SMTP password (spw=); seccam uses one password for "
                             "IMAP and SMTP")
    account.check_password(password, "the login URL's password")
    found = None
    if not (login.imap_host and login.smtp_host):
        found = mailservers.discover(login.address, ca_file=ca_file, timeout_s=min(timeout_s, 10.0), origin=origin)
    servers = {}
    for kind in ("imap", "smtp"):
        host = getattr(login, f"{kind}_host")
        if host:
            servers[kind] = account.server(kind, host, getattr(login, f"{kind}_port"),
                                           getattr(login, f"{kind}_security"))
        else:
            servers[kind] = getattr(found, kind)
    return account.Settings(address=account.check_address(login.address), password=password,
                            imap=servers["imap"], smtp=servers["smtp"],
                            login=None if user == login.address else user, ca_file=ca_file,
                            source=source if found is None else f"{source} and {found.source}")


def _import(args):
    from .. import account, dclogin

    current = load_current(getattr(args, "config", None))
    login = dclogin.parse(read_login_url(args))
    refuse_existing(current, args, new_address=login.address)
    ca_file = _ca_file(args)
    settings = settings_from_login(login, ca_file, args.timeout)
    if login.accepts_invalid_certificates:
        print("note: the login URL asks to accept invalid certificates; seccam verifies them"
              + ("" if ca_file else " (a self-signed server: give its certificate with --ca-file)"))
    account.require_login(settings, args.timeout)
    finish(current, settings, args, "seccam account import", extra_lines=["IMAP and SMTP login ok"])
    return 0


# -- show and check ------------------------------------------------------------------------------
def describe(acc):
    """The account as a dict without any secret (``seccam account show --json``)."""
    import os
    import pwd
    import grp
    import stat
    info = {"address": acc.address, "display_name": acc.display_name, "login": acc.login,
            "imap": {"host": acc.imap_host, "port": acc.imap_port, "security": acc.imap_security},
            "smtp": {"host": acc.smtp_host, "port": acc.smtp_port, "security": acc.smtp_security},
            "ca_file": str(acc.ca_file) if acc.ca_file else None,
            "password": "in the configuration file" if acc.password is not None else "password_file",
            "password_file": str(acc.password_file) if acc.password_file else None}
    if acc.password_file:
        try:
            st = os.stat(acc.password_file)
            user = _name(pwd.getpwuid, st.st_uid)
            group = _name(grp.getgrgid, st.st_gid)
            info["password_file_mode"] = f"{stat.S_IMODE(st.st_mode):04o} {user}:{group}"
        except OSError as exc:
            info["password_file_mode"] = f"unreadable: {exc.strerror}"
    return info


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _loaded(args):
    from .. import config as _config
    from ..errors import ConfigError
    cfg = _config.load(getattr(args, "config", None))
    if cfg.account is None:
        raise ConfigError(f"{cfg.path}: no [account] yet (sudo seccam account new, or seccam setup)")
    return cfg


def _show(args):
    cfg = _loaded(args)
    info = describe(cfg.account)
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    print(f"address:       {info['address']}")
    print(f"display name:  {info['display_name']}")
    if info["login"] != info["address"]:
        print(f"login:         {info['login']}")
    imap = info["imap"]
    print(f"IMAP:          {imap['host']}:{imap['port']} ({imap['security']})" if imap["host"] else
          "IMAP:          not set (invites and keys by mail do not work)")
    print(f"SMTP:          {info['smtp']['host']}:{info['smtp']['port']} ({info['smtp']['security']})")
    print(f"certificates:  {info['ca_file'] or 'verified against the system CAs'}")
    if info["password_file"]:
        print(f"password:      in {info['password_file']} ({info['password_file_mode']})")
    else:
        print(f"password:      in {cfg.path} itself")
    return 0


def _check(args):
    from .. import account, runtime
    from ..errors import EX_TEMPFAIL, EX_UNAVAILABLE
    cfg = _loaded(args)
    # As the jobs run: a password file the service user cannot read fails here too.
    who = runtime.become_spool_owner(cfg)
    if who:
        print(f"checking as user {who}, as the jobs do")
    results = account.check(cfg.account)
    for r in results:
        print(f"{r.kind} {r.where}: {'ok' if r.ok else 'FAILED: ' + r.message}")
    failed = [r for r in results if not r.ok]
    if not failed:
        print(f"{cfg.account.address}: IMAP and SMTP work")
        return 0
    return EX_TEMPFAIL if all(r.temporary for r in failed) else EX_UNAVAILABLE
