#!/usr/bin/python3
"""The floor's hands: a resident process that runs the floor's steps when told (a benchmark harness).

tests/bench/alarm.py starts it once per CPU profile (inside the Pi-class
cgroup for that profile), so the floor pays neither a Python start-up nor
an import, and runs on the same CPU budget as seccam. One JSON object per
line on stdin, one answer per line on stdout:

    {"capture": [[argv], ...], "encrypt": [argv], "file": PATH, "smtp": {...}}
        -> {"capture": s, "encrypt": s, "smtp": s}

runs the capture command lines one after the other (a camera's capture, and
for a camera module the preview scaling), then ``encrypt`` with ``file`` on
stdin (gpg --sign --encrypt --armor), then submits the ciphertext with smtplib
(connect, EHLO, AUTH, MAIL, RCPT, DATA, QUIT). ``{"text": "..."}`` instead
of ``file`` encrypts that text (a text alert).
"""

import json
import smtplib
import subprocess
import sys
import time


def step(request):
    times = {}
    t = time.monotonic()
    for argv in request.get("capture", []):
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, cwd=request.get("cwd"))
    times["capture"] = time.monotonic() - t
    t = time.monotonic()
    data = open(request["file"], "rb").read() if "file" in request else request["text"].encode()
    ciphertext = subprocess.run(request["encrypt"], input=data, capture_output=True, check=True).stdout
    times["encrypt"] = time.monotonic() - t
    t = time.monotonic()
    s = request["smtp"]
    body = f"From: {s['from']}\r\nTo: {s['to']}\r\nSubject: [...]\r\n\r\n".encode() + \
        ciphertext.replace(b"\n", b"\r\n")
    with smtplib.SMTP(s["host"], s["port"], timeout=30) as smtp:
        smtp.ehlo()
        smtp.login(s["login"], s["password"])
        smtp.sendmail(s["from"], [s["to"]], body)
    times["smtp"] = time.monotonic() - t
    return times


def main():
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            answer = step(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which stops
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
