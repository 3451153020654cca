"""What stopping gpg-agent after a job would cost the next alarm (docs/performance.md, "gpg-agent").

A command a person types stops the gpg-agent it started (seccam.gpg.stop_watched_agents);
the jobs leave theirs running. This measures why, on this machine, in one run:

* **warm**: the alarm's first sign+encrypt (a ~330 KB noise JPEG to the owner and the
  camera, as jobs/capture does it) with the agent already running;
* **cold**: the same with no agent: gpg starts one first (what every alarm would pay if the
  jobs stopped their agent);
* **stop**: seccam.gpg.stop_agent itself (probe, SIGTERM, wait until gone), the time a job
  would spend stopping the agent at its end.

Usage: /opt/seccam-test-venv/bin/python tests/bench/agent.py [--reps N] [--write docs/performance.md]
Repetitions alternate warm and cold in a shuffled order; medians and p90 (nearest rank);
ratios are ratios of medians against warm, measured in the same run.
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lib"))

from seccam import gpg as seccam_gpg  # noqa: E402

BEGIN, END = "<!-- bench:agent:begin -->", "<!-- bench:agent:end -->"


def p90(values):
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


def measure(reps):
    home = Path(tempfile.mkdtemp(prefix="scag", dir="/tmp"))
    owner_home = Path(tempfile.mkdtemp(prefix="scao", dir="/tmp"))
    try:
        camera = seccam_gpg.Gpg(home)
        cam_fpr = camera.generate_camera_key("cam@example.org")
        owner = seccam_gpg.Gpg(owner_home)
        owner_fpr = owner.generate_camera_key("owner@example.org")
        camera.import_keys(owner.export_armored(owner_fpr))
        seccam_gpg.stop_agent(owner_home)
        image = os.urandom(330_000)
        times = {"warm": [], "cold": [], "stop": []}
        camera.encrypt_sign(image, [owner_fpr, cam_fpr], signer=cam_fpr)  # unmeasured warm-up
        for _ in range(reps):
            for kind in random.sample(["warm", "cold"], 2):
                if kind == "cold":
                    started = time.perf_counter()
                    seccam_gpg.stop_agent(home)
                    times["stop"].append(time.perf_counter() - started)
                else:
                    camera.encrypt_sign(b"x", [owner_fpr, cam_fpr], signer=cam_fpr)  # make sure one runs
                started = time.perf_counter()
                camera.encrypt_sign(image, [owner_fpr, cam_fpr], signer=cam_fpr)
                times[kind].append(time.perf_counter() - started)
        return times
    finally:
        for path in (home, owner_home):
            seccam_gpg.stop_agent(path)
            shutil.rmtree(path, ignore_errors=True)


def table(times, reps):
    warm = statistics.median(times["warm"])
    rows = [("first sign+encrypt, agent running (warm)", "warm"),
             ("first sign+encrypt, no agent: gpg starts one (cold)", "cold"),
             ("stopping the agent (probe, SIGTERM, wait until gone)", "stop")]
    out = [f"{reps} repetitions, 330 KB image to two keys; ms, median / p90; ratio of medians against warm", "",
           "| what | ms | ratio |", "|---|---|---|"]
    for label, kind in rows:
        values = times[kind]
        out.append(f"| {label} | {statistics.median(values) * 1000:.1f} / {p90(values) * 1000:.1f} | "
                   f"{statistics.median(values) / warm:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--write", metavar="FILE", help=f"replace the text between {BEGIN} and {END} in FILE")
    args = parser.parse_args(argv)
    text = table(measure(args.reps), args.reps)
    print(text, end="")
    if args.write:
        doc = Path(args.write).read_text(encoding="utf-8")
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"agent: error: {args.write}: markers {BEGIN} ... {END} not found")
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        Path(args.write).write_text(head + BEGIN + "\n" + text + END + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
