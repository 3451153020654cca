"""tests/run installs only missing Debian packages, and keeps daemons from
starting while it does.

The functions of tests/run are loaded into a bash driver (everything but its
last line, `main "$@"`), with apt-get replaced by a stub on PATH that logs
its arguments and whether the policy-rc.d guard was in place.
"""

import os
import shlex
from pathlib import Path

import pytest

from helpers.shell import run_bash

REPO = Path(__file__).resolve().parent.parent
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

DRIVER = """\
set -euo pipefail
source <(sed '$d' {run})
APT_PACKAGES=({packages})
{call}
"""

APT_GET_STUB = """\
#!/bin/bash
{{
  printf 'apt-get %s\\n' "$*"
  if [[ -x /usr/sbin/policy-rc.d ]]; then
    /usr/sbin/policy-rc.d cron start && echo "policy=0" || echo "policy=$?"
  else
    echo "policy=absent"
  fi
  echo "frontend=${{DEBIAN_FRONTEND:-}}"
}} >>{log}
"""


def _drive(tmp_path, packages, call, stub_text=APT_GET_STUB):
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    stub = stub_dir / "apt-get"
    stub.write_text(stub_text.format(log=log))
    stub.chmod(0o755)
    driver = tmp_path / "driver.bash"
    driver.write_text(DRIVER.format(run=REPO / "tests" / "run",
                                    packages=" ".join(packages), call=call))
    env = dict(os.environ, PATH=f"{stub_dir}:{os.environ['PATH']}")
    result = run_bash(driver, env=env)
    return result, (log.read_text() if log.exists() else "")


def test_missing_packages_lists_only_packages_not_installed(tmp_path):
    result, _ = _drive(tmp_path, ["bash", "seccam-no-such-package", "coreutils"],
                       "missing_packages")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["seccam-no-such-package"]


def test_nothing_missing_means_apt_get_is_not_called(tmp_path):
    result, log = _drive(tmp_path, ["bash", "coreutils"], "ensure_apt_packages")
    assert result.returncode == 0, result.stderr
    assert log == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
@pytest.mark.skipif(POLICY_RC_D.exists(), reason="this machine has its own policy-rc.d")
def test_missing_package_is_installed_with_daemons_blocked(tmp_path):
    result, log = _drive(tmp_path, ["bash", "seccam-no-such-package"],
                         "ensure_apt_packages")
    assert result.returncode == 0, result.stderr
    assert log.splitlines() == [
        # DPkg::Lock::Timeout: a run beside another apt (.ci/run's rootfs runs set up) waits for the lock
        "apt-get -o DPkg::Lock::Timeout=600 update -qq", "policy=101", "frontend=noninteractive",
        "apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends seccam-no-such-package",
        "policy=101", "frontend=noninteractive",
    ]
    assert not POLICY_RC_D.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
@pytest.mark.skipif(POLICY_RC_D.exists(), reason="this machine has its own policy-rc.d")
def test_policy_rc_d_is_removed_when_apt_get_fails(tmp_path):
    # As in main: the EXIT trap cleans up after abort's exit 1.
    result, _ = _drive(tmp_path, ["seccam-no-such-package"],
                       "trap cleanup EXIT\nensure_apt_packages",
                       stub_text="#!/bin/sh\nexit 100\n")
    assert result.returncode == 1
    assert "Failed during: apt-get update" in result.stderr
    assert not POLICY_RC_D.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
@pytest.mark.skipif(POLICY_RC_D.exists(), reason="this machine has its own policy-rc.d")
def test_an_existing_policy_rc_d_is_left_alone(tmp_path):
    POLICY_RC_D.write_text("#!/bin/sh\n# someone else's\nexit 101\n")
    try:
        POLICY_RC_D.chmod(0o755)
        result, log = _drive(tmp_path, ["seccam-no-such-package"],
                             "trap cleanup EXIT\nensure_apt_packages")
        assert result.returncode == 0, result.stderr
        assert "policy=101" in log
        assert "someone else's" in POLICY_RC_D.read_text()
    finally:
        POLICY_RC_D.unlink()


