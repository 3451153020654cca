"""The resident poller (``bin/seccam-poller``, seccam-poller.service): sensors in, event files out.

This module owns the poller process: its main loop, its signals, the
in-memory list of events not yet written, and the liveness stamp
``state/poller.json``. The motion rule itself lives in :mod:`seccam.sensors`;
the poller writes each :class:`~seccam.sensors.Motion` with
:func:`seccam.events.record` and does nothing else: no capture, no network.

Invariants:

* The loop sleeps in one blocking wait until something happens: a device
  callback or a signal (both wake it through a self-pipe), the next deadline
  of the motion rule, the next liveness stamp, or a retry. It never polls the
  pins itself, and no thread of its own or of gpiozero's runs between edges:
  at rest it wakes once per ``liveness_s``.
* An early event (the first PIR edge, :mod:`seccam.sensors` rule 6) is
  written as ``early/new/NAME.json`` at once, so that the capture job
  starts the cameras before the second PIR confirms; the motion event that
  confirms it names it in ``early``. An early event that could not be
  written before its confirmation deadline is dropped: the cameras can no
  longer start early, and the motion event itself is never dropped for it.
* A failed event write (spool full, any OSError) never stops the poller: the
  event stays in a small pending list (at most ``MAX_PENDING``, oldest dropped
  first) and is retried every ``RETRY_S`` seconds and on every new event.
* SIGTERM (and SIGINT) stop it cleanly: pending events are tried once more,
  the devices are closed, the stamp gets ``stopped``, exit code 0.
* SIGHUP reloads the configuration. The devices are rebuilt only if
  ``[sensors]`` changed; warm-up keeps counting from the process start (the
  PIRs were not power-cycled). A configuration that does not load is logged
  and the running one is kept.

The liveness stamp is rewritten every ``sensors.liveness_s`` (with the
``schedule`` library) and at start, reload and stop::

    {"version": 1, "pid": 1234, "started": ISO, "now": ISO, "interval_s": 30.0,
     "pins": {"pir": [17, 27], "button": null, "led": []}, "warmup_until": ISO,
     "pending_events": 0, "stopped": ISO (only after a clean stop),
     "previous": {"last_seen": ISO, "clean_stop": bool} (the run before this one)}

A reader can say "poller was down from X to Y": while it is down, X is the
stamp's mtime and it is older than a few intervals; after a restart, X is
``previous.last_seen`` and Y is ``started``.
"""

import argparse
import collections
import logging
import os
import select
import signal
import time

from . import config as _config
from . import events, runtime
from .errors import SeccamError
from .spool import Spool

PROG = "seccam-poller"
STAMP = "poller"
RETRY_S = 1.0
MAX_PENDING = 64
# Early events written and not yet confirmed, remembered this long after their deadline.
EARLY_MEMORY_S = 60.0

log = logging.getLogger("seccam.poller")


class Waker:
    """A self-pipe: ``wake()`` is safe from any thread and from a signal handler; ``wait()`` sleeps until it."""

    def __init__(self):
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self):
        try:
            os.write(self._w, b"x")
        except BlockingIOError:  # the pipe is full: a wake-up is pending anyway
            pass

    def wait(self, timeout):
        ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        if ready:
            try:
                while os.read(self._r, 512):
                    pass
            except BlockingIOError:
                pass

    def __del__(self):
        # Closed only with the object: a late wake() from another thread must never hit a reused fd.
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:  # pragma: no cover - only if our own pipe fd was closed already
                pass


