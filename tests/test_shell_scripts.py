"""Every bash script in the repo is ShellCheck clean and the entry scripts are executable."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.shell import run_bash

REPO = Path(__file__).resolve().parent.parent
# Must be executable in a clean clone (CI runs .ci/run, which execs tests/run).
ENTRY_SCRIPTS = ["install.sh", "tests/run", ".ci/run"]


def _is_bash(path):
    if path.suffix in (".sh", ".bash"):
        return True
    with path.open("rb") as f:
        return bool(re.match(rb"#!\s*(/usr)?/bin/(env\s+)?bash\b", f.readline(128)))


def bash_scripts():
    found = set()
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames
                       if d not in (".git", "__pycache__", ".pytest_cache")]
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink() and _is_bash(path):
                found.add(path.relative_to(REPO).as_posix())
    return sorted(found)


def test_the_entry_scripts_are_found_as_bash_scripts():
    assert set(ENTRY_SCRIPTS) | {"tests/shcov-env.bash"} <= set(bash_scripts())


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_script_is_executable(script):
    assert os.access(REPO / script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", bash_scripts())
def test_bash_script_is_shellcheck_clean(script):
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--external-sources", script],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_sh_help_runs_without_changing_anything():
    # Never run install.sh without --root or --dry-run from a test: that installs for real.
    # tests/test_install.py covers the installer itself.
    result = run_bash("install.sh", "--help")
    assert result.returncode == 0
    assert "sudo ./install.sh" in result.stdout
    assert "seccam demo" in result.stdout
