"""tests/distro (the README's commands on a fresh debootstrap rootfs): its arguments and messages.

The rootfs runs themselves are minutes long and need debootstrap and the network: .ci/run does
them on every landing (tests/distro trixie, tests/distro trixie --arch arm64).
"""

import pytest

from helpers.shell import run_bash


@pytest.mark.parametrize("args, said", [
    ((), "which release? e.g. tests/distro trixie"),
    (("trixie", "bookworm"), "one release only (got trixie and bookworm)"),
    (("Trixie!",), "not a Debian codename: Trixie!"),
    (("trixie", "--only", "everything"), "--only takes install or tests, not everything"),
    (("trixie", "--arch"), "--arch needs an architecture"),
    (("trixie", "--frobnicate"), "unknown option: --frobnicate"),
])
def test_usage_errors_exit_64_and_say_what_is_wrong(args, said):
    result = run_bash("tests/distro", *args)
    assert result.returncode == 64, result.stderr
    assert f"tests/distro: error: {said} (see tests/distro --help)" in result.stderr


def test_help_says_what_a_run_does():
    result = run_bash("tests/distro", "--help")
    assert result.returncode == 0
    for said in ("sudo tests/distro trixie --arch arm64", "--only WHAT", "--prepare", "--tools", "0700 home",
                 "env -i", "update-ca-certificates"):
        assert said in result.stdout, said


def test_it_needs_root():
    result = run_bash("tests/distro", "trixie", user=65534, group=65534)
    assert result.returncode == 1
    assert "needs root (debootstrap, chroot, mounts): run  sudo tests/distro trixie" in result.stderr
