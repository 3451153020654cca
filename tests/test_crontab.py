"""The top-level crontab (installed as /etc/cron.d/seccam) is valid and complete."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.cron import ENV_LINE, without_user_column

REPO = Path(__file__).resolve().parent.parent
CRONTAB = REPO / "crontab"
JOB = "/opt/seccam/bin/seccam-job"


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
    [heartbeat] = [e for e in _entries() if e[2] == f"{JOB} heartbeat"]
    assert heartbeat[0] == "0 * * * *"


def test_every_job_is_started_through_its_unit_as_root():
    """Root only to start the unit: the job runs as seccam in the unit's sandbox (bin/seccam-job)."""
    entries = _entries()
    assert entries
    assert {user for _, user, _ in entries} == {"root"}
    assert {cmd.split()[0] for _, _, cmd in entries} == {JOB}


def test_crontab_runs_capture_send_and_inbox_as_safety_net_and_ends_incidents_every_minute():
    jobs = {cmd.split()[1]: when for when, _, cmd in _entries()}
    assert jobs == {"heartbeat": "0 * * * *", "capture": "* * * * *",
                    "send": "* * * * *", "inbox": "* * * * *", "incident": "* * * * *"}


@pytest.mark.parametrize("command", [cmd for _, _, cmd in _entries()])
def test_every_cron_job_has_a_unit_and_a_job_program(command):
    job = command.split()[1]
    assert (REPO / "jobs" / job).is_file() and (REPO / "jobs" / job).stat().st_mode & 0o111
    unit = REPO / "lib" / "systemd" / "system" / f"seccam-{job}.service"
    assert re.search(rf"^ExecStart=/opt/seccam/jobs/{job}( --watch)?$", unit.read_text(), re.M)


def test_the_header_examples_of_arming_by_time_of_day_are_lines_cron_accepts(tmp_path):
    examples = [line[1:].strip() for line in CRONTAB.read_text().splitlines()
                if line.startswith("#   ") and "/opt/seccam/bin/seccam " in line]
    assert {line.split()[7] for line in examples} == {"arm", "disarm"}
    if shutil.which("crontab"):
        copy = tmp_path / "crontab"
        copy.write_text(without_user_column("\n".join(examples) + "\n"))
        result = subprocess.run(["crontab", "-n", str(copy)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr + result.stdout


def test_the_header_examples_are_heartbeat_lines_that_cron_accepts(tmp_path):
    examples = [line.split(":", 1)[1].strip() for line in CRONTAB.read_text().splitlines()
                if line.startswith("#   ") and f"{JOB} heartbeat" in line]
    assert len(examples) >= 4
    if shutil.which("crontab"):
        copy = tmp_path / "crontab"
        copy.write_text(without_user_column("\n".join(examples) + "\n"))
        result = subprocess.run(["crontab", "-n", str(copy)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr + result.stdout
