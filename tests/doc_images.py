#!/usr/bin/python3
"""Writes docs/images/contact-sheet.jpg, the example contact sheet of docs/operations.md.

It is made the way the camera makes one: a camera on fswebcam's ``test``
source (its colour-bar test picture), twelve and a half minutes of motion with
an event every 30 s (seccam.events.record), each captured by the capture job
(``capture.process``), the camera unplugged for one capture in the middle (a
real fswebcam failure), and the incident job (``incident.process``) ending the
incident and drawing its sheet. Times are an injected clock starting at
2026-11-25 14:02:00 in UTC, so the picture is the same on every run.

    /usr/bin/python3 tests/doc_images.py                 # rewrites docs/images/contact-sheet.jpg
    /usr/bin/python3 tests/doc_images.py /tmp/sheet.jpg  # writes elsewhere

tests/test_doc_images.py makes it again and compares it with the committed file.
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "images" / "contact-sheet.jpg"
START = 1_795_615_320.0        # 2026-11-25 14:02:00 UTC
EVENTS = 26                    # every 30 s: 12.5 minutes
FAILED_AT = 13                 # the capture during which the camera is unplugged


def config_text(root, device):
    return f'''spool_dir = "{root}/spool"
state_dir = "{root}/state"

[account]
address = "cam@example.org"
display_name = "Front door"
password = "unused"
smtp_host = "127.0.0.1"
smtp_security = "plain"

[[camera]]
name = "front"
device = "{device}"
resolution = "640x360"
timeout_s = 5
'''


def make(output):
    os.environ["TZ"] = "UTC"
    time.tzset()
    sys.path.insert(0, str(ROOT / "lib"))
    from seccam import capture, config, events, incident
    from seccam.spool import Spool

    root = Path(tempfile.mkdtemp(prefix="scdoc", dir="/tmp"))
    try:
        path = root / "seccam.toml"
        spool = None
        for k in range(EVENTS):
            t = START + 30 * k
            path.write_text(config_text(root, "/dev/video-unplugged" if k == FAILED_AT else "test"))
            path.chmod(0o600)
            cfg = config.load(path)
            spool = Spool(cfg.spool_dir).ensure()
            events.record(spool, "pir", [(17, t - 0.4), (27, t)], when=t)
            capture.process(cfg, spool, now=lambda: t)
        [made] = incident.process(cfg, spool, now=lambda: START + 30 * (EVENTS - 1) + cfg.incident.gap_s)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made / "sheet-01.jpg", output)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return Path(output)


if __name__ == "__main__":
    print(make(sys.argv[1] if len(sys.argv) > 1 else OUTPUT))
