#!/opt/seccam-test-venv/bin/python
"""Alarm latency benchmark: from ``seccam trigger`` to the mail server's "250 OK".

Run it with the test venv (it needs aiosmtpd, which Debian's python3-aiosmtpd
provides through system-site-packages)::

    /opt/seccam-test-venv/bin/python tests/bench/latency.py            # ~2 min, rewrites docs/performance.md
    /opt/seccam-test-venv/bin/python tests/bench/latency.py --reps 5 --no-write
    /opt/seccam-test-venv/bin/python tests/bench/latency.py --quick     # 1 rep, 1 camera, a few seconds

What one repetition measures (all in the same run, in a shuffled order per
repetition so that the machine's noise spreads over every variant):

* **seccam**, 1, 2 and 4 cameras on fswebcam's ``raw:/dev/urandom`` source
  (720x540 YUYV, ~330 KB JPEGs): the real entry points run as subprocesses
  through their ``#!/usr/bin/python3`` line, exactly as in production:
  ``bin/seccam trigger``, then ``jobs/capture`` (captures every camera in
  parallel and encrypts in-process), then ``jobs/send``. The clock starts
  just before ``seccam trigger`` is started; the times are when the loopback
  SMTP server (aiosmtpd in this process, plain, with AUTH) received the whole
  message and replied 250.
  In production systemd path units start the jobs (``DirectoryNotEmpty=`` on
  ``events/new`` and ``outbox/new``). Two simulations:

  - ``path``: a watcher in this process polls both directories every 2 ms
    and starts jobs/capture when ``events/new`` is not empty and jobs/send
    when ``outbox/new`` is not empty, never two of a kind at once, and looks
    again when one exits (systemd's behaviour for a oneshot service);
  - ``chained``: jobs/send is started the moment jobs/capture exits (what a
    simple script would do).

  Not simulated: systemd's own cost of starting a sandboxed service (fork,
  namespaces, cgroup; a few ms here, more on a Pi) and journald.
* **floor**: what the hardware and tools cannot avoid, done by hand from this
  process: one fswebcam capture (same options: one frame saved full size and
  scaled for the preview), one ``gpg --sign --encrypt`` of the preview to the
  recipient and the camera key (same keys), one SMTP submission of that
  ciphertext with smtplib (connect, EHLO, AUTH, MAIL/RCPT/DATA, QUIT).
* **naive**: a sequential script from this process: for each camera, capture,
  then encrypt+send the preview, then encrypt+send the full image (one gpg
  process and one SMTP connection per message, no Python start-up at all).

Also measured: each entry point's imports (``-X importtime`` through
``PYTHONPROFILEIMPORTTIME=1`` during one extra, unmeasured pipeline run, and
for ``bin/seccam-poller`` started on gpiozero's mock pin factory) and whether
it imports gpiozero; and, from the jobs' own INFO log lines (read from their
stderr and time-stamped as they arrive), a timeline of where the time goes.

The pacing token bucket is set to 6000/min with a burst of 1000 in the
benchmark's configuration: the production default (burst 10) is meant for a
relay's limits and would otherwise start pacing after the first repetitions.

The results go to stdout and, for a full run, into docs/performance.md
between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``. This is not a
test: nothing passes or fails on timings (tests/test_bench_smoke.py only
checks that the script still runs and produces well-formed tables).
"""

import argparse
import collections
import datetime
import logging
import math
import os
import platform
import random
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import sendkit  # noqa: E402

# aiosmtpd 1.4 logs a warning each time sendkit's sink reads Session.login_data.
logging.getLogger("mail.log").setLevel(logging.ERROR)

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DOC = ROOT / "docs" / "performance.md"
COMMAND = "/opt/seccam-test-venv/bin/python tests/bench/latency.py"
RECIPIENT = "owner@seccam.test"
POLL_S = 0.002
# Only a guard against a hung run, never a measurement: generous enough for a Pi Zero or an
# emulated arm64 machine (about 50x slower than this one).
RUN_TIMEOUT_S = 900
FSWEBCAM_OPTS = dict(device="raw:/dev/urandom", palette="YUYV", resolution="720x540", preview="320x240",
                     skip=5, quality=85, preview_quality=70)
