"""What a Pi owner types under sudo works as documented (seccam.privilege, seccam.cli).

The camera here is set up as install.sh leaves it: spool and state belong to a
service user (``nobody`` stands in for ``seccam``), and the commands run as
root with SUDO_UID/SUDO_GID set, exactly the code path of ``sudo seccam ...``:
the files a person names live in a 0700 directory the service user cannot
enter, are read or created before the switch, and what is written for the
person is theirs. No gpg-agent outlives a command.
"""

import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import run_entry
from helpers.coverage_env import with_coverage
from helpers.gpghome import OwnerKey, cleanup, new_short_dir
from helpers.readable import coverage_env_for, repo_for_others
from seccam import gpg as seccam_gpg
from seccam import privilege
from seccam.errors import DataError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switches users: needs root (tests/run runs as root)")

NOBODY = pwd.getpwnam("nobody")
PERSON = (4321, 4321)          # the uid/gid sudo reports for the person at the keyboard
OWNER = "owner@example.org"
SUDO = {"SUDO_UID": str(PERSON[0]), "SUDO_GID": str(PERSON[1]), "SUDO_USER": "pi"}


def agents_of(home):
    """pids of live gpg-agent processes serving ``home`` (from /proc, without asking gpg)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and argv and argv[0].endswith(b"gpg-agent") and str(home).encode() in argv:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def camera():
    """A camera directory as installed: config (root, 0600), spool and state of the service user,
    and the person's 0700 home beside it."""
    top = new_short_dir()
    os.chmod(top, 0o755)
    config = top / "seccam.toml"
    config.write_text(textwrap.dedent(f"""\
        spool_dir = "{top / 'spool'}"
        state_dir = "{top / 'state'}"
        [account]
        address = "cam@example.org"
        password = "pw"
        smtp_host = "127.0.0.1"
        [delivery]
        recipients = ["{OWNER}"]
        [[camera]]
        name = "front"
        device = "test"
        resolution = "640x480"
        [[camera]]
        name = "garage"
        device = "/dev/video-missing"
        timeout_s = 5
        """))
    config.chmod(0o600)
    for sub in ("spool", "state", "state/gnupg"):
        (top / sub).mkdir(mode=0o700)
        os.chown(top / sub, NOBODY.pw_uid, NOBODY.pw_gid)
    home = top / "home"
    home.mkdir(mode=0o700)
    os.chown(home, *PERSON)
    yield top
    for pid in agents_of(top / "state" / "gnupg"):
        os.kill(pid, signal.SIGKILL)
    cleanup(top)


def sudo_seccam(camera, *args, env=None, timeout=120):
    # The command switches to the service user, who must still be able to import seccam: from a
    # clone in a 0700 home, the code runs from a copy that the user nobody can read (helpers.readable).
    return run_entry("bin/seccam", *args, "--config", camera / "seccam.toml", env={**SUDO, **(env or {})},
                     timeout=timeout, repo=repo_for_others())


