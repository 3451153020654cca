"""The top-level crontab (installed as /etc/cron.d/seccam) is valid and complete."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.cron import ENV_LINE, without_user_column

REPO = Path(__file__).resolve().parent.parent
CRONTAB = REPO / "crontab"
# Jobs that later issues add; until then a missing file is an expected failure.
LATER_JOBS = {"send", "inbox"}


def _entries():
    """(time fields, user, command) for every job line."""
    entries = []
    for line in CRONTAB.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ENV_LINE.match(line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"not 5 time fields + user + command: {line!r}"
        entries.append((" ".join(fields[:5]), fields[5], fields[6]))
    return entries


@pytest.mark.skipif(shutil.which("crontab") is None, reason="cron not installed")
def test_crontab_passes_crontab_dry_run(tmp_path):
    copy = tmp_path / "crontab"
    copy.write_text(without_user_column(CRONTAB.read_text()))
    result = subprocess.run(["crontab", "-n", str(copy)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.skipif(shutil.which("crontab") is None, reason="cron not installed")
def test_crontab_dry_run_catches_a_bad_line(tmp_path):
    # Guards the check above: crontab -n does reject nonsense.
    copy = tmp_path / "crontab"
    copy.write_text(without_user_column(CRONTAB.read_text()) + "61 * * * * /bin/true\n")
    result = subprocess.run(["crontab", "-n", str(copy)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0


def test_crontab_sets_shell_and_path_explicitly():
    text = CRONTAB.read_text()
    assert re.search(r"^SHELL=/bin/sh$", text, re.M)
    path = re.search(r"^PATH=(.*)$", text, re.M)
    assert path and "/usr/bin" in path.group(1).split(":")


def test_heartbeat_runs_hourly_by_default():
    [heartbeat] = [e for e in _entries() if e[2] == "/opt/seccam/jobs/heartbeat"]
    assert heartbeat[0] == "0 * * * *"


def test_every_job_runs_as_seccam():
    entries = _entries()
    assert entries
    assert {user for _, user, _ in entries} == {"seccam"}


def test_crontab_runs_capture_send_and_inbox_as_safety_net_and_ends_incidents_every_minute():
    jobs = {Path(cmd.split()[0]).name: when for when, _, cmd in _entries()}
    assert jobs == {"heartbeat": "0 * * * *", "capture": "* * * * *",
                    "send": "* * * * *", "inbox": "*/5 * * * *", "incident": "* * * * *"}


@pytest.mark.parametrize("command", [cmd for _, _, cmd in _entries()])
def test_crontab_job_is_under_opt_seccam_jobs_and_exists_in_repo(command, request):
    program = Path(command.split()[0])
    assert program.parent == Path("/opt/seccam/jobs"), program
    in_repo = REPO / "jobs" / program.name
    if program.name in LATER_JOBS and not in_repo.exists():
        request.applymarker(pytest.mark.xfail(reason="added by encrypted-delivery issue",
                                              strict=True))
    assert in_repo.is_file(), f"{in_repo} missing"
    assert in_repo.stat().st_mode & 0o111, f"{in_repo} not executable"
