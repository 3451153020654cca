#!/opt/seccam-test-venv/bin/python
"""A Pi-like alarm: from the first PIR edge to the first encrypted preview accepted by the mail server.

Run it with the test venv (aiosmtpd), as root (the Pi-class CPU profile is a cgroup)::

    /opt/seccam-test-venv/bin/python tests/bench/alarm.py             # ~10 min; rewrites the tables
    /opt/seccam-test-venv/bin/python tests/bench/alarm.py --quick     # 1 repetition, a smoke run
    tests/bench/run                                                   # this, the poller at rest, latency.py

What one repetition measures, per CPU profile (this machine as it is, and the
Pi-class profile of cpuprofile.py), in a shuffled order:

* **the PIR pair**: seccam's real poller (pirs.py: lib/seccam/poller.py on
  gpiozero's mock pins) sees PIR 17 rise, and PIR 27 one second later
  (``SPACING_S``); the clock starts at the first edge.
* **cameras that take as long as real ones** (standins/fswebcam and
  tests/standins/rpicam-still): a USB webcam at 640x480 (about 1.5 s on a
  Pi 4) and at 1280x720 (about 2.5 s), a camera module with rpicam-still's
  750 ms warm-up plus 250 ms for the camera manager, the mode switch and the
  software JPEG encode (about 1 s). docs/performance.md gives the sources.
* **seccam**, with and without early capture, 1 camera of each kind and 4
  USB webcams: jobs/capture is started as seccam-capture.path would
  (``events/new`` or ``early/new`` not empty), jobs/send as seccam-send.path
  would (``outbox/new`` not empty); the time is when the loopback SMTP server
  (aiosmtpd in this process, plain with AUTH) replied 250 to the first
  preview.
* **the floor**: the same steps done by hand from the second PIR edge, the
  earliest any design that waits for the confirmation could start: the same
  camera command (the stand-in), ``gpg --sign --encrypt --armor`` of the
  preview, one SMTP submission, by a worker process that is already running
  (no Python start-up) on the same CPU profile.
* **a text alert, at best**: the floor of an encrypted text message sent at
  the second PIR edge (what "motion at the front door, pictures follow"
  could achieve).

Where the time goes comes from the processes' own log lines, time-stamped as
they arrive: the poller's event line, ``capture=start``, ``state=sets.ready``,
``state=outbox.new``, ``state=connected``. Start-up: ``-X importtime`` of
each entry point during extra alarms (minimum of three runs: the machine is
shared), split for jobs/capture into what it imports before its cameras start
and everything (gnupg, for the encrypt step, loads while the cameras expose).

Nothing passes or fails on a time; the tables go into docs/performance.md
between ``<!-- bench:alarm:begin -->`` and ``<!-- bench:alarm:end -->`` and the
headline into README.md between ``<!-- bench:headline:begin -->`` and
``<!-- bench:headline:end -->``.
"""

import argparse
import collections
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "lib"))

import latency  # noqa: E402  (its Sink, Proc, job_env, helpers)
from cpuprofile import PiProfile  # noqa: E402
from helpers import sendkit  # noqa: E402

from seccam import camera  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
README = ROOT / "README.md"
MARKERS = ("<!-- bench:alarm:begin -->", "<!-- bench:alarm:end -->")
HEADLINE = ("<!-- bench:headline:begin -->", "<!-- bench:headline:end -->")
COMMAND = "tests/bench/run"
SPACING_S = 1.0
RUN_TIMEOUT_S = 60
POLL_S = 0.002
RPICAM_EXTRA_MS = 250
STANDIN_PATH = f"{HERE / 'standins'}{os.pathsep}{ROOT / 'tests' / 'standins'}"

KINDS = {
    "usb640": ("USB webcam 640x480", 'device = "test"\nresolution = "640x480"\npreview_resolution = "320x240"\n'),
    "usb720": ("USB webcam 1280x720", 'device = "test"\nresolution = "1280x720"\npreview_resolution = "320x180"\n'),
    "module": ("camera module, 750 ms warm-up",
               'backend = "rpicam"\nindex = {i}\nresolution = "1640x1232"\npreview_resolution = "320x240"\n'
               'warmup_ms = 750\n'),
}


