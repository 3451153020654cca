"""`seccam demo`: one full cycle on mock pins and fswebcam's test sources, delivered into a local
Maildir; the decrypted images are JPEGs and the Maildir holds only signed, encrypted PGP/MIME.

Also the demo's own parts: the Maildir delivery (refuses clear text, tmp -> new) and the
output directory rules (never empties a directory it did not make).
"""

import datetime
import email
import email.policy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers.gpghome import gpghome  # noqa: F401 - fixture
from helpers.wrappers import run_wrapper
from seccam import demo
from seccam.errors import PermanentError, UsageError
from seccam.maildir import Maildir, is_encrypted
from seccam.transport import SmtpPermanentError

pytestmark = pytest.mark.skipif(shutil.which("fswebcam") is None or shutil.which("gpg") is None,
                                reason="needs fswebcam and gpg")


@pytest.fixture
def out_dir():
    path = Path(tempfile.mkdtemp(prefix="scdemo-test-", dir="/tmp"))
    try:
        yield path / "demo"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_run():
    """One `seccam demo` run through the real entry point (shared: it takes about a second)."""
    top = Path(tempfile.mkdtemp(prefix="scdemo-test-", dir="/tmp"))
    homes_before = set(Path("/tmp").glob("scdemo-*"))
    try:
        result = run_wrapper("bin/seccam", "demo", "--dir", top / "demo", timeout=120)
        homes_after = set(Path("/tmp").glob("scdemo-*"))
        yield result, top / "demo", homes_after - homes_before
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_demo_runs_one_full_cycle(demo_run):
    result, directory, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"one full cycle on simulated hardware, in {directory}" in out
    assert "PIRs on GPIO 17 and 27 (mock pins) both high" in out
    assert "door ok, yard ok" in out
    assert "4 messages signed and encrypted" in out
    assert "seccam demo: ok" in out


def test_demo_writes_the_decrypted_images_as_jpegs(demo_run):
    _, directory, _ = demo_run
    images = sorted((directory / "images").iterdir())
    names = [p.name for p in images]
    # Per camera a preview and the full image, as an alarm sends them.
    assert len(images) == 4
    for camera in ("door", "yard"):
        assert len([n for n in names if n.startswith(camera + "-") and n.endswith("-preview.jpg")]) == 1
        assert len([n for n in names if n.startswith(camera + "-") and not n.endswith("-preview.jpg")]) == 1
    for image in images:
        data = image.read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\0").endswith(b"\xff\xd9"), image.name


def test_demo_maildir_holds_only_signed_encrypted_pgp_mime(demo_run, gpghome):
    _, directory, _ = demo_run
    gpg_home = gpghome
    delivered = sorted((directory / "Maildir/new").iterdir())
    assert len(delivered) == 4
    assert list((directory / "Maildir/tmp").iterdir()) == []
    images = [p.read_bytes() for p in (directory / "images").iterdir()]
    for path in delivered:
        raw = path.read_bytes()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg.get_content_type() == "multipart/encrypted"
        assert msg.get_param("protocol") == "application/pgp-encrypted"
        version, payload = msg.get_payload()
        assert version.get_content_type() == "application/pgp-encrypted"
        armored = payload.get_payload(decode=True)
        assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
        assert msg["Autocrypt"] and "addr=camera@demo.invalid" in str(msg["Autocrypt"])
        # No clear text anywhere: neither the images nor what the messages say.
        assert b"\xff\xd8\xff" not in raw and b"Motion detected" not in raw
        assert not any(image[:4096] in raw for image in images)
        packets = subprocess.run(["gpg", "--homedir", str(gpg_home), "--list-packets", "--batch"], input=armored,
                                 capture_output=True, timeout=30)
        tags = [line for line in packets.stdout.decode().splitlines() if line.startswith(":")]
        assert tags[-1].startswith(":encrypted data packet:"), tags
        assert all(t.startswith((":pubkey enc packet:", ":encrypted data packet:")) for t in tags), tags


