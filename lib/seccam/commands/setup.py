"""``seccam setup``: the guided first run, from an installed camera to the first picture in Delta Chat.

Four steps, in the order that avoids the pitfalls (no invite before the key
exists, no key before the address is known, no alarm before someone can
read it). Each step is skipped when it is done, so ``sudo seccam setup`` can
be run again at any time: after an interruption, a timeout, or just to see
where things stand.

1. **The mail account** (seccam account new | set | import): by default a new
   account on a chatmail relay (``--relay``, else the suggested one);
   ``--address`` for an existing account, ``--dclogin`` for a login URL.
   Done when the configuration has an ``[account]``.
2. **The camera key**, made once (seccam keys init). Done when it exists.
3. **Your Delta Chat**: one invite, as a QR code on the terminal and as a
   link; it waits (``--wait`` seconds) for your phone to scan it and join
   (seccam invite --wait). Done when a recipient has a usable key.
4. **A test alarm**: a motion event, captured from every camera and sent at
   once, exactly as the jobs do. Done when setup sent one before
   (``STATE_DIR/setup.json``); ``seccam trigger`` sends more.

Interactive at a terminal; ``--yes`` answers every question with its
default, for scripts. Step 1 runs with the invoking user's privileges (it
writes /etc/seccam); the rest as the spool's owner, like every command.
"""

import sys
import time
import types

HELP = "guided first run: mail account, camera key, connect your Delta Chat (QR code), test alarm"
NEEDS_CONFIG = False

STATE_FILE = "setup.json"
DEFAULT_JOIN_WAIT_S = 900
ALARM_WAIT_S = 180
INVITE_LABEL = "seccam setup"
STEPS = 4


def add_arguments(parser):
    from . import account as account_cmd
    parser.epilog = ("Example, non-interactive: sudo seccam setup --yes --relay nine.testrun.org. "
                     "Every step is skipped when it is done; run it again to continue.")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--relay", metavar="RELAY",
                        help="make a new account on this chatmail relay (default: ask, or the suggested one)")
    choice.add_argument("--address", metavar="ADDRESS", help="use this existing account instead")
    choice.add_argument("--dclogin", metavar="URL",
                        help="use the account of a Delta Chat login URL ('-': read it from standard input)")
    account_cmd.add_server_arguments(parser)
    account_cmd.add_writing_arguments(parser, setup=True)
    parser.add_argument("--wait", type=float, default=DEFAULT_JOIN_WAIT_S, metavar="SECONDS",
                        help=f"how long to wait for your phone to join (default {DEFAULT_JOIN_WAIT_S})")
    parser.add_argument("--no-qr", action="store_true", help="print the invite as a link only")
    parser.add_argument("--png", metavar="FILE", help="also write the invite's QR code as a PNG")
    parser.add_argument("--no-test-alarm", action="store_true", help="skip step 4")


def _step(n, title):
    print(f"\n[{n}/{STEPS}] {title}", flush=True)


def run(args, config):
    from .. import runtime
    from ..errors import UsageError

    if args.wait <= 0:
        raise UsageError("--wait must be positive")
    interactive = not args.yes and sys.stdin.isatty()
    print("seccam setup: each step is skipped when it is done; run it again to continue.")

    _step(1, "The camera's mail account")
    cfg = _account_step(args, interactive)
    runtime.become_spool_owner(cfg)

    _step(2, "The camera key")
    from . import account as account_cmd
    account_cmd.ensure_camera_key(cfg, args, say=lambda line: print("  " + line))

    _step(3, "Your Delta Chat")
    code = _owner_step(cfg, args)
    if code:
        return code

    _step(4, "A test alarm")
    if args.no_test_alarm:
        print("  skipped (--no-test-alarm); send one any time: sudo seccam trigger")
    else:
        code = _alarm_step(cfg)
        if code:
            return code
    print(f"\ndone: alarms and an hourly heartbeat go to {', '.join(_recipients(cfg))}. Back up the camera key "
          "(a new key would be a new chat): sudo seccam keys export-secret --output FILE, and keep it off the Pi.")
    return 0