class Poller:
    """One poller process for ``config``. ``pin_factory`` goes to the devices (None: gpiozero's default)."""

    def __init__(self, config, pin_factory=None):
        import schedule  # only the poller needs it

        self.config = config
        self.pin_factory = pin_factory
        self.spool = Spool(config.spool_dir).ensure()
        self.pending = collections.deque()
        self.early_written = {}  # (pin, active_at) -> name of the early event file
        self.detector = None
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.previous = self._previous_run()
        self.scheduler = schedule.Scheduler()
        self._waker = Waker()
        self._stop = None
        self._reload = False
        self._failing = False
        self.retry_s = RETRY_S

    # -- requests (signal handlers, other threads) ---------------------------
    def request_stop(self, reason="request"):
        self._stop = reason
        self._waker.wake()

    def request_reload(self):
        self._reload = True
        self._waker.wake()

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.request_reload()
        else:
            self.request_stop(signal.Signals(signum).name)

    # -- the loop ------------------------------------------------------------
    def run(self, install_signals=True):
        """Run until stopped; return the exit code (0)."""
        previous = {}
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self.detector = self._build(self.config.sensors)
            self._schedule()
            self.write_stamp()
            log.info("started pid=%d pins=%s warmup_s=%g coincidence_s=%g cooldown_s=%g", os.getpid(),
                     _pins_text(self.detector.pins), self.config.sensors.warmup_s,
                     self.config.sensors.coincidence_s, self.config.sensors.cooldown_s)
            while self._stop is None:
                if self._reload:
                    self._reload = False
                    self.reload()
                self.step()
                self._waker.wait(self._timeout())
            log.info("stopping reason=%s", self._stop)
            self.step()
            if self.pending:
                log.error("stopped events=lost pending=%d reason=%r", len(self.pending), "spool not writable")
            return 0
        finally:
            if self.detector is not None:
                self.detector.close()
            self.scheduler.clear()
            if self._stop is not None:
                self.write_stamp(stopped=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def step(self):
        """One turn of the loop: collect events, write what is pending, run due jobs."""
        for event in self.detector.take_early():
            self._queue(event)
        for event in self.detector.poll():
            self._queue(event)
        self.flush()
        self.scheduler.run_pending()

    def _timeout(self):
        waits = [self.config.sensors.liveness_s]
        idle = self.scheduler.idle_seconds
        if idle is not None:
            waits.append(idle)
        deadline = self.detector.next_deadline()
        if deadline is not None:
            waits.append(deadline - time.monotonic())
        if self.pending:
            waits.append(self.retry_s)
        return max(0.0, min(waits))

    def _build(self, sensors):
        from .sensors import Detector

        return Detector(sensors, pin_factory=self.pin_factory, notify=self._waker.wake, started=self.started_mono)

    def _schedule(self):
        self.scheduler.clear()
        self.scheduler.every(self.config.sensors.liveness_s).seconds.do(self.write_stamp)

    # -- events --------------------------------------------------------------
    def _queue(self, event):
        self.pending.append(event)
        if len(self.pending) > MAX_PENDING:
            dropped = self.pending.popleft()
            log.error("event=dropped source=%s time=%s pending=%d reason=%r", dropped.source,
                      events.iso(dropped.when), len(self.pending), "too many events not written")

    def flush(self):
        """Write pending events in order; on the first failure keep it and the rest for the next try."""
        while self.pending:
            event = self.pending[0]
            if event.source == "early":
                if not self._write_early(event):
                    return False
                continue
            try:
                path = events.record(self.spool, event.source, sensors=list(event.sensors), when=event.when,
                                     early=self._confirms(event))
            except (SeccamError, OSError) as exc:
                if not self._failing:
                    log.error("event=write-failed source=%s pending=%d error=%r retry_s=%g", event.source,
                              len(self.pending), str(exc), self.retry_s)
                self._failing = True
                return False
            self.pending.popleft()
            log.info("motion source=%s pins=%s event=%s", event.source,
                     ",".join(str(pin) for pin, _ in event.sensors), path.name)
            self._recovered()
        return True

    def _recovered(self):
        if self._failing:
            log.info("event=write-recovered pending=%d", len(self.pending))
            self._failing = False

    def _write_early(self, event):
        """Write the early event at the head of the queue; False (kept) if the spool refused it."""
        (pin, at), = event.sensors
        confirm_by = at + self.config.sensors.coincidence_s
        if time.time() > confirm_by:
            self.pending.popleft()
            log.warning("early=dropped pin=%s reason=%r", pin, "not written before its confirmation deadline")
            return True
        try:
            path = events.record_early(self.spool, pin, at, confirm_by)
        except (SeccamError, OSError) as exc:
            if not self._failing:
                log.error("event=write-failed source=early pending=%d error=%r retry_s=%g", len(self.pending),
                          str(exc), self.retry_s)
            self._failing = True
            return False
        self.pending.popleft()
        now = time.time()
        for key in [k for k in self.early_written if k[1] < now - EARLY_MEMORY_S]:
            del self.early_written[key]
        self.early_written[(pin, at)] = path.name
        log.info("early pin=%s event=%s confirm_by=%s", pin, path.name, events.iso(confirm_by))
        self._recovered()
        return True

    def _confirms(self, event):
        """The name of the early event that PIR coincidence ``event`` confirms, or None."""
        if event.source != "pir":
            return None
        for key in event.sensors:
            name = self.early_written.pop(tuple(key), None)
            if name is not None:
                return name
        return None

    # -- liveness ------------------------------------------------------------
    def _previous_run(self):
        """When the poller before this one was last seen, and whether it stopped cleanly, so a
        heartbeat can say "down from X to Y" although this run replaces the stamp."""
        seen = self.spool.state_mtime(STAMP)
        if seen is None:
            return None
        old = self.spool.read_state(STAMP) or {}
        return {"last_seen": events.iso(seen), "clean_stop": "stopped" in old}

    def write_stamp(self, stopped=False):
        now = time.time()
        stamp = {
            "version": 1,
            "pid": os.getpid(),
            "started": events.iso(self.started_wall),
            "now": events.iso(now),
            "interval_s": self.config.sensors.liveness_s,
            "pins": _pins(self.config.sensors),
            "warmup_until": events.iso(self.started_wall + self.config.sensors.warmup_s),
            "pending_events": len(self.pending),
            "config": str(self.config.path),
        }
        if self.previous:
            stamp["previous"] = self.previous
        if stopped:
            stamp["stopped"] = events.iso(now)
        try:
            self.spool.write_state(STAMP, stamp)
        except (SeccamError, OSError) as exc:
            log.error("stamp=write-failed error=%r", str(exc))

    # -- reload --------------------------------------------------------------
    def reload(self):
        """Load the configuration again; keep the running one if the new one fails. Return True if applied."""
        old = self.config
        try:
            new = _config.load(old.path)
            spool = Spool(new.spool_dir).ensure()
        except SeccamError as exc:
            log.error("reload=failed keeping=old error=%r", str(exc))
            return False
        if new.sensors != old.sensors:
            self.detector.close()
            try:
                self.detector = self._build(new.sensors)
            except SeccamError as exc:
                self.detector = self._build(old.sensors)  # if this fails too, the exception ends the process
                # Logged once the old pins are open again: from this line on, they are watched.
                log.error("reload=failed keeping=old error=%r", str(exc))
                return False
        self.config = new
        self.spool = spool
        self._schedule()
        self.write_stamp()
        log.info("reloaded pins=%s", _pins_text(_pins(new.sensors)))
        return True


def _pins(sensors):
    return {"pir": list(sensors.pir_pins), "button": sensors.button_pin, "led": list(sensors.led_pins)}


def _pins_text(pins):
    text = "pir:" + ",".join(map(str, pins["pir"]))
    if pins["button"] is not None:
        text += f"/button:{pins['button']}"
    if pins["led"]:
        text += "/led:" + ",".join(map(str, pins["led"]))
    return text


def _main(argv):
    parser = argparse.ArgumentParser(prog=PROG, description="Watch the PIR sensors and record motion events.")
    runtime.add_common_arguments(parser)
    args = parser.parse_args(argv)
    runtime.setup_logging(PROG, args.verbose)
    cfg = _config.load(args.config)
    return Poller(cfg).run()


def main(argv=None):
    """Entry point of bin/seccam-poller: exit 0 on SIGTERM, 78 on a bad configuration at start."""
    return runtime.run(PROG, _main, argv)

