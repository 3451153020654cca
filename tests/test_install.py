"""install.sh: a staged installation (--root) checked file by file, re-runs that converge, the
conffile rule, --dry-run, --uninstall/--purge, and the messages for unsupported systems.

Everything runs install.sh through helpers.shell.run_bash (bash coverage). Only --root and
--dry-run runs touch nothing outside a temporary directory; the one real-mode run is a dry run
that must leave the system exactly as it was.
"""

import hashlib
import marshal
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers.cron import without_user_column
from helpers.shell import run_bash

REPO = Path(__file__).resolve().parent.parent
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
OUR_UNITS = sorted(p.name for p in (REPO / "lib/systemd/system").iterdir() if p.is_file())
# Paths a real installation touches: the dry run on this system must leave them as they were.
SYSTEM_PATHS = ["/etc/seccam", "/opt/seccam", "/var/lib/seccam", "/var/spool/seccam", "/etc/cron.d",
                "/etc/systemd/system", "/usr/local/bin/seccam"]


# -- helpers -------------------------------------------------------------------------------
def install(root, *args, env=None, **kw):
    kw.setdefault("timeout", 120)
    return run_bash("install.sh", "--root", root, *args, env=env, **kw)


def ok(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def changes(result):
    """The change lines of a run (`+ cmd` or `would run: cmd`)."""
    return [line for line in result.stdout.splitlines()
            if line.startswith("install.sh: + ") or line.startswith("install.sh: would run: ")]


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(*tops):
    """{path: (mode, uid, gid, content hash or link target)} of every path under ``tops``."""
    out = {}
    for top in map(Path, tops):
        if not top.exists() and not top.is_symlink():
            continue
        paths = [top] + (sorted(top.rglob("*")) if top.is_dir() and not top.is_symlink() else [])
        for p in paths:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = sha(p)
            else:
                what = "dir"
            out[str(p)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


def staged(root):
    return (root / "var/lib/seccam-install/staged").read_text().splitlines()


def os_release(tmp_path, text):
    path = tmp_path / "os-release"
    path.write_text(text)
    return {**os.environ, "SECCAM_OS_RELEASE": str(path)}


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def installed(root):
    ok(install(root))
    return root


# -- a staged installation -------------------------------------------------------------------
def test_root_install_creates_directories_with_their_modes(installed):
    expected = {"etc/seccam": 0o750, "var/lib/seccam": 0o700, "var/lib/seccam/gnupg": 0o700,
                "var/spool/seccam": 0o750, "opt/seccam": 0o755, "etc/systemd/system": 0o755}
    for rel, want in expected.items():
        assert (installed / rel).is_dir(), rel
        assert mode(installed / rel) == want, f"{rel}: {oct(mode(installed / rel))}"


def test_root_install_copies_the_code_executable_and_links_seccam_onto_path(installed):
    opt = installed / "opt/seccam"
    for rel in ["bin/seccam", "bin/seccam-poller", "jobs/capture", "jobs/heartbeat"]:
        assert (opt / rel).read_bytes() == (REPO / rel).read_bytes()
        assert mode(opt / rel) == 0o755, rel
    for py in (REPO / "lib/seccam").rglob("*.py"):
        rel = py.relative_to(REPO)
        if "__pycache__" not in rel.parts:
            assert (opt / rel).read_bytes() == py.read_bytes(), rel
            assert mode(opt / rel) == 0o644, rel
    assert (opt / "lib/seccam/data/demo.toml").is_file()
    assert (opt / "README.md").is_file() and (opt / "docs/example.toml").is_file()
    assert not list(opt.rglob("tests"))
    link = installed / "usr/local/bin/seccam"
    assert link.is_symlink() and os.readlink(link) == "/opt/seccam/bin/seccam"


def test_root_install_byte_compiles_every_module_with_its_installed_path(installed):
    lib = installed / "opt/seccam/lib/seccam"
    modules = [p for p in lib.rglob("*.py")]
    assert modules
    for py in modules:
        [pyc] = list((py.parent / "__pycache__").glob(py.stem + ".cpython-*.pyc"))
        code = marshal.loads(pyc.read_bytes()[16:])
        # Tracebacks name the installed path, not the staging directory.
        assert code.co_filename == "/" + str(py.relative_to(installed)), code.co_filename


def test_installed_wrapper_finds_its_library(installed):
    result = subprocess.run([sys.executable, installed / "opt/seccam/bin/seccam", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("seccam ")


def test_root_install_puts_the_conffiles_in_place(installed):
    cron = installed / "etc/cron.d/seccam"
    config = installed / "etc/seccam/seccam.toml"
    assert cron.read_bytes() == (REPO / "crontab").read_bytes() and mode(cron) == 0o644
    assert config.read_bytes() == (REPO / "docs/example.toml").read_bytes() and mode(config) == 0o640
    record = installed / "var/lib/seccam-install"
    assert (record / "cron.d-seccam.sha256").read_text().strip() == sha(REPO / "crontab")
    assert (record / "seccam.toml.sha256").read_text().strip() == sha(REPO / "docs/example.toml")


def test_staged_file_records_owners_user_and_packages(installed):
    lines = staged(installed)
    owners = {}
    for line in lines:
        if line.startswith("owner "):
            _, who, want, path = line.split(" ", 3)
            owners[path] = (who, want)
            # The recorded mode is the mode the file has in the root.
            assert mode(installed / path.lstrip("/")) == int(want, 8), line
    assert owners["/etc/seccam"] == ("root:seccam", "0750")
    assert owners["/etc/seccam/seccam.toml"] == ("root:seccam", "0640")
    assert owners["/var/lib/seccam"] == ("seccam:seccam", "0700")
    assert owners["/var/lib/seccam/gnupg"] == ("seccam:seccam", "0700")
    assert owners["/var/spool/seccam"] == ("seccam:seccam", "0750")
    assert owners["/etc/cron.d/seccam"] == ("root:root", "0644")
    assert owners["/opt/seccam/bin/seccam"] == ("root:root", "0755")
    assert "user seccam system home=/var/lib/seccam shell=/usr/sbin/nologin groups=gpio video" in lines
    [packages] = [line for line in lines if line.startswith("packages ")]
    for pkg in ("python3-gpiozero", "python3-gnupg", "python3-schedule", "gnupg", "fswebcam", "qrencode"):
        assert pkg in packages.split()
    assert "packages-if-available python3-lgpio" in lines


def test_root_install_says_what_it_skipped_and_the_next_step(root):
    result = ok(install(root))
    for what in ("packages", "user seccam", "services", "camera key", "demo"):
        assert f"skipped: {what}" in result.stdout
    assert "on the device: sudo seccam setup" in result.stdout


def _exec_programs(unit_dir):
    programs = set()
    for unit in unit_dir.glob("seccam-*.service"):
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip().startswith("Exec") and value.strip():
                programs.add(value.strip().lstrip("-@:+!").split()[0])
    return sorted(programs)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_installed_units_pass_systemd_analyze_verify(installed):
    shutil.copytree(SYSTEM_UNITS, installed / "usr/lib/systemd/system", symlinks=True)
    units = installed / "etc/systemd/system"
    assert sorted(p.name for p in units.iterdir() if p.is_file()) == OUR_UNITS
    for program in _exec_programs(units):
        # seccam's own programs must be there from the installation; system ones (/bin/kill)
        # come from this machine, as they would from the image's base system.
        if not program.startswith("/opt/seccam/"):
            (installed / program.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(program, installed / program.lstrip("/"))
    for unit in OUR_UNITS:
        result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={installed}", unit],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", f"{unit}: {result.stderr}"


def test_units_are_enabled_by_their_install_symlinks(installed):
    units = installed / "etc/systemd/system"
    assert os.readlink(units / "multi-user.target.wants/seccam-poller.service") == \
        "/etc/systemd/system/seccam-poller.service"
    for path_unit in ("seccam-capture.path", "seccam-send.path"):
        assert os.readlink(units / "paths.target.wants" / path_unit) == f"/etc/systemd/system/{path_unit}"
    # The jobs' services are started by their path units, not enabled.
    assert not list(units.glob("*.wants/seccam-capture.service"))


@pytest.mark.skipif(shutil.which("crontab") is None, reason="cron not installed")
def test_installed_cron_file_passes_crontab_dry_run(installed, tmp_path):
    copy = tmp_path / "crontab.nouser"
    copy.write_text(without_user_column((installed / "etc/cron.d/seccam").read_text()))
    result = subprocess.run(["crontab", "-n", str(copy)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + result.stdout


# -- re-runs converge ----------------------------------------------------------------------------
def test_second_run_changes_nothing(installed):
    before = snapshot(installed)
    result = ok(install(installed))
    assert changes(result) == []
    assert "nothing to change: seccam is installed and up to date" in result.stdout
    assert snapshot(installed) == before


def test_rerun_keeps_the_owners_edits_of_config_and_crontab(installed):
    cron = installed / "etc/cron.d/seccam"
    config = installed / "etc/seccam/seccam.toml"
    cron.write_text(cron.read_text().replace("0    *  *   *   *    root  /opt/seccam/bin/seccam-job heartbeat",
                                             "*/30 *  *   *   *    root  /opt/seccam/bin/seccam-job heartbeat"))
    assert "*/30 *" in cron.read_text()
    config.write_text(config.read_text() + '\n[delivery]\nrecipients = ["me@example.org"]\n')
    edited = {cron: cron.read_bytes(), config: config.read_bytes()}
    result = ok(install(installed))
    assert changes(result) == []
    for path, content in edited.items():
        assert path.read_bytes() == content
        # The default did not change: nothing to compare with, so no .dist.
        assert not path.with_name(path.name + ".dist").exists()


def test_edited_conffile_is_kept_and_new_default_written_beside_it(installed):
    cron = installed / "etc/cron.d/seccam"
    record = installed / "var/lib/seccam-install/cron.d-seccam.sha256"
    cron.write_text(cron.read_text() + "# my note\n")
    mine = cron.read_bytes()
    # As if the previous installation had shipped another default than this one.
    record.write_text(hashlib.sha256(b"an older default\n").hexdigest() + "\n")
    result = ok(install(installed))
    assert cron.read_bytes() == mine
    dist = installed / "etc/cron.d/seccam.dist"
    # cron ignores /etc/cron.d files with a dot in the name: the .dist copy never runs.
    assert dist.read_bytes() == (REPO / "crontab").read_bytes() and mode(dist) == 0o644
    assert "kept your version; the new default is /etc/cron.d/seccam.dist" in result.stdout
    assert record.read_text().strip() == sha(REPO / "crontab")
    again = ok(install(installed))
    assert changes(again) == [] and cron.read_bytes() == mine and dist.exists()
    # The owner merges the new default: the .dist copy goes away.
    shutil.copy(dist, cron)
    merged = ok(install(installed))
    assert not dist.exists()
    assert f"install.sh: + rm -rf {dist}" in changes(merged)
    assert changes(ok(install(installed))) == []


def test_config_edited_before_any_install_is_kept(root):
    config = root / "etc/seccam/seccam.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# written by hand before install.sh ran\n")
    ok(install(root))
    assert config.read_text() == "# written by hand before install.sh ran\n"
    assert mode(config) == 0o640
    assert (root / "etc/seccam/seccam.toml.dist").read_bytes() == (REPO / "docs/example.toml").read_bytes()


def test_unchanged_old_default_is_replaced_by_the_new_one(installed):
    cron = installed / "etc/cron.d/seccam"
    old = b"# the default of an older seccam\n"
    cron.write_bytes(old)
    cron.chmod(0o600)
    (installed / "var/lib/seccam-install/cron.d-seccam.sha256").write_text(hashlib.sha256(old).hexdigest() + "\n")
    result = ok(install(installed))
    assert cron.read_bytes() == (REPO / "crontab").read_bytes() and mode(cron) == 0o644
    assert not (installed / "etc/cron.d/seccam.dist").exists()
    assert "updated to the new default (you had not changed it)" in result.stdout


def test_rerun_repairs_modes_removes_stale_code_and_recompiles(installed):
    (installed / "etc/seccam").chmod(0o755)
    (installed / "etc/seccam/seccam.toml").chmod(0o644)
    stale = installed / "opt/seccam/lib/seccam/removed_module.py"
    stale.write_text("x = 1\n")
    result = ok(install(installed))
    assert mode(installed / "etc/seccam") == 0o750
    assert mode(installed / "etc/seccam/seccam.toml") == 0o640
    assert not stale.exists()
    assert any("compileall" in line for line in changes(result))
    assert changes(ok(install(installed))) == []


def test_rerun_after_a_python_upgrade_byte_compiles_for_the_new_python(installed):
    """bookworm -> trixie: the .pyc files of the old Python (3.11) do not count for the new one."""
    tag = sys.implementation.cache_tag
    cache = installed / "opt/seccam/lib/seccam/__pycache__"
    for pyc in cache.glob(f"*.{tag}.pyc"):
        pyc.rename(pyc.with_name(pyc.name.replace(tag, "cpython-39")))  # as if made by another Python
    result = ok(install(installed))
    assert any("compileall" in line for line in changes(result))
    assert list(cache.glob(f"errors.{tag}.pyc"))


def test_rerun_byte_compiles_modules_whose_pyc_files_are_gone(installed):
    shutil.rmtree(installed / "opt/seccam/lib/seccam/commands/__pycache__")
    result = ok(install(installed))
    assert [line for line in changes(result) if "compileall" in line]
    assert list((installed / "opt/seccam/lib/seccam/commands/__pycache__").glob("*.pyc"))


def test_a_failing_step_is_named_and_stops_the_installation(root):
    (root / "etc").mkdir()
    (root / "etc/seccam").write_text("a file where a directory belongs\n")
    result = install(root)
    assert result.returncode == 1
    assert f"install.sh: error: Failed during: install -d -m 0750 {root}/etc/seccam" in result.stderr
    assert not (root / "opt/seccam").exists()


def test_a_missing_tool_is_named(root, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "dpkg", "mktemp", "install", "find", "sha256sum", "stat", "ln",
                 "readlink", "rm", "mv", "chmod", "id", "sort"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = install(root, env={**os.environ, "PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "install.sh: error: need 'cmp' (command not found)" in result.stderr


@pytest.mark.parametrize("flag, said", [("--demo", "skipped: demo: not run in a staging root"),
                                        ("--no-demo", None)])
def test_demo_flags_in_a_staging_root(root, flag, said):
    result = ok(install(root, flag))
    if said:
        assert said in result.stdout
    else:
        assert "skipped: demo" not in result.stdout


def test_a_file_in_the_way_of_the_symlink_is_replaced(root):
    link = root / "usr/local/bin/seccam"
    link.parent.mkdir(parents=True)
    link.write_text("an old script\n")
    result = ok(install(root))
    assert os.readlink(link) == "/opt/seccam/bin/seccam"
    assert "is not a symlink; replacing it" in result.stderr


# -- dry run -----------------------------------------------------------------------------------
def test_dry_run_into_a_root_changes_nothing_and_lists_the_changes(root):
    result = ok(install(root, "--dry-run"))
    assert list(root.iterdir()) == []
    lines = changes(result)
    assert lines and all(line.startswith("install.sh: would run: ") for line in lines)
    assert any("/etc/cron.d/seccam" in line for line in lines)
    assert re.search(r"dry run: \d+ change\(s\) would be made; nothing was changed", result.stdout)


def test_dry_run_after_an_edit_lists_only_the_repair(installed):
    (installed / "var/spool/seccam").chmod(0o777)
    before = snapshot(installed)
    result = ok(install(installed, "--dry-run"))
    assert snapshot(installed) == before
    assert changes(result) == [f"install.sh: would run: chmod 0750 {installed}/var/spool/seccam"]


def test_dry_run_on_this_system_changes_nothing():
    before = snapshot(*SYSTEM_PATHS)
    result = run_bash("install.sh", "--dry-run", timeout=120)
    assert result.returncode == 0, result.stderr
    assert snapshot(*SYSTEM_PATHS) == before
    assert "install.sh: + " not in result.stdout
    assert ("nothing to change" in result.stdout) or ("nothing was changed" in result.stdout)


def test_installing_for_real_needs_root():
    result = run_bash("install.sh", user=65534)
    assert result.returncode == 1
    assert "installing needs root: run  sudo ./install.sh" in result.stderr


def test_a_staging_root_can_be_filled_without_root():
    top = Path(tempfile.mkdtemp(prefix="scroot", dir="/tmp"))
    try:
        os.chown(top, 65534, 65534)
        result = run_bash("install.sh", "--root", top, user=65534, group=65534, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "not root: the files in" in result.stdout
        assert os.stat(top / "opt/seccam/bin/seccam").st_uid == 65534
    finally:
        shutil.rmtree(top)


# -- uninstall ---------------------------------------------------------------------------------
def _key_and_spool(root):
    key = root / "var/lib/seccam/gnupg/private-keys-v1.d/CAMERA.key"
    key.parent.mkdir(parents=True)
    key.write_text("(a camera key)\n")
    item = root / "var/spool/seccam/outbox/new/x.eml"
    item.parent.mkdir(parents=True)
    item.write_text("ciphertext\n")
    return key, item


def test_uninstall_removes_code_units_and_cron_but_keeps_config_key_and_spool(installed):
    key, item = _key_and_spool(installed)
    (installed / "etc/cron.d/seccam.dist").write_text("old default\n")
    result = ok(install(installed, "--uninstall"))
    assert not (installed / "opt/seccam").exists()
    assert not (installed / "usr/local/bin/seccam").is_symlink()
    assert not (installed / "etc/cron.d/seccam").exists()
    assert not (installed / "etc/cron.d/seccam.dist").exists()
    assert not [p for p in (installed / "etc/systemd/system").rglob("seccam*")]
    assert (installed / "etc/seccam/seccam.toml").is_file()
    assert key.is_file() and item.is_file()
    assert "kept: /etc/seccam (configuration), /var/lib/seccam (the camera key)" in result.stdout
    again = ok(install(installed, "--uninstall"))
    assert "nothing to change: seccam is not installed" in again.stdout
    # Installing again brings the crontab back and keeps the configuration.
    ok(install(installed))
    assert (installed / "etc/cron.d/seccam").read_bytes() == (REPO / "crontab").read_bytes()


def test_purge_removes_config_key_and_spool_too(installed):
    _key_and_spool(installed)
    result = ok(install(installed, "--uninstall", "--purge"))
    for rel in ("etc/seccam", "var/lib/seccam", "var/spool/seccam", "opt/seccam", "var/lib/seccam-install"):
        assert not (installed / rel).exists(), rel
    assert "a new key is a new chat" in result.stderr


def test_dry_run_uninstall_changes_nothing(installed):
    before = snapshot(installed)
    result = ok(install(installed, "--uninstall", "--purge", "--dry-run"))
    assert snapshot(installed) == before
    assert any(line.endswith(f"rm -rf {installed}/var/lib/seccam") for line in changes(result))


# -- what the service user can write, root never follows (issue 10) -------------------------------
def test_every_service_gets_the_shared_sandbox_drop_in_and_uninstall_removes_it(installed):
    drop_in = installed / "etc/systemd/system/seccam-.service.d/hardening.conf"
    assert drop_in.read_bytes() == (REPO / "lib/systemd/system/seccam-.service.d/hardening.conf").read_bytes()
    assert mode(drop_in) == 0o644
    assert (installed / "opt/seccam/bin/seccam-job").stat().st_mode & 0o111
    ok(install(installed, "--uninstall"))
    assert not drop_in.parent.exists()


def test_the_install_records_live_where_only_root_writes(installed):
    assert (installed / "var/lib/seccam-install/cron.d-seccam.sha256").is_file()
    assert not (installed / "var/lib/seccam/install").exists()
    assert ("root:root", "0755") == next((who, want) for line in staged(installed) if line.startswith("owner ")
                                         for _, who, want, path in [line.split(" ", 3)]
                                         if path == "/var/lib/seccam-install")


def test_an_older_versions_records_are_read_once_and_removed(installed):
    """Upgrade from a version that kept its records in /var/lib/seccam/install: an unedited old
    crontab still gets the new default, and the old directory goes."""
    cron = installed / "etc/cron.d/seccam"
    old = b"# the default of an older seccam\n"
    cron.write_bytes(old)
    shutil.rmtree(installed / "var/lib/seccam-install")
    legacy = installed / "var/lib/seccam/install"
    legacy.mkdir()
    (legacy / "cron.d-seccam.sha256").write_text(hashlib.sha256(old).hexdigest() + "\n")
    result = ok(install(installed))
    assert cron.read_bytes() == (REPO / "crontab").read_bytes()
    assert "updated to the new default (you had not changed it)" in result.stdout
    assert not legacy.exists()
    assert (installed / "var/lib/seccam-install/cron.d-seccam.sha256").read_text().strip() == sha(REPO / "crontab")


def test_a_symlink_planted_for_the_old_records_is_not_followed(installed, tmp_path):
    cron = installed / "etc/cron.d/seccam"
    mine = b"# my own crontab\n"
    cron.write_bytes(mine)
    shutil.rmtree(installed / "var/lib/seccam-install")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cron.d-seccam.sha256").write_text(hashlib.sha256(mine).hexdigest() + "\n")
    (installed / "var/lib/seccam/install").symlink_to(elsewhere)
    result = ok(install(installed))
    assert cron.read_bytes() == mine  # the planted "record" did not make root overwrite it
    assert "kept your version" in result.stdout
    assert not (installed / "var/lib/seccam/install").is_symlink()
    assert (elsewhere / "cron.d-seccam.sha256").is_file()  # what the link pointed to is untouched


def test_a_symlink_planted_as_the_gnupg_home_is_replaced_not_followed(installed, tmp_path):
    gnupg = installed / "var/lib/seccam/gnupg"
    shutil.rmtree(gnupg)
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    gnupg.symlink_to(victim)
    result = ok(install(installed))
    assert gnupg.is_dir() and not gnupg.is_symlink() and mode(gnupg) == 0o700
    assert mode(victim) == 0o755
    assert "was a symlink" in result.stderr


# -- arguments and unsupported systems ---------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--purge"], "--purge only goes with --uninstall"),
    (["--frobnicate"], "unknown argument: --frobnicate"),
    (["--root"], "--root needs a directory"),
    (["--root", "/nonexistent/seccam-root"], "not a directory"),
])
def test_usage_errors_exit_64(args, message):
    result = run_bash("install.sh", *args)
    assert result.returncode == 64
    assert message in result.stderr


def test_help_describes_the_options():
    result = run_bash("install.sh", "--help")
    assert result.returncode == 0
    for option in ("--dry-run", "--uninstall", "--purge", "--root DIR", "--force"):
        assert option in result.stdout
    assert "set -euo" not in result.stdout


def test_root_equals_slash_means_this_system(tmp_path):
    result = run_bash("install.sh", "--root=/", "--dry-run", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "staging root" not in result.stdout


UBUNTU = 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n' \
         'VERSION_CODENAME=jammy\n'
DEBIAN_11 = 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nVERSION_ID="11"\nID=debian\nVERSION_CODENAME=bullseye\n'
FEDORA = 'NAME="Fedora Linux"\nVERSION_ID=40\nID=fedora\nPRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\n'
RASPBIAN = 'PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\nNAME="Raspbian GNU/Linux"\nVERSION_ID="12"\n' \
           'VERSION_CODENAME=bookworm\nID=raspbian\nID_LIKE=debian\n'
# Debian 13 as debootstrap and the Debian installer leave it; 64-bit Raspberry Pi OS trixie says the
# same (ID=debian); 32-bit Raspberry Pi OS trixie (Pi Zero W) says ID=raspbian.
DEBIAN_13 = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n' \
            'VERSION="13 (trixie)"\nVERSION_CODENAME=trixie\nDEBIAN_VERSION_FULL=13.2\nID=debian\n'
RASPBIAN_13 = 'PRETTY_NAME="Raspbian GNU/Linux 13 (trixie)"\nNAME="Raspbian GNU/Linux"\nVERSION_ID="13"\n' \
              'VERSION_CODENAME=trixie\nID=raspbian\nID_LIKE=debian\n'
DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n' \
            'VERSION_CODENAME=bookworm\nID=debian\n'
# Debian testing has no VERSION_ID; before its release trixie looked like this.
TRIXIE_PRERELEASE = 'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nVERSION_CODENAME=trixie\nID=debian\n'
FORKY = 'PRETTY_NAME="Debian GNU/Linux forky/sid"\nNAME="Debian GNU/Linux"\nVERSION_CODENAME=forky\nID=debian\n'


@pytest.mark.parametrize("text, found", [
    (UBUNTU, "found Ubuntu 22.04.4 LTS (ID=ubuntu VERSION_ID=22.04 VERSION_CODENAME=jammy"),
    (DEBIAN_11, "found Debian GNU/Linux 11 (bullseye) (ID=debian VERSION_ID=11"),
    (FORKY, "found Debian GNU/Linux forky/sid (ID=debian VERSION_ID=? VERSION_CODENAME=forky"),
])
def test_other_debian_releases_are_refused_with_what_was_found(root, tmp_path, text, found):
    result = install(root, env=os_release(tmp_path, text))
    assert result.returncode == 69
    assert "unsupported system: " + found in result.stderr
    assert "Raspberry Pi OS or Debian 13 (trixie) and 12 (bookworm)" in result.stderr
    assert "run again with --force" in result.stderr
    assert list(root.iterdir()) == []


def test_force_installs_on_another_debian_release_with_a_warning(root, tmp_path):
    result = install(root, "--force", env=os_release(tmp_path, UBUNTU))
    assert result.returncode == 0, result.stderr
    assert "not supported, going on because of --force" in result.stderr
    assert (root / "opt/seccam/bin/seccam").is_file()


def test_a_system_without_debian_is_refused_even_with_force(root, tmp_path):
    result = install(root, "--force", env=os_release(tmp_path, FEDORA))
    assert result.returncode == 69
    assert "Fedora Linux 40" in result.stderr and "--force does not change that" in result.stderr


def test_raspberry_pi_os_bookworm_is_supported(root, tmp_path):
    result = install(root, env={**os_release(tmp_path, RASPBIAN), "SECCAM_ARCH": "armhf"})
    assert result.returncode == 0, result.stderr
    assert "system: Raspbian GNU/Linux 12 (bookworm) on armhf" in result.stdout


@pytest.mark.parametrize("text, arch, said", [
    (DEBIAN_13, "amd64", "Debian GNU/Linux 13 (trixie) on amd64"),
    (DEBIAN_13, "arm64", "Debian GNU/Linux 13 (trixie) on arm64"),  # also 64-bit Raspberry Pi OS trixie
    (RASPBIAN_13, "armhf", "Raspbian GNU/Linux 13 (trixie) on armhf"),
    (DEBIAN_12, "arm64", "Debian GNU/Linux 12 (bookworm) on arm64"),
    (TRIXIE_PRERELEASE, "arm64", "Debian GNU/Linux trixie/sid on arm64"),
], ids=["debian13-amd64", "debian13-arm64", "raspbian13-armhf", "debian12-arm64", "trixie-prerelease"])
def test_trixie_and_bookworm_are_supported_without_force(root, tmp_path, text, arch, said):
    result = install(root, env={**os_release(tmp_path, text), "SECCAM_ARCH": arch})
    assert result.returncode == 0, result.stderr
    assert f"system: {said}" in result.stdout and "--force" not in result.stderr


@pytest.mark.parametrize("text", [DEBIAN_13, DEBIAN_12], ids=["trixie", "bookworm"])
def test_reruns_upgrades_and_uninstall_work_on_both_releases(root, tmp_path, text):
    env = {**os_release(tmp_path, text), "SECCAM_ARCH": "arm64"}
    ok(install(root, env=env))
    assert changes(ok(install(root, env=env))) == []  # a re-run converges
    (root / "opt/seccam/lib/seccam/obsolete.py").write_text("# from an older version\n")
    upgrade = ok(install(root, env=env))  # an upgrade removes what the new version no longer has
    assert not (root / "opt/seccam/lib/seccam/obsolete.py").exists() and changes(upgrade)
    ok(install(root, "--uninstall", env=env))
    assert not (root / "opt/seccam").exists() and (root / "etc/seccam/seccam.toml").is_file()
    ok(install(root, "--uninstall", "--purge", env=env))
    assert not (root / "etc/seccam").exists()


def test_unknown_architecture_is_refused(root):
    result = install(root, env={**os.environ, "SECCAM_ARCH": "riscv64"})
    assert result.returncode == 69
    assert "architecture riscv64" in result.stderr


def test_missing_os_release_is_refused(root, tmp_path):
    result = install(root, env={**os.environ, "SECCAM_OS_RELEASE": str(tmp_path / "nothing")})
    assert result.returncode == 69
    assert "cannot read" in result.stderr and "nothing" in result.stderr


def test_os_release_of_the_staging_root_is_used(root):
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(DEBIAN_11)
    env = {k: v for k, v in os.environ.items() if k != "SECCAM_OS_RELEASE"}
    result = install(root, env=env)
    assert result.returncode == 69
    assert f"from {root}/etc/os-release" in result.stderr


def test_without_dpkg_the_kernel_architecture_is_checked(root, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "uname", "mktemp", "install", "find", "cmp", "sha256sum", "stat",
                 "ln", "readlink", "rm", "mv", "chmod", "id", "sort", "cat", "sed", "grep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in os.environ.items() if k != "SECCAM_ARCH"}
    result = install(root, env={**env, "PATH": str(bin_dir)})
    machine = os.uname().machine
    if machine in ("armhf", "armel"):
        assert result.returncode == 0, result.stderr  # uname -m names these as dpkg does
    else:
        # uname -m says x86_64/aarch64 where dpkg says amd64/arm64: refused, and the message says what was seen.
        assert result.returncode == 69
        assert f"architecture {machine}" in result.stderr


def _stub(bin_dir, name, script):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


def test_dry_run_on_a_bare_system_lists_packages_groups_and_user(tmp_path):
    # This system as a fresh image would look to install.sh: no package installed (all of them
    # available), no groups, no user. Stubs answer the queries; --dry-run changes nothing.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "dpkg-query", "exit 1")
    _stub(bin_dir, "apt-cache", "exit 0")
    _stub(bin_dir, "getent", "exit 2")
    _stub(bin_dir, "id", 'if [ "$1" = -nG ]; then exit 1; fi\nexec /usr/bin/id "$@"')
    before = snapshot(*SYSTEM_PATHS)
    result = run_bash("install.sh", "--dry-run", "--no-demo", timeout=120,
                      env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert snapshot(*SYSTEM_PATHS) == before
    planned = [line.removeprefix("install.sh: would run: ") for line in changes(result)]
    assert "install.sh: + " not in result.stdout
    assert planned[0] == "env DEBIAN_FRONTEND=noninteractive apt-get update -qq"
    install_line = planned[1]
    assert install_line.startswith("env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                                   "--no-install-recommends python3 ")
    assert install_line.endswith(" python3-lgpio")  # optional, and available here
    assert "groupadd --system gpio" in planned and "groupadd --system video" in planned
    assert ("useradd --system --user-group --home-dir /var/lib/seccam --no-create-home --shell "
            "/usr/sbin/nologin --comment seccam security camera seccam") in planned
    assert "usermod -a -G gpio seccam" in planned and "usermod -a -G video seccam" in planned


def test_dry_run_purge_on_this_system_lists_removing_the_user(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "getent", "exit 0")  # the user seccam exists
    before = snapshot(*SYSTEM_PATHS)
    result = run_bash("install.sh", "--uninstall", "--purge", "--dry-run", timeout=120,
                      env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert snapshot(*SYSTEM_PATHS) == before
    assert "install.sh: + " not in result.stdout
    assert changes(result)[-1] == "install.sh: would run: userdel seccam"


def test_dry_run_without_root_warns_that_the_list_may_be_longer():
    before = snapshot(*SYSTEM_PATHS)
    result = run_bash("install.sh", "--dry-run", "--no-demo", user=65534, group=65534, timeout=120)
    assert result.returncode == 0, result.stderr
    assert snapshot(*SYSTEM_PATHS) == before
    assert "not root: some state is unreadable, so the list of changes may be longer" in result.stderr
    assert "install.sh: + " not in result.stdout


# -- uninstall leaves nothing empty behind; re-runs; the GPIO pin library -------------------------------
KEPT = ("etc/seccam", "var/lib/seccam", "var/spool/seccam", "var/lib/seccam-install")


def empty_dirs(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_dir() and not p.is_symlink() and not any(p.iterdir()))


def test_uninstall_leaves_no_empty_directory_it_created(installed):
    assert (installed / "etc/systemd/system/paths.target.wants").is_dir()
    ok(install(installed, "--uninstall"))
    assert not (installed / "etc/systemd/system/paths.target.wants").exists()
    assert [d for d in empty_dirs(installed) if not d.startswith(KEPT)] == []
    assert sorted(str(p.relative_to(installed)) for p in installed.iterdir()) == ["etc", "var"]
    ok(install(installed))  # installing again records its directories again
    ok(install(installed, "--uninstall", "--purge"))
    assert list(installed.iterdir()) == []  # the staging root is as empty as before the first install


def test_uninstall_keeps_directories_that_were_there_before(root):
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/systemd/system/multi-user.target.wants/ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    ok(install(root))
    ok(install(root, "--uninstall", "--purge"))
    assert (root / "usr/local/bin").is_dir()
    assert os.listdir(root / "etc/systemd/system/multi-user.target.wants") == ["ssh.service"]
    assert not (root / "etc/systemd/system/paths.target.wants").exists()


def test_uninstall_of_an_installation_without_the_record_removes_the_empty_wants_directories(installed):
    record = installed / "var/lib/seccam-install/created-dirs"
    record.unlink()  # installed by an older install.sh
    ok(install(installed))
    assert not record.exists()  # an upgrade creates no directory: nothing to record
    ok(install(installed, "--uninstall"))
    assert not (installed / "etc/systemd/system/paths.target.wants").exists()
    assert not (installed / "etc/systemd/system/multi-user.target.wants").exists()


def test_an_upgrade_does_not_run_the_demo_again_unless_asked(root):
    first = ok(install(root))
    assert "skipped: demo: not run in a staging root" in first.stdout
    again = ok(install(root))
    assert "skipped: demo: not run again on an upgrade (ask for it with --demo, or run it any time: " \
           "sudo seccam demo)" in again.stdout
    asked = ok(install(root, "--demo"))
    assert "skipped: demo: not run in a staging root" in asked.stdout


def _model(tmp_path, text):
    path = tmp_path / "model"
    path.write_bytes(text.encode() + b"\0")
    return str(path)


def _pin_libraries(tmp_path, *modules):
    """Importable stand-ins for pin libraries this machine cannot have (lgpio is not in Debian)."""
    lib = tmp_path / "pylib"
    for module in modules:
        path = lib / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("raise ImportError('a stand-in: never imported')\n")
        if "." in module:
            (path.parent / "__init__.py").write_text("")
    return str(lib)


def test_the_gpio_pin_library_is_checked_on_the_device_not_in_a_staging_root(root):
    result = ok(install(root))
    assert "skipped: GPIO: the pin library is checked on the device" in result.stdout


def test_install_says_which_pin_library_gpiozero_uses_on_this_board(tmp_path):
    env = {**os.environ, "SECCAM_DT_MODEL": _model(tmp_path, "Raspberry Pi 5 Model B Rev 1.0"),
           "PYTHONPATH": _pin_libraries(tmp_path, "lgpio")}
    result = run_bash("install.sh", "--dry-run", "--no-demo", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "install.sh: GPIO: board Raspberry Pi 5 Model B Rev 1.0: gpiozero 1.6.2 will use lgpio\n" in result.stdout
    assert "GPIO" not in result.stderr


def test_install_warns_when_no_pin_library_drives_this_board(tmp_path):
    env = {**os.environ, "SECCAM_DT_MODEL": _model(tmp_path, "Raspberry Pi 5 Model B Rev 1.0"),
           "PYTHONPATH": _pin_libraries(tmp_path, "RPi.GPIO")}
    result = run_bash("install.sh", "--dry-run", "--no-demo", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "install.sh: GPIO: board Raspberry Pi 5 Model B Rev 1.0: gpiozero 1.6.2 will use RPi.GPIO" in result.stdout
    assert ("install.sh: warning: GPIO: no installed pin library drives this board's GPIO (the RP1 chip; RPi.GPIO "
            "does not): the poller will not see motion. Install lgpio: sudo apt install python3-lgpio") in result.stderr


def test_install_says_so_on_a_machine_without_gpio(tmp_path):
    env = {**os.environ, "SECCAM_DT_MODEL": str(tmp_path / "no-such-model")}
    result = run_bash("install.sh", "--dry-run", "--no-demo", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "install.sh: GPIO: no GPIO here: no device-tree model (not a Raspberry Pi, or a container)" in result.stdout


# -- commands are written the same everywhere --------------------------------------------------------
def _documents():
    return [REPO / "install.sh", REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "crontab"]


def test_commands_are_written_the_same_in_install_messages_readme_and_docs():
    from seccam import cli
    subcommands = set(cli._command_names())
    for doc in _documents():
        text = doc.read_text()
        # The service's own commands run under sudo: they switch to the service user themselves.
        assert not re.search(r"sudo -u \S+ (seccam|/opt/seccam/)", text), doc
        for match in re.finditer(r"\bsudo seccam ([a-z-]+)", text):
            assert match.group(1).replace("-", "_") in subcommands, f"{doc}: {match.group(0)}"