CAMERA_NAMES = ("cam1", "cam2", "cam3", "cam4")
ENTRY_POINTS = ("bin/seccam trigger", "jobs/capture", "jobs/send", "bin/seccam-poller")


# -- small helpers -----------------------------------------------------------------
def ms(seconds):
    return seconds * 1000.0


def median(values):
    return statistics.median(values) if values else math.nan


def p90(values):
    """Nearest-rank 90th percentile (with 15 samples: the 14th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def fmt(value, digits=0):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"

    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": version(["/usr/bin/python3", "--version"]), "gpg": version(["gpg", "--version"]),
            "fswebcam": "fswebcam " + (shutil.which("fswebcam") or "missing")}


# -- the loopback SMTP server ---------------------------------------------------------
class Sink(sendkit.SmtpSink):
    """sendkit's aiosmtpd sink, plain on 127.0.0.1, remembering when each message was accepted."""

    def __init__(self):
        super().__init__(mode="plain")
        self.accepted = []  # [(monotonic time, bytes)]
        self.on_data = self._stamp

    def _stamp(self, envelope):
        self.accepted.append((time.monotonic(), len(envelope.original_content)))

    def reset(self):
        self.accepted = []
        self.received.clear()  # sendkit keeps every message; we only need the times

    def wait_for(self, count, timeout_s=RUN_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while len(self.accepted) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SMTP sink got {len(self.accepted)} of {count} messages in {timeout_s} s")
            time.sleep(POLL_S)


# -- a camera set-up per camera count ----------------------------------------------------
def camera_toml(n):
    o = FSWEBCAM_OPTS
    return "".join(f'\n[[camera]]\nname = "{name}"\ndevice = "{o["device"]}"\npalette = "{o["palette"]}"\n'
                   f'resolution = "{o["resolution"]}"\npreview_resolution = "{o["preview"]}"\n'
                   f'skip = {o["skip"]}\nquality = {o["quality"]}\npreview_quality = {o["preview_quality"]}\n'
                   for name in CAMERA_NAMES[:n])


def setup_camera(n, port, incidents=False):
    """sendkit.make_camera (short GnuPG homes, keys made and imported), then our own config.

    Every repetition must be a first alarm, so incidents are off unless asked for (the
    incident benchmark, tests/bench/incidents.py, measures a first alarm with them on)."""
    cam = sendkit.make_camera(recipients=(RECIPIENT,))
    text = (f'spool_dir = "{cam.root}/spool"\nstate_dir = "{cam.root}/state"\n\n'
            + sendkit.account_toml(port=port)
            + f'\n[delivery]\nrecipients = ["{RECIPIENT}"]\nrate_per_minute = 6000\nburst = 1000\n'
            + ("" if incidents else "\n[incident]\ngap_s = 0\n")
            + camera_toml(n))
    cam.config_path.write_text(text)
    cam.config_path.chmod(0o600)
    cam.reload()
    cam.spool  # creates every spool directory
    return cam


def job_env(cam, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE", "SECCAM_", "PYTHON"))}
    env.update(SECCAM_CONFIG=str(cam.config_path), SECCAM_NO_SYSLOG="1", SECCAM_LOG_STDERR="1")
    env.update(extra or {})
    return env


# -- running the real entry points ---------------------------------------------------------
class Proc:
    """One entry point started as in production (through its #! line), stderr lines time-stamped.

    Every Proc still running when the benchmark ends (finished, failed or stopped by SIGTERM or
    SIGINT) is stopped by :func:`stop_all`: no poller or job outlives the benchmark."""

    running = set()

    def __init__(self, label, argv, env, preexec_fn=None):
        self.label = label
        self.lines = []  # [(monotonic, text)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, cwd="/", preexec_fn=preexec_fn)
        self.ended = None
        Proc.running.add(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))

    def poll(self):
        if self.ended is None and self.proc.poll() is not None:
            self.ended = time.monotonic()
            Proc.running.discard(self)
        return self.ended is not None

    @classmethod
    def stop_all(cls, grace_s=10):
        """SIGTERM every entry point still running, SIGKILL what has not exited after ``grace_s``."""
        procs = [p for p in list(cls.running) if p.proc.poll() is None]
        for p in procs:
            p.proc.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"latency: {p.label} (pid {p.proc.pid}) ignored SIGTERM; killed", file=sys.stderr)
                p.proc.kill()
                p.proc.wait()
        cls.running.clear()

    def finish(self, timeout_s=RUN_TIMEOUT_S):
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.poll()
        self._reader.join(timeout=5)
        return self.proc.returncode

    def first(self, pattern):
        rx = re.compile(pattern)
        return next((t for t, line in self.lines if rx.search(line)), None)

    def matches(self, pattern):
        rx = re.compile(pattern)
        return [(t, rx.search(line)) for t, line in self.lines if rx.search(line)]


