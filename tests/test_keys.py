"""seccam.keys (pinning, pending changes, recipients) and the `seccam keys` command, with real gpg."""

import base64
import email.message
import email.utils
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from helpers.gpghome import OwnerKey, cleanup, gpg, new_short_dir, short_dir  # noqa: E402,F401
from seccam import autocrypt, config as seccam_config, errors, keys, vcard  # noqa: E402
from seccam.gpg import GpgError  # noqa: E402
from seccam.keys import KeyStore, Outcome  # noqa: E402

OWNER = "owner@example.org"
FRIEND = "friend@example.org"
CAM = "cam@example.org"
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def owner():
    key = OwnerKey(OWNER)
    yield key
    key.close()


@pytest.fixture(scope="module")
def mallory():
    """A second key claiming the owner's address (a forger, or the owner's new device)."""
    key = OwnerKey(OWNER)
    yield key
    key.close()


@pytest.fixture
def store(short_dir):
    return KeyStore(short_dir, allowed=lambda a: a in (OWNER, FRIEND))


def make_config(directory, recipients=(OWNER,), account=True):
    text = f'state_dir = "{directory / "state"}"\nspool_dir = "{directory / "spool"}"\n'
    if account:
        text += f'[account]\naddress = "{CAM}"\npassword = "pw"\nsmtp_host = "127.0.0.1"\n'
    text += "[delivery]\nrecipients = [" + ", ".join(f'"{r}"' for r in recipients) + "]\n"
    path = directory / "seccam.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- the store ----------------------------------------------------------------------
def test_first_key_is_pinned_and_usable(store, owner):
    assert store.import_key(OWNER, owner.export(), "file:o.gpg", now=T0) == Outcome.PINNED
    rec = store.record(OWNER)
    assert rec["fingerprint"] == owner.fpr and rec["source"] == "file:o.gpg"
    assert rec["pinned"] == "2027-01-15T08:00:00Z" and rec["pending"] == []
    assert store.gpg.has_key(owner.fpr)
    assert store.encryption_fingerprints([OWNER, FRIEND]) == {OWNER: owner.fpr}
    assert store.missing([OWNER, FRIEND]) == [FRIEND]


def test_first_key_seen_in_mail_is_only_pending_never_pinned(store, owner):
    """Issue 10, hole 2: the first key for a recipient without one is not pinned by mail."""
    assert store.offer(OWNER, owner.export(), "autocrypt", when=T0, now=T0) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] is None and rec["pinned"] is None
    assert [(p["fingerprint"], p["verified"]) for p in rec["pending"]] == [(owner.fpr, False)]
    assert not store.gpg.has_key(owner.fpr)
    assert store.encryption_fingerprints([OWNER]) == {} and store.missing([OWNER]) == [OWNER]
    # Not even a "verified" offer (inside a message signed by the pinned key) pins or replaces.
    assert store.offer(OWNER, owner.export(), "autocrypt-signed", when=T0 + 1, verified=True) == Outcome.PENDING
    assert store.record(OWNER)["fingerprint"] is None
    # A person decides.
    assert store.accept(OWNER, owner.fpr, now=T0 + 2) == Outcome.ADOPTED
    assert store.encryption_fingerprints([OWNER]) == {OWNER: owner.fpr}
    assert store.record(OWNER)["history"] == []


def test_a_verified_pending_key_survives_a_flood_of_forged_offers(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file", now=T0)
    store.offer(OWNER, mallory.export(), "autocrypt-signed", when=T0 + 1, verified=True)
    forgers = [OwnerKey(OWNER) for _ in range(keys.MAX_PENDING + 2)]
    try:
        for i, other in enumerate(forgers):
            store.offer(OWNER, other.export(), "autocrypt", when=T0 + 10 + i)
        pending = {p["fingerprint"]: p for p in store.record(OWNER)["pending"]}
        assert pending[mallory.fpr]["verified"] is True
        assert sum(not p["verified"] for p in pending.values()) == keys.MAX_PENDING
        # The same key offered unverified later does not lose the mark.
        store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 100)
        entry = next(p for p in store.record(OWNER)["pending"] if p["fingerprint"] == mallory.fpr)
        assert entry["verified"] is True and entry["source"] == "autocrypt-signed" and entry["count"] == 2
        assert store.record(OWNER)["fingerprint"] == owner.fpr
    finally:
        for other in forgers:
            other.close()