# -- 1 -----------------------------------------------------------------------------------------
def _account_step(args, interactive):
    from .. import relay as _relay
    from . import account as account_cmd

    current = account_cmd.load_current(getattr(args, "config", None))
    if current.address is not None:
        print(f"  done: {current.address} (sudo seccam account show; another one: seccam account new --replace)")
        return current.config
    if current.broken is not None:
        print(f"  the [account] in {current.path} does not load: {current.broken}")
        print("  replace it: sudo seccam account new --replace (or account set ADDRESS --replace)")
        raise current.broken
    ca_file = account_cmd._ca_file(args)
    kind = "relay"
    if args.address:
        kind = "address"
    elif args.dclogin:
        kind = "dclogin"
    elif interactive and not args.relay:
        kind = _ask_kind()
    if interactive and not args.name:
        args.name = _ask("  The camera's name (Delta Chat shows it as the chat's name)", "seccam") or None
        if args.name == "seccam":
            args.name = None
    if kind == "address":
        address = args.address or _ask("  The account's address", None)
        from .. import account
        address = account.check_address(address)
        password = account_cmd.read_password(args, address)
        settings = account_cmd.settings_explicit_or_found(address, password, args, ca_file=ca_file)
        account.require_login(settings, args.timeout)
        return account_cmd.finish(current, settings, args, "seccam setup", extra_lines=["IMAP and SMTP login ok"],
                                  make_key=False)
    if kind == "dclogin":
        from .. import account, dclogin
        url = args.dclogin
        source = types.SimpleNamespace(url=None if url in (None, "-") and interactive else url)
        login = dclogin.parse(account_cmd.read_login_url(source))
        settings = account_cmd.settings_from_login(login, ca_file, args.timeout)
        account.require_login(settings, args.timeout)
        return account_cmd.finish(current, settings, args, "seccam setup", extra_lines=["IMAP and SMTP login ok"],
                                  make_key=False)
    name = args.relay
    if not name:
        if interactive:
            name = _ask(f"  Which chatmail relay (a list: {_relay.RELAY_LIST})", _relay.DEFAULT_RELAY)
        else:
            name = _relay.DEFAULT_RELAY
            print(f"  relay: {name} (the suggested one; choose another with --relay, a list: {_relay.RELAY_LIST})")
    return account_cmd.create_on_relay(current, _relay.parse_relay(name), ca_file, args, how="seccam setup",
                                       make_key=False)


def _ask(question, default):
    from ..errors import UsageError
    suffix = f" [{default}]" if default else ""
    try:
        answer = input(f"{question}{suffix}: ").strip()
    except EOFError:
        raise UsageError("no answer (end of input); nothing more was changed") from None
    return answer or default


def _ask_kind():
    print("  The camera sends from a mail account of its own (never use your personal one).")
    print("    1  a new account on a chatmail relay: made now, no sign-up (recommended)")
    print("    2  an existing account: its address and an app password")
    print("    3  a Delta Chat login link (dclogin:...)")
    while True:
        answer = _ask("  Choice", "1")
        if answer in ("1", "2", "3"):
            return {"1": "relay", "2": "address", "3": "dclogin"}[answer]
        print("  please answer 1, 2 or 3")


# -- 3 -----------------------------------------------------------------------------------------
def _recipients(cfg):
    from .. import keys
    return keys.recipients(cfg)


def _usable_recipients(cfg):
    from .. import keys
    who = keys.recipients(cfg)
    if not who:
        return []
    usable = keys.open_store(cfg).encryption_fingerprints(who)
    return [a for a in who if a in usable]


