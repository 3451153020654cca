"""``seccam keys``: the camera key and the recipients' keys, managed on the device.

Subcommands: ``init`` (generate the camera key once), ``export-secret``
(back it up), ``restore FILE`` (put a backup back), ``import FILE`` (a
recipient's key from an .eml with an Autocrypt header, a vCard or a key file),
``accept ADDRESS FINGERPRINT`` (adopt a pending key change) and ``list``.
Key logic lives in seccam.gpg and seccam.keys; this module only reads files,
talks to the person and picks exit codes.

Under ``sudo``, FILE is read (and ``--output FILE`` created, mode 0600,
owned by the person who ran sudo) before the command switches to the
service user: see seccam.privilege.
"""

import argparse
import os
import sys
import time

HELP = "manage the camera key and the recipients' keys (init, export-secret, restore, import, accept, list)"
USES_GPG = True


def _common(parser):
    # Also accept --config/-v after the subcommand; SUPPRESS keeps a value given before it.
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_arguments(parser):
    sub = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    sub.required = True
    p = sub.add_parser("init", help="generate the camera key (once; a second run prints it)")
    _common(p)
    p = sub.add_parser("export-secret", help="print (or write) the camera's secret key for a backup")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (mode 0600; must not exist)")
    _common(p)
    p = sub.add_parser("restore", help="restore the camera key from an export-secret backup")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--force", action="store_true",
                   help="replace a DIFFERENT existing camera key (it is backed up first; recipients get a new chat)")
    _common(p)
    p = sub.add_parser("import", help="import a recipient's key from an .eml (Autocrypt), a vCard or a key file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--address", metavar="ADDRESS", help="the recipient the key belongs to (default: from the file)")
    p.add_argument("--replace", action="store_true", help="replace a different pinned key for that address")
    _common(p)
    p = sub.add_parser("accept", help="adopt a pending key change for a recipient")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("fingerprint", metavar="FINGERPRINT")
    _common(p)
    p = sub.add_parser("list", help="show the camera key and every recipient's key and pending changes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)


def open_files(args, config, files):
    """Read FILE / create --output FILE with the invoking user's rights (before the switch)."""
    if args.keys_command in ("import", "restore"):
        args.data = files.read(args.file, what="key file")
    elif args.keys_command == "export-secret" and args.output:
        args.output_file = files.create(args.output, 0o600)


def run(args, config):
    handler = {"init": _init, "export-secret": _export_secret, "restore": _restore, "import": _import,
               "accept": _accept, "list": _list}[args.keys_command]
    return handler(args, config)


def _gpg(config):
    from ..gpg import Gpg, home_for
    return Gpg(home_for(config.state_dir))


# -- the camera key -------------------------------------------------------------
def _init(args, config):
    from ..errors import ConfigError
    if config.account is None:
        raise ConfigError(f"{config.path}: [account] is missing; the camera key's user id is account.address")
    gpg = _gpg(config)
    fpr = gpg.camera_key()
    if fpr:
        info = gpg.key_info(fpr)
        print(f"camera key exists: {fpr}")
        if info and config.account.address not in [u.lower() for u in info.uids]:
            print(f"warning: its user id is {', '.join(info.uids)}, not {config.account.address}", file=sys.stderr)
        return 0
    fpr = gpg.generate_camera_key(config.account.address)
    print(f"camera key generated: {fpr} ({config.account.address})")
    print("back it up now: seccam keys export-secret --output FILE (a new key means a new chat)")
    return 0


def _need_camera_key(gpg):
    from ..errors import PermanentError
    fpr = gpg.camera_key()
    if not fpr:
        raise PermanentError("there is no camera key yet: run seccam keys init (or seccam keys restore FILE)")
    return fpr


def _write_to(fh, data):
    from .. import durable
    with fh:
        durable.write_all(fh.fileno(), data)
        os.fsync(fh.fileno())


def _write_private(path, data):
    """A new file ``path``, mode 0600, for the service user (the previous key's backup)."""
    from ..privilege import CommandFiles
    _write_to(CommandFiles(owner=(os.geteuid(), os.getegid())).create(path, 0o600), data)


def _export_secret(args, config):
    gpg = _gpg(config)
    data = gpg.export_secret(_need_camera_key(gpg))
    if args.output:
        _write_to(args.output_file, data)
        print(f"camera secret key written to {args.output} (keep it offline; anyone with it can read alarms)")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _restore(args, config):
    from ..errors import DataError, PermanentError
    from ..gpg import GpgError
    gpg = _gpg(config)
    data = args.data
    try:
        keys = gpg.scan(data)
    except GpgError as exc:
        raise DataError(f"{args.file}: no OpenPGP key found ({exc})") from None
    secret = [k for k in keys if k.secret]
    if len(secret) != 1:
        raise DataError(f"{args.file}: holds {len(secret)} secret keys; expected the one camera key "
                        "(made by seccam keys export-secret)")
    new = secret[0].fingerprint
    old = gpg.camera_key()
    if old == new:
        print(f"camera key {new} is already in place")
        return 0
    if old and not args.force:
        raise PermanentError(f"a different camera key {old} exists; restoring {new} would start a new chat for "
                             "every recipient. Re-run with --force to replace it (it is backed up first)")
    if old:
        backup = config.state_dir / f"camera-key-{old}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.asc"
        _write_private(backup, gpg.export_secret(old))
        gpg.delete_key(old, secret=True)
        print(f"previous camera key {old} backed up to {backup} and removed")
    imported = gpg.import_keys(data)
    if gpg.camera_key() != new:  # pragma: no cover - the file holds exactly this one secret key and the old one
        # was deleted above; guards a gpg that imported something else
        raise GpgError("restore", f"after importing {', '.join(imported)} the camera key is not {new}")
    print(f"camera key restored: {new}")
    return 0


# -- recipients' keys -------------------------------------------------------------
def _uid_addresses(uids):
    import email.utils
    out = []
    for uid in uids:
        addr = email.utils.parseaddr(uid)[1].strip().lower()
        if "@" in addr and addr not in out:
            out.append(addr)
    return out


def _candidates(args, data):
    """[(address or None, keydata, source)] found in the file."""
    import email
    import email.policy
    import email.utils

    from .. import vcard
    from ..autocrypt import AutocryptError, parse_header
    from ..errors import DataError

    name = os.path.basename(args.file)
    stripped = data.lstrip()
    if vcard.looks_like_vcard(data):
        cards = [c for c in vcard.parse(data, name) if c.key]
        if not cards:
            raise DataError(f"{name}: the vCard has no KEY (share the contact from Delta Chat to get one)")
        return [(c.email, c.key, f"vcard:{name}") for c in cards]
    if stripped.startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"):
        raise DataError(f"{name}: a SECRET key; a recipient's key must be public "
                        "(the camera's own key is restored with seccam keys restore)")
    if stripped.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----") or (data[:1] and data[0] & 0x80):
        return [(None, data, f"file:{name}")]
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    headers = msg.get_all("Autocrypt") or []
    if not msg.keys() or (not headers and not msg.get("From")):
        raise DataError(f"{name}: neither an e-mail, a vCard nor an OpenPGP key")
    if len(headers) != 1:
        raise DataError(f"{name}: expected one Autocrypt header, found {len(headers)} "
                        "(an encrypted message may carry it only inside; export the key instead)")
    try:
        header = parse_header(headers[0])
    except AutocryptError as exc:
        raise DataError(f"{name}: {exc}") from None
    sender = email.utils.parseaddr(msg.get("From", ""))[1].strip().lower()
    if header.addr != sender:
        raise DataError(f"{name}: Autocrypt addr {header.addr} is not the From address {sender or '(none)'}")
    return [(header.addr, header.keydata, f"eml:{name}")]


def _import(args, config):
    from .. import keys
    from ..errors import DataError

    data = args.data
    store = keys.open_store(config)
    for address, keydata, source in _candidates(args, data):
        info = store.check_key(keydata)
        if args.address:
            address = keys.normalize(args.address)
        elif address is None:
            uids = _uid_addresses(info.uids)
            mine = [a for a in uids if store.allowed(a)]
            if len(mine) > 1:
                raise DataError(f"the key names several recipients ({', '.join(mine)}); choose with --address")
            if not mine:
                raise keys.NotRecipientError(
                    f"the key's addresses ({', '.join(uids) or 'none'}) are not recipients of this camera; "
                    "add one to [delivery] recipients or pass --address")
            address = mine[0]
        outcome = store.import_key(address, keydata, source, replace=args.replace)
        if outcome == keys.Outcome.PENDING:
            pinned = store.record(address)["fingerprint"]
            print(f"{address}: NOT adopted: key {pinned} is pinned; the new key {info.fingerprint} is pending.\n"
                  f"  adopt it with: seccam keys accept {address} {info.fingerprint}   "
                  "(or import again with --replace)")
        else:
            print(f"{address}: {outcome} {info.fingerprint} (from {source})")
    return 0


def _accept(args, config):
    from .. import keys
    outcome = keys.open_store(config).accept(args.address, args.fingerprint)
    print(f"{keys.normalize(args.address)}: {outcome} {args.fingerprint.replace(' ', '').upper()}")
    return 0


def _list(args, config):
    import json

    from .. import keys

    gpg = _gpg(config)
    store = keys.open_store(config, gpg=gpg)
    camera = None
    fpr = gpg.camera_key()
    if fpr:
        info = gpg.key_info(fpr)
        camera = {"fingerprint": fpr, "uids": list(info.uids) if info else [],
                  "algo": info.algo if info else None, "created": info.created if info else None}
    records = {r["address"]: r for r in store.records()}
    addresses = list(keys.recipients(config)) + sorted(a for a in records if a not in keys.recipients(config))
    usable = store.encryption_fingerprints(addresses)
    rows = []
    for address in addresses:
        rec = records.get(address) or {}
        rows.append({"address": address, "recipient": address in keys.recipients(config),
                     "fingerprint": rec.get("fingerprint"), "source": rec.get("source"),
                     "pinned": rec.get("pinned"), "usable": address in usable,
                     "pending": [{k: v for k, v in p.items() if k != "keydata"} for p in rec.get("pending", [])],
                     "history": rec.get("history", [])})
    if args.json:
        json.dump({"camera": camera, "recipients": rows}, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    if camera:
        print(f"camera key: {camera['fingerprint']}  {', '.join(camera['uids'])}  {camera['algo']}  "
              f"created {camera['created']}")
    else:
        print("camera key: none (run seccam keys init)")
    print("recipients:" if rows else "recipients: none configured ([delivery] recipients)")
    for row in rows:
        note = "" if row["recipient"] else "  (no longer a recipient)"
        if row["fingerprint"]:
            state = "usable" if row["usable"] else "NOT USABLE for encryption"
            print(f"  {row['address']}  {row['fingerprint']}  {state}  source={row['source']}  "
                  f"pinned={row['pinned']}{note}")
        else:
            print(f"  {row['address']}  no key: messages to it are held until one is imported{note}")
        for p in row["pending"]:
            trust = "verified" if p.get("verified") else "unverified: anyone could have sent it"
            print(f"    PENDING key: {p['fingerprint']} from {p['source']} ({trust}), first seen {p['first_seen']}, "
                  f"last seen {p['last_seen']}, {p['count']}x -> compare fingerprints, then: seccam keys accept "
                  f"{row['address']} {p['fingerprint']}")
    return 0
