"""``seccam invite``: connect a Delta Chat user to the camera by scanning a QR code.

Usage::

    seccam invite [--name NAME] [--label TEXT] [--uses N] [--expires 24h] [--png FILE] [--no-qr]
                  [--wait [--timeout SECONDS]]
    seccam invite list [--json]
    seccam invite show ID [--png FILE] [--no-qr]
    seccam invite revoke ID

A new invite prints the legacy Secure-Join link
(``https://i.delta.chat/#FPR&i=…&s=…&a=…&n=…``) and its QR code (Debian's
``qrencode``); in Delta Chat: "Scan QR code" (or open the link). jobs/inbox
completes the join; ``--wait`` runs it every second until someone joined or
the timeout passed. Invites are single-use and expire after 24 h unless
``--uses``/``--expires`` say otherwise. The protocol is seccam.securejoin,
the records seccam.invites; this module only talks to the person.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HELP = "invite a Delta Chat user: print a QR code / link to scan (list, show, revoke invites)"
USES_GPG = True

DEFAULT_WAIT_S = 300
POLL_INTERVAL_S = 1.0


def _common(parser):
    # Also accept --config/-v after the subcommand; SUPPRESS keeps a value given before it.
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _qr_arguments(parser):
    parser.add_argument("--png", metavar="FILE", help="also write the QR code as a PNG image")
    parser.add_argument("--no-qr", action="store_true", help="print only the link, no QR code")


def add_arguments(parser):
    parser.epilog = ("Without a subcommand: create a new invite, print its QR code and link. "
                     "Example: seccam invite --label Anna --wait")
    parser.add_argument("--name", metavar="NAME",
                        help="the name Delta Chat shows for the camera (default: account.display_name)")
    parser.add_argument("--label", metavar="TEXT", help="a note for `seccam invite list`, e.g. who it is for")
    parser.add_argument("--uses", type=int, default=1, metavar="N",
                        help="how many people may join with it (default 1)")
    parser.add_argument("--expires", default="24h", metavar="DURATION",
                        help="how long it stays valid: 90s, 30m, 24h, 7d (default 24h)")
    _qr_arguments(parser)
    parser.add_argument("--wait", action="store_true",
                        help="read the mailbox every second until someone joined (or --timeout)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help=f"with --wait: give up after this long (default {DEFAULT_WAIT_S})")
    sub = parser.add_subparsers(dest="invite_command", metavar="SUBCOMMAND")
    p = sub.add_parser("list", help="show every invite (without its secrets)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p = sub.add_parser("show", help="print an open invite's link and QR code again")
    p.add_argument("id", metavar="ID")
    _qr_arguments(p)
    _common(p)
    p = sub.add_parser("revoke", help="revoke an invite: nobody can join with it any more")
    p.add_argument("id", metavar="ID")
    _common(p)


def open_files(args, config, files):
    """--png FILE is created with the invoking user's rights (seccam.privilege), 0600: the
    picture holds the invite's secrets."""
    if getattr(args, "png", None):
        args.png_file = files.create(args.png, 0o600)


def run(args, config):
    command = getattr(args, "invite_command", None)
    handler = {None: _create, "list": _list, "show": _show, "revoke": _revoke}[command]
    return handler(args, config)


def _store(config):
    from ..invites import InviteStore
    return InviteStore(config.state_dir)


