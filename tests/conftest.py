"""Shared pytest set-up: lib/ on sys.path, short temp dirs, config files, running entry points.

Entry points are run as ``[sys.executable, path, ...]`` rather than through
their ``#!/usr/bin/python3`` line so that coverage follows them (the test
interpreter is /usr/bin/python3 or a venv built on it with Debian's packages).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.readable import coverage_env_for  # noqa: E402

pytest_plugins = [p for p in ("helpers.mailfixtures",) if (ROOT / "tests" / (p.replace(".", "/") + ".py")).exists()]


@pytest.fixture
def short_tmp():
    """A temp dir with a short path (GnuPG's agent socket fails past ~86 characters)."""
    path = Path(tempfile.mkdtemp(prefix="sc", dir="/tmp"))
    yield path
    if (path / "state" / "gnupg").exists():
        subprocess.run(["gpgconf", "--homedir", str(path / "state" / "gnupg"), "--kill", "all"],
                       check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


CAMERAS_OK = """
[[camera]]
name = "front"
device = "test"
resolution = "640x480"

[[camera]]
name = "yard"
device = "raw:/dev/urandom"
palette = "YUYV"
resolution = "720x540"
"""

CAMERA_BROKEN = """
[[camera]]
name = "garage"
device = "/dev/video-missing"
timeout_s = 5
"""


def write_config(directory, body="", cameras=CAMERAS_OK, mode=0o600):
    """Write a seccam.toml under ``directory`` with spool and state inside it; return its path."""
    directory = Path(directory)
    text = textwrap.dedent(f"""\
        spool_dir = "{directory / 'spool'}"
        state_dir = "{directory / 'state'}"
        """) + textwrap.dedent(body) + textwrap.dedent(cameras)
    path = directory / "seccam.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def mock_factory():
    """A fresh gpiozero MockFactory as the default pin factory (gpiozero's own test pattern);
    the previous default is always restored. gpiozero is imported only by tests that use it."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    saved = Device.pin_factory
    Device.pin_factory = factory = MockFactory()
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = saved


@pytest.fixture
def config_path(short_tmp):
    return write_config(short_tmp)


def run_entry(entry, *args, config=None, env=None, timeout=60, check=False, repo=None):
    """Run bin/ or jobs/ ENTRY (e.g. "bin/seccam") with the test interpreter, from ``repo`` (this
    checkout, or helpers.readable's copy for an entry that switches to another user)."""
    repo = Path(repo or ROOT)
    full_env = dict(os.environ)
    full_env.pop("SECCAM_CONFIG", None)
    full_env["SECCAM_NO_SYSLOG"] = "1"
    if config is not None:
        full_env["SECCAM_CONFIG"] = str(config)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(repo / entry), *map(str, args)],
                          env=coverage_env_for(repo, full_env),
                          capture_output=True, text=True, timeout=timeout, check=check)


def run_ok(run, *args, config):
    """Run an entry point that must succeed; the failure message carries its stderr."""
    proc = run(*args, config=config, timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.returncode} {proc.stderr}"
    return proc


@pytest.fixture
def run():
    return run_entry
