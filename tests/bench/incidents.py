#!/opt/seccam-test-venv/bin/python
"""Incident benchmark: how many messages continuous motion sends, with and without incidents.

Run it with the test venv (aiosmtpd)::

    /opt/seccam-test-venv/bin/python tests/bench/incidents.py           # ~3 min, rewrites docs/performance.md
    /opt/seccam-test-venv/bin/python tests/bench/incidents.py --no-write
    /opt/seccam-test-venv/bin/python tests/bench/incidents.py --quick   # the 2-minute scenario, 1 repetition

Message counts (an hour of motion, simulated). The motion source is the
poller's own rule, :class:`seccam.sensors.Coincidence`, with both PIRs held
high: it emits an event at once and then one every ``cooldown_s`` on its fixed
grid. Time is an **injected clock**: every job runs in this process through
the functions the ``jobs/`` wrappers call (``capture.process``,
``incident.process``, ``heartbeat.process``, ``send.work``) with ``now`` =
the simulated time, so an hour of motion takes as long as its 120 captures
(fswebcam's ``test`` source, 640x360, two cameras), not an hour. The
schedule is production's: jobs/capture and jobs/send right after each motion
event (the systemd path units), and every simulated minute jobs/capture,
jobs/incident and jobs/send (cron), the heartbeat on the full hour. The
messages are real: signed and encrypted by gpg and accepted by an aiosmtpd
server on 127.0.0.1, which is stopped for the offline scenario (connection
refused: jobs/send opens an outage) and started again. The baseline, "today",
is the same run with ``[incident] gap_s = 0`` (incidents off: every capture is
an alarm, which is what main did before incidents).

Every capture is checked to be on a sheet: each closed incident's
``summary.json`` (which capture is on which sheet) must list every capture
kept in the incident for every camera that took part, and the summary's
messages must have reached the server.

First alarm latency (real time, real entry points): ``bin/seccam trigger``,
then ``jobs/capture`` and ``jobs/send`` started as systemd's path units would
(tests/bench/latency.py's watcher), two cameras on ``raw:/dev/urandom``, from
the start of ``seccam trigger`` to the SMTP server's 250 for the first
preview. Variants, interleaved in a shuffled order per repetition: incidents
off (today), incidents on with no incident open, and incidents on with a
stale incident (its gap passed) that the alarm's capture job must close
first.

Not a test: nothing passes or fails on a number. tests/test_bench_smoke.py runs
``--quick`` and checks that the tables are well formed.
"""

import argparse
import datetime
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

import latency  # noqa: E402  (the loopback sink, camera set-up and path-unit watcher)
from helpers import sendkit  # noqa: E402

BEGIN, END = "<!-- incidents:begin -->", "<!-- incidents:end -->"
DOC = ROOT / "docs" / "performance.md"
COMMAND = "/opt/seccam-test-venv/bin/python tests/bench/incidents.py"
CAMERAS = ("front", "yard")
HOUR = 3600

logging.getLogger("mail.log").setLevel(logging.ERROR)
# The jobs' own log lines (an outage logs every deferral) are not the benchmark's output.
logging.getLogger("seccam").addHandler(logging.NullHandler())
logging.getLogger("seccam").propagate = False


class Clock:
    """The simulated time every job gets as ``now``."""

    def __init__(self, start):
        self.t = float(start)

    def __call__(self):
        return self.t


def camera_toml(names, resolution="640x360"):
    return "".join(f'\n[[camera]]\nname = "{n}"\ndevice = "test"\nresolution = "{resolution}"\n' for n in names)


def make_config(cam, port, cameras, cooldown_s, incidents_on):
    text = (f'spool_dir = "{cam.root}/spool"\nstate_dir = "{cam.root}/state"\n\n'
            + sendkit.account_toml(port=port)
            + f'\n[delivery]\nrecipients = ["{latency.RECIPIENT}"]\n'
            + f"\n[sensors]\ncooldown_s = {cooldown_s}\n"
            + ("" if incidents_on else "\n[incident]\ngap_s = 0\n")
            + camera_toml(cameras))
    cam.config_path.write_text(text)
    cam.config_path.chmod(0o600)
    return cam.reload()


