"""seccam.gpg against the real gpg: the camera key, export/import, sign+encrypt, decrypt+verify,
and every failure turned into GpgError."""

import os
import stat
import subprocess
import time
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from helpers.gpghome import OwnerKey, gpg, gpghome, short_dir  # noqa: E402,F401
from seccam import errors, mime  # noqa: E402
from seccam.gpg import Gpg, GpgError, _dearmor, _tail, check_fingerprint  # noqa: E402

CAM = "cam@example.org"


@pytest.fixture
def camera(gpghome):
    g = Gpg(gpghome / "gnupg")
    g.generate_camera_key(CAM)
    return g


@pytest.fixture(scope="module")
def owner():
    key = OwnerKey("owner@example.org")
    yield key
    key.close()


def test_home_is_created_private(short_dir):
    home = short_dir / "state" / "gnupg"
    Gpg(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_existing_home_is_made_private(short_dir):
    home = short_dir / "gnupg"
    home.mkdir(mode=0o755)
    Gpg(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_long_home_is_refused_with_config_error(short_dir):
    home = short_dir / ("x" * 80) / "gnupg"
    with pytest.raises(errors.ConfigError, match="characters long") as info:
        Gpg(home)
    assert info.value.exit_code == 78
    assert not home.exists()


def test_uncreatable_home_is_config_error(short_dir):
    (short_dir / "file").write_text("")
    with pytest.raises(errors.ConfigError, match="cannot create GnuPG home"):
        Gpg(short_dir / "file" / "gnupg")


def test_camera_key_is_ed25519_with_cv25519_subkey(gpghome):
    g = Gpg(gpghome / "gnupg")
    assert g.camera_key() is None
    fpr = g.generate_camera_key(CAM)
    assert g.camera_key() == fpr
    info = g.key_info(fpr)
    assert info.uids == (CAM,)
    assert (info.algo, info.curve) == ("eddsa", "ed25519")
    assert info.can_encrypt and info.expires is None and info.created
    colons = gpg(gpghome / "gnupg", "--with-colons", "--list-keys", fpr).decode()
    sub = [line.split(":") for line in colons.splitlines() if line.startswith("sub:")]
    assert [(s[3], s[11], s[16]) for s in sub] == [("18", "e", "cv25519")]
    # no passphrase: exporting the secret key needs no pinentry
    assert b"PRIVATE KEY BLOCK" in g.export_secret(fpr)


def test_generate_rejects_bad_address(gpghome):
    g = Gpg(gpghome / "gnupg")
    for bad in ("", "no-at", "a@b\n%commit"):
        with pytest.raises(errors.DataError):
            g.generate_camera_key(bad)


def test_two_secret_keys_is_an_error(camera):
    camera.generate_camera_key("other@example.org")
    with pytest.raises(GpgError, match="2 secret keys"):
        camera.camera_key()


def test_export_minimal_is_binary_and_scans_without_import(camera, short_dir):
    fpr = camera.camera_key()
    data = camera.export_minimal(fpr)
    assert data[0] & 0x80  # an OpenPGP packet, not armor
    other = Gpg(short_dir / "gnupg")
    assert other.fingerprints_of(data) == [fpr]
    assert other.list_keys() == []  # scanning did not import
    scanned = other.scan(data)[0]
    assert not scanned.secret and scanned.uids == (CAM,)


def test_scan_finds_secret_keys(camera):
    keys = camera.scan(camera.export_secret(camera.camera_key()))
    assert [k.secret for k in keys] == [True]


def test_export_armored_has_no_version_line(camera):
    data = camera.export_armored(camera.camera_key())
    assert data.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert b"\nVersion:" not in data


def test_export_secret_restores_same_fingerprint(camera, short_dir):
    fpr = camera.camera_key()
    other = Gpg(short_dir / "gnupg")
    assert other.import_keys(camera.export_secret(fpr)) == [fpr]
    assert other.camera_key() == fpr


def test_export_unknown_key_raises(camera):
    with pytest.raises(GpgError, match="no such key"):
        camera.export_minimal("0" * 40)
    with pytest.raises(GpgError, match="no such key"):
        camera.export_secret("0" * 40)


def test_export_secret_of_public_only_key_raises(camera, owner):
    camera.import_keys(owner.export())
    with pytest.raises(GpgError):
        camera.export_secret(owner.fpr)


def test_import_garbage_raises_with_status(camera):
    with pytest.raises(GpgError) as info:
        camera.import_keys(b"this is not a key")
    assert "import" in str(info.value)
    with pytest.raises(GpgError, match="no key data"):
        camera.import_keys(b"")


def test_scan_garbage_raises(camera):
    with pytest.raises(GpgError, match="no OpenPGP key"):
        camera.fingerprints_of(b"\x99\x00garbage")
    with pytest.raises(GpgError):
        camera.scan(b"")


def test_key_info_of_absent_key_is_none(camera):
    assert camera.key_info("A" * 40) is None
    assert not camera.has_key("A" * 40)


def test_fingerprints_are_checked_before_reaching_gpg(camera):
    for bad in ("--homedir=/", "ABC", None, "G" * 40):
        with pytest.raises(errors.DataError):
            check_fingerprint(bad)
    with pytest.raises(errors.DataError):
        camera.encrypt_sign(b"x", ["--armor"], camera.camera_key())
    assert check_fingerprint("abcd " * 10) == "ABCD" * 10


def test_encrypt_sign_roundtrip_with_signer(camera):
    fpr = camera.camera_key()
    payload = os.urandom(400 * 1024)  # JPEG-sized: 0.5.x raised BrokenPipeError on large inputs
    armored = camera.encrypt_sign(payload, [fpr], signer=fpr)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\n")
    assert b"Version:" not in armored
    plaintext, signer, _ = camera.decrypt_verify(armored)
    assert plaintext == payload and signer == fpr


@pytest.mark.parametrize("to_owner", [False, True], ids=["camera-only", "owner-and-camera"])
def test_encrypt_sign_makes_only_pkesk_and_seipd_packets(camera, owner, to_owner):
    """Whatever gpg is installed (2.2 on bookworm, 2.4 on trixie): PKESK then SEIPD v1, no AEAD."""
    fpr = camera.camera_key()
    recipients = [fpr]
    if to_owner:
        camera.import_keys(owner.export())
        recipients.insert(0, owner.fpr)
    for armor in (True, False):
        data = camera.encrypt_sign(b"hello", recipients, signer=fpr, armor=armor)
        out = subprocess.run(["gpg", "--homedir", str(camera.home), "--batch", "--list-packets"], input=data,
                             capture_output=True, timeout=30).stdout.decode()
        tops = [line for line in out.splitlines() if line.startswith(":") and "packet" in line]
        assert [t.split(":")[1] for t in tops[:len(recipients) + 1]] == ["pubkey enc packet"] * len(recipients) + [
            "encrypted data packet"]  # PKESK per recipient, then SEIPD (tag 18)
        assert "aead" not in out.lower() and "tag=20" not in out
        binary = _dearmor(data) if armor else data
        assert [(tag, body[0]) for tag, body in mime.packets(binary)] == [(1, 3)] * len(recipients) + [(18, 1)]


def _packet(tag, body):
    return bytes([0xC0 | tag, len(body)]) + body


@pytest.mark.parametrize("packets, named", [
    ([(1, b"\x03key"), (20, b"\x01\x09\x02ocb")], "AEAD (OCB) encrypted data 20"),  # GnuPG 2.4 OCB
    ([(1, b"\x03key"), (18, b"\x02\x09\x02\x10")], "SEIPD 18 v2"),                  # RFC 9580 SEIPD v2
    ([(18, b"\x01data")], "SEIPD 18 v1"),                                          # no session key packet
    ([(1, b"\x03key"), (18, b"\x01a"), (18, b"\x01b")], "SEIPD 18 v1, SEIPD 18 v1"),
])
def test_gpg_output_other_than_seipd_v1_is_refused_before_it_is_sent(camera, monkeypatch, packets, named):
    """If a gpg ever chose AEAD (every recipient advertising it), no message goes out unreadable."""
    fake = b"".join(_packet(tag, body) for tag, body in packets)
    real = camera._gpg.encrypt_file

    def encrypt_file(*args, **kwargs):
        result = real(*args, **kwargs)
        result.data = fake
        return result

    monkeypatch.setattr(camera._gpg, "encrypt_file", encrypt_file)
    fpr = camera.camera_key()
    with pytest.raises(GpgError, match="accept only PKESK/SKESK then one SEIPD v1") as info:
        camera.encrypt_sign(b"x", [fpr], signer=fpr, armor=False)
    assert named in str(info.value)
    monkeypatch.setattr(camera._gpg, "encrypt_file", lambda *a, **k: type("R", (), {
        "ok": True, "status": "encryption ok", "data": b"\x01\x02", "stderr": "[GNUPG:] SIG_CREATED S"})())
    with pytest.raises(GpgError, match="unparseable output"):
        camera.encrypt_sign(b"x", [fpr], signer=fpr, armor=False)


def test_the_camera_key_advertises_no_aead_and_no_seipd_v2(camera):
    """The key's features say what senders may use: only MDC (SEIPD v1), as on GnuPG 2.2. An
    AEAD (0x02) or SEIPD v2 (0x08) flag would let gpg 2.4 (and others) write what relays refuse."""
    fpr = camera.camera_key()
    features = []
    for tag, body in mime.packets(camera.export_minimal(fpr)):
        if tag == 2 and body[0] == 4:  # v4 signature: hashed subpackets after 6 bytes of header
            hashed = body[6:6 + int.from_bytes(body[4:6], "big")]
            i = 0
            while i < len(hashed):
                length, i = hashed[i], i + 1  # the camera key's subpackets are short (< 192 bytes)
                if hashed[i] & 0x7F == 30:
                    features.append(hashed[i + 1:i + length])
                i += length
    assert features and all(f[0] & 0x02 == 0 and f[0] & 0x08 == 0 and f[0] & 0x01 for f in features), features


def test_binary_output_when_not_armored(camera):
    fpr = camera.camera_key()
    data = camera.encrypt_sign(b"hello", [fpr], signer=fpr, armor=False)
    assert data[0] & 0x80
    assert camera.decrypt_verify(data).plaintext == b"hello"


def test_owner_reads_camera_mail_and_sees_signature(camera, owner):
    fpr = camera.camera_key()
    camera.import_keys(owner.export())
    armored = camera.encrypt_sign(b"alarm", [owner.fpr, fpr], signer=fpr)
    gpg(owner.home, "--import", input=camera.export_minimal(fpr))
    proc = subprocess.run(["gpg", "--homedir", str(owner.home), "--batch", "--status-fd", "2", "--decrypt"],
                          input=armored, capture_output=True, timeout=30)
    assert proc.stdout == b"alarm"
    assert f"VALIDSIG {fpr}".encode() in proc.stderr


def test_decrypt_reports_owner_signature(camera, owner):
    fpr = camera.camera_key()
    camera.import_keys(owner.export())
    msg = owner.encrypt_sign(b"hi camera", camera.export_minimal(fpr))
    assert camera.decrypt_verify(msg)[:2] == (b"hi camera", owner.fpr)
    assert abs(camera.decrypt_verify(msg).signed_at - time.time()) < 600


def test_unsigned_mail_has_no_signer(camera, owner):
    msg = owner.encrypt_sign(b"unsigned", camera.export_minimal(camera.camera_key()), sign=False)
    assert camera.decrypt_verify(msg) == (b"unsigned", None, None)


def test_signature_by_unknown_key_has_no_signer(camera, owner):
    # the owner's key is not in the camera's keyring: the signature cannot be checked
    msg = owner.encrypt_sign(b"who?", camera.export_minimal(camera.camera_key()))
    assert camera.decrypt_verify(msg) == (b"who?", None, None)


def test_decrypt_with_strangers_key_fails(camera, short_dir):
    stranger = Gpg(short_dir / "gnupg")
    stranger.generate_camera_key("stranger@example.org")
    fpr = camera.camera_key()
    msg = camera.encrypt_sign(b"secret", [fpr], signer=fpr)
    with pytest.raises(GpgError) as info:
        stranger.decrypt_verify(msg)
    # Decided on the status keyword, which GnuPG 2.2 and 2.4 both print; 2.4's extra prose
    # never pushes it out of the message either.
    assert info.value.status and "NO_SECKEY" in info.value.statuses
    assert "NO_SECKEY" in info.value.tail and "DECRYPTION_FAILED" in info.value.statuses


def test_failure_statuses_stay_in_the_message_however_much_prose_gpg_prints():
    class Result:
        stderr = "\n".join(["[GNUPG:] ENC_TO 0123 18 0", "[GNUPG:] NO_SECKEY 0123"]
                            + [f"gpg: chatter {n}" for n in range(10)] + ["[GNUPG:] DECRYPTION_FAILED"])

    tail = _tail(Result())
    assert tail.split("; ")[:2] == ["NO_SECKEY 0123", "DECRYPTION_FAILED"]
    assert tail.endswith("gpg: chatter 9") and "chatter 7" not in tail


def test_decrypt_garbage_fails(camera):
    with pytest.raises(GpgError, match="decrypt"):
        camera.decrypt_verify(b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n")


def test_decrypt_tampered_message_fails(camera):
    fpr = camera.camera_key()
    data = bytearray(camera.encrypt_sign(b"x" * 2000, [fpr], signer=fpr, armor=False))
    data[-40] ^= 0xFF
    with pytest.raises(GpgError):
        camera.decrypt_verify(bytes(data))


def test_encrypt_to_unknown_fingerprint_raises_with_status(camera):
    fpr = camera.camera_key()
    with pytest.raises(GpgError) as info:
        camera.encrypt_sign(b"x", ["0123456789ABCDEF0123456789ABCDEF01234567"], signer=fpr)
    err = info.value
    assert err.status == "invalid recipient"
    assert "INV_RECP" in err.statuses and "INV_RECP" in err.tail and err.returncode == 2
    assert "gpg encrypt failed: invalid recipient" in str(err)


def test_encrypt_with_signer_without_secret_key_raises(camera, owner):
    camera.import_keys(owner.export())
    with pytest.raises(GpgError) as info:
        camera.encrypt_sign(b"x", [owner.fpr], signer=owner.fpr)
    assert "INV_SGNR" in info.value.statuses


def test_encrypt_without_recipients_raises(camera):
    with pytest.raises(GpgError, match="no recipients"):
        camera.encrypt_sign(b"x", [], signer=camera.camera_key())


def test_python_gnupg_exceptions_become_gpg_error(camera, monkeypatch):
    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(camera._gpg, "encrypt_file", broken)
    with pytest.raises(GpgError, match="BrokenPipeError"):
        camera.encrypt_sign(b"x", [camera.camera_key()], signer=camera.camera_key())
    monkeypatch.setattr(camera._gpg, "import_keys", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(GpgError, match="ValueError: bad"):
        camera.import_keys(b"x")


def test_missing_gpg_binary_is_gpg_error(short_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(short_dir))
    with pytest.raises(GpgError, match="cannot run gpg"):
        Gpg(short_dir / "gnupg")


def test_delete_key_removes_secret_and_public(camera):
    fpr = camera.camera_key()
    camera.delete_key(fpr, secret=True)
    assert camera.camera_key() is None and camera.key_info(fpr) is None
    with pytest.raises(GpgError):
        camera.delete_key(fpr)


def test_importing_seccam_gpg_does_not_import_gnupg():
    code = "import sys, seccam.gpg; print('gnupg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    assert out.stdout.strip() == "False", out.stderr


def test_home_owned_by_another_user_is_refused(short_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the home to another user")  # CI runs as root
    import pwd
    home = short_dir / "other"
    home.mkdir(mode=0o700)
    os.chown(home, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(errors.ConfigError, match="belongs to uid .* not to the user running seccam"):
        Gpg(home)


def test_gpg_names_its_home(camera, gpghome):
    assert repr(camera) == f"Gpg({str(gpghome / 'gnupg')!r})"


def test_key_dates_in_epoch_seconds_become_iso_and_other_forms_are_kept():
    from seccam.gpg import _iso
    assert _iso("1790000000") == "2026-09-21T14:13:20Z"
    assert _iso("2026-09-21T14:13:20") == "2026-09-21T14:13:20"
    assert _iso("") is None


def test_deleting_the_secret_part_of_a_public_only_key_fails(camera, owner):
    camera.import_keys(owner.export())
    with pytest.raises(GpgError, match="delete-secret-key failed: .*not found"):
        camera.delete_key(owner.fpr, secret=True)
    assert camera.has_key(owner.fpr)


def test_a_damaged_keyring_makes_listing_and_key_generation_fail(camera, gpghome):
    (gpghome / "gnupg" / "pubring.kbx").write_bytes(b"garbage" * 100)
    with pytest.raises(GpgError, match="list-keys failed: exit code 2"):
        camera.list_keys()
    with pytest.raises(GpgError, match="generate-key failed"):
        camera.generate_camera_key("other@example.org")


def test_a_message_whose_signature_does_not_match_its_text_is_refused(camera, gpghome):
    home, fpr = gpghome / "gnupg", camera.camera_key()
    signed = bytearray(gpg(home, "--compress-algo", "none", "--local-user", fpr, "--sign", input=b"pay 10 EUR\n"))
    signed[signed.index(b"10 EUR")] = ord("9")  # the literal data changes, the signature does not
    encrypted = gpg(home, "--no-literal", "--compress-algo", "none", "--trust-model", "always",
                    "--recipient", fpr, "--encrypt", input=bytes(signed))
    with pytest.raises(GpgError, match="decrypt"):
        camera.decrypt_verify(encrypted)


def test_a_signature_time_is_read_in_both_of_gpgs_formats():
    from seccam.gpg import _sig_time
    assert _sig_time("1796138376") == 1796138376.0
    assert _sig_time("20261201T100000") == 1796119200.0
    assert _sig_time("soon") is None
