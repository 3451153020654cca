"""Property-based fuzzing of the parsers that read untrusted or hand-edited input.

Bounded in time: each property runs a fixed number of examples with a
per-example deadline, so the whole file takes a few seconds. The property is
always the same: malformed input ends in the parser's own error type with a
one-line message, never in another exception (a traceback on a camera is a
lost alarm).
"""

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seccam import config, events
from seccam.errors import ConfigError
from seccam.spool import SpoolFormatError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

toml_values = st.recursive(
    st.none().map(lambda _: '""') | st.integers(-10**6, 10**6).map(str) | st.floats(allow_nan=True).map(
        lambda f: "nan" if f != f else ("inf" if f == float("inf") else "-inf" if f == float("-inf") else repr(f)))
    | st.text(string.printable, max_size=12).map(json.dumps) | st.booleans().map(lambda b: str(b).lower()),
    lambda children: st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=8)
keys = st.sampled_from(["spool_dir", "state_dir", "pir_pins", "coincidence_s", "cooldown_s", "warmup_s",
                        "button_pin", "led_pins", "name", "device", "index", "resolution", "preview_resolution",
                        "skip", "backend", "address", "password", "smtp_host", "smtp_security", "recipients",
                        "group_id", "events_keep_days", "palette", "timeout_s", "x"])
headers = st.sampled_from(["", "[sensors]", "[[camera]]", "[account]", "[delivery]", "[other]"])


@FUZZ
@given(st.lists(st.tuples(headers, keys, toml_values), max_size=12))
def test_structured_config_fuzz(entries):
    text = "\n".join(f"{h}\n{k} = {v}" for h, k, v in entries) + "\n"
    _config_outcome(text)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_config_fuzz(text):
    _config_outcome(text)


def _config_outcome(text):
    try:
        config.parse(text, "fuzz.toml", 0o600)
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.toml") and "\n" not in msg.strip("\n")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=10)


@FUZZ
@given(st.dictionaries(st.sampled_from(["version", "kind", "source", "time", "sensors", "host", "x"]),
                       json_values, max_size=6) | st.binary(max_size=200).map(lambda b: b))
def test_event_file_fuzz(tmp_path_factory, obj):
    path = tmp_path_factory.mktemp("ev") / "e.json"
    path.write_bytes(obj if isinstance(obj, bytes) else json.dumps(obj).encode())
    try:
        ev = events.load(path)
    except SpoolFormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(ev["ts"], float) and ev["source"] in events.SOURCES
