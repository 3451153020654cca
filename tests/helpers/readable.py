"""The checkout as another user sees it, for tests that run something as that user (``nobody``).

A clone in a 0700 directory (``/root/x``, a new user's home on Debian 12 and 13) is unreadable to
every other user: ``install.sh`` run as ``nobody`` cannot even be opened, and a job that drops
root for the spool's owner cannot import the rest of ``seccam`` after the switch.
:func:`repo_for_others` answers with the checkout itself when others can read it, else with a
copy of what runs (code, docs, ``install.sh``, ``crontab``, the bash coverage hook) in a
world-readable directory, made once per test process: in tests/run's work directory (removed by
tests/run after the coverage reports), else under /tmp (removed at the process's exit).

Coverage follows the copy: its top holds ``.seccam-copy-of`` naming this checkout, which
tests/shcov.py reads to count bash lines run from the copy as the checkout's; coverage.py maps
the copy's files back through the ``[paths]`` section of .coveragerc (a process run from the copy
gets ``SECCAM_COV_ROOT`` set to the copy by :func:`coverage_env_for`, and the copy's .coveragerc:
a process that starts as another user cannot read the checkout's).
"""

import atexit
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .coverage_env import REPO

MARKER = ".seccam-copy-of"
COPY_PREFIX = "sc-repo-"
# What a process started from the copy may need: the code and its data, and the bash hook.
_WHAT = ("install.sh", "crontab", "README.md", "bin", "jobs", "lib", "docs", "tests/shcov-env.bash",
         "tests/distro", ".coveragerc")
_copy = None


def readable_by_others(path):
    """True when a user who is neither owner nor in the group can read ``path`` (a file or a
    directory): every directory above it is searchable by others, and it is readable by them."""
    path = Path(path).resolve()
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def repo_for_others():
    """This checkout when other users can read it, else a readable copy of what runs (see above)."""
    global _copy
    if readable_by_others(REPO / "install.sh") and readable_by_others(REPO / "lib"):
        return REPO
    if _copy is None:
        work = os.environ.get("SECCAM_TEST_WORK_DIR")  # tests/run's, kept until its reports are done
        if work and os.path.isdir(work):
            top = Path(tempfile.mkdtemp(prefix=COPY_PREFIX, dir=work))
        else:
            top = Path(tempfile.mkdtemp(prefix=COPY_PREFIX, dir="/tmp"))
            atexit.register(shutil.rmtree, top, ignore_errors=True)
        for rel in _WHAT:
            src, dst = REPO / rel, top / rel
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        (top / MARKER).write_text(f"{REPO}\n")
        for dirpath, dirnames, filenames in os.walk(top):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
        _copy = top
    return _copy


def coverage_env_for(repo, env):
    """``env`` for a process run from ``repo`` (this checkout or its copy): coverage.py's source
    paths point at the code that actually runs, and bash's hook is the copy's own."""
    env = dict(env)
    if Path(repo) != REPO:
        if "SECCAM_COV_ROOT" in env:
            env["SECCAM_COV_ROOT"] = str(repo)
        if "COVERAGE_PROCESS_START" in env:
            env["COVERAGE_PROCESS_START"] = str(Path(repo) / ".coveragerc")
        if "BASH_ENV" in env:
            env["BASH_ENV"] = str(Path(repo) / "tests" / "shcov-env.bash")
    return env
