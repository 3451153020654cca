"""What the account and setup tests share: an installed-looking configuration, the stand-in
relay as a fixture, and running ``seccam`` with logs on stderr.

``example_config(dir)`` is docs/example.toml, the file install.sh installs as
/etc/seccam/seccam.toml, with only what a test machine must change: the spool and state
paths (under ``dir``) and the camera devices (fswebcam's test sources). Everything else,
comments included, is the owner's file as shipped, so the tests edit what owners edit.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .coverage_env import REPO, with_coverage
from .relay import ChatmailRelay
from .readable import coverage_env_for

EXAMPLE = REPO / "docs" / "example.toml"


def adapt_to_this_machine(path, directory):
    """Point an installed configuration's spool and state into ``directory`` and its camera at
    fswebcam's test source: what a test machine needs that a Pi does not."""
    path, directory = Path(path), Path(directory)
    text = path.read_text()
    text = text.replace('spool_dir = "/var/spool/seccam"', f'spool_dir = "{directory / "spool"}"')
    text = text.replace('state_dir = "/var/lib/seccam"', f'state_dir = "{directory / "state"}"')
    path.write_text(text.replace('device = "/dev/video0"', 'device = "test"'))
    return path


def example_config(directory, mode=0o640):
    path = Path(directory) / "seccam.toml"
    path.write_text(EXAMPLE.read_text())
    path.chmod(mode)
    return adapt_to_this_machine(path, directory)


def configured_address(path):
    """The address in the file's [account] (read as text, as an owner would look)."""
    match = re.search(r'^\[account\]\s*$.*?^address = "([^"]+)"', Path(path).read_text(), re.M | re.S)
    return match.group(1) if match else None


def seccam(*args, config, stdin=None, env=None, timeout=120, repo=REPO):
    """Run bin/seccam with ``--config``, logs at debug level on stderr (SECCAM_LOG_STDERR, -v);
    from ``repo`` (helpers.readable's copy for a command that switches to another user)."""
    full = with_coverage(dict(os.environ))
    full.pop("SECCAM_CONFIG", None)
    full.update({"SECCAM_NO_SYSLOG": "1", "SECCAM_LOG_STDERR": "1"})
    full.update(env or {})
    return subprocess.run([sys.executable, str(Path(repo) / "bin/seccam"), "--config", str(config), "-v",
                           *map(str, args)],
                          input=stdin, capture_output=True, text=True, env=coverage_env_for(repo, full),
                          timeout=timeout)


@pytest.fixture
def relay(mailserver):
    """A stand-in chatmail relay on the session's loopback mail server (helpers.relay)."""
    with ChatmailRelay(mailserver) as r:
        yield r
