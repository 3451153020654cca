"""seccam.authn: when a decrypted message counts as written by a recipient, and the replay journal.

Real gpg: the owner signs and encrypts to the camera as Delta Chat does; every rule of the
module docstring is broken once and must be refused with its reason. The journal is
checked for replays, older signatures, the lock, and a damaged file (which must close the
door, not open it).
"""

import datetime as _dt
import email
import email.policy
import fcntl
import json
import os
import shutil
import time

import pytest

from seccam import authn
from seccam.errors import TemporaryError
from seccam.gpg import Decrypted, Gpg, GpgError
from helpers import forgery
from helpers.sendkit import kill_agent, short_dir

CAM = "cam@seccam.test"
OWNER = "owner@seccam.test"


@pytest.fixture(scope="module")
def keys():
    homes = {name: short_dir("sca") for name in ("cam", "owner", "other")}
    gpgs = {name: Gpg(home) for name, home in homes.items()}
    fprs = {"cam": gpgs["cam"].generate_camera_key(CAM), "owner": gpgs["owner"].generate_camera_key(OWNER),
            "other": gpgs["other"].generate_camera_key(OWNER)}
    for a in gpgs:
        for b in gpgs:
            if a != b:
                gpgs[a].import_keys(gpgs[b].export_armored(fprs[b]))
    yield gpgs, fprs, homes
    for home in homes.values():
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


def pinned(fprs):
    return lambda fpr: {OWNER} if fpr == fprs["owner"] else set()


def message(keys, inner=None, signer="owner", **inner_kw):
    """(parsed inner, Decrypted) as the camera's gpg sees an owner message."""
    gpgs, fprs, _ = keys
    inner = inner or forgery.inner_message(OWNER, [CAM], **inner_kw)
    armored = gpgs[signer].encrypt_sign(inner, [fprs["cam"]], signer=fprs[signer])
    decrypted = gpgs["cam"].decrypt_verify(armored)
    return email.message_from_bytes(decrypted.plaintext, policy=email.policy.compat32), decrypted


def test_a_message_signed_by_the_pinned_key_for_its_signed_from_and_to_the_camera_is_authentic(keys):
    inner, decrypted = message(keys, message_id="<one@seccam.test>")
    sender = authn.authenticate(inner, decrypted, pinned(keys[1]), CAM, time.time())
    assert (sender.address, sender.fingerprint, sender.message_id) == (OWNER, keys[1]["owner"], "<one@seccam.test>")
    assert abs(sender.signed_at - time.time()) < 300
    assert len(sender.message_key) == 32 and "one" not in sender.message_key


@pytest.mark.parametrize("change, why", [
    ({"signer": "other"}, "which is no recipient's pinned key"),
    ({"to": ["someone@seccam.test"]}, "do not name the camera"),
    ({"sender": "bob@seccam.test"}, "but the signed From is bob@seccam.test"),
    ({"date": _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)}, "from the camera's clock"),
])
def test_each_rule_is_enforced(keys, change, why):
    signer = change.pop("signer", "owner")
    sender = change.pop("sender", OWNER)
    to = change.pop("to", [CAM])
    inner = forgery.inner_message(sender, to, **change)
    inner, decrypted = message(keys, inner=inner, signer=signer)
    with pytest.raises(authn.NotAuthentic, match=why):
        authn.authenticate(inner, decrypted, pinned(keys[1]), CAM, time.time())


def test_cc_names_the_camera_too(keys):
    raw = forgery.inner_message(OWNER, ["bob@seccam.test"]).replace(b"\r\nDate:", f"\r\nCc: <{CAM}>\r\nDate:".encode(), 1)
    inner, decrypted = message(keys, inner=raw)
    assert authn.authenticate(inner, decrypted, pinned(keys[1]), CAM, time.time()).address == OWNER


@pytest.mark.parametrize("header, why", [("From", "no single From"), ("Message-ID", "no Message-ID"),
                                         ("Date", "no valid Date")])
def test_a_missing_signed_header_is_refused(keys, header, why):
    raw = forgery.inner_message(OWNER, [CAM])
    lines = [line for line in raw.split(b"\r\n") if not line.startswith(header.encode() + b":")]
    inner, decrypted = message(keys, inner=b"\r\n".join(lines))
    with pytest.raises(authn.NotAuthentic, match=why):
        authn.authenticate(inner, decrypted, pinned(keys[1]), CAM, time.time())


@pytest.mark.parametrize("value", ["Wed, 25 Nov 2026 19:00:00 -0000", "not a date", "Wed, 99 Foo 2026"])
def test_a_date_without_a_time_zone_or_unreadable_is_no_valid_date(keys, value):
    raw = forgery.inner_message(OWNER, [CAM])
    inner = email.message_from_bytes(raw, policy=email.policy.compat32)
    inner.replace_header("Date", value)
    decrypted = Decrypted(raw, keys[1]["owner"], time.time())
    with pytest.raises(authn.NotAuthentic, match="no valid Date"):
        authn.authenticate(inner, decrypted, pinned(keys[1]), CAM, time.time())


