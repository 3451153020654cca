"""Run the bin/ and jobs/ wrappers from tests so that coverage sees them.

    from helpers.wrappers import run_wrapper

    def test_capture_exits_0_when_queue_empty(tmp_path):
        result = run_wrapper("jobs/capture", "--config", tmp_path / "seccam.toml")
        assert result.returncode == 0, result.stderr

The wrappers' shebang is /usr/bin/python3, which does not see the test venv
and its coverage start-up hook. So a test must not execute a wrapper directly
(``[wrapper, ...]``); it runs it as ``[sys.executable, wrapper, ...]`` (the
venv interpreter under tests/run; it still is Debian's /usr/bin/python3 with
Debian's packages, through --system-site-packages). run_wrapper does that and
keeps the coverage variables in ``env``. Whether the shebang itself works is
the installer tests' business.
"""

import subprocess
import sys

from .coverage_env import REPO, with_coverage


def wrapper_command(wrapper, *args):
    """The argv that runs ``wrapper`` (relative to the repo root) under coverage."""
    return [sys.executable, str(REPO / wrapper), *map(str, args)]


def run_wrapper(wrapper, *args, env=None, **kw):
    """Run a bin/ or jobs/ wrapper and return the CompletedProcess.

    ``env`` is the whole environment, as for subprocess.run (default:
    os.environ); the coverage variables are added. Other keywords go to
    subprocess.run; the defaults are ``capture_output=True, text=True,
    timeout=60, check=False``.
    """
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    kw.setdefault("check", False)
    return subprocess.run(wrapper_command(wrapper, *args), env=with_coverage(env), **kw)
