#!/opt/seccam-test-venv/bin/python
"""The poller at rest: CPU, wake-ups and memory of bin/seccam-poller over a quiet minute, against a floor.

    /opt/seccam-test-venv/bin/python tests/bench/idle.py              # 60 s; rewrites docs/performance.md
    /opt/seccam-test-venv/bin/python tests/bench/idle.py --seconds 5 --no-write
    tests/bench/idle.py --python2 /path/to/venv/bin/python           # also with gpiozero 2.x

Both processes run at the same time on gpiozero's mock pin factory with two
PIRs, a button and two LEDs (GPIOZERO_PIN_FACTORY=mock, as the benchmark's
pins are not real):

* **the poller**: bin/seccam-poller with that configuration (liveness stamp
  every 30 s, the default), started first and left to finish its start-up
  and warm-up (1 s here) before the minute begins;
* **the floor**: a bare script that only makes the same gpiozero devices
  (``DigitalInputDevice`` for the PIRs and the button, ``LED``) on the same
  pin factory and then waits in ``signal.pause()``: what no poller built on
  gpiozero can do without.

Per process, from /proc, summed over all its threads: CPU time
(``schedstat``, nanoseconds), sleeps (``voluntary_ctxt_switches``: every
time a thread went to sleep and was woken again, e.g. in select() or in
fsync()), preemptions (``nonvoluntary_ctxt_switches``), the thread count, and
VmRSS at the end. The counters are read every 0.1 s: *awake readings* count
the readings in which the process slept and woke since the one before (a
lower bound of its wake-ups, at most ten a second), a *wake-up* is a run of
consecutive awake readings (writing the liveness stamp sleeps several times,
in fsync and rename, but it is one wake-up), and the shortest interval
between two wake-ups shows whether anything wakes more often than the
liveness interval. Idle CPU is CPU time
over the minute as a share of one core.

On a Pi the pins are real and the pin library has a thread of its own: see
docs/performance.md, "The poller at rest", for what that costs per factory.
The tables go between ``<!-- bench:idle:begin -->`` and ``<!-- bench:idle:end -->``.
"""

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "performance.md"
MARKERS = ("<!-- bench:idle:begin -->", "<!-- bench:idle:end -->")
LIVENESS_S = 30
FLOOR = """\
import signal
from gpiozero import LED, DigitalInputDevice
from gpiozero.pins.mock import MockFactory
f = MockFactory()
devices = [DigitalInputDevice(pin=17, pull_up=False, pin_factory=f),
           DigitalInputDevice(pin=27, pull_up=False, pin_factory=f),
           DigitalInputDevice(pin=22, pull_up=True, bounce_time=0.05, pin_factory=f),
           LED(pin=23, pin_factory=f), LED(pin=24, pin_factory=f)]
print("ready", flush=True)
signal.pause()
"""


def snapshot(pid):
    """CPU ns, voluntary and involuntary context switches (all threads), threads, VmRSS kB."""
    cpu = vol = invol = threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            cpu += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
            threads += 1
        except FileNotFoundError:  # a thread that just ended
            continue
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"cpu_ns": cpu, "wakeups": vol, "preempted": invol, "threads": threads, "rss_kb": rss}