def test_an_unsigned_message_is_refused():
    inner = email.message_from_bytes(forgery.inner_message(OWNER, [CAM]), policy=email.policy.compat32)
    with pytest.raises(authn.NotAuthentic, match="not signed"):
        authn.authenticate(inner, Decrypted(b"", None, None), lambda f: {OWNER}, CAM, time.time())


def test_an_old_signature_on_a_fresh_date_is_refused(keys):
    inner, decrypted = message(keys)
    old = decrypted._replace(signed_at=time.time() - 3600)
    with pytest.raises(authn.NotAuthentic, match="signature is 3[56][0-9]{2} s from the camera's clock"):
        authn.authenticate(inner, old, pinned(keys[1]), CAM, time.time())


def test_a_bad_signature_inside_valid_encryption_is_rejected(keys):
    """The signed literal data changed after signing, then encrypted properly to the camera."""
    gpgs, fprs, homes = keys
    armored = forgery.bad_signature(homes["owner"], fprs["owner"], [fprs["cam"]],
                                    forgery.inner_message(OWNER, [CAM], text="transfer 100 EUR to the owner"))
    with pytest.raises(GpgError):
        gpgs["cam"].decrypt_verify(armored)


# -- the journal -------------------------------------------------------------------------
def sender(signed_at, message_id="<m@x>", address=OWNER):
    return authn.Sender(address=address, fingerprint="A" * 40, signed_at=signed_at, message_id=message_id)


def test_the_journal_admits_each_message_once_and_never_an_older_one(short_tmp):
    journal = authn.Journal(short_tmp / "state")
    now = 1_800_000_000.0
    assert journal.admit(sender(now, "<a@x>"), now=now)
    assert not journal.admit(sender(now, "<a@x>"), now=now)            # the same Message-ID again
    assert journal.admit(sender(now, "<b@x>"), now=now)                # same second, another message
    assert not journal.admit(sender(now - 1, "<c@x>"), now=now)        # older than the newest acted on
    assert journal.admit(sender(now - 1, "<c@x>", "bob@x"), now=now)   # per sender
    assert journal.newest(OWNER) == now and journal.newest("nobody@x") is None
    saved = json.loads((short_tmp / "state" / "replay.json").read_text())
    assert saved["version"] == 1 and "<a@x>" not in json.dumps(saved)  # hashes only
    assert os.stat(short_tmp / "state" / "replay.json").st_mode & 0o777 == 0o640


def test_the_journal_forgets_message_ids_older_than_twice_the_window(short_tmp):
    journal = authn.Journal(short_tmp / "state", window_s=60)
    t = 1_800_000_000.0
    journal.admit(sender(t, "<old@x>"), now=t)
    journal.admit(sender(t + 500, "<new@x>"), now=t + 500)
    saved = json.loads((short_tmp / "state" / "replay.json").read_text())
    assert [s[1] for s in saved["seen"]] == [t + 500]
    assert not journal.admit(sender(t, "<old@x>"), now=t + 500)  # still refused: older than the newest


def test_the_journal_keeps_at_most_max_seen_ids(short_tmp, monkeypatch):
    monkeypatch.setattr(authn, "MAX_SEEN", 3)
    journal = authn.Journal(short_tmp / "state")
    t = 1_800_000_000.0
    for i in range(5):
        assert journal.admit(sender(t + i, f"<{i}@x>"), now=t + i)
    assert len(json.loads((short_tmp / "state" / "replay.json").read_text())["seen"]) == 3


@pytest.mark.parametrize("content", ["{not json", "[]", '{"senders": [], "seen": []}'])
def test_a_damaged_journal_refuses_everything_until_a_person_looks(short_tmp, content):
    (short_tmp / "state").mkdir()
    (short_tmp / "state" / "replay.json").write_text(content)
    journal = authn.Journal(short_tmp / "state")
    with pytest.raises(TemporaryError, match="replay.json"):
        journal.admit(sender(1_800_000_000.0))
    assert (short_tmp / "state" / "replay.json").read_text() == content


def test_a_locked_journal_is_a_temporary_error(short_tmp, monkeypatch):
    monkeypatch.setattr(authn, "_LOCK_TIMEOUT_S", 0.1)
    (short_tmp / "state").mkdir()
    fd = os.open(short_tmp / "state" / ".replay.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TemporaryError, match="locked by another process"):
            authn.Journal(short_tmp / "state").admit(sender(1_800_000_000.0))
    finally:
        os.close(fd)
