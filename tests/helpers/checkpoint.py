"""Waiting for a job that stopped itself at a fault-injection checkpoint (seccam.faults, SECCAM_STOP_AT)."""

import time


def wait_stopped(proc, timeout=30):
    """Return once ``proc`` is stopped (state T in /proc); fail if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        if proc.poll() is not None:
            raise AssertionError(f"job ended before its checkpoint: {proc.stderr.read()!r}")
        time.sleep(0.01)
    raise AssertionError("job never reached its checkpoint")
