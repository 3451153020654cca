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

import pytest

from helpers.figures import record
from seccam import config, events
from seccam.errors import ConfigError
from seccam.spool import SpoolFormatError

TRIED = {"config (structured TOML)": 0, "config (arbitrary text)": 0, "motion event file": 0}


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    for what, n in TRIED.items():
        record("malformed", input=what, tried=n, crashes=0)  # any crash fails the test before this line


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
    TRIED["config (structured TOML)"] += 1
    _config_outcome(text)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_config_fuzz(text):
    TRIED["config (arbitrary text)"] += 1
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
    TRIED["motion event file"] += 1
    path = tmp_path_factory.mktemp("ev") / "e.json"
    path.write_bytes(obj if isinstance(obj, bytes) else json.dumps(obj).encode())
    try:
        ev = events.load(path)
    except SpoolFormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(ev["ts"], float) and ev["source"] in events.SOURCES


ac_attr = st.sampled_from(["addr", "prefer-encrypt", "keydata", "_x", "type", "addr ", " keydata", "k"])
ac_value = st.text(string.printable, max_size=40) | st.binary(max_size=60).map(
    lambda b: __import__("base64").b64encode(b).decode())


@FUZZ
@given(st.lists(st.tuples(ac_attr, ac_value), max_size=6) | st.text(max_size=200).map(lambda t: [("", t)]))
def test_autocrypt_header_fuzz(attrs):
    from seccam import autocrypt
    TRIED["Autocrypt header"] = TRIED.get("Autocrypt header", 0) + 1
    value = "; ".join(f"{k}={v}" if k else v for k, v in attrs)
    try:
        header = autocrypt.parse_header(value)
    except autocrypt.AutocryptError as exc:
        assert "\n" not in str(exc)
    else:
        assert header.addr and header.keydata


@FUZZ
@given(st.dictionaries(st.sampled_from(["version", "kind", "id", "created", "cameras", "events", "health"]),
                       json_values, max_size=7)
       | st.fixed_dictionaries({"version": st.just(1), "kind": st.sampled_from(["alarm", "heartbeat", "summary"]),
                                "created": st.just("2026-11-25T19:11:00+00:00"),
                                "cameras": st.lists(st.dictionaries(st.sampled_from(["name", "ok", "full", "preview",
                                                                                     "error"]), json_values,
                                                                    max_size=5), max_size=3)}))
def test_image_set_meta_fuzz(tmp_path_factory, meta):
    from seccam import encrypt
    TRIED["image set meta.json"] = TRIED.get("image set meta.json", 0) + 1
    d = tmp_path_factory.mktemp("set")
    (d / "meta.json").write_text(json.dumps(meta))
    try:
        loaded = encrypt.load_meta(d)
    except SpoolFormatError as exc:
        assert "\n" not in str(exc)
    else:
        assert encrypt.plan(loaded, d)  # a valid meta always yields at least one message