def _args_of(tmp_path, *args):
    """What gpiozero2_args makes of tests/run's ARGS (run from the repository root)."""
    result, _ = _drive(tmp_path, ["bash"], f"cd {REPO}; gpiozero2_args {shlex.join(args)}")
    assert result.returncode == 0, result.stderr
    return [arg for arg in result.stdout.split("\0") if arg]


def test_the_gpiozero2_pass_runs_the_sensor_and_poller_tests_with_the_options_given(tmp_path):
    both = ["tests/test_sensors.py", "tests/test_poller.py", "tests/test_early.py"]  # early: the poller's part
    assert _args_of(tmp_path) == both
    assert _args_of(tmp_path, "-q", "-k", "reload") == ["-q", "-k", "reload"] + both
    assert _args_of(tmp_path, "tests") == both  # a directory that holds them
    assert _args_of(tmp_path, "-x", "tests/test_poller.py::test_x", "tests/test_gpg.py") == [
        "-x", "tests/test_poller.py::test_x"]
    assert _args_of(tmp_path, "tests/test_gpg.py", "-q") == []  # other tests only: no second pass


def test_another_release_gets_a_warning_and_the_tests_run_anyway(tmp_path):
    os_release = tmp_path / "os-release"
    results = {}
    for version in ("13", "12", "11"):
        os_release.write_text(f'ID=debian\nVERSION_ID="{version}"\n')
        result, _ = _drive(tmp_path, ["bash"], f"OS_RELEASE_FILE={os_release} check_release; echo ran")
        assert result.returncode == 0 and result.stdout.strip() == "ran", result.stderr
        results[version] = result.stderr
    assert results["13"] == results["12"] == ""
    assert "not Debian 13 (trixie) or 12 (bookworm)" in results["11"] and "VERSION_ID=11" in results["11"]


def _workers(tmp_path, *args, cpus="2", setting=None):
    """WORKER_ARGS that tests/run gives the main pass for ARGS, with ``cpus`` CPUs (a stand-in
    nproc) and SECCAM_TEST_WORKERS=``setting``; (exit status, args, stderr)."""
    stub = tmp_path / "bin" / "nproc"  # _drive's stub directory, first on PATH
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f"#!/bin/sh\necho {cpus}\n")
    stub.chmod(0o755)
    assign = "unset SECCAM_TEST_WORKERS" if setting is None else f"SECCAM_TEST_WORKERS='{setting}'"
    result, _ = _drive(tmp_path, ["bash"], f"{assign}\nset_worker_args {shlex.join(args)}\n"
                                           "printf '%s\\n' \"${WORKER_ARGS[@]}\"")
    return result.returncode, result.stdout.split(), result.stderr


def test_the_main_pass_runs_one_worker_per_cpu_each_taking_whole_files(tmp_path):
    assert _workers(tmp_path) == (0, ["-n", "2", "--dist", "loadfile"], "")
    assert _workers(tmp_path, "-q", "-k", "crontab", cpus="16")[1] == ["-n", "4", "--dist", "loadfile"]
    assert _workers(tmp_path, cpus="1")[1] == []  # one CPU: no worker processes at all


def test_the_number_of_workers_can_be_chosen_and_a_bad_one_is_refused(tmp_path):
    assert _workers(tmp_path, setting="3", cpus="1")[1] == ["-n", "3", "--dist", "loadfile"]
    assert _workers(tmp_path, setting="0")[1] == [] and _workers(tmp_path, setting="1")[1] == []
    status, args, stderr = _workers(tmp_path, setting="many")
    assert status == 1 and args == []
    assert stderr.strip() == "tests/run: error: SECCAM_TEST_WORKERS=many: expected a number of workers (0 or 1: none)"


@pytest.mark.parametrize("given", [["-n", "3"], ["-n0"], ["--numprocesses=auto"], ["--dist", "load"],
                                   ["-p", "no:xdist"], ["-pno:xdist"], ["--pdb"], ["--trace"], ["-s"],
                                   ["--capture=no"], ["-x", "tests/test_gpg.py", "--pdb"]])
def test_arguments_that_choose_workers_or_need_one_process_are_left_as_given(tmp_path, given):
    assert _workers(tmp_path, *given) == (0, [], "")