def measure(python, seconds, workdir, poller_bin=None):
    """Poller and floor side by side for ``seconds``; returns {name: figures}."""
    poller_bin = poller_bin or str(ROOT / "bin/seccam-poller")
    cfg = Path(workdir) / "seccam.toml"
    cfg.write_text(f'spool_dir = "{workdir}/spool"\nstate_dir = "{workdir}/state"\n\n[sensors]\n'
                   f"pir_pins = [17, 27]\nbutton_pin = 22\nled_pins = [23, 24]\nwarmup_s = 1\n"
                   f"liveness_s = {LIVENESS_S}\n\n[[camera]]\nname = \"a\"\ndevice = \"test\"\n")
    floor_py = Path(workdir) / "floor.py"
    floor_py.write_text(FLOOR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECCAM_", "PYTHON", "COVERAGE"))}
    env.update(GPIOZERO_PIN_FACTORY="mock", SECCAM_NO_SYSLOG="1")
    poller = subprocess.Popen([python, poller_bin, "--config", str(cfg)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    floor = subprocess.Popen([python, str(floor_py)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        stamp = Path(workdir) / "spool" / "state" / "poller.json"
        deadline = time.monotonic() + 60
        while not stamp.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if floor.stdout.readline().strip() != "ready" or not stamp.exists():
            raise RuntimeError("poller or floor did not start")
        time.sleep(3)  # warm-up (1 s) over, start-up done
        before = {"poller": snapshot(poller.pid), "floor": snapshot(floor.pid)}
        start = time.monotonic()
        last = dict(before)
        wakes = {"poller": [], "floor": []}
        awake = {"poller": 0, "floor": 0}
        while time.monotonic() - start < seconds:
            time.sleep(SAMPLE_S)
            for name, proc in (("poller", poller), ("floor", floor)):
                now = snapshot(proc.pid)
                if now["wakeups"] > last[name]["wakeups"]:
                    awake[name] += 1
                    t = time.monotonic() - start
                    if not wakes[name] or t - wakes[name][-1][1] > 1.5 * SAMPLE_S:
                        wakes[name].append([t, t])  # a new wake-up
                    else:
                        wakes[name][-1][1] = t      # the same one, still going
                last[name] = now
        after = last
        elapsed = time.monotonic() - start
    finally:
        for proc in (poller, floor):
            proc.send_signal(signal.SIGTERM)
        for proc in (poller, floor):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    version = subprocess.run([python, "-c", "import gpiozero, importlib.metadata as m; "
                              "print(m.version('gpiozero'))"], capture_output=True, text=True, env=env)
    out = {"elapsed_s": elapsed, "gpiozero": version.stdout.strip() or "?"}
    for name in ("poller", "floor"):
        a, b = after[name], before[name]
        starts = [w[0] for w in wakes[name]]
        gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
        out[name] = {"cpu_pct": 100.0 * (a["cpu_ns"] - b["cpu_ns"]) / 1e9 / elapsed,
                     "sleeps": a["wakeups"] - b["wakeups"], "wakeups": len(starts), "awake": awake[name],
                     "min_gap_s": min(gaps) if gaps else None, "preempted": a["preempted"] - b["preempted"],
                     "threads": a["threads"], "rss_mb": a["rss_kb"] / 1024.0}
    return out


def render(runs, seconds, started):
    out = [f"Measured {started:%Y-%m-%d %H:%M} UTC over {seconds:g} s of rest (liveness stamp every "
           f"{LIVENESS_S} s), poller and floor side by side. Regenerate: `tests/bench/run` "
           "(or tests/bench/idle.py).", ""]
    out.append("| gpiozero | process | CPU, % of one core | awake readings | wake-ups | shortest interval between "
               "wake-ups, s | sleeps | preemptions | threads | VmRSS, MB |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        for name in ("poller", "floor"):
            r = run[name]
            gap = "—" if r["min_gap_s"] is None else f"{r['min_gap_s']:.1f}"
            out.append(f"| {run['gpiozero']} | {name} | {r['cpu_pct']:.3f} | {r['awake']} | {r['wakeups']} | {gap} "
                       f"| {r['sleeps']} "
                       f"| {r['preempted']} | {r['threads']} | {r['rss_mb']:.1f} |")
    out.append("")
    out.append(f"| gpiozero | poller CPU (target ≤ 0.1 %) | wake-ups in {seconds:g} s (target: none more often than "
               f"every {LIVENESS_S} s) | VmRSS above the floor (target ≤ 3 MB) | met |")
    out.append("|---|---:|---:|---:|---|")
    for run in runs:
        p, f = run["poller"], run["floor"]
        allowed = int(run["elapsed_s"] // LIVENESS_S) + 1
        extra = p["rss_mb"] - f["rss_mb"]
        often = p["min_gap_s"] is not None and p["min_gap_s"] < LIVENESS_S - 2 * SAMPLE_S - 1
        # A stamp's wake-up may straddle two readings.
        met = (p["cpu_pct"] <= 0.1 and p["wakeups"] <= allowed and p["awake"] <= 2 * allowed and not often
               and extra <= 3.0)
        out.append(f"| {run['gpiozero']} | {p['cpu_pct']:.3f} % | {p['wakeups']} (at most {allowed}) "
                   f"| {extra:.1f} MB | {'yes' if met else '**no**'} |")
    out.append("")
    return "\n".join(out) + "\n"


#: How often the /proc counters are read.
SAMPLE_S = 0.1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--python2", metavar="PYTHON", help="also measure with this Python (a venv with gpiozero 2.x)")
    parser.add_argument("--poller", metavar="PATH", help="another bin/seccam-poller to measure (e.g. an older "
                        "checkout's, for a before/after comparison; implies --no-write)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = []

    def stopped(signum, frame):
        raise SystemExit(f"idle: stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stopped)  # measure()'s clean-up stops the poller and the floor
    for python in ["/usr/bin/python3"] + ([args.python2] if args.python2 else []):
        with tempfile.TemporaryDirectory(prefix="sci", dir="/tmp") as workdir:
            runs.append(measure(python, args.seconds, workdir, args.poller))
    text = render(runs, args.seconds, started)
    sys.stdout.write(text)
    if not (args.no_write or args.poller):
        doc = DOC.read_text(encoding="utf-8")
        begin, end = MARKERS
        if begin not in doc or end not in doc:
            raise SystemExit(f"idle: error: {DOC}: markers {begin} ... {end} not found")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        DOC.write_text(head + begin + "\n" + text + end + tail, encoding="utf-8")
        print(f"idle: wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return runs


if __name__ == "__main__":
    main()
    sys.exit(0)