# -- QR code -------------------------------------------------------------------------
def render_qr(link, png=None, terminal=True, out=None):
    """Print the QR code of ``link`` (qrencode, UTF-8 blocks) and/or write it as a PNG
    (``png``: a path, or a file opened for writing in binary mode)."""
    from ..errors import DataError
    out = out or sys.stdout
    qrencode = shutil.which("qrencode")
    if qrencode is None:
        if png:
            raise DataError("qrencode is not installed (apt install qrencode); cannot write the PNG")
        print("(install qrencode to see the QR code here)", file=out)
        return
    if terminal:
        done = subprocess.run([qrencode, "-t", "ANSIUTF8", "-m", "2", "-o", "-", link],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            out.write(done.stdout)
        else:
            print(f"(qrencode failed: {done.stderr.strip()[:200]})", file=out)
    if png:
        done = subprocess.run([qrencode, "-t", "PNG", "-s", "8", "-m", "4", "-o", "-", link],
                              capture_output=True, timeout=30)
        if done.returncode != 0:
            name = png.name if hasattr(png, "write") else png
            raise DataError(f"qrencode could not make {name}: {done.stderr.decode(errors='replace').strip()[:200]}")
        if hasattr(png, "write"):
            png.write(done.stdout)  # opened (0600, the person's) by open_files before the switch
        else:
            _write_private(png, done.stdout)


def _write_private(path, data):
    """Write ``data`` readable by its owner only: the picture holds both Secure-Join secrets."""
    from ..durable import write_all
    from ..errors import DataError
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            write_all(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror}") from None


def _present(record, args):
    from ..invites import link
    url = link(record)
    if not args.no_qr:
        render_qr(url, png=None)
    if args.png:
        with args.png_file:
            render_qr(url, png=args.png_file, terminal=False)
    print(url)
    print(f"In Delta Chat: \"Scan QR code\" (or open the link on the phone). Invite {record['id']}: "
          f"{_uses_text(record)}, valid until {record['expires']}.")
    if args.png:
        print(f"QR code written to {args.png}")


def _uses_text(record):
    left = record["uses"] - record.get("used", 0)
    return "single use" if record["uses"] == 1 and left == 1 else f"{left} of {record['uses']} uses left"


# -- commands ------------------------------------------------------------------------
def _create(args, config):
    from ..errors import ConfigError, PermanentError, UsageError
    from ..gpg import Gpg, home_for
    from ..invites import parse_duration

    if config.account is None:
        raise ConfigError(f"{config.path}: [account] is missing; the invite carries the camera's address")
    if not config.account.imap_host:
        raise ConfigError(f"{config.path}: account.imap_host is not set; the camera reads the joiner's "
                          "messages over IMAP (docs/configuration.md)")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    ttl = parse_duration(args.expires)
    fpr = Gpg(home_for(config.state_dir)).camera_key()
    if fpr is None:
        raise PermanentError("the camera has no key yet: run seccam keys init first")
    name = args.name or config.account.display_name
    record = _store(config).create(config.account.address, fpr, name, uses=args.uses, ttl_s=ttl,
                                   label=args.label)
    _present(record, args)
    sys.stdout.flush()
    if args.wait:
        return _wait(config, record["id"], args.timeout)
    return 0


def _wait(config, invite_id, timeout_s, interval_s=POLL_INTERVAL_S):
    """Run the inbox every ``interval_s`` until a join on ``invite_id`` completed."""
    from .. import inbox
    from ..errors import EX_TEMPFAIL, ConfigError, PermanentError, TemporaryError
    from ..spool import Spool

    store = _store(config)
    spool = Spool(config.spool_dir)
    before = len((store.get(invite_id) or {}).get("joins", []))
    start = time.monotonic()
    deadline = start + timeout_s
    print(f"waiting up to {timeout_s:g} s for the join ...", flush=True)
    last_error = None
    while True:
        try:
            inbox.poll(config, spool, lock_timeout_s=0)
            last_error = None
        except (ConfigError, PermanentError):
            raise
        except TemporaryError as exc:
            if str(exc) != last_error:
                print(f"warning: {exc} (retrying)", file=sys.stderr, flush=True)
            last_error = str(exc)
        record = store.get(invite_id) or {}
        joins = record.get("joins", [])[before:]
        if joins:
            for join in joins:
                print(f"joined: {join['address']} (key {join['fingerprint']}) after "
                      f"{time.monotonic() - start:.1f} s; a welcome message with an image from every camera "
                      "is on its way")
            return 0
        if record.get("revoked"):
            print(f"invite {invite_id} was revoked", file=sys.stderr)
            return EX_TEMPFAIL
        if time.monotonic() >= deadline:
            print(f"seccam invite: nobody joined within {timeout_s:g} s; the invite stays valid until "
                  f"{record.get('expires')} and jobs/inbox (cron) completes a join then", file=sys.stderr)
            return EX_TEMPFAIL
        time.sleep(max(0.0, min(interval_s, deadline - time.monotonic())))


def _list(args, config):
    from ..invites import public_view
    views = [public_view(r) for r in _store(config).all()]
    if args.json:
        print(json.dumps(views, indent=1, sort_keys=True))
        return 0
    if not views:
        print("no invites (create one with: seccam invite)")
        return 0
    print(f"{'ID':8}  {'STATUS':7}  {'USES':>5}  {'EXPIRES':20}  {'LABEL':20}  JOINED")
    for v in views:
        joined = ", ".join(j["address"] for j in v.get("joins", [])) or "-"
        print(f"{v['id']:8}  {v['status']:7}  {v.get('used', 0):>2}/{v['uses']:<2}  {v['expires']:20}  "
              f"{(v.get('label') or '-')[:20]:20}  {joined}")
    return 0


def _show(args, config):
    from ..errors import DataError
    from ..invites import OPEN, status
    record = _store(config).get(args.id)
    if record is None:
        raise DataError(f"no invite {args.id} (see seccam invite list)")
    state = status(record)
    if state != OPEN:
        raise DataError(f"invite {args.id} is {state}; create a new one with: seccam invite")
    _present(record, args)
    return 0


def _revoke(args, config):
    record = _store(config).revoke(args.id)
    print(f"invite {record['id']} revoked (revoked {record['revoked']}); "
          f"people who already joined stay recipients")
    return 0