def _nonempty(directory, suffix=None):
    try:
        return any(not n.startswith(".") and (suffix is None or n.endswith(suffix)) for n in os.listdir(directory))
    except FileNotFoundError:
        return False


def _stamp_id(path):
    """What tells one rewrite of a file from another (a rename makes a new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def run_pipeline(cam, sink, n, mode, env_extra=None):
    """One alarm through trigger -> capture -> send; return the processes and the sink's accept times."""
    spool = cam.spool
    events_new, outbox_new = spool.dir("events.new"), spool.dir("outbox.new")
    env = job_env(cam, env_extra)
    sink.reset()
    expected = 2 * n
    stamp = spool.dir("state") / "capturing.json"
    seen = _stamp_id(stamp)
    t0 = time.monotonic()
    trigger = Proc("trigger", [str(ROOT / "bin/seccam"), "trigger", "--quiet"], env)
    captures, sends = [], []
    deadline = t0 + RUN_TIMEOUT_S
    while True:
        for p in [trigger] + captures + sends:
            p.poll()
        capture_running = any(p.ended is None for p in captures)
        send_running = any(p.ended is None for p in sends)
        if not capture_running and _nonempty(events_new):
            captures.append(Proc("capture", [str(ROOT / "jobs/capture")], env))
            capture_running = True
        changed = _stamp_id(stamp)
        if not send_running:
            if mode == "path":  # seccam-send.path: outbox/new not empty, or state/capturing.json rewritten
                start_send = _nonempty(outbox_new) or changed != seen
            else:  # chained: once, when the capture job has exited
                start_send = captures and not capture_running and not sends
            if start_send:
                sends.append(Proc("send", [str(ROOT / "jobs/send")], env))
                send_running = True
        if send_running or mode != "path":
            seen = changed
        done = (len(sink.accepted) >= expected and trigger.ended is not None
                and not capture_running and not send_running and not _nonempty(outbox_new))
        if done:
            break
        if time.monotonic() > deadline:
            for p in [trigger] + captures + sends:
                if p.ended is None:
                    p.proc.kill()
            raise RuntimeError(f"pipeline with {n} camera(s) did not finish in {RUN_TIMEOUT_S} s: "
                               f"{len(sink.accepted)} of {expected} messages accepted")
        time.sleep(POLL_S)
    for p in [trigger] + captures + sends:
        if p.finish() != 0:
            tail = "\n".join(line for _, line in p.lines[-5:])
            raise RuntimeError(f"{p.label} exited {p.proc.returncode}:\n{tail}")
    return t0, trigger, captures, sends, list(sink.accepted)