# -- set-up ---------------------------------------------------------------------------------------
class Setup:
    """One camera configuration (kind, camera count, early capture on/off) with its own spool and keys."""

    def __init__(self, kind, n, early, sink):
        self.kind, self.n, self.early = kind, n, early
        self.cam = sendkit.make_camera(recipients=(latency.RECIPIENT,))
        cams = "".join(f'\n[[camera]]\nname = "cam{i + 1}"\n' + KINDS[kind][1].format(i=i) for i in range(n))
        text = (f'spool_dir = "{self.cam.root}/spool"\nstate_dir = "{self.cam.root}/state"\n\n'
                "[sensors]\npir_pins = [17, 27]\nwarmup_s = 0\ncooldown_s = 0\nliveness_s = 30\n"
                f"coincidence_s = 2\nearly_capture = {'true' if early else 'false'}\n"
                "early_capture_burst = 100\nearly_capture_refill_s = 1\n\n"
                + sendkit.account_toml(port=sink.port)
                + f'\n[delivery]\nrecipients = ["{latency.RECIPIENT}"]\nrate_per_minute = 6000\nburst = 1000\n'
                + cams)
        self.cam.config_path.write_text(text)
        self.cam.config_path.chmod(0o600)
        self.cam.reload()
        self.cam.spool  # creates every spool directory
        self.pirs = None

    @property
    def key(self):
        return (self.kind, self.n, self.early)

    def env(self, extra=None):
        env = latency.job_env(self.cam, extra)
        env["PATH"] = f"{STANDIN_PATH}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["RPICAM_STANDIN_EXTRA_MS"] = str(RPICAM_EXTRA_MS)
        env["RPICAM_STANDIN_CAMERAS"] = "4"
        return env

    def close(self):
        if self.pirs is not None:
            self.pirs.close()
        self.cam.close()


