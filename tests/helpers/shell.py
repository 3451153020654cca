"""Run the repo's bash scripts from tests, with bash coverage when enabled.

    from helpers.shell import run_bash

    def test_install_placeholder_exits_64():
        result = run_bash("install.sh")
        assert result.returncode == 64
        assert "not implemented" in result.stderr

When tests/run sets SECCAM_SHCOV_DIR, the script runs with
BASH_ENV=tests/shcov-env.bash, which traces it into that directory; the
trace goes to its own file descriptor, so stdout/stderr are unchanged.
"""

import subprocess

from .coverage_env import REPO, with_coverage
from .readable import coverage_env_for, repo_for_others


def run_bash(script, *args, env=None, **kw):
    """Run ``/bin/bash SCRIPT ARGS...`` and return the CompletedProcess.

    ``script`` is a path; a relative one is taken relative to the repo root
    (``run_bash("install.sh", "--dry-run")``). ``env`` is the whole
    environment, as for subprocess.run (default: os.environ); the coverage
    variables are added to it. Other keywords go to subprocess.run; the
    defaults are ``capture_output=True, text=True, timeout=60, check=False``. With
    ``user=`` another user than root, the script runs from a copy that user can read when it
    cannot read this checkout (helpers.readable).
    """
    repo = REPO
    if kw.get("user") not in (None, 0, "root"):
        # Another user may not be able to read this checkout (a clone in a 0700 home): it runs
        # a readable copy instead (helpers.readable).
        repo = repo_for_others()
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    kw.setdefault("check", False)
    return subprocess.run(
        ["/bin/bash", str(repo / script), *map(str, args)],
        env=coverage_env_for(repo, with_coverage(env)), **kw
    )