def test_demo_spool_is_empty_after_the_cycle(demo_run):
    _, directory, _ = demo_run
    spool = directory / "spool"
    for state in ("events/new", "events/active", "sets/ready", "sets/active", "sets/held",
                  "outbox/new", "outbox/active", "outbox/deferred", "outbox/failed", "corrupt"):
        assert list((spool / state).iterdir()) == [], state
    assert len(list((spool / "events/done").iterdir())) == 1


def test_demo_leaves_no_gnupg_home_behind(demo_run):
    _, _, new_homes = demo_run
    assert new_homes == set()


def test_demo_runs_again_in_its_own_directory(out_dir):
    lines = []
    first = demo.run(out_dir, say=lines.append)
    assert len(first.arrived) == 4 and all(a.signer == first.camera_fpr for a in first.arrived)
    second = demo.run(out_dir, say=lines.append)
    # A new cycle with new keys; the earlier run's files are gone.
    assert second.camera_fpr != first.camera_fpr
    assert len(list((out_dir / "Maildir/new").iterdir())) == 4
    assert len(list((out_dir / "images").iterdir())) == 4


def test_demo_refuses_a_directory_with_other_files(out_dir):
    out_dir.mkdir()
    (out_dir / "thesis.tex").write_text("precious\n")
    with pytest.raises(UsageError, match="not empty and not an earlier demo's directory"):
        demo.prepare_dir(out_dir)
    assert (out_dir / "thesis.tex").read_text() == "precious\n"


def test_demo_refuses_a_file_as_directory(out_dir):
    out_dir.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        demo.prepare_dir(out_dir)


def test_demo_entry_point_reports_a_bad_directory_in_one_line(out_dir):
    out_dir.mkdir()
    (out_dir / "mine").write_text("x")
    result = run_wrapper("bin/seccam", "demo", "--dir", out_dir)
    assert result.returncode == 64
    assert result.stderr.startswith("seccam: error: ") and result.stderr.count("\n") == 1


def test_demo_default_directory_is_under_tmp_when_seccam_is_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "INSTALLED_STATE_DIR", tmp_path / "missing")
    path = demo.default_dir()
    try:
        assert path.parent == Path("/tmp") and path.name.startswith("seccam-demo-")
    finally:
        path.rmdir()


def test_demo_default_directory_is_under_the_state_dir_when_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "INSTALLED_STATE_DIR", tmp_path)
    monkeypatch.setattr(demo, "INSTALLED_DIR", tmp_path / "demo")
    assert demo.default_dir() == tmp_path / "demo"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_demo_run_by_root_leaves_its_files_owned_like_the_parent(out_dir):
    os.chown(out_dir.parent, 65534, 65534)
    demo.run(out_dir, say=lambda line: None)
    owners = {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in [out_dir, *out_dir.rglob("*")]}
    assert owners == {(65534, 65534)}


# -- the Maildir delivery ----------------------------------------------------------------------
ENCRYPTED = (b'From: a@b.invalid\r\nTo: c@d.invalid\r\nContent-Type: multipart/encrypted; '
             b'protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n--b--\r\n')
CLEAR = b"From: a@b.invalid\r\nTo: c@d.invalid\r\nContent-Type: text/plain\r\n\r\nhello\r\n"


def test_maildir_delivers_through_tmp_into_new_with_unique_names(tmp_path):
    box = Maildir(tmp_path / "Maildir")
    assert repr(box) == f"Maildir({str(tmp_path / 'Maildir')!r})"
    paths = [box.deliver(ENCRYPTED) for _ in range(20)]
    assert len(set(p.name for p in paths)) == 20
    assert all(p.parent == box.root / "new" and p.read_bytes() == ENCRYPTED for p in paths)
    assert list((box.root / "tmp").iterdir()) == []
    assert sorted(box.messages()) == sorted(paths)
    assert {oct(os.stat(box.root / d).st_mode & 0o777) for d in ("tmp", "new", "cur")} == {"0o700"}


def test_maildir_refuses_clear_text_like_a_chatmail_relay(tmp_path):
    box = Maildir(tmp_path / "Maildir")
    assert box.send(ENCRYPTED, "a@b.invalid", ["c@d.invalid"]) == {}
    with pytest.raises(SmtpPermanentError, match="not an OpenPGP/MIME encrypted message") as info:
        box.send(CLEAR, "a@b.invalid", ["c@d.invalid"])
    assert info.value.scope == "message" and info.value.smtp_code == 554
    box.close()
    assert len(box.messages()) == 1
    assert is_encrypted(ENCRYPTED) and not is_encrypted(CLEAR)


