"""Tests of seccam.sensors: the coincidence rule on a fake clock, and the Detector on gpiozero mock pins."""

import sys
import time
from pathlib import Path

import pytest

LIB = str(Path(__file__).resolve().parents[1] / "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)

from seccam.config import Sensors  # noqa: E402
from seccam.errors import PermanentError  # noqa: E402
from seccam.sensors import Coincidence, Detector, Motion  # noqa: E402

EPOCH = 1_800_000_000.0


class FakeClock:
    """Monotonic ``now`` and wall-clock ``wall`` that move only when a test says so."""

    def __init__(self, t=0.0):
        self.t = t

    def now(self):
        return self.t

    def wall(self):
        return EPOCH + self.t


def make(clock, pins=(17, 27), window_s=2.0, cooldown_s=30.0, warmup_s=0.0):
    return Coincidence(pins, window_s=window_s, cooldown_s=cooldown_s, warmup_s=warmup_s,
                       now=clock.now, wall=clock.wall)


def run_ticks(clock, coincidence, until, step=1.0):
    """Tick from the current time up to (excluding) ``until``; return the events with their times."""
    out = []
    while clock.t < until:
        out += [(clock.t, ev) for ev in coincidence.tick()]
        clock.t += step
    return out


# -- the pure rule -------------------------------------------------------------

def test_single_pir_makes_no_event():
    clock = FakeClock()
    c = make(clock)
    assert c.activate(17) == []
    assert run_ticks(clock, c, 300) == []


def test_both_pirs_within_window_make_exactly_one_event():
    clock = FakeClock()
    c = make(clock)
    assert c.activate(17) == []
    clock.t = 1.5
    (event,) = c.activate(27)
    assert event == Motion("pir", ((17, EPOCH + 0.0), (27, EPOCH + 1.5)), EPOCH + 1.5)
    clock.t = 3
    assert c.deactivate(17) == [] and c.deactivate(27) == []
    assert run_ticks(clock, c, 300) == []


def test_pirs_exactly_window_apart_still_coincide():
    clock = FakeClock()
    c = make(clock, window_s=2.0)
    c.activate(17)
    clock.t = 2.0
    assert len(c.activate(27)) == 1


def test_both_pirs_outside_window_make_no_event():
    clock = FakeClock()
    c = make(clock, window_s=2.0)
    c.activate(17)
    clock.t = 2.5
    assert c.activate(27) == []
    assert run_ticks(clock, c, 300) == []


def test_short_pulse_that_already_dropped_still_counts():
    clock = FakeClock()
    c = make(clock)
    c.activate(17)
    clock.t = 0.5
    c.deactivate(17)
    clock.t = 1.0
    assert len(c.activate(27)) == 1


def test_held_high_five_minutes_with_30s_cooldown_gives_10_events():
    # Rule: one event at the coincidence, then one per cooldown while every PIR stays high.
    clock = FakeClock()
    c = make(clock, cooldown_s=30)
    c.activate(17)
    first = c.activate(27)
    assert len(first) == 1
    repeats = run_ticks(clock, c, 300)  # ticks at t=0..299; released at t=300 before any tick
    c.deactivate(17)
    c.deactivate(27)
    assert [t for t, _ in repeats] == [30, 60, 90, 120, 150, 180, 210, 240, 270]
    assert len(first) + len(repeats) == 10
    # Every repeat still says when the PIRs became active.
    assert all(ev.sensors == ((17, EPOCH), (27, EPOCH)) for _, ev in repeats)
    assert run_ticks(clock, c, 400) == []


def test_held_high_repeats_stay_on_the_cooldown_grid_when_ticks_are_late():
    clock = FakeClock()
    c = make(clock, cooldown_s=30)
    c.activate(17)
    c.activate(27)
    times = []
    for t in (29.9, 31, 61, 91):
        clock.t = t
        times += [t for _ in c.tick()]
    assert times == [31, 61, 91]
    assert c.next_deadline() == 120


def test_drop_during_cooldown_stops_repeats_and_next_coincidence_fires_at_once():
    clock = FakeClock()
    c = make(clock, cooldown_s=30)
    c.activate(17)
    assert len(c.activate(27)) == 1
    clock.t = 10
    c.deactivate(17)
    clock.t = 12
    assert c.activate(17) == []  # 27 has no new edge: no new coincidence
    assert run_ticks(clock, c, 45) == []
    c.deactivate(17)
    c.deactivate(27)
    clock.t = 50
    c.activate(17)
    assert len(c.activate(27)) == 1


def test_coincidence_during_cooldown_is_owed_until_cooldown_ends():
    clock = FakeClock()
    c = make(clock, cooldown_s=30)
    c.activate(17)
    c.activate(27)
    clock.t = 5
    c.deactivate(17)
    c.deactivate(27)
    clock.t = 10
    assert c.activate(17) == [] and c.activate(27) == []
    clock.t = 12
    c.deactivate(17)
    c.deactivate(27)
    clock.t = 29.9
    assert c.tick() == []
    clock.t = 30
    (event,) = c.tick()
    assert event.sensors == ((17, EPOCH + 10), (27, EPOCH + 10))
    assert run_ticks(clock, c, 200) == []


def test_flicker_of_one_pir_while_other_held_makes_no_new_event():
    clock = FakeClock()
    c = make(clock, cooldown_s=30)
    c.activate(17)
    c.activate(27)
    for t in (1, 3, 5, 7):
        clock.t = t
        c.deactivate(27)
        clock.t = t + 0.5
        assert c.activate(27) == []
    assert run_ticks(clock, c, 200) == []


def test_zero_cooldown_gives_one_event_per_coincidence_and_none_while_held():
    clock = FakeClock()
    c = make(clock, cooldown_s=0)
    c.activate(17)
    assert len(c.activate(27)) == 1
    assert run_ticks(clock, c, 100) == []
    c.deactivate(17)
    c.deactivate(27)
    c.activate(17)
    assert len(c.activate(27)) == 1
    assert c.next_deadline() is None


def test_warmup_edges_are_ignored():
    clock = FakeClock()
    c = make(clock, warmup_s=60)
    clock.t = 10
    assert c.activate(17) == [] and c.activate(27) == []
    clock.t = 15
    c.deactivate(17)
    c.deactivate(27)
    assert run_ticks(clock, c, 80) == []
    assert c.warm
    c.activate(17)
    assert len(c.activate(27)) == 1


def test_edge_just_before_warmup_end_is_forgotten():
    clock = FakeClock(59.5)
    c = make(clock, warmup_s=60)
    c.activate(17)
    clock.t = 59.8
    c.deactivate(17)
    clock.t = 60.5
    assert c.activate(27) == []


def test_pirs_high_through_warmup_count_as_activated_when_it_ends():
    clock = FakeClock()
    c = make(clock, warmup_s=60)
    c.activate(17)
    c.activate(27)
    assert c.next_deadline() == 60
    clock.t = 59.9
    assert c.tick() == []
    clock.t = 60
    (event,) = c.tick()
    assert event.sensors == ((17, EPOCH + 60), (27, EPOCH + 60))


def test_one_pir_high_at_warmup_end_pairs_with_a_later_edge_in_the_window():
    clock = FakeClock()
    c = make(clock, warmup_s=60)
    c.activate(17)
    clock.t = 60
    assert c.tick() == []
    clock.t = 61.5
    (event,) = c.activate(27)
    assert event.sensors == ((17, EPOCH + 60), (27, EPOCH + 61.5))


def test_single_pir_configuration_fires_on_its_own():
    clock = FakeClock()
    c = make(clock, pins=(17,))
    assert len(c.activate(17)) == 1


def test_next_deadline_follows_warmup_then_cooldown():
    clock = FakeClock()
    c = make(clock, warmup_s=60, cooldown_s=30)
    assert c.next_deadline() == 60
    clock.t = 60
    c.tick()
    assert c.next_deadline() is None
    c.activate(17)
    c.activate(27)
    assert c.next_deadline() == 90


# -- the gpiozero layer on mock pins --------------------------------------------

def driven_pin_class():
    """A mock pin whose level is set by the sensor's output, not by the internal pull (as on real wiring)."""
    from gpiozero.pins.mock import MockPin

    class DrivenPin(MockPin):
        def _set_pull(self, value):
            self._pull = value

    return DrivenPin


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def collect(detector, count, timeout=5.0):
    """Poll the detector until ``count`` events arrived (or time out); return them."""
    got = []

    def enough():
        got.extend(detector.poll())
        return len(got) >= count

    wait_for(enough, timeout, f"{count} event(s)")
    return got


@pytest.fixture
def detectors():
    made = []
    yield made
    for detector in made:
        detector.close()


def open_detector(detectors, factory, clock, **kw):
    sensors = Sensors(**{"warmup_s": 0.0, "cooldown_s": 30.0, "coincidence_s": 2.0, "sample_rate": 100, **kw})
    detector = Detector(sensors, pin_factory=factory, now=clock.now, wall=clock.wall)
    detectors.append(detector)
    return detector


def test_detector_single_pir_makes_no_event(mock_factory, detectors):
    d = open_detector(detectors, mock_factory, FakeClock())
    mock_factory.pin(17).drive_high()
    wait_for(lambda: d.active() == (17,), what="PIR 17 active")
    assert d.poll() == []


def test_detector_both_pirs_within_window_make_exactly_one_event(mock_factory, detectors):
    clock = FakeClock()
    d = open_detector(detectors, mock_factory, clock)
    mock_factory.pin(17).drive_high()
    wait_for(lambda: d.active() == (17,), what="PIR 17 active")
    clock.t = 1.0
    mock_factory.pin(27).drive_high()
    (event,) = collect(d, 1)
    assert event == Motion("pir", ((17, EPOCH), (27, EPOCH + 1.0)), EPOCH + 1.0)
    mock_factory.pin(17).drive_low()
    mock_factory.pin(27).drive_low()
    wait_for(lambda: d.active() == (), what="PIRs inactive")
    clock.t = 100
    assert d.poll() == []


def test_detector_both_pirs_outside_window_make_no_event(mock_factory, detectors):
    clock = FakeClock()
    d = open_detector(detectors, mock_factory, clock)
    mock_factory.pin(17).drive_high()
    wait_for(lambda: d.active() == (17,), what="PIR 17 active")
    clock.t = 2.5
    mock_factory.pin(27).drive_high()
    wait_for(lambda: d.active() == (17, 27), what="both PIRs active")
    assert d.poll() == []


def test_detector_held_high_five_minutes_gives_10_events(mock_factory, detectors):
    clock = FakeClock()
    d = open_detector(detectors, mock_factory, clock, cooldown_s=30.0)
    mock_factory.pin(17).drive_high()
    mock_factory.pin(27).drive_high()
    events = collect(d, 1)
    for t in range(1, 300):
        clock.t = t
        events += d.poll()
    mock_factory.pin(17).drive_low()
    mock_factory.pin(27).drive_low()
    wait_for(lambda: d.active() == (), what="PIRs inactive")
    clock.t = 400
    events += d.poll()
    assert [ev.when - EPOCH for ev in events] == [0, 30, 60, 90, 120, 150, 180, 210, 240, 270]


def test_detector_ignores_warmup(mock_factory, detectors):
    clock = FakeClock()
    d = open_detector(detectors, mock_factory, clock, warmup_s=60.0)
    mock_factory.pin(17).drive_high()
    mock_factory.pin(27).drive_high()
    wait_for(lambda: d.active() == (17, 27), what="both PIRs active")
    assert d.poll() == []
    mock_factory.pin(17).drive_low()
    mock_factory.pin(27).drive_low()
    wait_for(lambda: d.active() == (), what="PIRs inactive")
    clock.t = 61
    assert d.poll() == []
    mock_factory.pin(17).drive_high()
    mock_factory.pin(27).drive_high()
    (event,) = collect(d, 1)
    assert event.source == "pir"


def test_detector_handles_pirs_already_high_at_start(mock_factory, detectors):
    # when_motion never fires for a pin high at the first sample; the detector reads the levels itself.
    for pin in (17, 27):
        mock_factory.pin(pin, pin_class=driven_pin_class()).drive_high()
    d = open_detector(detectors, mock_factory, FakeClock())
    assert d.active() == (17, 27)
    (event,) = collect(d, 1)
    assert event.sensors == ((17, EPOCH), (27, EPOCH))


def test_detector_pirs_high_at_start_count_when_warmup_ends(mock_factory, detectors):
    for pin in (17, 27):
        mock_factory.pin(pin, pin_class=driven_pin_class()).drive_high()
    clock = FakeClock()
    d = open_detector(detectors, mock_factory, clock, warmup_s=60.0)
    assert d.poll() == []
    assert d.next_deadline() == 60
    clock.t = 60
    (event,) = d.poll()
    assert event.sensors == ((17, EPOCH + 60), (27, EPOCH + 60))


def test_detector_button_press_is_an_event_even_during_warmup(mock_factory, detectors):
    clock = FakeClock(5)
    d = open_detector(detectors, mock_factory, clock, warmup_s=60.0, button_pin=22)
    mock_factory.pin(22).drive_low()  # the button pulls the pulled-up input to ground
    (event,) = collect(d, 1)
    assert event == Motion("button", ((22, EPOCH + 5),), EPOCH + 5)
    mock_factory.pin(22).drive_high()
    assert d.poll() == []


def test_detector_leds_mirror_pirs(mock_factory, detectors):
    d = open_detector(detectors, mock_factory, FakeClock(), warmup_s=60.0, led_pins=(23, 24))
    led17, led27 = mock_factory.pin(23), mock_factory.pin(24)
    assert not led17.state and not led27.state
    mock_factory.pin(17).drive_high()
    wait_for(lambda: led17.state, what="LED 23 on")
    assert not led27.state
    mock_factory.pin(27).drive_high()
    wait_for(lambda: led27.state, what="LED 24 on")
    mock_factory.pin(17).drive_low()
    wait_for(lambda: not led17.state, what="LED 23 off")
    assert led27.state
    assert d.active() == (27,)


def test_detector_close_releases_pins(mock_factory, detectors):
    d = open_detector(detectors, mock_factory, FakeClock(), button_pin=22, led_pins=(23, 24))
    d.close()
    d.close()  # idempotent
    again = open_detector(detectors, mock_factory, FakeClock(), button_pin=22, led_pins=(23, 24))
    assert again.pins == {"pir": [17, 27], "button": 22, "led": [23, 24]}


def test_detector_pin_in_use_is_a_permanent_error_and_leaves_nothing_open(mock_factory, detectors):
    from gpiozero import LED

    blocker = LED(pin=24, pin_factory=mock_factory)
    try:
        with pytest.raises(PermanentError, match=r"cannot open GPIO pins"):
            open_detector(detectors, mock_factory, FakeClock(), led_pins=(23, 24))
    finally:
        blocker.close()
    # The PIRs and LED 23 opened before the failure were closed again.
    open_detector(detectors, mock_factory, FakeClock(), led_pins=(23, 24))


def test_a_coincidence_needs_at_least_one_pir():
    with pytest.raises(ValueError, match="at least one PIR pin"):
        make(FakeClock(), pins=())


def test_a_repeated_rising_edge_without_a_fall_keeps_the_first_activation_time():
    clock = FakeClock()
    c = make(clock)
    assert c.activate(17) == []
    clock.t = 1.0
    assert c.activate(17) == []  # no deactivate in between: nothing new
    clock.t = 1.5
    [event] = c.activate(27)
    assert dict(event.sensors)[17] == EPOCH + 0.0