def pipeline_sample(cam, sink, n, mode):
    t0, trigger, captures, sends, accepted = run_pipeline(cam, sink, n, mode)
    # The k-th message the sink accepted is the k-th "state=sent" line of the send runs, in time order.
    sent = [m.group(1) for _, m in sorted(((t, m) for p in captures + sends
                                          for t, m in p.matches(r"message=(\S+) state=sent")), key=lambda x: x[0])]
    if len(sent) != len(accepted) or len(accepted) != 2 * n:
        raise RuntimeError(f"{n} camera(s): {len(accepted)} accepted, send logged {len(sent)}, expected {2 * n}")
    previews = [t for (t, _), name in zip(accepted, sent) if ".preview." in name]
    cap = captures[0]
    cam_secs = [float(m.group(1)) for _, m in cap.matches(r"camera=\S+ set=\S+ ok seconds=([0-9.]+)")]
    if len(cam_secs) != n:
        raise RuntimeError(f"{n} camera(s): only {len(cam_secs)} captured ok")
    set_ready = cap.first(r"state=sets\.ready")
    enc = [t for t, _ in cap.matches(r"message=\S+ state=outbox\.new")]
    rel = lambda t: None if t is None else ms(t - t0)  # noqa: E731
    timeline = {
        "trigger exited": rel(trigger.ended),
        "jobs/capture started": rel(cap.started),
        "cameras started (est.)": rel(set_ready - max(cam_secs)) if set_ready else None,
        "all cameras captured, set published": rel(set_ready),
        "first message encrypted (outbox)": rel(enc[0]) if enc else None,
        "last message encrypted (outbox)": rel(enc[-1]) if enc else None,
        "jobs/capture exited": rel(cap.ended),
        "jobs/send started": rel(sends[0].started) if sends else None,
        "SMTP connected": rel(min((t for p in captures + sends for t, _ in p.matches(r"state=connected")),
                                  default=None)),
        "first preview accepted": rel(previews[0]),
        "all previews accepted": rel(max(previews)),
        "last message accepted": rel(accepted[-1][0]),
        "jobs/send exited": rel(sends[-1].ended) if sends else None,
    }
    return {"first_preview": rel(previews[0]), "all_previews": rel(max(previews)),
            "last": rel(accepted[-1][0]), "timeline": timeline, "send_runs": len(sends),
            "camera_s": max(cam_secs)}