class Pirs:
    """tests/bench/pirs.py for one configuration: the real poller, PIRs driven from here."""

    def __init__(self, setup, preexec_fn=None):
        env = setup.env({"GPIOZERO_PIN_FACTORY": "mock"})
        self.proc = subprocess.Popen(["/usr/bin/python3", str(HERE / "pirs.py"), str(setup.cam.config_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, preexec_fn=preexec_fn)
        self.lines = []  # [(T, kind, text)]
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda kind, text: kind == "log" and text.startswith("started pid="), timeout=60)

    def _read(self):
        for raw in self.proc.stdout:
            kind, _, rest = raw.rstrip("\n").partition(" ")
            if kind == "ready":
                continue
            if kind == "edge":
                *_, t = rest.split()
                entry = (float(t), kind, rest)
            else:
                t, _, text = rest.partition(" ")
                entry = (float(t), kind, text)
            with self._cond:
                self.lines.append(entry)
                self._cond.notify_all()

    def wait(self, match, after=0.0, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, kind, text in self.lines:
                    if t >= after and match(kind, text):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"pirs.py: no matching line within {timeout} s; last: {self.lines[-3:]}")
                self._cond.wait(left)

    def edge(self, pin, level):
        sent = time.monotonic()
        self.proc.stdin.write(f"{level} {pin}\n")
        self.proc.stdin.flush()
        return self.wait(lambda kind, text: kind == "edge" and text.startswith(f"{pin} {level} "), after=sent)

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class FloorWorker:
    def __init__(self, preexec_fn=None):
        self.proc = subprocess.Popen(["/usr/bin/python3", str(HERE / "floorworker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
                                     env={**os.environ, "PATH": f"{STANDIN_PATH}{os.pathsep}{os.environ['PATH']}",
                                          "RPICAM_STANDIN_EXTRA_MS": str(RPICAM_EXTRA_MS)})
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"floor worker: {answer['error']}")
        return answer

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def encrypt_argv(cam):
    return ["gpg", "--homedir", str(cam.home), "--batch", "--yes", "--no-tty", "--quiet", "--trust-model", "always",
            "--no-emit-version", "--armor", "--local-user", cam.fingerprint, "--sign", "--encrypt",
            "--recipient", cam.recipients[0].fingerprint, "--recipient", cam.fingerprint, "--output", "-"]


def smtp_request(sink):
    return {"host": "127.0.0.1", "port": sink.port, "login": sendkit.CAMERA_ADDR, "password": sendkit.PASSWORD,
            "from": sendkit.CAMERA_ADDR, "to": latency.RECIPIENT}


# -- one alarm -------------------------------------------------------------------------------------
def alarm_sample(setup, sink, preexec_fn, extra_env=None):
    """The PIR pair, the path units, until every message is accepted; return the sample."""
    spool = setup.cam.spool
    dirs = {name: spool.dir(name) for name in ("events.new", "early.new", "outbox.new")}
    stamp = spool.dir("state") / "capturing.json"
    seen = latency._stamp_id(stamp)
    env = setup.env(extra_env)
    sink.reset()
    expected = 2 * setup.n
    pirs = setup.pirs
    t0 = pirs.edge(17, "high")
    t1 = None
    captures, sends = [], []
    deadline = t0 + RUN_TIMEOUT_S
    while True:
        if t1 is None and time.monotonic() >= t0 + SPACING_S:
            t1 = pirs.edge(27, "high")
        for p in captures + sends:
            p.poll()
        capture_running = any(p.ended is None for p in captures)
        send_running = any(p.ended is None for p in sends)
        if not capture_running and (latency._nonempty(dirs["events.new"]) or latency._nonempty(dirs["early.new"])):
            captures.append(latency.Proc("capture", [str(ROOT / "jobs/capture")], env, preexec_fn))
            capture_running = True
        changed = latency._stamp_id(stamp)
        if not send_running and (latency._nonempty(dirs["outbox.new"]) or changed != seen):
            sends.append(latency.Proc("send", [str(ROOT / "jobs/send")], env, preexec_fn))
            send_running = True
        if changed != seen and send_running:
            seen = changed  # PathChanged= fires once per change; a running unit is not started twice
        if (t1 is not None and len(sink.accepted) >= expected and not capture_running and not send_running
                and not any(latency._nonempty(d) for d in dirs.values())):
            break
        if time.monotonic() > deadline:
            for p in captures + sends:
                if p.ended is None:
                    p.proc.kill()
            raise RuntimeError(f"{setup.key}: {len(sink.accepted)} of {expected} messages in {RUN_TIMEOUT_S} s")
        time.sleep(POLL_S)
    pirs.edge(17, "low")
    pirs.edge(27, "low")
    for p in captures + sends:
        if p.finish() != 0:
            tail = "\n".join(line for _, line in p.lines[-5:])
            raise RuntimeError(f"{p.label} exited {p.proc.returncode}:\n{tail}")
    return analyse(setup, t0, t1, captures, sends, list(sink.accepted))


def analyse(setup, t0, t1, captures, sends, accepted):
    procs = captures + sends
    sent = sorted((t, m.group(1), p.label) for p in procs for t, m in p.matches(r"message=(\S+) state=sent"))
    if len(sent) != len(accepted):
        raise RuntimeError(f"{setup.key}: {len(accepted)} accepted, {len(sent)} logged as sent")
    previews = [a for a, (_, name, _) in zip((t for t, _ in accepted), sent) if ".preview." in name]
    cap = captures[0]
    rel = lambda t: None if t is None else (t - t0) * 1000.0  # noqa: E731
    pattern = r"^early pin=" if setup.early else r"^motion source=pir"
    written = setup.pirs.wait(lambda kind, text: kind == "log" and re.search(pattern, text), after=t0)
    trigger = t0 if setup.early else t1
    marks = {
        "PIR edge that starts the capture": rel(trigger),
        "event written by the poller": rel(written),
        "jobs/capture started": rel(cap.started),
        "cameras started": rel(cap.first(r"capture=start")),
        "SMTP connected": rel(min((t for p in procs for t, _ in p.matches(r"state=connected")), default=None)),
        "pictures taken, set published": rel(cap.first(r"state=sets\.ready")),
        "first message encrypted": rel(cap.first(r"state=outbox\.new")),
        "first preview accepted": rel(previews[0]),
        "all previews accepted": rel(max(previews)),
        "last message accepted": rel(accepted[-1][0]),
    }
    return {"first_preview": marks["first preview accepted"], "all_previews": marks["all previews accepted"],
            "last": marks["last message accepted"], "marks": marks, "send_runs": len(sends),
            "send_sent": sum(1 for _, _, label in sent if label == "send"),
            "early_used": bool(cap.first(r"early=\S+ state=capturing")) and setup.early}


def floor_sample(setup, sink, worker, workdir):
    """The floor: the same camera, gpg and SMTP steps by hand from the second PIR edge."""
    [cam_cfg] = setup.cam.config.cameras[:1]
    full, preview = Path(workdir) / "floor.jpg", Path(workdir) / "floor.preview.jpg"
    for stale in (full, preview):
        stale.unlink(missing_ok=True)
    if cam_cfg.backend == "rpicam":
        pw, ph = cam_cfg.preview_resolution
        capture = [camera.rpicam_command(cam_cfg, full, preview),
                   ["fswebcam", "--quiet", *camera.banner(cam_cfg, time.time()), "--device", f"file:{full}",
                    "--scale", f"{pw}x{ph}", "--jpeg", str(cam_cfg.preview_quality), str(preview)]]
    else:
        capture = [camera.fswebcam_command(cam_cfg, full, preview)]
    sink.reset()
    start = time.monotonic()
    parts = worker.run({"capture": capture, "cwd": str(workdir), "file": str(preview),
                        "encrypt": encrypt_argv(setup.cam), "smtp": smtp_request(sink)})
    sink.wait_for(1)
    if camera.validate_jpeg(preview) is not None:
        raise RuntimeError(f"floor: no preview from {capture}")
    total = SPACING_S + sink.accepted[0][0] - start
    return {"first_preview": total * 1000.0, "capture": parts["capture"] * 1000.0,
            "encrypt": parts["encrypt"] * 1000.0, "smtp": parts["smtp"] * 1000.0}


def text_sample(setup, sink, worker):
    """A text alert at best: encrypted and sent at the second PIR edge."""
    sink.reset()
    start = time.monotonic()
    worker.run({"text": "Motion detected 19:11:00 CET\nfront door; pictures follow\n",
                "encrypt": encrypt_argv(setup.cam), "smtp": smtp_request(sink)})
    sink.wait_for(1)
    return {"first_preview": (SPACING_S + sink.accepted[0][0] - start) * 1000.0}


# -- start-up: -X importtime -----------------------------------------------------------------------------
def _own_times(lines):
    """{module: own µs} from -X importtime lines."""
    out = {}
    for line in lines:
        m = latency._IMPORT_LINE.match(line)
        if m:
            out[m.group(4)] = int(m.group(1))
    return out


def _best(runs):
    """Every module's fastest own time over the runs, summed (ms), and the largest packages: the best a
    shared machine showed for each module, closer to its quiet-machine cost than any single run."""
    best = {}
    for run in runs:
        for module, us in run.items():
            best[module] = min(best.get(module, us), us)
    packages = collections.Counter()
    for module, us in best.items():
        packages[module.split(".")[0]] += us
    return sum(best.values()) / 1000.0, [(k, v / 1000.0) for k, v in packages.most_common(4)]


def importtimes(setup, sink, preexec_fn, runs):
    """{entry: {"startup_ms", "total_ms", "top", "runs"}}, per module the best of ``runs`` alarms."""
    got = collections.defaultdict(lambda: ([], []))
    for _ in range(runs):
        sample_procs = []
        real_proc = latency.Proc

        class Recording(real_proc):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                sample_procs.append(self)

        latency.Proc = Recording
        try:
            alarm_sample(setup, sink, preexec_fn, {"PYTHONPROFILEIMPORTTIME": "1"})
        finally:
            latency.Proc = real_proc
        for p in sample_procs:
            lines = [line for _, line in p.lines]
            cut = next((i for i, line in enumerate(lines) if "capture=start" in line), len(lines))
            startup, total = got[f"jobs/{p.label}"]
            startup.append(_own_times(lines[:cut]))
            total.append(_own_times(lines))
        env = setup.env({"PYTHONPROFILEIMPORTTIME": "1", "GPIOZERO_PIN_FACTORY": "mock"})
        stamp = setup.cam.spool.dir("state") / "poller.json"
        stamp.unlink(missing_ok=True)
        poller = real_proc("poller", [str(ROOT / "bin/seccam-poller")], env, preexec_fn)
        deadline = time.monotonic() + 60
        while not stamp.exists() and poller.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        poller.proc.terminate()
        poller.finish(10)
        times = _own_times([line for _, line in poller.lines])
        got["bin/seccam-poller"][0].append(times)
        got["bin/seccam-poller"][1].append(times)
    rows = {}
    for entry, (startup, total) in got.items():
        total_ms, top = _best(total)
        rows[entry] = {"startup_ms": _best(startup)[0], "total_ms": total_ms, "top": top,
                       "gpiozero": any(m.split(".")[0] == "gpiozero" for run in total for m in run),
                       "runs": len(total)}
    return rows


# -- the report --------------------------------------------------------------------------------------------
def med(samples, key):
    return latency.median([s[key] for s in samples if s.get(key) is not None])


def render(results, args, info, started, elapsed_s):
    out = []
    load = results.get("load", ())
    out.append(f"Measured {started:%Y-%m-%d %H:%M} UTC on {info['cpu']}, nproc={info['nproc']}, "
               f"Linux {info['kernel']}, {info['python']}, {info['gpg']}; {args.reps} repetition(s), "
               f"shuffled; the run took {elapsed_s:.0f} s"
               + (f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other jobs on this "
                  f"machine)" if load else "") + f". Regenerate: `{COMMAND}`.")
    out.append("")
    for profile, res in results["profiles"].items():
        cal = res.get("calibration")
        title = "this machine" if profile == "host" else "Pi-class CPU profile"
        out.append(f"#### {title}")
        out.append("")
        if cal:
            out.append(f"cgroup {cal['cgroup']} CPU quota {cal['quota'] * 100:.0f} % of one core: n-body, "
                       f"{cal['steps']} steps, took {cal['here_cpu_s']:.2f} s of CPU here against "
                       f"{cal['pi4_s']:.2f} s on a Pi 4 (x{cal['slowdown']:.1f}); inside the cgroup it took "
                       f"{cal['inside_wall_s']:.2f} s.")
            out.append("")
        out.append("First PIR edge to the mail server's 250 (ms, median of the repetitions; the second PIR "
                   f"fires {SPACING_S * 1000:.0f} ms after the first):")
        out.append("")
        out.append("| camera | cameras | floor | text alert, at best | seccam | seccam, early capture "
                   "| seccam / floor | early / floor |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind, n in res["rows"]:
            v = res["variants"]
            floor = med(v.get(("floor", kind, 1), []), "first_preview")
            text = med(v.get(("text", kind, 1), []), "first_preview")
            late = med(v.get(("seccam", kind, n, False), []), "first_preview")
            early = med(v.get(("seccam", kind, n, True), []), "first_preview")
            cells = [latency.fmt(x) for x in (floor, text, late, early)]
            cells += [latency.fmt(late / floor, 2) if late and floor else "n/a",
                      latency.fmt(early / floor, 2) if early and floor else "n/a"]
            out.append(f"| {KINDS[kind][0]} | {n} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Where the time goes, 1 camera (ms since the first PIR edge, median):")
        out.append("")
        cols = [(kind, early) for kind, n in res["rows"] if n == 1 for early in (False, True)]
        out.append("| milestone | " + " | ".join(f"{KINDS[k][0].split(',')[0]}{', early' if e else ''}"
                                                 for k, e in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        first_key = next((("seccam", k, 1, e) for k, e in cols if res["variants"].get(("seccam", k, 1, e))), None)
        milestones = list(res["variants"][first_key][0]["marks"]) if first_key else []
        for mark in milestones:
            cells = []
            for k, e in cols:
                values = [s["marks"][mark] for s in res["variants"].get(("seccam", k, 1, e), [])
                          if s["marks"].get(mark) is not None]
                cells.append(latency.fmt(latency.median(values)) if values else "n/a")
            out.append(f"| {mark} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Segments (ms, median of each run's difference): sensor = edge to event file; job start = "
                   "event file to cameras started; exposure = cameras started to set published (early capture: "
                   "also waits for the confirmation); encryption = set published to first message encrypted; "
                   "SMTP = to the first preview's 250.")
        out.append("")
        out.append("| segment | " + " | ".join(f"{KINDS[k][0].split(',')[0]}{', early' if e else ''}"
                                               for k, e in cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for label, a, b in SEGMENTS:
            cells = []
            for k, e in cols:
                diffs = [s["marks"][b] - s["marks"][a] for s in res["variants"].get(("seccam", k, 1, e), [])
                         if s["marks"].get(a) is not None and s["marks"].get(b) is not None]
                cells.append(latency.fmt(latency.median(diffs)) if diffs else "n/a")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        floors = [s for key, ss in res["variants"].items() if key[0] == "floor" for s in ss]
        if floors:
            out.append("")
            out.append("The floor's parts (ms, median over every camera kind): "
                       + ", ".join(f"{name} {latency.fmt(med(floors, name))}" for name in ("encrypt", "smtp"))
                       + "; capture: " + ", ".join(f"{KINDS[k][0]} {latency.fmt(med(res['variants'][('floor', k, 1)], 'capture'))}"
                                                   for k, n in res["rows"] if n == 1 and ("floor", k, 1) in res["variants"])
                       + ".")
        sends = [s for key, ss in res["variants"].items() if key[0] == "seccam" for s in ss]
        if sends:
            out.append("")
            runs = [s["send_runs"] for s in sends]
            out.append(f"jobs/send runs per alarm: median {latency.fmt(latency.median(runs))}, max {max(runs)} "
                       "(started when the capture began, it sends every message on the session it opened then).")
        if res.get("imports"):
            out.append("")
            out.append("Start-up: `-X importtime`, own time of every module, its best of "
                       f"{next(iter(res['imports'].values()))['runs']} alarms, summed (ms); for jobs/capture "
                       "\"before the cameras\" "
                       "is what it imports until its cameras start, the rest (gnupg, the mail modules) loads "
                       "while they expose:")
            out.append("")
            out.append("| entry point | before the cameras / start-up | total | largest packages, own ms |")
            out.append("|---|---:|---:|---|")
            for entry in ("jobs/capture", "jobs/send", "bin/seccam-poller"):
                row = res["imports"].get(entry)
                if row:
                    top = ", ".join(f"{k} {v:.1f}" for k, v in row["top"])
                    out.append(f"| `{entry}` | {row['startup_ms']:.1f} | {row['total_ms']:.1f} | {top} |")
        out.append("")
    return "\n".join(out) + "\n"


SEGMENTS = (
    ("sensor", "PIR edge that starts the capture", "event written by the poller"),
    ("job start", "event written by the poller", "cameras started"),
    ("exposure", "cameras started", "pictures taken, set published"),
    ("encryption", "pictures taken, set published", "first message encrypted"),
    ("SMTP", "first message encrypted", "first preview accepted"),
)


def headline(results):
    """The README's lines: first PIR edge to the first encrypted preview, per camera kind."""
    lines = []
    for profile, res in results["profiles"].items():
        v = res["variants"]
        parts = []
        for kind, n in res["rows"]:
            if n != 1:
                continue
            floor = med(v.get(("floor", kind, 1), []), "first_preview")
            early = med(v.get(("seccam", kind, 1, True), []), "first_preview")
            late = med(v.get(("seccam", kind, 1, False), []), "first_preview")
            if floor and early and late:
                parts.append(f"{KINDS[kind][0]}: {early / 1000:.2f} s ({early / floor:.2f}x the floor; "
                             f"{late / floor:.2f}x without early capture)")
        if parts:
            where = "this x86 test machine" if profile == "host" else "a Pi-4-class CPU profile"
            lines.append(f"- On {where}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def replace_between(path, markers, text):
    doc = Path(path).read_text(encoding="utf-8")
    begin, end = markers
    if begin not in doc or end not in doc:
        raise SystemExit(f"alarm: error: {path}: markers {begin} ... {end} not found")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    Path(path).write_text(head + begin + "\n" + text + end + tail, encoding="utf-8")


# -- main ------------------------------------------------------------------------------------------------------
def run_profile(profile, kinds, counts, args, sink, setups, workdir, rng):
    """Every variant of one CPU profile; returns its results."""
    pi = PiProfile() if profile == "pi" else None
    res = {"rows": [(k, 1) for k in kinds] + [("usb640", n) for n in counts if n > 1 and "usb640" in kinds],
           "variants": collections.defaultdict(list)}
    with (pi if pi is not None else _nothing()):
        preexec = pi.enter if pi is not None else None
        if pi is not None:
            res["calibration"] = pi.calibration
        worker = FloorWorker(preexec)
        mine = [s for s in setups if (s.kind, s.n) in res["rows"]]
        try:
            for s in mine:
                s.pirs = Pirs(s, preexec)
            if not args.quick:
                for s in mine:  # warm-up: byte-compiled modules, gpg-agent running, page cache
                    alarm_sample(s, sink, preexec)
            variants = [("seccam", s) for s in mine] + [("floor", k) for k in kinds] + [("text", k) for k in kinds]
            for rep in range(args.reps):
                rng.shuffle(variants)
                for what, item in variants:
                    if what == "seccam":
                        res["variants"][("seccam", item.kind, item.n, item.early)].append(
                            alarm_sample(item, sink, preexec))
                    else:
                        setup = next(s for s in mine if s.kind == item and s.n == 1)
                        sample = (floor_sample(setup, sink, worker, workdir) if what == "floor"
                                  else text_sample(setup, sink, worker))
                        res["variants"][(what, item, 1)].append(sample)
                print(f"alarm: {profile}: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
            probe = next(s for s in mine if s.kind == kinds[0] and s.n == 1 and s.early)
            res["imports"] = importtimes(probe, sink, preexec, 1 if args.quick else 3)
        finally:
            for s in mine:
                if s.pirs is not None:
                    s.pirs.close()
                    s.pirs = None
            worker.close()
    return res


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions per variant (default 7)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"camera kinds (default {','.join(KINDS)})")
    parser.add_argument("--profiles", default="host,pi", help="host,pi (pi: the cgroup CPU profile; needs root)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, usb640, host only; no doc")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    profiles = [p for p in args.profiles.split(",") if p]
    if args.quick:
        args.reps, kinds, profiles = 1, ["usb640"], ["host"]
    if any(k not in KINDS for k in kinds) or any(p not in ("host", "pi") for p in profiles):
        parser.error(f"--kinds: {', '.join(KINDS)}; --profiles: host, pi")
    if "pi" in profiles and PiProfile.available():
        print(f"alarm: note: Pi-class profile skipped: {PiProfile.available()}", file=sys.stderr)
        profiles.remove("pi")
    write = not (args.no_write or args.quick)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    rng = random.Random(args.seed)
    counts = [1] if args.quick else [1, 4]
    workdir = sendkit.short_dir("scf")
    setups = []
    results = {"profiles": {}}
    load_start = os.getloadavg()[0]

    def stopped(signum, frame):
        raise SystemExit(f"alarm: stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):  # SIGINT raises KeyboardInterrupt already
        signal.signal(signum, stopped)  # run the clean-up below (pollers, jobs, workers), then exit
    try:
        with latency.Sink() as sink:
            for kind in kinds:
                for early in (False, True):
                    setups.append(Setup(kind, 1, early, sink))
            if "usb640" in kinds:
                for n in counts:
                    if n > 1:
                        for early in (False, True):
                            setups.append(Setup("usb640", n, early, sink))
            for profile in profiles:
                results["profiles"][profile] = run_profile(profile, kinds, counts, args, sink, setups, workdir, rng)
    finally:
        latency.Proc.stop_all()
        for s in setups:
            s.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["load"] = (load_start, os.getloadavg()[0])
    text = render(results, args, latency.machine(), started, time.monotonic() - t_start)
    sys.stdout.write(text)
    sys.stdout.write("\n" + headline(results))
    if write:
        replace_between(DOC, MARKERS, text)
        replace_between(README, HEADLINE, headline(results))
        print(f"alarm: wrote {DOC.relative_to(ROOT)} and {README.relative_to(ROOT)}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