def motion_times(start, duration_s, cooldown_s):
    """Event times of continuous motion from the poller's rule: both PIRs high for ``duration_s``."""
    from seccam.sensors import Coincidence
    clock = Clock(start)
    rule = Coincidence((17, 27), window_s=2.0, cooldown_s=cooldown_s, warmup_s=0, now=clock, wall=clock,
                       started=start)
    out = [m.when for m in rule.activate(17) + rule.activate(27)]
    while True:
        due = rule.next_deadline()
        if due is None or due >= start + duration_s:
            break
        clock.t = due
        out += [m.when for m in rule.tick()]
    return out


class Scenario:
    """One simulated run: motion from ``start`` for ``duration_s``; the server down in ``offline``."""

    def __init__(self, label, cameras, cooldown_s, duration_s, incidents_on, offline=None, tail_s=900):
        self.label, self.cameras, self.cooldown_s = label, cameras, cooldown_s
        self.duration_s, self.incidents_on, self.offline, self.tail_s = duration_s, incidents_on, offline, tail_s


def run_scenario(sc, sink):
    from seccam import capture, encrypt, events, heartbeat, incident, send
    from seccam.errors import SeccamError

    cam = sendkit.make_camera(recipients=(latency.RECIPIENT,))
    try:
        cfg = make_config(cam, sink.port, sc.cameras, sc.cooldown_s, sc.incidents_on)
        spool = cam.spool
        start = float(int(time.time()) // HOUR * HOUR + 120)   # 2 minutes past a full hour
        clock = Clock(start)
        motion = motion_times(start, sc.duration_s, sc.cooldown_s)
        end = start + sc.duration_s + sc.tail_s
        offline = None if sc.offline is None else (start + sc.offline[0], start + sc.offline[1])
        sink.reset()
        up = True
        per_phase = {"motion": 0, "back online": 0}
        back_online_at = None

        def server(at):
            nonlocal up, back_online_at
            want = offline is None or not (offline[0] <= at < offline[1])
            if want and not up:
                sink.__enter__()
                up = True
                back_online_at = len(sink.received)
            elif not want and up:
                sink.__exit__(None, None, None)
                up = False

        def send_run(at):
            try:
                send.work(cfg, now=at, clock=lambda: at, sleep=lambda s: None)
            except SeccamError:
                pass  # deferred while offline: counted by what the server accepted

        def encrypt_run():
            try:
                encrypt.process(cfg, spool)
            except SeccamError:
                pass

        timeline = [(t, 0, "motion") for t in motion]
        minute = start - start % 60 + 60
        while minute <= end:
            timeline.append((minute, 1, "cron"))
            if minute % HOUR == 0:
                timeline.append((minute, 2, "heartbeat"))
            minute += 60
        timeline.sort()
        captures_before = 0
        for at, _, what in timeline:
            clock.t = at
            server(at)
            if what == "motion":
                events.record(spool, "pir", [(17, at), (27, at)], when=at)
                capture.process(cfg, spool, now=clock)         # the path unit on events/new
                encrypt_run()                                   # jobs/capture hands over to the encrypt step
                send_run(at)                                    # the path unit on outbox/new
                captures_before += 1
            elif what == "cron":
                capture.process(cfg, spool, now=clock)
                incident.process(cfg, spool, now=clock)
                encrypt_run()
                send_run(at)
            else:
                heartbeat.process(cfg, spool, now=clock)
                encrypt_run()
                send_run(at)
        if not up:
            raise RuntimeError(f"{sc.label}: the server is still down at the end")
        accepted = list(sink.received)
        check = check_sheets(cfg, spool, accepted, cam) if sc.incidents_on else None
        kinds = classify(accepted, cam)
        return {"label": sc.label, "events": len(motion), "messages": len(accepted), "kinds": kinds,
                "bytes": sum(len(r.data) for r in accepted), "check": check,
                "after_outage": None if back_online_at is None else len(accepted) - back_online_at,
                "pending": sum(len(spool.items(s)) for s in ("outbox.new", "outbox.deferred", "outbox.failed",
                                                               "sets.ready", "sets.held"))}
    finally:
        cam.close()


def classify(accepted, cam):
    """{kind: count} of the delivered messages, from their decrypted subjects."""
    out = {}
    for rec in accepted:
        inner, _ = sendkit.decrypt_message(rec.data, cam.recipients[0])
        subject = str(inner["Subject"])
        kind = ("first alarm" if subject.startswith("Motion:") else
                "update" if subject.startswith("Motion continues") else
                "summary sheet" if subject.startswith("Incident") else
                "outage summary" if subject.startswith("Back online") else
                "heartbeat" if subject.startswith("Heartbeat") else subject)
        out[kind] = out.get(kind, 0) + 1
    return out


def check_sheets(cfg, spool, accepted, cam):
    """(captures kept, captures on a sheet, sheets delivered, sheets planned); raises if one is missing."""
    kept = on_sheets = planned = 0
    for path in spool.items("incidents.closed"):
        summary = json.loads((path / "summary.json").read_text())
        cameras = {p.name: {c["name"] for c in json.loads((p / "meta.json").read_text())["cameras"]}
                   for p in path.glob("*-capture.set")}
        for name in CAMERAS:
            listed = [c for s in summary["sheets"] if s["camera"] == name for c in s["captures"]]
            having = sorted(c for c, names in cameras.items() if name in names)
            if sorted(listed) != having:
                raise RuntimeError(f"incident {path.name}: camera {name}: {len(having)} captures, "
                                   f"{len(listed)} on its sheets")
            kept += len(having)
            on_sheets += len(listed)
        planned += len(summary["sheets"])
    if spool.items("incidents.open") or spool.items("incidents.closing"):
        raise RuntimeError("an incident did not end")
    delivered = 0
    for rec in accepted:
        inner, _ = sendkit.decrypt_message(rec.data, cam.recipients[0])
        if str(inner["Subject"]).startswith("Incident") and any(
                p.get_content_type() == "image/jpeg" for p in inner.iter_parts()):
            delivered += 1
    if delivered != planned:
        raise RuntimeError(f"{planned} sheets made, {delivered} delivered")
    return {"kept": kept, "on_sheets": on_sheets, "sheets": delivered}


# -- first alarm latency ----------------------------------------------------------------
def stale_incident(spool, gap_s):
    """An open incident whose last motion is older than the gap (the capture job must close it)."""
    iid = "20200101T000000.000000Z.1.deadbeef"
    path = spool.dir("incidents.open") / iid
    path.mkdir(parents=True)
    when = time.time() - 2 * gap_s
    record = {"version": 1, "id": iid, "started_ts": when, "started": datetime.datetime.fromtimestamp(
        when, datetime.timezone.utc).isoformat(), "events": [], "alarm_set": f"{iid}-alarm"}
    (path / "incident.json").write_text(json.dumps(record))


def reset_incidents(spool):
    for state in ("incidents.open", "incidents.closing", "incidents.closed"):
        for p in spool.items(state):
            shutil.rmtree(p)


def latency_run(reps):
    sink = latency.Sink()
    with sink:
        cam = latency.setup_camera(2, sink.port, incidents=True)
        try:
            off = cam.config_path.with_name("off.toml")
            off.write_text(cam.config_path.read_text() + "\n[incident]\ngap_s = 0\n")
            off.chmod(0o600)
            variants = {"incidents off (today)": {"SECCAM_CONFIG": str(off)},
                        "incidents on, none open": {},
                        "incidents on, a stale one to close first": {}}
            samples = {v: [] for v in variants}
            latency.pipeline_sample(cam, sink, 2, "path")   # warm-up, unmeasured
            for _ in range(reps):
                order = list(variants)
                random.shuffle(order)
                for v in order:
                    reset_incidents(cam.spool)
                    if "stale" in v:
                        stale_incident(cam.spool, cam.config.incident.gap_s)
                    t0, _, captures, sends, accepted = latency.run_pipeline(cam, sink, 2, "path", variants[v])
                    sent = [m.group(1) for p in sends for _, m in p.matches(r"message=(\S+) state=sent")]
                    first = min(t for (t, _), name in zip(accepted, sent) if ".preview." in name)
                    samples[v].append(latency.ms(first - t0))
                    if "stale" in v and not cam.spool.items("incidents.closing"):
                        raise RuntimeError("the stale incident was not closed by the alarm's capture job")
            return samples
        finally:
            cam.close()


def bookkeeping_run(reps):
    """ms of incident work in the first alarm's capture job, measured alone: what stays on the
    alarm's critical path (routing the event; after the capture, the check that the incident is
    open; at the end of the run, the check for a stale incident) and what runs while the cameras
    expose (closing a stale incident, opening the new one: a directory with one fsynced record,
    renamed in); with no incident open, and with a stale one to close first."""
    from seccam import config, events, incident
    from seccam.spool import Spool
    root = Path(sendkit.short_dir("scbk"))
    try:
        path = root / "seccam.toml"
        path.write_text(f'spool_dir = "{root}/spool"\nstate_dir = "{root}/state"\n' + camera_toml(CAMERAS[:1]))
        cfg = config.load(path)
        spool = Spool(cfg.spool_dir).ensure()
        out = {}
        for _ in range(reps):
            for variant in ("none open", "a stale one to close first"):
                reset_incidents(spool)
                if "stale" in variant:
                    stale_incident(spool, cfg.incident.gap_s)
                path = events.record(spool, "pir", [(17, time.time())])
                ev = dict(events.load(path), _path=spool.move(path, "events.done"))
                t0 = time.perf_counter()
                route = incident.route(cfg, spool, [ev])
                t1 = time.perf_counter()
                incident.during_capture(spool, route, [ev], time.time())()
                t2 = time.perf_counter()
                incident.after_capture(cfg, spool, route, [ev], time.time())
                incident.close_stale(cfg, spool, time.time())
                t3 = time.perf_counter()
                out.setdefault(f"{variant}: on the critical path", []).append(latency.ms(t1 - t0 + t3 - t2))
                out.setdefault(f"{variant}: while the cameras expose", []).append(latency.ms(t2 - t1))
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- report -------------------------------------------------------------------------------
def render(results, latencies, bookkeeping, args, started, elapsed):
    info = latency.machine()
    out = [f"Measured {started:%Y-%m-%d %H:%M} UTC, nproc={info['nproc']}, {info['python']}, {info['gpg']}, "
           f"load average {args.load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (other work on "
           f"the machine inflates the latencies, not the counts); the run took {elapsed:.0f} s.", "",
           f"Regenerate: `{COMMAND}{' --quick' if args.quick else ''}` (from the repository root).", "",
           "### Messages for continuous motion (simulated time, real captures, gpg and SMTP)", "",
           "| scenario | motion events | today: messages | with incidents: messages | target | met | "
           "what the owner gets | captures on a sheet | MB, today / with incidents |",
           "|---|---:|---:|---:|---:|---|---|---|---:|"]
    for label, target, today, new in results:
        kinds = ", ".join(f"{n} {k}" for k, n in new["kinds"].items())
        check = new["check"]
        sheets = f"{check['on_sheets']} of {check['kept']} (+ the first alarm's)" if check else "n/a"
        met = "yes" if new["messages"] <= target else "**no**"
        if new.get("after_outage") is not None:
            kinds += f"; {new['after_outage']} after the server returned"
        out.append(f"| {label} | {new['events']} | {today['messages']} | {new['messages']} | ≤ {target} | {met} | "
                   f"{kinds} | {sheets} | {today['bytes'] / 1e6:.1f} / {new['bytes'] / 1e6:.1f} |")
    out.append("")
    out.append("Every scenario ended with nothing left to send (outbox and ready sets empty) and every incident "
               "closed. Megabytes are of fswebcam's test picture, which compresses far better than a real scene.")
    if latencies:
        out += ["", "### First alarm: from `seccam trigger` to the first preview's 250 (ms, 2 cameras, path units)", "",
                f"{len(next(iter(latencies.values())))} repetition(s) per variant, interleaved in a shuffled order.",
                "", "| variant | median | p90 | median / today |", "|---|---:|---:|---:|"]
        base = latency.median(latencies["incidents off (today)"])
        for v, vals in latencies.items():
            out.append(f"| {v} | {latency.fmt(latency.median(vals))} | {latency.fmt(latency.p90(vals))} | "
                       f"{latency.median(vals) / base:.2f} |")
    if bookkeeping:
        n = len(next(iter(bookkeeping.values())))
        out += ["", "### What incidents add to the first alarm's path, measured alone (ms, in-process)", "",
                f"{n} repetition(s). On the critical path: routing the event, the check after the capture that "
                "its incident is open, the stale-incident check at the end of the run. While the cameras expose "
                "(the capture job's `while_waiting` hook, like its GnuPG prewarm): closing a stale incident and "
                "opening the new one (a new directory with one fsynced record, renamed in).", "",
                "| variant | median | p90 |", "|---|---:|---:|"]
        for v, vals in bookkeeping.items():
            out.append(f"| incidents on, {v} | {latency.fmt(latency.median(vals), 1)} | "
                       f"{latency.fmt(latency.p90(vals), 1)} |")
    return "\n".join(out) + "\n"


def scenarios(quick):
    out = [("2 min of motion, 1 camera, `cooldown_s = 5`", 12,
            dict(cameras=CAMERAS[:1], cooldown_s=5, duration_s=120, tail_s=600))]
    if not quick:
        out.insert(0, ("1 h of motion, 2 cameras, defaults", 20,
                       dict(cameras=CAMERAS, cooldown_s=30, duration_s=HOUR, tail_s=600)))
        out.append(("1 h offline with motion, 2 cameras; server back as the motion stops", 10,
                    dict(cameras=CAMERAS, cooldown_s=30, duration_s=HOUR, tail_s=600, offline=(-60, HOUR))))
        out.append(("1 h offline with motion, 2 cameras; server back 10 min after it stopped", 10,
                    dict(cameras=CAMERAS, cooldown_s=30, duration_s=HOUR, tail_s=1200, offline=(-60, HOUR + 600))))
    return out


def write_doc(doc, text):
    content = doc.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + text + END + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="the 2-minute scenario and 1 latency repetition")
    parser.add_argument("--reps", type=int, default=10, help="first-alarm latency repetitions per variant")
    parser.add_argument("--write", type=Path, default=None, help="file with the markers (default docs/performance.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.load = os.getloadavg()
    doc = None if args.no_write else (args.write or (None if args.quick else DOC))
    if doc is not None:
        text = doc.read_text()
        if BEGIN not in text or END not in text:
            print(f"{doc}: no {BEGIN} ... {END} markers", file=sys.stderr)
            return 1
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results = []
    sink = latency.Sink()
    with sink:
        today_offline = None
        for label, target, kw in scenarios(args.quick):
            print(f"incidents: {label} ...", file=sys.stderr, flush=True)
            new = run_scenario(Scenario(label, incidents_on=True, **kw), sink)
            if kw.get("offline") and today_offline is not None:
                # Without incidents both offline runs deliver the same backlog (every alarm, the outage
                # summary, the newest heartbeat); an offline run without incidents is the slowest part
                # of the benchmark, so it runs once.
                today = today_offline
            else:
                today = run_scenario(Scenario(label, incidents_on=False, **kw), sink)
                if kw.get("offline"):
                    today_offline = today
            for r in (new, today):
                if r["pending"]:
                    raise RuntimeError(f"{label}: {r['pending']} item(s) left unsent")
            results.append((label, target, today, new))
    print("incidents: first alarm latency ...", file=sys.stderr, flush=True)
    latencies = latency_run(1 if args.quick else args.reps)
    bookkeeping = bookkeeping_run(5 if args.quick else 50)
    text = render(results, latencies, bookkeeping, args, started, time.monotonic() - t0)
    print(text)
    if doc is not None:
        write_doc(doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