# -- the floor and the naive script, by hand ---------------------------------------------------
def fswebcam(directory, name):
    o = FSWEBCAM_OPTS
    full, preview = Path(directory) / f"{name}.jpg", Path(directory) / f"{name}.preview.jpg"
    subprocess.run(["fswebcam", "--quiet", "--no-banner", "--device", o["device"], "--palette", o["palette"],
                    "--resolution", o["resolution"], "--skip", str(o["skip"]), "--jpeg", str(o["quality"]),
                    str(full), "--scale", o["preview"], "--jpeg", str(o["preview_quality"]), str(preview)],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    if not preview.exists() or preview.read_bytes()[:2] != b"\xff\xd8":
        raise RuntimeError("fswebcam wrote no preview")
    return full, preview


def gpg_sign_encrypt(cam, path):
    rec = cam.recipients[0].fingerprint
    out = subprocess.run(["gpg", "--homedir", str(cam.home), "--batch", "--yes", "--no-tty", "--quiet",
                          "--trust-model", "always", "--no-emit-version", "--armor", "--local-user", cam.fingerprint,
                          "--sign", "--encrypt", "--recipient", rec, "--recipient", cam.fingerprint,
                          "--output", "-", str(path)],
                         stdin=subprocess.DEVNULL, capture_output=True, check=True)
    return out.stdout


def smtp_submit(sink, ciphertext):
    body = (f"From: {sendkit.CAMERA_ADDR}\r\nTo: {RECIPIENT}\r\nSubject: [...]\r\n\r\n").encode() + \
        ciphertext.replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.login(sendkit.CAMERA_ADDR, sendkit.PASSWORD)
        smtp.sendmail(sendkit.CAMERA_ADDR, [RECIPIENT], body)


def floor_sample(cam, sink, workdir):
    sink.reset()
    t0 = time.monotonic()
    full, preview = fswebcam(workdir, "floor")
    t1 = time.monotonic()
    ciphertext = gpg_sign_encrypt(cam, preview)
    t2 = time.monotonic()
    smtp_submit(sink, ciphertext)
    sink.wait_for(1)
    t3 = sink.accepted[0][0]
    sample = {"first_preview": ms(t3 - t0), "all_previews": ms(t3 - t0), "last": ms(t3 - t0),
              "capture": ms(t1 - t0), "gpg": ms(t2 - t1), "smtp": ms(t3 - t2)}
    # Not part of the floor: the full image's costs, for the breakdown.
    t4 = time.monotonic()
    ciphertext = gpg_sign_encrypt(cam, full)
    t5 = time.monotonic()
    from seccam import mime  # the ASCII armor of seccam's messages, on as many bytes as the full image
    mime.armor(os.urandom(full.stat().st_size))
    t6 = time.monotonic()
    smtp_submit(sink, ciphertext)
    sink.wait_for(2)
    sample.update(gpg_full=ms(t5 - t4), armor_full=ms(t6 - t5), smtp_full=ms(sink.accepted[1][0] - t6),
                  full_kb=full.stat().st_size / 1000)
    return sample


def naive_sample(cam, sink, workdir, n):
    sink.reset()
    t0 = time.monotonic()
    count = 0
    for name in CAMERA_NAMES[:n]:
        full, preview = fswebcam(workdir, name)
        for path in (preview, full):
            smtp_submit(sink, gpg_sign_encrypt(cam, path))
            count += 1
    sink.wait_for(count)
    times = [t for t, _ in sink.accepted]
    previews = times[0::2]
    return {"first_preview": ms(previews[0] - t0), "all_previews": ms(previews[-1] - t0), "last": ms(times[-1] - t0)}


# -- start-up: -X importtime ------------------------------------------------------------------
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def parse_importtime(lines):
    """(total self µs, {top-level package: self µs}, [module names]) from -X importtime lines."""
    total, per_package, modules = 0, collections.Counter(), []
    for line in lines:
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        own, name = int(m.group(1)), m.group(4)
        total += own
        per_package[name.split(".")[0]] += own
        modules.append(name)
    return total, per_package, modules


def importtime_once(cam1, sink):
    """{entry point: (import lines)} of trigger, capture and send during a real alarm, and of the
    poller started on gpiozero's mock pin factory and stopped once it wrote its liveness stamp."""
    _, trigger, captures, sends, _ = run_pipeline(cam1, sink, 1, "path", {"PYTHONPROFILEIMPORTTIME": "1"})
    procs = {"bin/seccam trigger": trigger, "jobs/capture": captures[0], "jobs/send": sends[0]}
    stamp = cam1.spool.dir("state") / "poller.json"
    stamp.unlink(missing_ok=True)
    poller = Proc("poller", [str(ROOT / "bin/seccam-poller")],
                  job_env(cam1, {"PYTHONPROFILEIMPORTTIME": "1", "GPIOZERO_PIN_FACTORY": "mock"}))
    # Said so that whoever runs the benchmark (tests/test_bench_smoke.py) can stop it while a
    # resident process of it runs.
    print(f"latency: poller started (pid {poller.proc.pid})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 20
    while not stamp.exists() and poller.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if poller.proc.poll() is None:
        poller.proc.send_signal(signal.SIGTERM)
    poller.finish(10)
    procs["bin/seccam-poller"] = poller
    return {entry: [line for _, line in p.lines] for entry, p in procs.items()}


def importtime_report(cam1, sink, runs):
    """Per entry point: median total import time, top 5 packages (median own time), what it imports."""
    collected = collections.defaultdict(list)
    for _ in range(runs):
        for entry, lines in importtime_once(cam1, sink).items():
            collected[entry].append(parse_importtime(lines))
    rows = {}
    for entry, parsed in collected.items():
        if not all(modules for _, _, modules in parsed):
            raise RuntimeError(f"{entry}: no -X importtime output")
        packages = set().union(*(per for _, per, _ in parsed))
        per_package = {name: median([per.get(name, 0) for _, per, _ in parsed]) for name in packages}
        top = sorted(per_package.items(), key=lambda kv: -kv[1])[:5]
        modules = set().union(*(set(m) for _, _, m in parsed))
        rows[entry] = {"total_ms": median([total for total, _, _ in parsed]) / 1000.0,
                       "top": [(name, us / 1000.0) for name, us in top],
                       "gpiozero": any(m == "gpiozero" or m.startswith("gpiozero.") for m in modules),
                       "gnupg": "gnupg" in modules, "smtplib": "smtplib" in modules}
    return rows


def bare_python_ms(reps=5):
    samples = []
    for _ in range(reps):
        t = time.monotonic()
        subprocess.run(["/usr/bin/python3", "-c", "pass"], check=True)
        samples.append(ms(time.monotonic() - t))
    return median(samples)


# -- the report ------------------------------------------------------------------------------------
def stat(samples, key):
    values = [s[key] for s in samples if s.get(key) is not None]
    return median(values), p90(values)


def render(results, args, info, started, elapsed_s):
    out = []
    variants = results["variants"]
    out.append(f"Measured {started:%Y-%m-%d %H:%M} UTC on {info['cpu']}, nproc={info['nproc']},")
    out.append(f"Linux {info['kernel']}, {info['python']}, {info['gpg']};")
    load = results.get("load")
    out.append(f"{args.reps} repetition(s) per variant, interleaved in a shuffled order; "
               f"the run took {elapsed_s:.0f} s"
               + (f"; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other jobs on this "
                  "machine)" if load else "") + ".")
    out.append("")
    out.append(f"Regenerate: `{COMMAND}{' --quick' if args.quick else ''}` (from the repository root).")
    out.append("")
    out.append("### Latency from `seccam trigger` to the SMTP server's 250 (ms, median / p90)")
    out.append("")
    out.append("| variant | cameras | first preview accepted | all previews accepted | last message accepted |")
    out.append("|---|---:|---:|---:|---:|")
    for (kind, n), samples in variants.items():
        cells = [f"{fmt(m)} / {fmt(p)}" for m, p in (stat(samples, k) for k in
                                                      ("first_preview", "all_previews", "last"))]
        out.append(f"| {LABELS[kind]} | {n} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("### Ratios (of medians) against the targets of issue 3")
    out.append("")
    out.append("| ratio | measured | target | met |")
    out.append("|---|---:|---:|---|")
    for label, value, target in ratios(variants):
        met = "" if target is None else ("yes" if value <= target else "**no**")
        out.append(f"| {label} | {fmt(value, 2)} | {'' if target is None else f'≤ {target}'} | {met} |")
    out.append("")
    out.append("### Start-up: imports of each entry point (`-X importtime`, during a real alarm)")
    out.append("")
    out.append("Total: every module's own import time, summed (median of the runs); the last three columns:")
    out.append("does the entry point import gnupg, smtplib, gpiozero?")
    out.append("")
    out.append(f"Bare `/usr/bin/python3 -c pass`: {fmt(results['bare_python_ms'], 1)} ms (median of 5).")
    out.append("")
    out.append("| entry point | imports, total ms | top 5 packages, own ms | gnupg | smtplib | gpiozero |")
    out.append("|---|---:|---|---|---|---|")
    for entry in ENTRY_POINTS:
        row = results["imports"].get(entry)
        if row is None:
            continue
        top = ", ".join(f"{name} {t:.0f}" for name, t in row["top"])
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        out.append(f"| `{entry}` | {row['total_ms']:.1f} | {top} | {yn(row['gnupg'])} | {yn(row['smtplib'])} "
                   f"| {yn(row['gpiozero'])} |")
    out.append("")
    out.append("### Where the time goes: seccam timeline (ms since `seccam trigger` started, median)")
    out.append("")
    pipes = [(kind, n) for kind, n in variants if kind == "path"]
    out.append("| milestone | " + " | ".join(f"{n} camera{'s' if n > 1 else ''}" for _, n in pipes) + " |")
    out.append("|---|" + "---:|" * len(pipes))
    if pipes:
        for milestone in variants[pipes[0]][0]["timeline"]:
            cells = []
            for key in pipes:
                values = [s["timeline"][milestone] for s in variants[key] if s["timeline"][milestone] is not None]
                cells.append(fmt(median(values)))
            out.append(f"| {milestone} | " + " | ".join(cells) + " |")
        runs = [s["send_runs"] for key in pipes for s in variants[key]]
        out.append("")
        out.append(f"jobs/send runs per alarm (path units): median {fmt(median(runs))}, max {max(runs)}.")
    out.append("")
    out.append("### Where the time goes: segments (ms, median of each run's difference)")
    out.append("")
    out.append("| segment | " + " | ".join(f"{n} camera{'s' if n > 1 else ''}" for _, n in pipes) + " |")
    out.append("|---|" + "---:|" * len(pipes))
    for label, start, end in SEGMENTS:
        cells = []
        for key in pipes:
            diffs = [s["timeline"][end] - (s["timeline"][start] if start else 0.0) for s in variants[key]
                     if s["timeline"][end] is not None and (start is None or s["timeline"][start] is not None)]
            cells.append(fmt(median(diffs)))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("### Parts measured alone (ms, median / p90)")
    out.append("")
    out.append("| part | time |")
    out.append("|---|---:|")
    floor = variants.get(("floor", 1), [])
    for key, label in (("capture", "fswebcam: one frame, full size + preview"),
                       ("gpg", "gpg --sign --encrypt of the preview (~29 KB), armored"),
                       ("smtp", "smtplib: connect, EHLO, AUTH, send, 250")):
        m, p = stat(floor, key)
        out.append(f"| {label} | {fmt(m, 1)} / {fmt(p, 1)} |")
    kb = fmt(stat(floor, "full_kb")[0])
    for key, label in (("gpg_full", f"gpg --sign --encrypt of the full image (~{kb} KB), armored"),
                       ("armor_full", f"`seccam.mime.armor` of {kb} KB (base64 + CRC-24 in pure Python)"),
                       ("smtp_full", "smtplib: the full image's ciphertext on a new connection, 250")):
        m, p = stat(floor, key)
        out.append(f"| {label} | {fmt(m, 1)} / {fmt(p, 1)} |")
    pipe1 = variants.get(("path", 1), [])
    if pipe1:
        m, p = stat(pipe1, "camera_s")
        out.append(f"| fswebcam inside jobs/capture, 1 camera (its own `seconds=`) | {fmt(m * 1000, 1)} / "
                   f"{fmt(p * 1000, 1)} |")
    pipe4 = variants.get(("path", 4), [])
    if pipe4:
        m, p = stat(pipe4, "camera_s")
        out.append(f"| slowest of 4 parallel fswebcams inside jobs/capture | {fmt(m * 1000, 1)} / "
                   f"{fmt(p * 1000, 1)} |")
    return "\n".join(out) + "\n"


SEGMENTS = (
    ("`seccam trigger` start-up, event written, path unit starts jobs/capture", None, "jobs/capture started"),
    ("jobs/capture start-up (Python, imports, config, lock, spool scan)", "jobs/capture started",
     "cameras started (est.)"),
    ("cameras: fswebcam, all in parallel", "cameras started (est.)", "all cameras captured, set published"),
    ("encrypt: import gnupg, look up keys, first message (a preview)", "all cameras captured, set published",
     "first message encrypted (outbox)"),
    ("encrypt: every other message, one after another", "first message encrypted (outbox)",
     "last message encrypted (outbox)"),
    ("hand-over: jobs/send waits for the encrypt lock, connects, AUTH", "last message encrypted (outbox)",
     "SMTP connected"),
    ("SMTP: until the first preview's 250", "SMTP connected", "first preview accepted"),
    ("SMTP: the remaining messages", "first preview accepted", "last message accepted"),
)

LABELS = {"floor": "floor (by hand)", "path": "seccam, path units", "chained": "seccam, send after capture",
          "naive": "naive sequential script"}


def ratios(variants):
    def med(kind, n, key):
        samples = variants.get((kind, n))
        return stat(samples, key)[0] if samples else None

    rows = []
    floor = med("floor", 1, "first_preview")
    for kind in ("path", "chained"):
        first1, last1, last4 = med(kind, 1, "first_preview"), med(kind, 1, "last"), med(kind, 4, "last")
        if first1 and floor:
            rows.append((f"{LABELS[kind]}: first preview, 1 camera / floor", first1 / floor, 1.5))
        if last1 and last4:
            rows.append((f"{LABELS[kind]}: last message, 4 cameras / 1 camera", last4 / last1, 1.3))
        prev1, prev4 = med(kind, 1, "first_preview"), med(kind, 4, "all_previews")
        if prev1 and prev4:
            rows.append((f"{LABELS[kind]}: all previews, 4 cameras / 1 camera", prev4 / prev1, None))
    n1, n4 = med("naive", 1, "last"), med("naive", 4, "last")
    if n1 and n4:
        rows.append(("naive sequential script: last message, 4 cameras / 1 camera", n4 / n1, None))
    first1 = med("naive", 1, "first_preview")
    if first1 and floor:
        rows.append(("naive sequential script: first preview, 1 camera / floor", first1 / floor, None))
    return rows


def check_doc(path):
    """Fail before measuring anything if ``path`` has no place for the results."""
    try:
        doc = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"latency: error: {path}: {exc.strerror}") from None
    if BEGIN not in doc or END not in doc or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"latency: error: {path}: markers {BEGIN} ... {END} not found")
    return doc


def write_doc(path, text):
    doc = check_doc(path)
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    Path(path).write_text(head + BEGIN + "\n" + text + END + tail, encoding="utf-8")


# -- main -----------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="repetitions per variant (default 15)")
    parser.add_argument("--cameras", default="1,2,4", help="camera counts (default 1,2,4)")
    parser.add_argument("--modes", default="path,chained", help="pipeline simulations: path,chained")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repetition, 1 camera, path units only, no warm-up; writes no doc")
    parser.add_argument("--write", metavar="FILE", help=f"replace the text between the markers of FILE "
                        f"(default for a full run: {DOC.relative_to(ROOT)})")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.cameras, args.modes = 1, "1", "path"
    counts = sorted({int(c) for c in args.cameras.split(",")} | {1})
    if any(c < 1 or c > len(CAMERA_NAMES) for c in counts):
        parser.error(f"--cameras: 1 to {len(CAMERA_NAMES)}")
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("path", "chained") for m in modes):
        parser.error("--modes: path, chained")
    target = None if args.no_write else (args.write or (None if args.quick else str(DOC)))
    if target:
        check_doc(target)

    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    info = machine()
    rng = random.Random(args.seed)
    cams = {}
    workdir = sendkit.short_dir("scb")

    def stopped(signum, frame):
        raise SystemExit(f"latency: stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):  # SIGINT raises KeyboardInterrupt already
        signal.signal(signum, stopped)  # run the clean-up below, then exit
    try:
        with Sink() as sink:
            for n in counts:
                cams[n] = setup_camera(n, sink.port)
            variants = {("floor", 1): []}
            for mode in modes:
                for n in counts:
                    variants[(mode, n)] = []
            for n in counts:
                variants[("naive", n)] = []
            if not args.quick:  # warm-up: byte-compile, start the gpg agents, fill the page cache
                for n in counts:
                    run_pipeline(cams[n], sink, n, "path")
                floor_sample(cams[1], sink, workdir)
            imports = importtime_report(cams[1], sink, 1 if args.quick else 3)
            bare = bare_python_ms()
            for rep in range(args.reps):
                order = list(variants)
                rng.shuffle(order)
                for kind, n in order:
                    if kind == "floor":
                        sample = floor_sample(cams[1], sink, workdir)
                    elif kind == "naive":
                        sample = naive_sample(cams[1], sink, workdir, n)
                    else:
                        sample = pipeline_sample(cams[n], sink, n, kind)
                    variants[(kind, n)].append(sample)
                print(f"latency: repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        Proc.stop_all()
        for cam in cams.values():
            cam.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results = {"variants": variants, "imports": imports, "bare_python_ms": bare,
               "load": (load_start, os.getloadavg()[0])}
    text = render(results, args, info, started, time.monotonic() - t_start)
    sys.stdout.write(text)
    if target:
        write_doc(target, text)
        print(f"latency: wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
