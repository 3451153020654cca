"""Motion detection: the PIR coincidence rule, and the gpiozero devices that feed it.

This module owns the decision "was there motion?" and is the only module of
seccam that imports gpiozero (inside :class:`Detector`, never at import time).
It records nothing itself: it hands :class:`Motion` values to its caller
(:mod:`seccam.poller`), which writes them to the spool.

Two layers:

* :class:`Coincidence` is pure logic with an injected clock, testable without
  gpiozero. Call ``activate(pin)``, ``deactivate(pin)`` and ``tick()``; each
  returns the list of :class:`Motion` events to record now.
* :class:`Detector` opens plain ``DigitalInputDevice`` inputs (PIRs, button)
  and ``LED`` outputs on the configured pins with an explicit ``pin_factory``
  (``MockFactory`` in tests), and feeds their edges to a :class:`Coincidence`.
  Edge detection comes from the pin factory (the kernel's GPIO edge events
  on a Pi): no device starts a thread of its own, so nothing runs between
  edges. The callbacks run in the pin library's thread (on mock pins: in the
  thread that drives the pin) and only update state and append to a queue.

The rule, exactly (times are monotonic seconds; ``window`` = coincidence_s)
-------------------------------------------------------------------------
1. *Warm-up.* Until ``warmup_s`` after ``started`` (an HC-SR501 gives false
   outputs for about a minute after power-up) nothing is emitted; edges only
   update each pin's state. When warm-up ends (the first call at or after
   that moment), edges seen during warm-up are forgotten, and every pin that
   is active then counts as activated at that moment.
2. *Coincidence.* Motion is a PIR rising edge (an activation) on every
   configured pin, the newest and oldest of them at most ``window`` apart. An
   earlier pin that has already dropped still counts (short pulses). Each
   activation takes part in at most one coincidence, so one pin flickering
   while another stays high does not make new coincidences.
3. *Cooldown.* At most one PIR event per ``cooldown_s``. A coincidence is
   emitted at once if no cooldown is running; otherwise it is *owed*, and
   emitted when the cooldown ends (so no motion is lost, only delayed).
4. *Held high.* When a cooldown ends and every PIR has stayed active ever
   since the last event (no pin dropped in between), another event is
   emitted, and a new cooldown starts. Cooldowns follow each other on a fixed
   grid (event time + k * cooldown_s), so late ticks do not drift.
   Example: both PIRs rise at t=0 and stay high until t=300, cooldown_s=30:
   events at t=0, 30, 60, ..., 270, i.e. exactly 10 (an event at t=300 only
   if a tick came before the release).
5. ``cooldown_s = 0`` disables both rate limit and repeats: one event per
   coincidence, nothing while held.
6. *Early capture* (``early_burst`` > 0, two or more PIRs). The first rising
   edge of a possible coincidence (warm, no cooldown running, no other PIR
   activated within ``window``, no early event pending) is reported at once
   as an ``"early"`` event, so that the cameras can start before the second
   PIR confirms. The coincidence that includes that very activation (same
   pin, same ``active_at``) *confirms* it. Early events
   are rate-limited by a token bucket: at most ``early_burst`` in a row, one
   more every ``early_refill_s``; a confirmed one gives its token back, so
   only unconfirmed ones (single-PIR false triggers) use the bucket up.

A manual button (``button_pin``) is not a PIR: each press is one event with
source ``"button"``, also during warm-up. LEDs (``led_pins``) mirror the PIRs'
raw level, warm-up included (useful for a walk test).

Hardware facts the Detector copes with: an edge callback never fires for a
pin that is already high when it is attached, so the level of every PIR is
read once after the callbacks are attached. The HC-SR501 gives a clean, held
digital level (docs/wiring.md: retrigger jumper ``H``, short Tx), so an edge
per change is all there is to see; no smoothing, no sampling. gpiozero's
``MotionSensor`` would sample every pin in a thread (``sample_rate`` times a
second) and ``Button`` keeps a hold-time thread that wakes every 0.1 s: both
are avoided on purpose (docs/performance.md, "The poller at rest").

Example::

    >>> from seccam.sensors import Coincidence
    >>> t = [0.0]
    >>> c = Coincidence((17, 27), window_s=2, cooldown_s=30, warmup_s=0, now=lambda: t[0], wall=lambda: t[0])
    >>> c.activate(17)
    []
    >>> t[0] = 1.5
    >>> [(m.source, m.sensors) for m in c.activate(27)]
    [('pir', ((17, 0.0), (27, 1.5)))]
"""