def test_record_file_is_written_atomically(store, owner):
    store.offer(OWNER, owner.export(), "autocrypt")
    names = os.listdir(store.dir)
    assert sorted(n for n in names if not n.startswith(".")) == ["owner@example.org.json"]
    assert not [n for n in names if n.endswith(".tmp")]
    assert json.loads((store.dir / "owner@example.org.json").read_text())["address"] == OWNER


def test_same_key_again_is_unchanged(store, owner):
    store.import_key(OWNER, owner.export(), "file")
    assert store.offer(OWNER, owner.armored(), "vcard", when=T0 + 1) == Outcome.UNCHANGED
    assert store.record(OWNER)["source"] == "file"


def test_forged_key_is_pending_and_pin_unchanged(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file", now=T0)
    assert store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 60, now=T0 + 70) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] == owner.fpr
    assert [(p["fingerprint"], p["source"], p["count"]) for p in rec["pending"]] == [(mallory.fpr, "autocrypt", 1)]
    assert store.encryption_fingerprints([OWNER]) == {OWNER: owner.fpr}
    assert not store.gpg.has_key(mallory.fpr)  # pending keys stay out of the keyring
    store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 120)
    (change,) = store.pending_changes()
    assert change["address"] == OWNER and change["pinned"] == owner.fpr and change["fingerprint"] == mallory.fpr
    assert change["count"] == 2 and change["first_seen"] < change["last_seen"]


def test_accept_adopts_pending_key(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file", now=T0)
    store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 1)
    assert store.accept(OWNER.upper(), mallory.fpr.lower(), now=T0 + 5) == Outcome.ADOPTED
    rec = store.record(OWNER)
    assert rec["fingerprint"] == mallory.fpr and rec["pending"] == []
    assert rec["history"][0]["fingerprint"] == owner.fpr and rec["history"][0]["why"] == "accepted on the device"
    assert store.encryption_fingerprints([OWNER]) == {OWNER: mallory.fpr}
    assert store.pending_changes() == []
    assert store.accept(OWNER, mallory.fpr) == Outcome.UNCHANGED


