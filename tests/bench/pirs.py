#!/usr/bin/python3
"""The resident poller on gpiozero's mock pins, with its PIRs driven from stdin (a benchmark harness).

    python3 tests/bench/pirs.py CONFIG

runs seccam's real Poller (lib/seccam/poller.py) on a MockFactory with the
configuration's pins. Each line on stdin drives one pin: ``high 17``,
``low 17``; ``quit`` stops the poller. For every edge it prints
``edge PIN LEVEL T`` (T: time.monotonic(), the same clock in every process
on Linux) after driving the pin, and every log line of the poller as
``log T MESSAGE``: the benchmark reads when the first PIR fired and when the
poller had written the early or motion event. Nothing else differs from
bin/seccam-poller: the same code writes the same files into the same spool.
"""

import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

_out = threading.Lock()


def emit(text):
    with _out:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class Forward(logging.Handler):
    def emit(self, record):
        emit(f"log {time.monotonic():.6f} {record.getMessage()}")


def drive(poller, factory):
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        level, pin = words[0], int(words[1])
        mock = factory.pin(pin)
        # The edge's time is taken before the pin changes: the poller may log what the edge
        # made (an early event) before this thread prints its line.
        t = time.monotonic()
        if level == "high":
            mock.drive_high()
        else:
            mock.drive_low()
        emit(f"edge {pin} {level} {t:.6f}")
    poller.request_stop("stdin")


def main(argv):
    from gpiozero.pins.mock import MockFactory

    from seccam import config
    from seccam.poller import Poller

    root = logging.getLogger("seccam")
    root.setLevel(logging.INFO)
    root.addHandler(Forward())
    root.propagate = False
    factory = MockFactory()
    poller = Poller(config.load(argv[0]), pin_factory=factory)
    threading.Thread(target=drive, args=(poller, factory), daemon=True).start()
    emit(f"ready {time.monotonic():.6f}")
    return poller.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