def _owner_step(cfg, args):
    from ..invites import OPEN, InviteStore, status
    from ..gpg import Gpg, home_for
    from . import invite as invite_cmd

    from ..errors import ConfigError

    ready = _usable_recipients(cfg)
    if ready:
        print(f"  done: {', '.join(ready)} (more people: sudo seccam invite)")
        return 0
    if not cfg.account.imap_host:
        raise ConfigError(f"{cfg.path}: account.imap_host is not set, and the camera reads your Delta Chat's "
                          "answers to the invite over IMAP: sudo seccam account set ADDRESS --replace, or "
                          "import your key by hand (docs/setup.md, The owner's key)")
    store = InviteStore(cfg.state_dir)
    fpr = Gpg(home_for(cfg.state_dir)).camera_key()
    record = next((r for r in store.all() if r.get("label") == INVITE_LABEL and status(r) == OPEN
                   and r.get("fingerprint") == fpr and r.get("address") == cfg.account.address), None)
    if record is None:
        record = store.create(cfg.account.address, fpr, cfg.account.display_name, uses=1, ttl_s=24 * 3600,
                              label=INVITE_LABEL)
    print("  On your phone, in Delta Chat: \"Scan QR code\" (Android: the QR icon at the top of the chat list; "
          "iOS: New chat, then the QR icon) and scan this:")
    invite_cmd._present(record, types.SimpleNamespace(no_qr=args.no_qr, png=args.png))
    sys.stdout.flush()
    return invite_cmd._wait(cfg, record["id"], args.wait)


# -- 4 -----------------------------------------------------------------------------------------
def _state_path(cfg):
    return cfg.state_dir / STATE_FILE


def _state(cfg):
    from .. import durable
    return durable.read_json(_state_path(cfg), "setup record") or {}


def _alarm_step(cfg):
    from .. import capture, durable, events, send
    from ..errors import EX_TEMPFAIL, EX_UNAVAILABLE
    from ..spool import Spool

    done = _state(cfg).get("test_alarm")
    if done:
        print(f"  done: sent {done} (another one: sudo seccam trigger)")
        return 0
    spool = Spool(cfg.spool_dir).ensure()
    started = time.monotonic()
    event = events.record(spool, "trigger")
    print(f"  motion event recorded ({event.name}); capturing every camera and sending ...", flush=True)
    published = capture.process(cfg, spool)
    if published:
        capture.hand_to_encrypt(cfg, spool)
    _send(cfg, send)
    outcome = _await_alarm(spool, event.name, lambda: _send(cfg, send))
    if outcome == "sent":
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        durable.replace_json(_state_path(cfg), {"version": 1, **_state(cfg), "test_alarm": when}, 0o640)
        print(f"  sent in {time.monotonic() - started:.1f} s: a preview, then the full picture from every camera, "
              "in the camera's chat with the padlock.")
        return 0
    print(f"  not sent yet: {outcome}. sudo seccam status says more; the jobs keep trying.", file=sys.stderr)
    return EX_TEMPFAIL if outcome.startswith(("waiting", "deferred")) else EX_UNAVAILABLE


def _send(cfg, send):
    """Send now; a failure is not this step's verdict: the spool says what became of the alarm."""
    from ..errors import SeccamError
    try:
        send.work(cfg)
    except SeccamError as exc:
        print(f"  ({exc})", file=sys.stderr)


def _await_alarm(spool, event_name, send_again, timeout_s=ALARM_WAIT_S, sleep=time.sleep):
    """Until the event is captured and nothing of it is left to send: "sent", or why not."""
    set_prefix = event_name.removesuffix(".json") + "-alarm"
    deadline = time.monotonic() + timeout_s
    while True:
        captured = (spool.dir("events.done") / event_name).exists()
        mine = lambda state: [p for p in spool.items(state) if p.name.startswith(set_prefix)]  # noqa: E731
        if captured:
            held = mine("sets.held")
            if held:
                return f"held: {spool.read_reason(held[0]) or 'waiting for a key'}"
            failed = mine("outbox.failed")
            if failed:
                return f"refused by the server: {spool.read_reason(failed[0]) or failed[0].name}"
            deferred = mine("outbox.deferred")
            if deferred:
                return f"deferred: {spool.read_reason(deferred[0]) or 'the server did not take it yet'}"
            # Everything captured so far has left (an event that came just before may have
            # taken ours into its own set, under its own name).
            if not any(spool.items(s) for s in ("sets.ready", "sets.active", "outbox.new", "outbox.active")):
                return "sent"
        if time.monotonic() >= deadline:
            return f"waiting: not {'sent' if captured else 'captured'} within {timeout_s} s"
        sleep(0.5)
        send_again()