def test_accept_unknown_fingerprint_is_refused(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file")
    with pytest.raises(errors.DataError, match="is not a pending key of owner@example.org"):
        store.accept(OWNER, mallory.fpr)
    with pytest.raises(errors.DataError, match="no key is recorded for friend@example.org"):
        store.accept(FRIEND, mallory.fpr)
    with pytest.raises(errors.DataError, match="fingerprint"):
        store.accept(OWNER, "nonsense")
    with pytest.raises(keys.NotRecipientError):
        store.accept("x@example.org", mallory.fpr)


def test_a_new_key_in_mail_signed_by_the_pinned_key_is_only_a_verified_pending_change(store, owner, mallory):
    """Issue 10: authority to re-key is a person's; the owner's own signed word only asks."""
    store.import_key(OWNER, owner.export(), "file", now=T0)
    assert store.offer(OWNER, mallory.export(), "autocrypt-signed", when=T0 + 1, verified=True) == Outcome.PENDING
    rec = store.record(OWNER)
    assert rec["fingerprint"] == owner.fpr and rec["history"] == []
    assert [(p["fingerprint"], p["verified"]) for p in rec["pending"]] == [(mallory.fpr, True)]
    assert store.pending_changes()[0]["verified"] is True
    assert not store.gpg.has_key(mallory.fpr)


def test_older_offer_is_stale(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file")
    store.offer(OWNER, owner.export(), "autocrypt", when=T0)
    assert store.offer(OWNER, mallory.export(), "autocrypt", when=T0 - 1) == Outcome.STALE
    rec = store.record(OWNER)
    assert rec["pending"] == [] and rec["last_seen"] == "2027-01-15T08:00:00Z"


def test_pending_list_is_bounded(store, owner):
    store.import_key(OWNER, owner.export(), "file")
    store.offer(OWNER, owner.export(), "autocrypt", when=T0)
    others = [OwnerKey(OWNER) for _ in range(keys.MAX_PENDING + 1)]
    try:
        for i, other in enumerate(others):
            store.offer(OWNER, other.export(), "autocrypt", when=T0 + i + 1)
        pending = [p["fingerprint"] for p in store.record(OWNER)["pending"]]
        assert pending == [o.fpr for o in others[1:]]
    finally:
        for other in others:
            other.close()


def test_stranger_address_is_rejected_by_name(store, owner):
    with pytest.raises(keys.NotRecipientError, match="stranger@example.org is not a recipient"):
        store.offer("Stranger@Example.org", owner.export(), "autocrypt")
    with pytest.raises(errors.DataError, match="not an e-mail address"):
        store.offer("not an address", owner.export(), "autocrypt")


def test_secret_key_data_is_refused(store, owner):
    with pytest.raises(errors.DataError, match="SECRET key"):
        store.offer(OWNER, owner.secret_armored(), "autocrypt")
    assert store.record(OWNER) is None


def test_two_keys_in_data_are_refused(store, owner, mallory):
    with pytest.raises(errors.DataError, match="holds 2 keys"):
        store.import_key(OWNER, owner.export() + mallory.export(), "file")


def test_garbage_key_data_is_refused(store):
    with pytest.raises(errors.DataError, match="no usable OpenPGP public key"):
        store.offer(OWNER, b"garbage", "autocrypt")


def test_signing_only_key_is_refused(store):
    key = OwnerKey(OWNER, encrypt=False)
    try:
        with pytest.raises(errors.DataError, match="cannot encrypt"):
            store.offer(OWNER, key.export(), "autocrypt")
    finally:
        key.close()


def test_expired_key_is_refused(store):
    key = OwnerKey(OWNER, expire="1d", faked_time="20200101T000000")
    try:
        with pytest.raises(errors.DataError, match="cannot encrypt"):
            store.import_key(OWNER, key.export(), "file")
    finally:
        key.close()


def test_key_missing_from_keyring_is_missing(store, owner):
    store.import_key(OWNER, owner.export(), "file")
    store.gpg.delete_key(owner.fpr)
    assert store.encryption_fingerprints([OWNER]) == {}
    assert store.missing([OWNER]) == [OWNER]


def test_manual_import_pins_then_replaces_only_when_asked(store, owner, mallory):
    assert store.import_key(OWNER, owner.armored(), "file:o.asc") == Outcome.PINNED
    assert store.import_key(OWNER, owner.export(), "file:o.gpg") == Outcome.UNCHANGED
    assert store.import_key(OWNER, mallory.export(), "file:m.gpg") == Outcome.PENDING
    assert store.record(OWNER)["fingerprint"] == owner.fpr
    assert store.import_key(OWNER, mallory.export(), "file:m.gpg", replace=True) == Outcome.REPLACED
    rec = store.record(OWNER)
    assert rec["fingerprint"] == mallory.fpr and rec["source"] == "file:m.gpg" and rec["pending"] == []


def test_corrupt_record_is_reported_and_skipped(store, owner):
    store.import_key(OWNER, owner.export(), "file")
    (store.dir / "friend@example.org.json").write_text("{not json")
    with pytest.raises(errors.DataError, match="unreadable key record"):
        store.record(FRIEND)
    assert [r["address"] for r in store.records()] == [OWNER]
    assert store.encryption_fingerprints([OWNER, FRIEND]) == {OWNER: owner.fpr}
    (store.dir / "friend@example.org.json").write_text("[]")
    with pytest.raises(errors.DataError, match=r"not a JSON object \(key record expected\)"):
        store.record(FRIEND)


def test_address_with_slash_stays_inside_the_store(short_dir, owner):
    odd = "a/b@example.org"
    with pytest.raises(errors.DataError):
        KeyStore(short_dir, allowed=lambda a: True).offer(odd, owner.export(), "x")


def test_lock_timeout_is_temporary(store, monkeypatch):
    import fcntl
    monkeypatch.setattr(keys, "_LOCK_TIMEOUT_S", 0.1)
    store.dir.mkdir(parents=True)
    # flock conflicts between open file descriptions, so this stands for another process
    # (in this process, so that coverage sees the waiting side).
    fd = os.open(store.dir / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(errors.TemporaryError, match="locked by another process"):
            with store.lock():
                pytest.fail("the lock was taken twice")
    finally:
        os.close(fd)


def test_the_store_names_its_state_dir(store, short_dir):
    assert repr(store) == f"KeyStore({str(short_dir)!r})"


# -- recipients ---------------------------------------------------------------------
def test_recipients_are_configured_plus_joined(short_dir):
    cfg = seccam_config.load(make_config(short_dir))
    assert keys.recipients(cfg) == (OWNER,)
    assert not keys.allowed(cfg, FRIEND)
    assert keys.add_recipient(cfg, "Friend@Example.org", now=T0) is True
    assert keys.add_recipient(cfg, FRIEND) is False
    assert keys.add_recipient(cfg, OWNER) is False
    assert keys.recipients(cfg) == (OWNER, FRIEND)
    assert keys.allowed(cfg, "FRIEND@example.org") and not keys.allowed(cfg, "nonsense")
    saved = json.loads((short_dir / "state" / "recipients.json").read_text())
    assert saved["recipients"] == [{"address": FRIEND, "added": "2027-01-15T08:00:00Z"}]


def test_joined_recipient_may_have_a_key(short_dir, owner):
    cfg = seccam_config.load(make_config(short_dir, recipients=()))
    store = keys.open_store(cfg)
    with pytest.raises(keys.NotRecipientError):
        store.offer(OWNER, owner.export(), "securejoin")
    keys.add_recipient(cfg, OWNER)
    assert store.import_key(OWNER, owner.export(), "securejoin") == Outcome.PINNED


def test_corrupt_recipients_file_is_reported(short_dir):
    cfg = seccam_config.load(make_config(short_dir))
    (short_dir / "state").mkdir()
    (short_dir / "state" / "recipients.json").write_text("nope")
    with pytest.raises(errors.DataError, match="recipients.json: unreadable"):
        keys.recipients(cfg)
    with pytest.raises(errors.DataError, match="recipients.json: unreadable"):
        keys.add_recipient(cfg, FRIEND)


def test_pending_changes_does_not_start_gpg(short_dir, owner, mallory):
    cfg = seccam_config.load(make_config(short_dir))
    store = keys.open_store(cfg)
    store.import_key(OWNER, owner.export(), "file")
    store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 1)
    code = ("import sys; from seccam import config, keys; "
            f"c = keys.pending_changes(config.load({str(short_dir / 'seccam.toml')!r})); "
            "print(len(c), c[0]['fingerprint'], 'gnupg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    assert out.stdout.split() == ["1", mallory.fpr, "False"], out.stderr


def test_a_recipient_that_cannot_be_written_is_a_temporary_error_and_leaves_no_trace(short_dir, monkeypatch):
    import errno
    cfg = seccam_config.load(make_config(short_dir))
    keys.add_recipient(cfg, "first@example.org", now=T0)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(errors.TemporaryError, match="recipients.json: No space left"):
        keys.add_recipient(cfg, FRIEND, now=T0)
    monkeypatch.undo()
    assert keys.recipients(cfg) == (OWNER, "first@example.org")
    assert not [p for p in (short_dir / "state").iterdir() if p.name.endswith(".tmp")]


def test_a_recipients_file_that_is_json_but_not_a_list_of_recipients_is_a_data_error(short_dir):
    cfg = seccam_config.load(make_config(short_dir))
    (short_dir / "state").mkdir()
    (short_dir / "state" / "recipients.json").write_text("[]")
    assert keys.recipients(cfg) == (OWNER,)  # read leniently: nobody joined
    with pytest.raises(errors.DataError, match="not a recipients file"):
        keys.add_recipient(cfg, FRIEND)
    assert (short_dir / "state" / "recipients.json").read_text() == "[]"


def test_accept_refuses_a_pending_entry_whose_stored_key_data_is_another_key(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file")
    store.offer(OWNER, mallory.export(), "autocrypt", when=T0 + 1)
    path = store._path(OWNER)
    rec = json.loads(path.read_text())
    rec["pending"][0]["keydata"] = base64.b64encode(owner.export()).decode()  # edited on disk
    path.write_text(json.dumps(rec))
    with pytest.raises(GpgError, match=f"expected key {mallory.fpr}"):
        store.accept(OWNER, mallory.fpr)
    assert store.record(OWNER)["fingerprint"] == owner.fpr


# -- vCards -------------------------------------------------------------------------
def test_vcard_forms_are_read(owner):
    b64 = base64.b64encode(owner.export()).decode()
    v4 = ("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:Owner@Example.org\r\nFN:O\r\n"
          f"KEY:data:application/pgp-keys;base64,{b64}\r\nEND:VCARD\r\n")
    (card,) = vcard.parse(v4.encode())
    assert card.email == OWNER and card.key == owner.export()
    folded = "BEGIN:VCARD\nVERSION:3.0\nitem1.EMAIL;TYPE=INTERNET:owner@example.org\nKEY;TYPE=PGP;ENCODING=b:" + \
        "\n ".join(b64[i:i + 70] for i in range(0, len(b64), 70)) + "\nEND:VCARD\n"
    assert vcard.parse(folded)[0].key == owner.export()
    v21 = f"BEGIN:VCARD\nVERSION:2.1\nEMAIL:owner@example.org\nKEY;ENCODING=BASE64;TYPE=PGP:{b64}\nEND:VCARD\n"
    assert vcard.parse(v21)[0].key == owner.export()


def test_vcard_failures_are_data_errors():
    for text, msg in [("BEGIN:VCARD\nEMAIL:a@b.c\n", "no complete vCard"),
                      ("BEGIN:VCARD\nKEY:data:application/pgp-keys;base64,@@@\nEND:VCARD\n", "not valid base64"),
                      ("BEGIN:VCARD\nKEY:data:image/png;base64,AAAA\nEND:VCARD\n", "media type image/png"),
                      ("BEGIN:VCARD\nKEY:data:application/pgp-keys,AAAA\nEND:VCARD\n", "not base64"),
                      ("BEGIN:VCARD\nKEY:https://example.org/key.asc\nEND:VCARD\n", "not fetched"),
                      ("BEGIN:VCARD\nKEY;ENCODING=b:" + "A" * 100000 + "\nEND:VCARD\n", "larger than")]:
        with pytest.raises(errors.DataError, match=msg):
            vcard.parse(text)
    with pytest.raises(errors.DataError, match="not UTF-8"):
        vcard.parse(b"BEGIN:VCARD\n\xff\nEND:VCARD")


# -- the command line ---------------------------------------------------------------
def seccam(*args, cfg, timeout=60):
    env = {**os.environ, "SECCAM_NO_SYSLOG": "1"}
    env.pop("SECCAM_CONFIG", None)
    return subprocess.run([sys.executable, str(ROOT / "bin" / "seccam"), *args, "--config", str(cfg)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))


@pytest.fixture
def cli(short_dir):
    return make_config(short_dir)


def camera_fpr(cfg):
    out = json.loads(seccam("keys", "list", "--json", cfg=cfg).stdout)
    return out["camera"]["fingerprint"] if out["camera"] else None


def test_cli_init_is_idempotent(cli):
    first = seccam("keys", "init", cfg=cli)
    assert first.returncode == 0, first.stderr
    fpr = first.stdout.split()[3]
    again = seccam("keys", "init", cfg=cli)
    assert again.returncode == 0 and again.stdout.strip() == f"camera key exists: {fpr}"
    assert camera_fpr(cli) == fpr
    home = cli.parent / "state" / "gnupg"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_cli_init_warns_when_key_names_another_address(cli):
    seccam("keys", "init", cfg=cli)
    cli.write_text(cli.read_text().replace(CAM, "newcam@example.org"))
    proc = seccam("keys", "init", cfg=cli)
    assert proc.returncode == 0 and proc.stdout.startswith("camera key exists: ")
    assert f"its user id is {CAM}, not newcam@example.org" in proc.stderr


def test_cli_export_to_unwritable_place_fails(cli, short_dir):
    seccam("keys", "init", cfg=cli)
    proc = seccam("keys", "export-secret", "--output", str(short_dir / "missing" / "k.asc"), cfg=cli)
    assert proc.returncode == 65 and "cannot create" in proc.stderr


def test_cli_init_without_account_is_config_error(short_dir):
    cfg = make_config(short_dir, account=False)
    proc = seccam("keys", "init", cfg=cfg)
    assert proc.returncode == 78
    assert "[account] is missing" in proc.stderr


def test_cli_state_dir_too_long_is_config_error(short_dir):
    cfg = make_config(short_dir)
    cfg.write_text(cfg.read_text().replace('/state"', "/" + "s" * 80 + '"'))
    proc = seccam("keys", "init", cfg=cfg)
    assert proc.returncode == 78 and "choose a shorter state_dir" in proc.stderr


def test_cli_export_restore_roundtrip_keeps_fingerprint(cli, short_dir):
    seccam("keys", "init", cfg=cli)
    fpr = camera_fpr(cli)
    backup = short_dir / "backup.asc"
    proc = seccam("keys", "export-secret", "--output", str(backup), cfg=cli)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert seccam("keys", "export-secret", "--output", str(backup), cfg=cli).returncode == 65  # never overwrite
    stdout = seccam("keys", "export-secret", cfg=cli)
    assert stdout.stdout.startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")

    other = new_short_dir()
    try:
        cfg2 = make_config(other)
        proc = seccam("keys", "restore", str(backup), cfg=cfg2)
        assert proc.returncode == 0 and fpr in proc.stdout, proc.stderr
        assert camera_fpr(cfg2) == fpr
        again = seccam("keys", "restore", str(backup), cfg=cfg2)
        assert again.returncode == 0 and "already in place" in again.stdout
    finally:
        cleanup(other)


def test_cli_restore_refuses_different_key_unless_forced(cli, short_dir):
    seccam("keys", "init", cfg=cli)
    old = camera_fpr(cli)
    other = OwnerKey(CAM)
    try:
        backup = short_dir / "other.asc"
        backup.write_bytes(other.secret_armored())
        proc = seccam("keys", "restore", str(backup), cfg=cli)
        assert proc.returncode == 69 and f"a different camera key {old} exists" in proc.stderr
        assert camera_fpr(cli) == old
        proc = seccam("keys", "restore", "--force", str(backup), cfg=cli)
        assert proc.returncode == 0, proc.stderr
        assert camera_fpr(cli) == other.fpr
        saved = list((cli.parent / "state").glob(f"camera-key-{old}-*.asc"))
        assert len(saved) == 1 and stat.S_IMODE(saved[0].stat().st_mode) == 0o600
        assert b"PRIVATE KEY BLOCK" in saved[0].read_bytes()
    finally:
        other.close()


def test_cli_restore_of_public_key_is_refused(cli, short_dir, owner):
    path = short_dir / "pub.asc"
    path.write_bytes(owner.armored())
    proc = seccam("keys", "restore", str(path), cfg=cli)
    assert proc.returncode == 65 and "holds 0 secret keys" in proc.stderr
    (short_dir / "junk").write_bytes(b"junk")
    assert seccam("keys", "restore", str(short_dir / "junk"), cfg=cli).returncode == 65
    assert seccam("keys", "restore", str(short_dir / "absent"), cfg=cli).returncode == 65


def test_cli_export_without_camera_key_fails(cli):
    proc = seccam("keys", "export-secret", cfg=cli)
    assert proc.returncode == 69 and "run seccam keys init" in proc.stderr


def eml(owner, sender=OWNER, addr=OWNER, headers=1):
    msg = email.message.EmailMessage()
    msg["From"] = f"Owner <{sender}>"
    msg["To"] = CAM
    msg["Date"] = email.utils.formatdate(T0)
    for _ in range(headers):
        msg["Autocrypt"] = autocrypt.build_header(addr, owner.export())
    msg.set_content("hello camera")
    return msg.as_bytes()


@pytest.mark.parametrize("kind", ["eml", "vcf", "asc", "gpg"])
def test_cli_import_each_file_kind(cli, short_dir, owner, kind):
    b64 = base64.b64encode(owner.export()).decode()
    data = {"eml": lambda: eml(owner),
            "vcf": lambda: f"BEGIN:VCARD\nVERSION:4.0\nEMAIL:{OWNER}\nKEY:data:application/pgp-keys;base64,{b64}\n"
                           "END:VCARD\n".encode(),
            "asc": owner.armored, "gpg": owner.export}[kind]()
    path = short_dir / f"owner.{kind}"
    path.write_bytes(data)
    proc = seccam("keys", "import", str(path), cfg=cli)
    assert proc.returncode == 0, proc.stderr
    assert f"{OWNER}: pinned {owner.fpr}" in proc.stdout
    listing = json.loads(seccam("keys", "list", "--json", cfg=cli).stdout)
    (row,) = listing["recipients"]
    assert row["fingerprint"] == owner.fpr and row["usable"] and row["source"].endswith(f"owner.{kind}")


def test_cli_import_failures(cli, short_dir, owner):
    cases = {
        "stranger.eml": (eml(owner, sender="s@example.org", addr="s@example.org"), "s@example.org is not a recipient"),
        "mismatch.eml": (eml(owner, addr="other@example.org"), "is not the From address"),
        "two.eml": (eml(owner, headers=2), "expected one Autocrypt header, found 2"),
        "none.eml": (b"From: owner@example.org\n\nno header\n", "found 0"),
        "bad.eml": (b"From: owner@example.org\nAutocrypt: addr=owner@example.org; keydata=!!\n\n", "base64"),
        "nokey.vcf": (b"BEGIN:VCARD\nEMAIL:owner@example.org\nEND:VCARD\n", "has no KEY"),
        "secret.asc": (owner.secret_armored(), "SECRET key"),
        "junk.txt": (b"just some text", "neither an e-mail"),
    }
    for name, (data, message) in cases.items():
        (short_dir / name).write_bytes(data)
        proc = seccam("keys", "import", str(short_dir / name), cfg=cli)
        assert proc.returncode == 65, (name, proc.stderr)
        assert message in proc.stderr, (name, proc.stderr)


def test_cli_import_binary_key_of_stranger_names_its_address(cli, short_dir):
    stranger = OwnerKey("stranger@example.org")
    try:
        (short_dir / "s.gpg").write_bytes(stranger.export())
        proc = seccam("keys", "import", str(short_dir / "s.gpg"), cfg=cli)
        assert proc.returncode == 65 and "stranger@example.org" in proc.stderr
        proc = seccam("keys", "import", "--address", OWNER, str(short_dir / "s.gpg"), cfg=cli)
        assert proc.returncode == 0 and f"{OWNER}: pinned {stranger.fpr}" in proc.stdout
    finally:
        stranger.close()


def test_cli_pending_then_accept(cli, short_dir, owner, mallory):
    (short_dir / "o.asc").write_bytes(owner.armored())
    (short_dir / "m.asc").write_bytes(mallory.armored())
    seccam("keys", "init", cfg=cli)
    assert seccam("keys", "import", str(short_dir / "o.asc"), cfg=cli).returncode == 0
    proc = seccam("keys", "import", str(short_dir / "m.asc"), cfg=cli)
    assert proc.returncode == 0 and "NOT adopted" in proc.stdout
    assert f"seccam keys accept {OWNER} {mallory.fpr}" in proc.stdout
    text = seccam("keys", "list", cfg=cli).stdout
    assert "camera key: " in text and f"PENDING key: {mallory.fpr} from file:" in text and "(verified)" in text
    assert keys.pending_changes(seccam_config.load(cli))[0]["fingerprint"] == mallory.fpr
    bad = seccam("keys", "accept", OWNER, "F" * 40, cfg=cli)
    assert bad.returncode == 65 and "not a pending key" in bad.stderr
    proc = seccam("keys", "accept", OWNER, mallory.fpr, cfg=cli)
    assert proc.returncode == 0 and f"adopted {mallory.fpr}" in proc.stdout
    listing = json.loads(seccam("keys", "list", "--json", cfg=cli).stdout)
    assert listing["recipients"][0]["fingerprint"] == mallory.fpr
    assert listing["recipients"][0]["pending"] == []
    proc = seccam("keys", "import", "--replace", str(short_dir / "o.asc"), cfg=cli)
    assert proc.returncode == 0 and f"replaced {owner.fpr}" in proc.stdout


def test_cli_list_shows_recipients_without_keys(cli):
    proc = seccam("keys", "list", cfg=cli)
    assert proc.returncode == 0
    assert "camera key: none" in proc.stdout
    assert f"{OWNER}  no key: messages to it are held" in proc.stdout


def test_gpg_failure_in_cli_is_one_line(cli, short_dir, monkeypatch):
    # A home that gpg cannot use (not a directory) must be one clear line, no traceback.
    (cli.parent / "state").mkdir()
    (cli.parent / "state" / "gnupg").write_text("")
    proc = seccam("keys", "init", cfg=cli)
    assert proc.returncode == 78 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_gpg_error_is_a_seccam_error():
    err = GpgError("encrypt", "invalid recipient", "INV_RECP 1 X", 2)
    assert isinstance(err, errors.SeccamError) and err.exit_code == 69
    assert str(err) == "gpg encrypt failed: invalid recipient (INV_RECP 1 X)"


def test_cli_import_refuses_a_file_larger_than_any_key(cli, short_dir):
    big = short_dir / "big.asc"
    big.write_bytes(b"x" * (4 * 1024 * 1024 + 1))
    proc = seccam("keys", "import", str(big), cfg=cli)
    assert proc.returncode == 65 and "larger than 4 MiB; not a key file" in proc.stderr


def test_cli_import_of_a_key_naming_two_recipients_asks_which_one(short_dir):
    cfg = make_config(short_dir, recipients=(OWNER, FRIEND))
    both = OwnerKey(OWNER)
    try:
        gpg(both.home, "--quick-add-uid", both.fpr, FRIEND)
        path = short_dir / "both.gpg"
        path.write_bytes(both.export())
        proc = seccam("keys", "import", str(path), cfg=cfg)
        assert proc.returncode == 65
        named = proc.stderr.partition("the key names several recipients (")[2].partition(")")[0]
        assert sorted(named.split(", ")) == sorted([OWNER, FRIEND]) and "choose with --address" in proc.stderr
        proc = seccam("keys", "import", "--address", FRIEND, str(path), cfg=cfg)
        assert proc.returncode == 0 and f"{FRIEND}: pinned {both.fpr}" in proc.stdout
    finally:
        both.close()


def test_record_without_an_address_or_too_large_is_refused(store):
    store.dir.mkdir(parents=True, exist_ok=True)
    (store.dir / "friend@example.org.json").write_text('{"fingerprint": "X"}')
    with pytest.raises(errors.DataError, match="not a key record"):
        store.record(FRIEND)
    (store.dir / "friend@example.org.json").write_text('{"address": "' + "x" * (1 << 20) + '"}')
    with pytest.raises(errors.DataError, match="unreadable key record .larger than 1048576 bytes"):
        store.record(FRIEND)


def test_pinned_addresses_names_whose_pinned_key_a_fingerprint_is(store, owner, mallory):
    store.import_key(OWNER, owner.export(), "file")
    assert store.pinned_addresses(owner.fpr.lower()) == {OWNER}
    assert store.pinned_addresses(mallory.fpr) == set()
    assert store.pinned_addresses("not a fingerprint") == set()
    # an address that is no longer a recipient has no authority, even with its record still there
    assert KeyStore(store.state_dir).pinned_addresses(owner.fpr) == set()
