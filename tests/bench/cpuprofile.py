"""A Pi-class CPU profile for benchmarks: a cgroup whose CPU quota makes this machine as slow as a Pi 4.

There is no systemd here (no ``systemd-run -p CPUQuota=``), but the kernel's
cgroup file systems are mounted and writable as root, so the profile is a
cgroup made by hand: cgroup v2 (``/sys/fs/cgroup/NAME/cpu.max``) where the
unified hierarchy has the cpu controller, else cgroup v1
(``/sys/fs/cgroup/cpu/NAME/cpu.cfs_quota_us``). Every process of seccam's
alarm path (the poller, the jobs and what they start: fswebcam, gpg, the
camera stand-ins) and the floor's worker are started inside it; the mail
server (the benchmark process) is not.

Calibration, measured in the same run: the n-body benchmark (nbody.py) on
this machine's CPU, against the published Raspberry Pi 4 figure of 158.3 s
for 5,000,000 steps in Python (Pi 4 Model B, 1.5 GHz, performance governor:
https://chaitanyamehta.github.io/projects/performance-analysis-of-programming-languages).
The quota is one period times (this machine's CPU time / the Pi 4's time
for the same steps): the whole cgroup then gets one Pi-4-core's worth of
this machine's CPU. The period is 10 ms, so that a short job is throttled
in fine slices rather than stopped for most of a 100 ms period.

What it does not model (docs/performance.md says so too): a Pi 4 has four
such cores, the cgroup has one core's worth in total, so parallel work
(several gpg processes, two jobs at once) is slower than on a Pi 4, sequential
work about as slow; the published figure is for an older Python (3.7 on
Raspbian, 2020) than Raspberry Pi OS bookworm's 3.11, which runs n-body
faster, so the profile errs on the slow side; disk and USB are this
machine's.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NBODY = HERE / "nbody.py"
#: Published: Raspberry Pi 4, Python n-body, 5,000,000 steps, performance governor (see the docstring).
PI4_NBODY_S = 158.263
PI4_NBODY_STEPS = 5_000_000
PERIOD_US = 10_000


def nbody_cpu_s(steps, preexec_fn=None):
    """(CPU seconds, wall seconds) of ``steps`` n-body steps in a new /usr/bin/python3."""
    start = time.monotonic()
    out = subprocess.run(["/usr/bin/python3", str(NBODY), str(steps)], capture_output=True, text=True, check=True,
                         preexec_fn=preexec_fn)
    return float(out.stdout), time.monotonic() - start


class PiProfile:
    """``with PiProfile() as pi: subprocess.Popen(..., preexec_fn=pi.enter)``; ``pi.calibration`` says how."""

    def __init__(self, name=None, steps=100_000):
        self.name = name or f"seccam-bench-{os.getpid()}"
        self.steps = steps
        self.dir = None
        self.v2 = None
        self.quota_us = None
        self.calibration = {}

    # -- set-up --------------------------------------------------------------------
    @staticmethod
    def available():
        """Why not, or None if a cgroup with a CPU quota can be made here."""
        if os.geteuid() != 0:
            return "not root"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists() and "cpu" in v2.read_text().split():
            return None
        if Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists():
            return None
        return "no cgroup cpu controller under /sys/fs/cgroup"

    def __enter__(self):
        why = self.available()
        if why:
            raise RuntimeError(f"Pi-class CPU profile unavailable: {why}")
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        self.v2 = v2.exists() and "cpu" in v2.read_text().split()
        base = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/cpu")
        if self.v2:
            (base / "cgroup.subtree_control").write_text("+cpu")
        self.dir = base / self.name
        self.dir.mkdir(exist_ok=True)
        cpu_s, _ = nbody_cpu_s(self.steps)
        pi_s = PI4_NBODY_S * self.steps / PI4_NBODY_STEPS
        self.quota_us = max(1000, round(PERIOD_US * cpu_s / pi_s))
        if self.v2:
            (self.dir / "cpu.max").write_text(f"{self.quota_us} {PERIOD_US}")
        else:
            (self.dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.dir / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        _, wall = nbody_cpu_s(self.steps, preexec_fn=self.enter)
        self.calibration = {"steps": self.steps, "here_cpu_s": cpu_s, "pi4_s": pi_s, "slowdown": pi_s / cpu_s,
                            "quota": self.quota_us / PERIOD_US, "inside_wall_s": wall,
                            "cgroup": "v2" if self.v2 else "v1", "path": str(self.dir)}
        return self

    def enter(self):
        """preexec_fn: put the new process into the cgroup (its children follow)."""
        with open(self.dir / "cgroup.procs", "w") as fh:
            fh.write(str(os.getpid()))

    def __exit__(self, *exc):
        if self.dir is None:
            return False
        for _ in range(50):  # processes leave the cgroup as they are reaped
            try:
                self.dir.rmdir()
                return False
            except OSError:
                time.sleep(0.1)
        print(f"cpuprofile: warning: could not remove {self.dir}", file=sys.stderr)
        return False
