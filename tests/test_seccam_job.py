"""bin/seccam-job: cron starts every job through its systemd unit, or directly without systemd.

With systemd (``/run/systemd/system`` exists; the tests point SECCAM_SYSTEMD_RUN_DIR at a
directory of their own) the script must only ask systemd to start the unit, so the job runs
in the unit's sandbox: a stand-in ``systemctl`` on PATH records what it was asked. Without
systemd (this machine, CI) the real job runs, here against a test configuration.
"""

import os

import pytest

from helpers.shell import run_bash


def fake_systemctl(directory, rc=0):
    log = directory / "systemctl.log"
    tool = directory / "systemctl"
    tool.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit {rc}\n')
    tool.chmod(0o755)
    return log


@pytest.mark.parametrize("job", ["capture", "send", "heartbeat", "inbox", "incident"])
def test_with_systemd_the_job_is_started_as_its_unit_and_nothing_runs_outside_it(short_tmp, job):
    (short_tmp / "systemd").mkdir()
    log = fake_systemctl(short_tmp)
    env = {**os.environ, "PATH": f"{short_tmp}:{os.environ['PATH']}",
           "SECCAM_SYSTEMD_RUN_DIR": str(short_tmp / "systemd"), "SECCAM_CONFIG": str(short_tmp / "none.toml")}
    result = run_bash("bin/seccam-job", job, env=env)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == f"start seccam-{job}.service\n"
    assert result.stderr == ""  # the job did not run here (it would complain about the missing config)


def test_a_unit_that_fails_fails_the_cron_line(short_tmp):
    (short_tmp / "systemd").mkdir()
    fake_systemctl(short_tmp, rc=1)
    env = {**os.environ, "PATH": f"{short_tmp}:{os.environ['PATH']}",
           "SECCAM_SYSTEMD_RUN_DIR": str(short_tmp / "systemd")}
    assert run_bash("bin/seccam-job", "send", env=env).returncode == 1


def test_without_systemd_the_job_itself_runs(short_tmp, config_path):
    env = {**os.environ, "SECCAM_SYSTEMD_RUN_DIR": str(short_tmp / "absent"), "SECCAM_CONFIG": str(config_path)}
    result = run_bash("bin/seccam-job", "capture", env=env, timeout=120)
    assert result.returncode == 0, result.stderr  # nothing queued: the real capture job exits 0 quietly
    broken = short_tmp / "broken.toml"
    broken.write_text("spool_dir = 5\n")
    env["SECCAM_CONFIG"] = str(broken)
    result = run_bash("bin/seccam-job", "capture", env=env, timeout=120)
    assert result.returncode == 78 and "spool_dir" in result.stderr  # the job's own one-line error


@pytest.mark.parametrize("args, message", [((), "usage: seccam-job {capture|send|heartbeat|inbox|incident}"),
                                           (("poller",), "unknown job 'poller'"),
                                           (("send", "extra"), "usage:"),
                                           (("../../bin/sh",), "unknown job")])
def test_anything_but_one_known_job_is_a_usage_error(args, message):
    result = run_bash("bin/seccam-job", *args)
    assert result.returncode == 64
    assert result.stderr.startswith("seccam-job: error: ") and message in result.stderr


def test_without_systemd_the_inbox_watches_as_its_unit_does(short_tmp):
    """seccam-job passes --watch to jobs/inbox, like the unit's ExecStart (the job says so at debug level)."""
    path = short_tmp / "seccam.toml"
    path.write_text(f'spool_dir = "{short_tmp}/spool"\nstate_dir = "{short_tmp}/state"\n[account]\n'
                    'address = "cam@seccam.test"\npassword = "x"\nsmtp_host = "127.0.0.1"\nsmtp_security = "plain"\n'
                    'imap_host = "127.0.0.1"\nimap_port = 9\nimap_security = "plain"\ntimeout_s = 2\n')
    path.chmod(0o600)
    env = {**os.environ, "SECCAM_SYSTEMD_RUN_DIR": str(short_tmp / "absent"), "SECCAM_CONFIG": str(path),
           "DEBUG": "1", "SECCAM_LOG_STDERR": "1", "SECCAM_NO_SYSLOG": "1"}
    result = run_bash("bin/seccam-job", "inbox", env=env, timeout=120)
    assert result.returncode == 75, result.stderr  # nothing listens on port 9: a temporary failure
    assert "debug: watch=" in result.stderr and "cannot connect" in result.stderr