import collections
import logging
import threading
import time

from .errors import PermanentError

log = logging.getLogger("seccam.sensors")

#: One event to record: ``source`` ("pir" | "button" | "early"), ``sensors`` ((pin, active_at POSIX ts), ...),
#: ``when`` (POSIX ts of the decision). A PIR coincidence confirms an early event when one of its
#: ``sensors`` is the early event's (pin, active_at).
Motion = collections.namedtuple("Motion", "source sensors when")


class Coincidence:
    """The motion rule of the module docstring, for the PIRs on ``pins``.

    ``now`` is a monotonic clock for windows and cooldowns, ``wall`` gives the
    POSIX timestamps written into events; ``started`` (in ``now``'s time,
    default: now) is when the sensors were powered, the start of warm-up.
    Thread-safe: gpiozero calls ``activate``/``deactivate`` from its threads.
    """

    def __init__(self, pins, window_s, cooldown_s, warmup_s, now=time.monotonic, wall=time.time, started=None,
                 early_burst=0, early_refill_s=600.0):
        if not pins:
            raise ValueError("at least one PIR pin is needed")
        self.pins = tuple(pins)
        self.window_s = float(window_s)
        self.cooldown_s = float(cooldown_s)
        self._now = now
        self._wall = wall
        self._lock = threading.Lock()
        self._active = dict.fromkeys(self.pins, False)
        self._rose = dict.fromkeys(self.pins)          # pin -> (mono, wall) of its last activation
        self._fresh = dict.fromkeys(self.pins, False)  # activation not yet used by a coincidence
        self.warm_until = (now() if started is None else started) + float(warmup_s)
        self._warm = False
        self._next_due = None   # end of the running cooldown (mono), or None
        self._owed = False      # a coincidence happened during the cooldown
        self._held = False      # every PIR active without a drop since the last event
        # Early capture (rule 6): a token bucket, and the early event waiting for its confirmation.
        self.early_burst = int(early_burst) if len(self.pins) > 1 else 0
        self.early_refill_s = float(early_refill_s)
        self._tokens = float(self.early_burst)
        self._tokens_at = self.warm_until
        self._early = None      # (pin, mono, wall) of the pending early event

    # -- inputs --------------------------------------------------------------
    def activate(self, pin):
        """PIR ``pin`` went high; return the events to record now."""
        with self._lock:
            t = self._now()
            out = self._check_warmup(t)
            if self._active[pin]:
                return out
            self._active[pin] = True
            self._rose[pin] = (t, self._wall())
            self._fresh[pin] = True
            if self._warm:
                owed = self._owed
                found = self._evaluate(t)
                if not found and self._owed == owed:
                    found = self._early_event(pin, t)
                out += found
            return out

    def deactivate(self, pin):
        """PIR ``pin`` went low; return the events to record now (only ever from warm-up ending)."""
        with self._lock:
            t = self._now()
            out = self._check_warmup(t)
            self._active[pin] = False
            self._held = False
            return out

    def tick(self):
        """Advance time: end warm-up, end a cooldown (emitting owed or held-high events)."""
        with self._lock:
            t = self._now()
            out = self._check_warmup(t)
            if self._next_due is not None and t >= self._next_due:
                due = self._next_due
                if self._owed or (self._held and all(self._active.values())):
                    out.append(self._emit(t, scheduled=due))
                else:
                    self._next_due = None
            return out

    # -- state for the caller ------------------------------------------------
    def next_deadline(self):
        """The ``now`` time at which ``tick()`` has something to do, or None."""
        with self._lock:
            times = [d for d in (None if self._warm else self.warm_until, self._next_due) if d is not None]
            return min(times) if times else None

    @property
    def warm(self):
        return self._warm

    def active(self):
        """The PIR pins currently active, in configuration order."""
        with self._lock:
            return tuple(p for p in self.pins if self._active[p])

    def early_tokens(self):
        """Early events the bucket allows right now (for logs and tests)."""
        with self._lock:
            return self._refill(self._now())

    # -- the rule ------------------------------------------------------------
    def _refill(self, t):
        if self.early_refill_s > 0 and t > self._tokens_at:
            self._tokens = min(float(self.early_burst), self._tokens + (t - self._tokens_at) / self.early_refill_s)
        self._tokens_at = max(t, self._tokens_at)
        return int(self._tokens)

    def _early_event(self, pin, t):
        """Rule 6: is this activation the first edge of a possible coincidence?"""
        if not self.early_burst or (self._next_due is not None and t < self._next_due):
            return []
        if self._early is not None and t - self._early[1] <= self.window_s:
            return []  # one early event per possible coincidence
        for other in self.pins:
            if other != pin and self._fresh[other] and t - self._rose[other][0] <= self.window_s:
                return []  # another PIR started this one
        if self._refill(t) < 1:
            log.info("early=skipped pin=%s reason=rate-limit", pin)
            return []
        self._tokens -= 1
        wall = self._rose[pin][1]
        self._early = (pin, t, wall)
        return [Motion("early", ((pin, wall),), wall)]

    def _check_warmup(self, t):
        if self._warm or t < self.warm_until:
            return []
        self._warm = True
        high = [p for p in self.pins if self._active[p]]
        wall = self._wall()
        for pin in self.pins:
            self._fresh[pin] = pin in high
            self._rose[pin] = (t, wall) if pin in high else None
        log.info("warmup=over active=%s", ",".join(map(str, high)) or "none")
        return self._evaluate(t) if high else []

    def _evaluate(self, t):
        if not all(self._fresh.values()):
            return []
        times = [self._rose[p][0] for p in self.pins]
        if max(times) - min(times) > self.window_s:
            return []
        for pin in self.pins:
            self._fresh[pin] = False
        if self._next_due is not None:
            self._owed = True
            log.debug("coincidence=owed due=%.3f", self._next_due)
            return []
        return [self._emit(t)]

    def _emit(self, t, scheduled=None):
        if self._early is not None:
            pin, at, _ = self._early
            if self._rose[pin] is not None and self._rose[pin][0] == at:
                # This coincidence confirms the early event: its token comes back.
                self._refill(t)
                self._tokens = min(float(self.early_burst), self._tokens + 1)
            self._early = None
        event = Motion("pir", tuple((p, self._rose[p][1]) for p in self.pins), self._wall())
        if self.cooldown_s > 0:
            # Stay on the grid of the first event unless a tick came more than a whole cooldown late.
            base = scheduled if scheduled is not None and t - scheduled < self.cooldown_s else t
            self._next_due = base + self.cooldown_s
        else:
            self._next_due = None
        self._owed = False
        self._held = all(self._active.values())
        return event


