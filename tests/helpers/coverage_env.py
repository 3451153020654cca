"""Environment plumbing that lets child processes report coverage.

tests/run measures Python with coverage.py and bash with xtrace (see
tests/run, tests/shcov.py). Both work through environment variables that a
child process must inherit. A test that builds its own ``env={...}`` for a
subprocess would drop them; pass it through :func:`with_coverage` (the
run_* helpers do this for you).
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHCOV_ENV_FILE = REPO / "tests" / "shcov-env.bash"

# coverage.py: the config file (also the switch, read by the startup hook that
# tests/run installs into the test venv), the data file, the repo root the
# config's source paths are relative to.
PYTHON_COVERAGE_VARS = ("COVERAGE_PROCESS_START", "COVERAGE_FILE", "SECCAM_COV_ROOT")


def with_coverage(env=None, *, bash=True):
    """Return a copy of ``env`` (default: os.environ) with the coverage variables.

    Variables missing from ``env`` are taken from this process's environment,
    so a minimal ``env={"PATH": ...}`` still reports coverage. With
    ``bash=True`` and SECCAM_SHCOV_DIR set, BASH_ENV is set so that every bash
    script started under this environment writes an xtrace for tests/shcov.py.
    """
    result = dict(os.environ if env is None else env)
    for name in PYTHON_COVERAGE_VARS:
        if name in os.environ:
            result.setdefault(name, os.environ[name])
    shcov_dir = result.get("SECCAM_SHCOV_DIR") or os.environ.get("SECCAM_SHCOV_DIR")
    if bash and shcov_dir:
        result["SECCAM_SHCOV_DIR"] = shcov_dir
        result["BASH_ENV"] = str(SHCOV_ENV_FILE)
    return result