def seccam_as_nobody(*args, config_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_") and k != "SECCAM_CONFIG"}
    env.update({"SECCAM_NO_SYSLOG": "1", **(config_env or {})})
    repo = repo_for_others()  # a clone in a 0700 home is closed to nobody: a readable copy of it
    return subprocess.run([sys.executable, str(repo / "bin/seccam"), *map(str, args)],
                          env=coverage_env_for(repo, with_coverage(env)), user=NOBODY.pw_uid,
                          group=NOBODY.pw_gid, extra_groups=[], capture_output=True, text=True, timeout=60)


def ok(proc):
    assert proc.returncode == 0, f"{proc.returncode}: {proc.stderr}"
    return proc


def service_user_can_read(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}  # nothing of ours runs
    probe = subprocess.run([sys.executable, "-c", f"open({str(path)!r}, 'rb')"], env=env, user=NOBODY.pw_uid,
                           group=NOBODY.pw_gid, extra_groups=[], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def owner_key():
    key = OwnerKey(OWNER)
    yield key
    key.close()


def test_keys_import_reads_a_file_in_the_persons_0700_home(camera, owner_key):
    key_file = camera / "home" / "owner.asc"
    key_file.write_bytes(owner_key.armored())
    os.chown(key_file, *PERSON)
    assert not service_user_can_read(key_file)  # what made `sudo seccam keys import` fail before
    proc = ok(sudo_seccam(camera, "keys", "import", key_file))
    assert f"{OWNER}: pinned {owner_key.fpr}" in proc.stdout
    record = camera / "state" / "keys" / f"{OWNER}.json"
    assert record.stat().st_uid == NOBODY.pw_uid  # the key store stays the service's
    assert agents_of(camera / "state" / "gnupg") == []


def test_export_secret_writes_a_0600_file_owned_by_the_person_and_restore_reads_it_back(camera):
    backup = camera / "home" / "camera-key.asc"
    # Without a camera key the export fails and leaves nothing behind.
    proc = sudo_seccam(camera, "keys", "export-secret", "--output", backup)
    assert proc.returncode == 69 and "no camera key yet" in proc.stderr
    assert not backup.exists()
    fpr = ok(sudo_seccam(camera, "keys", "init")).stdout.split()[3]
    ok(sudo_seccam(camera, "keys", "export-secret", "--output", backup))
    st = backup.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (*PERSON, 0o600)
    assert backup.read_bytes().startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
    again = sudo_seccam(camera, "keys", "export-secret", "--output", backup)
    assert again.returncode == 65 and "exists" in again.stderr and backup.stat().st_size == st.st_size
    # The backup restores on another card; the file stays where it is, untouched.
    other = new_short_dir()
    try:
        os.chmod(other, 0o755)
        (other / "seccam.toml").write_text((camera / "seccam.toml").read_text().replace(str(camera), str(other)))
        (other / "seccam.toml").chmod(0o600)
        for sub in ("spool", "state"):
            (other / sub).mkdir()
            os.chown(other / sub, NOBODY.pw_uid, NOBODY.pw_gid)
        proc = ok(sudo_seccam(other, "keys", "restore", backup))
        assert f"camera key restored: {fpr}" in proc.stdout
        assert agents_of(other / "state" / "gnupg") == []
    finally:
        cleanup(other)
    assert agents_of(camera / "state" / "gnupg") == []


def test_cameras_keep_gives_the_person_the_pictures_and_names_the_failed_camera(camera):
    keep = camera / "home" / "tests" / "today"
    proc = sudo_seccam(camera, "cameras", "--keep", keep)
    assert proc.returncode == 69, proc.stderr
    front, garage = proc.stdout.splitlines()
    assert " ok " in front and garage.startswith("garage") and "no such device" in garage
    kept = sorted(p.name for p in keep.iterdir())
    assert len(kept) == 2 and all(n.startswith("front-") for n in kept)  # the failed camera left no files
    for path in [keep, keep.parent, *keep.iterdir()]:
        assert (path.stat().st_uid, path.stat().st_gid) == PERSON, path
    assert str(keep / kept[0]) in front
    assert (keep / kept[0]).read_bytes()[:3] == b"\xff\xd8\xff"


def test_a_person_without_sudo_is_told_to_use_it(camera):
    proc = seccam_as_nobody("status", "--config", camera / "seccam.toml")
    assert proc.returncode == 77
    assert proc.stderr.strip() == (f"seccam: error: {camera}/seccam.toml is readable only by root and the "
                                   f"service: run it with sudo:  sudo seccam status --config {camera}/seccam.toml")
    os.chown(camera / "seccam.toml", 0, NOBODY.pw_gid)  # readable through the group, as root:seccam 0640 is
    (camera / "seccam.toml").chmod(0o640)
    os.chown(camera / "spool", 0, 0)
    proc = seccam_as_nobody("status", config_env={"SECCAM_CONFIG": str(camera / "seccam.toml")})
    assert proc.returncode == 77
    assert f"the spool {camera}/spool and the camera's keys belong to root: run it with sudo:  " \
           "sudo seccam status" in proc.stderr


def test_termination_reaches_the_command_and_its_unfilled_files_are_removed(camera):
    fifo = camera / "fifo"
    os.mkfifo(fifo)  # a camera that never delivers a frame
    config = camera / "seccam.toml"
    config.write_text(config.read_text().split("[[camera]]")[0]
                      + f'[[camera]]\nname = "hang"\ndevice = "raw:{fifo}"\npalette = "RGB24"\ntimeout_s = 60\n')
    keep = camera / "home" / "keep"
    repo = repo_for_others()
    proc = subprocess.Popen([sys.executable, str(repo / "bin" / "seccam"), "cameras", "--keep", str(keep),
                             "--config", str(config)],
                            env=coverage_env_for(repo, {**os.environ, **SUDO, "SECCAM_NO_SYSLOG": "1"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(keep.glob("hang-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the child has switched and is waiting for the camera
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    # Release the fswebcam that was waiting for a frame (a real camera's capture ends by itself).
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert list(keep.iterdir()) == []


# -- the pieces ------------------------------------------------------------------------------------
def test_the_invoking_user_is_sudos_only_for_root(monkeypatch):
    assert privilege.invoking_user({"SUDO_UID": "1000", "SUDO_GID": "1001"}) == (1000, 1001)
    assert privilege.invoking_user({"SUDO_UID": "x", "SUDO_GID": "1"}) == (0, 0)
    assert privilege.invoking_user({}) == (0, 0)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    assert privilege.invoking_user({"SUDO_UID": "0", "SUDO_GID": "0"}) == (1000, 1000)


def test_outputs_are_new_files_never_through_a_symlink(tmp_path):
    files = privilege.CommandFiles(owner=PERSON)
    (tmp_path / "there").write_text("keep me")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name, said in (("there", "exists; choose another name"), ("link", "exists; choose another name"),
                       ("no/dir/f", "cannot create: No such file or directory")):
        with pytest.raises(DataError, match=said):
            files.create(tmp_path / name)
    assert (tmp_path / "there").read_text() == "keep me" and not (tmp_path / "elsewhere").exists()
    with files.create(tmp_path / "new", 0o640) as fh:
        fh.write(b"data")
    st = (tmp_path / "new").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (*PERSON, 0o640)


def test_only_outputs_left_empty_are_removed(tmp_path):
    files = privilege.CommandFiles()
    with files.create(tmp_path / "filled") as fh:
        fh.write(b"x")
    files.create(tmp_path / "empty").close()
    files.create(tmp_path / "replaced").close()
    (tmp_path / "other").write_text("")
    os.replace(tmp_path / "other", tmp_path / "replaced")  # another file now has the name: not ours to remove
    files.remove_unfilled()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filled", "replaced"]


def test_make_dir_gives_the_directories_it_makes_to_the_person(tmp_path):
    files = privilege.CommandFiles(owner=PERSON)
    made = Path(files.make_dir(tmp_path / "a" / "b"))
    assert made.is_dir() and (tmp_path / "a").stat().st_uid == PERSON[0] and made.stat().st_uid == PERSON[0]
    assert tmp_path.stat().st_uid == 0  # what existed stays as it was
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"file/x: cannot create: Not a directory"):
        files.make_dir(tmp_path / "file" / "x")


def test_inputs_larger_than_a_key_file_are_refused(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (privilege.MAX_INPUT_BYTES + 1))
    with pytest.raises(DataError, match="larger than 4 MiB; not a key file"):
        privilege.CommandFiles().read(big, what="key file")
    with pytest.raises(DataError, match="absent: cannot read: No such file or directory"):
        privilege.CommandFiles().read(tmp_path / "absent")


def test_without_root_nothing_switches(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    class Cfg:
        spool_dir = tmp_path
    assert privilege.spool_owner(Cfg) is None
    assert privilege.run_as_spool_owner(Cfg, lambda: 5) == 5


# -- gpg-agent ---------------------------------------------------------------------------------------
def test_an_agent_the_command_started_is_stopped_and_one_that_ran_before_is_left():
    top = new_short_dir()
    try:
        cfg = top / "seccam.toml"
        cfg.write_text(f'spool_dir = "{top}/spool"\nstate_dir = "{top}/state"\n'
                       '[account]\naddress = "cam@example.org"\npassword = "pw"\nsmtp_host = "127.0.0.1"\n')
        cfg.chmod(0o600)
        home = top / "state" / "gnupg"
        ok(run_entry("bin/seccam", "keys", "init", config=cfg))
        assert agents_of(home) == []
        # The service's agent (here: one started by hand) is running: a command uses it and leaves it.
        subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True)
        [service_agent] = agents_of(home)
        ok(run_entry("bin/seccam", "keys", "list", config=cfg))
        ok(run_entry("bin/seccam", "status", config=cfg))
        assert agents_of(home) == [service_agent]
    finally:
        cleanup(top)


def test_stopping_the_agent_lets_another_processs_signature_finish():
    """SIGTERM, not gpgconf --kill: a job signing at that moment must not lose its message."""
    home = new_short_dir()
    try:
        g = seccam_gpg.Gpg(home)
        fpr = g.generate_camera_key("cam@example.org")
        data = os.urandom(12_000_000)
        result = {}

        def sign():
            try:
                result["out"] = g.encrypt_sign(data, [fpr], signer=fpr)
            except seccam_gpg.GpgError as exc:  # pragma: no cover - the failure this test is about
                result["error"] = str(exc)
        worker = threading.Thread(target=sign)
        worker.start()
        time.sleep(0.3)
        assert seccam_gpg.stop_agent(home) is not None
        worker.join(120)
        assert "error" not in result and result["out"].startswith(b"-----BEGIN PGP MESSAGE-----")
        assert agents_of(home) == [] and seccam_gpg.agent_pid(home) is None
        assert seccam_gpg.stop_agent(home) is None  # none running: nothing to do
    finally:
        cleanup(home)


@pytest.fixture
def seccam_log(monkeypatch, caplog):
    import logging
    monkeypatch.setattr(logging.getLogger("seccam"), "propagate", True)  # setup_logging in other tests turns it off
    return caplog


def test_an_agent_that_cannot_be_signalled_or_will_not_stop_is_reported(monkeypatch, seccam_log):
    caplog = seccam_log
    assert seccam_gpg._running(2 ** 22 + 1) is False  # beyond pid_max: no such process
    home = new_short_dir()
    try:
        monkeypatch.setattr(seccam_gpg, "agent_pid", lambda h: os.getpid())
        monkeypatch.setattr(os, "kill", lambda pid, sig: None)  # this process ignores it
        assert seccam_gpg.stop_agent(home, timeout_s=0.05) is None
        assert "still serving after 0.05 s" in caplog.text

        def refuse(pid, sig):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "kill", refuse)
        assert seccam_gpg.stop_agent(home) is None
        assert "Operation not permitted" in caplog.text
    finally:
        cleanup(home)


def test_an_agent_that_outlives_its_sigterm_gets_gnupgs_forced_shutdown(monkeypatch, seccam_log):
    """GnuPG 2.4: an agent that got SIGTERM while serving never exits; the third SIGTERM ends it.
    A stand-in process that behaves so (real signals) is stopped, and reported as forced."""
    code = ("import signal, sys, time\n"
            "n = 0\n"
            "def term(*_):\n"
            "    global n\n"
            "    n += 1\n"
            "    if n == 3: sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, term)\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")})
    try:
        assert proc.stdout.readline() == "ready\n"
        monkeypatch.setattr(seccam_gpg, "agent_pid", lambda h: proc.pid)
        monkeypatch.setattr(seccam_gpg, "_running", lambda pid: proc.poll() is None)
        assert seccam_gpg.stop_agent("/nonexistent", timeout_s=0.2) == proc.pid
        assert proc.wait(5) == 0  # it took exactly three SIGTERMs
        assert f"pid={proc.pid} forced=after-0.2s" in seccam_log.text
    finally:
        proc.kill()
        proc.wait()


def test_the_agent_probe_survives_a_missing_gpg_connect_agent(monkeypatch, tmp_path, seccam_log):
    caplog = seccam_log
    monkeypatch.setenv("PATH", str(tmp_path))
    assert seccam_gpg.agent_pid(tmp_path) is None
    assert "event=agent_probe_failed" in caplog.text


def test_access_checks_name_the_owner_and_wait_for_a_spool(monkeypatch, tmp_path):
    class Cfg:
        spool_dir = tmp_path / "spool"
    assert privilege.spool_owner(Cfg) is None  # root, but no spool yet: nothing to switch to
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert privilege.check_access(Cfg, "seccam status") is None  # no spool yet: the command says what it needs
    Cfg.spool_dir.mkdir()
    os.chown(Cfg.spool_dir, *PERSON)  # a uid without a passwd entry
    with pytest.raises(privilege.NeedsRootError, match="belong to uid 4321: run it with sudo:  sudo seccam status"):
        privilege.check_access(Cfg, "seccam status")