class Detector:
    """The gpiozero devices of ``sensors`` (a :class:`seccam.config.Sensors`) feeding a :class:`Coincidence`.

    ``pin_factory`` is passed to every device (None: gpiozero's default, which
    honours ``GPIOZERO_PIN_FACTORY``). ``notify()`` is called from the pin
    library's thread when an event is queued; it must be tiny and thread-safe.
    The caller collects events with :meth:`poll` and must :meth:`close` the
    detector. Raises PermanentError when the pins cannot be opened.

    Only plain digital devices are used: ``DigitalInputDevice`` for the PIRs
    and the button (edge callbacks from the pin factory, no thread) and
    ``LED`` for the indicators. Constructor arguments go by keyword: gpiozero
    2.x makes them keyword-only after the pin.
    """

    #: The button's debounce time (s): a push button bounces for a few ms.
    BUTTON_BOUNCE_S = 0.05

    def __init__(self, sensors, pin_factory=None, notify=None, now=time.monotonic, wall=time.time, started=None):
        self.sensors = sensors
        self._wall = wall
        self._notify = notify
        self._queue = collections.deque()
        self._early = collections.deque()
        self._devices = []
        self._pirs = []
        self._leds = []
        self._button = None
        self.coincidence = Coincidence(sensors.pir_pins, sensors.coincidence_s, sensors.cooldown_s,
                                       sensors.warmup_s, now=now, wall=wall, started=started,
                                       early_burst=sensors.early_capture_burst if sensors.early_capture else 0,
                                       early_refill_s=sensors.early_capture_refill_s)
        try:
            self._open(pin_factory)
        except Exception as exc:  # hardware libraries raise anything (lgpio.error, RuntimeError, ...)
            self.close()
            raise PermanentError(f"cannot open GPIO pins {self.pins}: {type(exc).__name__}: {exc}") from exc

    def _open(self, pin_factory):
        from gpiozero import LED, DigitalInputDevice

        s = self.sensors
        for pin in s.pir_pins:
            # Active high, with the internal pull-down: a PIR whose lead came off reads "no motion"
            # instead of a floating input's random edges.
            self._pirs.append(self._track(DigitalInputDevice(pin=pin, pull_up=False, pin_factory=pin_factory)))
        for pin in s.led_pins:
            self._leds.append(self._track(LED(pin=pin, pin_factory=pin_factory)))
        if s.button_pin is not None:
            # To ground, with the internal pull-up: pressed = low = active.
            self._button = self._track(DigitalInputDevice(pin=s.button_pin, pull_up=True,
                                                          bounce_time=self.BUTTON_BOUNCE_S,
                                                          pin_factory=pin_factory))
            self._button.when_activated = self._on_button
        for index, device in enumerate(self._pirs):
            device.when_activated = self._callback(index, True)
            device.when_deactivated = self._callback(index, False)
        # An edge callback never fires for a pin already high when it is attached: read every level
        # once, after the callbacks are attached (an edge in between is reported twice; activate() is
        # idempotent).
        for index, device in enumerate(self._pirs):
            self._pir_changed(index, bool(device.is_active))

    def _track(self, device):
        self._devices.append(device)
        return device

    def _callback(self, index, active):
        def callback():
            self._pir_changed(index, active)
        return callback

    # -- the pin library's thread ---------------------------------------------
    def _pir_changed(self, index, active):
        if self._leds:
            self._leds[index].value = active
        pin = self.sensors.pir_pins[index]
        if active:
            self._push(self.coincidence.activate(pin))
        else:
            self._push(self.coincidence.deactivate(pin))

    def _on_button(self):
        now = self._wall()
        self._push([Motion("button", ((self.sensors.button_pin, now),), now)])

    def _push(self, events):
        if events:
            for event in events:
                (self._early if event.source == "early" else self._queue).append(event)
            if self._notify is not None:
                self._notify()

    # -- the caller's thread -------------------------------------------------
    @property
    def pins(self):
        """The pins in use, for the liveness stamp and logs."""
        s = self.sensors
        return {"pir": list(s.pir_pins), "button": s.button_pin, "led": list(s.led_pins)}

    def take_early(self):
        """Early events (rule 6) queued by callbacks: hints that the cameras may start, not motion."""
        out = []
        while self._early:
            out.append(self._early.popleft())
        return out

    def poll(self):
        """Motion events to record now: those queued by callbacks, then those due by time."""
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        out += self.coincidence.tick()
        return out

    def next_deadline(self):
        return self.coincidence.next_deadline()

    def active(self):
        return self.coincidence.active()

    def close(self):
        """Close every device (idempotent); errors are logged, never raised."""
        # In creation order: the PIRs (whose callbacks call into the LEDs) stop first.
        while self._devices:
            device = self._devices.pop(0)
            try:
                device.close()
            except Exception as exc:  # pragma: no cover - a close failure must not stop the others
                log.error("close=failed device=%r error=%r", device, str(exc))