# -- the recipient's checks -------------------------------------------------------------------
@pytest.fixture(scope="module")
def delivered(demo_run):
    """The demo's delivered messages, copied into a fresh Maildir of their own."""
    _, directory, _ = demo_run
    top = Path(tempfile.mkdtemp(prefix="scdemo-test-", dir="/tmp"))
    box = Maildir(top / "Maildir")
    for path in sorted((directory / "Maildir/new").iterdir()):
        box.deliver(path.read_bytes())
    try:
        yield top, box
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def stranger(gpghome):
    from seccam.gpg import Gpg
    gpg = Gpg(gpghome)
    return gpg, gpg.generate_camera_key("stranger@demo.invalid")


def test_recipient_check_refuses_a_message_it_cannot_decrypt(delivered, stranger, tmp_path):
    top, box = delivered
    gpg, fpr = stranger
    with pytest.raises(PermanentError, match="the demo recipient cannot decrypt it"):
        demo.read_delivered(box, gpg, fpr, tmp_path / "images")


def test_recipient_check_refuses_clear_text(stranger, tmp_path):
    gpg, fpr = stranger
    box = Maildir(tmp_path / "Maildir")
    box.deliver(CLEAR)
    with pytest.raises(PermanentError, match="delivered in clear text"):
        demo.read_delivered(box, gpg, fpr, tmp_path / "images")


def test_recipient_check_refuses_a_signature_by_another_key(tmp_path):
    """The real owner key is gone with the demo, so decrypt with a demo run of our own."""
    out = tmp_path.parent / (tmp_path.name + "-d")
    homes = Path(tempfile.mkdtemp(prefix="scdemo-test-", dir="/tmp"))
    try:
        from seccam import config as _config
        from seccam.gpg import Gpg
        out.mkdir()
        config = _config.load(demo.write_config(out, out / "spool", homes / "cam"))
        camera_fpr, owner, _ = demo.make_keys(config, homes / "owner")
        camera = Gpg(config.state_dir / "gnupg")
        owner_fpr = owner.list_keys(secret=True)[0].fingerprint
        camera.import_keys(owner.export_armored(owner_fpr))
        from seccam import autocrypt, mime
        env = mime.Envelope(from_name="x", from_addr=config.account.address, to=("owner@demo.invalid",),
                            date=datetime.datetime.now(datetime.timezone.utc),
                            message_id="<x@demo.invalid>", subject="x")
        inner = mime.build_inner(env, "hello", None)
        binary = camera.encrypt_sign(inner, [owner_fpr, camera_fpr], signer=camera_fpr, armor=False)
        raw = mime.build_outer(env, autocrypt.build_header(config.account.address, camera.export_minimal(camera_fpr)),
                               mime.armor(mime.reframe(binary)))
        box = Maildir(out / "Maildir")
        box.deliver(raw)
        arrived = demo.read_delivered(box, owner, camera_fpr, out / "images")
        assert arrived[0].kind == "text" and arrived[0].text == "hello"
        with pytest.raises(PermanentError, match="not by the camera key"):
            demo.read_delivered(box, owner, owner_fpr, out / "images")
    finally:
        for home in (homes / "cam" / "gnupg", homes / "owner"):
            demo._stop_agent(home)
        shutil.rmtree(homes, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def test_wait_for_gives_up_after_its_timeout():
    with pytest.raises(PermanentError, match="no motion event after 0.01 s"):
        demo.wait_for(lambda: None, "motion event", timeout=0.01)


def test_demo_stops_when_a_camera_fails(out_dir, monkeypatch, tmp_path):
    template = tmp_path / "demo.toml"
    template.write_text(demo.TEMPLATE.read_text().replace('device = "test"', 'device = "/dev/video-missing"'))
    monkeypatch.setattr(demo, "TEMPLATE", template)
    with pytest.raises(PermanentError, match="demo: a camera failed .*door FAILED"):
        demo.run(out_dir, say=lambda line: None)
