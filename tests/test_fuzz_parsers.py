"""Property-based fuzzing of the parsers that read untrusted or hand-edited input.

Bounded in time: each property runs a fixed number of examples, so the whole
file takes well under 20 seconds. The property is always the same: malformed
input ends in the parser's own error type with a one-line message, never in
another exception (a traceback on a camera is a lost alarm).

Inbound mail goes through ``seccam.inbox.handle`` (what jobs/inbox does with
one fetched message) in-process, with a real config, camera key, key store and
open invite under a short temporary directory, real gpg, and a fake SMTP
connection for Secure-Join replies: no IMAP needed. For mail the property is
more than "no crash": after every message the security invariants of
docs/security.md hold (:func:`_check_invariants`): the owner's pinned key never
changes, no address gains a pinned key except through a completed join of the
open invite (a person's consent), and the next alarm is encrypted to pinned
keys only. The pool of real pieces is the attack material of issue 10: the
owner's signed chat messages, the same ciphertexts under forged outer headers,
an owner message to Mallory unwrapped and re-encrypted to the camera, and
Mallory's own signed messages claiming the owner's address.
"""

import base64
import datetime as _dt
import functools
import json
import os
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


# In CI the examples are derived from the test itself, so a run is reproducible and a red CI
# always means a change broke something; developer runs and tests/reliability explore anew.
REPRODUCIBLE = os.environ.get("CI") == "true"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=REPRODUCIBLE)

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
       | st.fixed_dictionaries({"version": st.just(1),
                                "kind": st.sampled_from(["alarm", "heartbeat", "welcome", "summary"]),
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



# -- inbound mail (seccam.inbox.handle) -------------------------------------------------------
MAIL_FUZZ = settings(max_examples=120, deadline=None, derandomize=REPRODUCIBLE,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CAM_ADDR, OWNER, STRANGER = "cam@seccam.test", "owner@seccam.test", "stranger@seccam.test"
MALLORY = "mallory@seccam.test"
DISPOSITIONS = {"dropped", "set-aside", "autocrypt", "securejoin", "unauthenticated", "replay"}


class _NoSmtp:
    """Secure-Join replies go here instead of a mail server."""

    def __init__(self, account):
        pass

    def send(self, raw, from_addr, to_addrs):
        return {}

    def close(self):
        pass


@pytest.fixture(scope="module")
def mailbox():
    """A camera (config, key, key store, an open 100-use invite) and a pool of real inbound pieces."""
    import shutil
    import time

    from helpers.sendkit import kill_agent, short_dir
    from seccam import autocrypt, inbox, mime
    from seccam.gpg import Gpg
    from seccam.invites import InviteStore
    from seccam.spool import Spool

    from seccam import keys
    from helpers import forgery

    root, owner_home, mallory_home = short_dir("scz"), short_dir("scy"), short_dir("scx")
    path = root / "seccam.toml"
    path.write_text(f'spool_dir = "{root}/spool"\nstate_dir = "{root}/state"\n[account]\naddress = "{CAM_ADDR}"\n'
                    'password = "x"\nsmtp_host = "127.0.0.1"\nsmtp_security = "plain"\n'
                    f'[delivery]\nrecipients = ["{OWNER}", "{STRANGER}"]\n')
    path.chmod(0o600)
    cfg = config.load(path)
    cam = Gpg(cfg.state_dir / "gnupg")
    cam_fpr = cam.generate_camera_key(CAM_ADDR)
    owner = Gpg(owner_home)
    owner_fpr = owner.generate_camera_key(OWNER)
    mallory = Gpg(mallory_home)
    mallory_fpr = mallory.generate_camera_key(OWNER)  # a key of his own, claiming the owner's address
    for a, b in ((owner, cam), (owner, mallory), (mallory, cam), (mallory, owner)):
        a.import_keys(b.export_armored(cam_fpr if b is cam else owner_fpr if b is owner else mallory_fpr))
    owner_key, cam_key = owner.export_minimal(owner_fpr), cam.export_minimal(cam_fpr)
    mallory_key = mallory.export_minimal(mallory_fpr)
    # A person pinned the owner's key on the Pi; the stranger (also a configured recipient) has none.
    keys.open_store(cfg, cam).import_key(OWNER, owner.export_armored(owner_fpr), "file:owner.asc")
    invite = InviteStore(cfg.state_dir).create(CAM_ADDR, cam_fpr, "Front door", uses=100)

    def encrypted(inner, recipients=(cam_fpr,), sign=True, signer=owner_fpr, gpg=owner):
        if sign:
            return gpg.encrypt_sign(inner, list(recipients), signer=signer)
        import subprocess
        return subprocess.run(["gpg", "--homedir", str(owner_home), "--batch", "--trust-model", "always", "-a", "-e",
                               *[a for r in recipients for a in ("-r", r)]], input=inner, capture_output=True,
                              check=True).stdout

    good_ac = autocrypt.build_header(OWNER, owner_key)
    evil_ac = autocrypt.build_header(OWNER, mallory_key)
    inner_join = (f"From: <{OWNER}>\r\nSecure-Join: vc-request-with-auth\r\nSecure-Join-Auth: {invite['auth']}\r\n"
                  f"Secure-Join-Fingerprint: {owner_fpr}\r\n"
                  f"Autocrypt-Gossip: {autocrypt.build_header(CAM_ADDR, cam_key, None)}\r\n"
                  "Content-Type: text/plain\r\n\r\nauth\r\n").encode()
    chat = forgery.inner_message(OWNER, [CAM_ADDR], autocrypt_keydata=owner_key)        # authenticated
    to_mallory = forgery.inner_message(OWNER, [MALLORY], autocrypt_keydata=owner_key)   # for someone else
    claims = forgery.inner_message(OWNER, [CAM_ADDR], autocrypt_keydata=mallory_key)    # Mallory signs
    rewrapped = forgery.rewrap(mallory_home, forgery.unwrap(
        mallory_home, encrypted(to_mallory, recipients=(mallory_fpr, owner_fpr))), [cam_fpr])
    # Commands nobody may give: Mallory's own, the owner's to someone else re-encrypted, unsigned.
    disarm_claims = forgery.inner_message(OWNER, [CAM_ADDR], text="/disarm")
    disarm_to_mallory = forgery.inner_message(OWNER, [MALLORY], text="/snap")
    commands = [encrypted(disarm_claims, signer=mallory_fpr, gpg=mallory),
                forgery.rewrap(mallory_home, forgery.unwrap(
                    mallory_home, encrypted(disarm_to_mallory, recipients=(mallory_fpr, owner_fpr))), [cam_fpr]),
                encrypted(disarm_claims, sign=False)]
    armored = [encrypted(inner_join),
               encrypted(f"From: <{OWNER}>\r\nAutocrypt: {good_ac}\r\nContent-Type: text/plain\r\n\r\nhi\r\n".encode()),
               encrypted(b"Content-Type: multipart/report\r\n\r\nx\r\n"),
               encrypted(b"\x00\xff garbage, not MIME"),
               encrypted(b"Content-Type: text/plain\r\n\r\nunsigned\r\n", sign=False),
               encrypted(b"Content-Type: text/plain\r\n\r\nfor the owner only\r\n", recipients=(owner_fpr,)),
               encrypted(chat), rewrapped, encrypted(claims, signer=mallory_fpr, gpg=mallory),
               encrypted(inner_join.replace(owner_fpr.encode(), mallory_fpr.encode()), signer=mallory_fpr, gpg=mallory)
               ] + commands
    env = mime.Envelope(from_name="Owner", from_addr=OWNER, to=(CAM_ADDR,),
                        date=_dt.datetime(2026, 11, 25, tzinfo=_dt.timezone.utc),
                        message_id="<fuzz@seccam.test>", subject="[...]")
    whole = [mime.build_outer(env, ac, a.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
             for a in armored for ac in (good_ac, evil_ac)]
    spool = Spool(cfg.spool_dir).ensure()
    session = inbox._Session(cfg, spool, time.time, _NoSmtp)
    yield {"session": session, "armored": armored, "whole": whole, "good_ac": good_ac, "evil_ac": evil_ac,
           "invite": invite, "owner_key": owner_key, "owner_fpr": owner_fpr, "mallory_key": mallory_key,
           "mallory_fpr": mallory_fpr, "config": cfg, "cam": cam}
    session.close()
    for home in (cfg.state_dir / "gnupg", owner_home, mallory_home):
        kill_agent(home)
    for d in (root, owner_home, mallory_home):
        shutil.rmtree(d, ignore_errors=True)


def _check_invariants(mb):
    """The security invariants (docs/security.md), after every inbound message."""
    from seccam import encrypt, keys
    from seccam.invites import InviteStore
    cfg = mb["config"]
    store = keys.KeyStore(cfg.state_dir)
    assert store.record(OWNER)["fingerprint"] == mb["owner_fpr"], "the owner's pinned key changed"
    joins = {(j["address"], j["fingerprint"]) for inv in InviteStore(cfg.state_dir).all() for j in inv["joins"]}
    pinned = {}
    for rec in store.records():
        if rec.get("fingerprint"):
            pinned[rec["address"]] = rec["fingerprint"]
            if rec["address"] != OWNER:
                assert (rec["address"], rec["fingerprint"]) in joins, f"{rec['address']} got a key without a join"
        assert sum(not p.get("verified") for p in rec["pending"]) <= keys.MAX_PENDING
    crypto = encrypt.prepare(cfg, mb["cam"])
    assert set(crypto.recipient_fprs) <= set(pinned.values())
    assert crypto.recipient_fprs[crypto.recipients.index(OWNER)] == mb["owner_fpr"]
    # No command was obeyed: the owner's only signed message here is conversation.
    from seccam import armed
    spool = mb["session"].spool
    assert armed.read(spool).id is None and armed.current(spool).armed, "the armed state changed"
    assert spool.items("requests.new") == [], "a /snap was queued"
    assert spool.items("sets.ready") == [], "something was answered"


def _handle(mailbox, raw):
    """One message through the inbox; what jobs/inbox's _one would not survive fails the test."""
    from seccam import inbox
    from seccam.errors import SeccamError
    try:
        disposition, detail = inbox.handle(mailbox["session"], raw)
    except SeccamError as exc:  # _one keeps (TemporaryError) or drops it, logged in one line
        assert "\n" not in str(exc).strip()
        return "error"
    assert disposition in DISPOSITIONS, disposition
    assert "\n" not in detail and "\r" not in detail, detail  # one log line, no injected lines
    _check_invariants(mailbox)
    return disposition


def _mail_strategies(mb):
    b64ish = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \r\n!", max_size=200)
    huge = st.integers(1000, 100_000).map(lambda n: "x" * n)
    text = st.text(max_size=60) | st.text(string.printable, max_size=60) | huge
    addr = st.sampled_from([OWNER, CAM_ADDR, STRANGER, "OWNER@SECCAM.TEST", f'"Owner" <{OWNER}>', "a@b@c", "<>", "",
                            f"{OWNER}, {STRANGER}", "=?utf-8?b?AAAA?= <x@y>", f"<{OWNER}>\r\n X-Injected: 1"]) | text
    keydata = (st.just(mb["owner_key"]) | st.just(mb["mallory_key"]) | st.binary(min_size=1, max_size=300)
               | st.binary(min_size=1, max_size=40).map(lambda b: mb["owner_key"][:len(b) * 7] + b))
    from seccam import autocrypt
    ac = (st.just(mb["good_ac"])
          | st.just(mb["evil_ac"])
          | st.tuples(st.sampled_from([OWNER, STRANGER, CAM_ADDR, ""]), keydata).map(
              lambda t: autocrypt.build_header(t[0], t[1]) if t[0] else f"keydata={base64.b64encode(t[1]).decode()}")
          | st.tuples(st.sampled_from([OWNER, STRANGER]), b64ish).map(lambda t: f"addr={t[0]}; keydata={t[1]}")
          | st.just(f"addr={OWNER}; keydata=" + "QUFB" * 30_000) | text)
    values = {
        "From": addr, "To": addr, "Reply-To": addr, "Subject": text,
        "Date": text | st.just("Wed, 25 Nov 2026 19:00 +0000"),
        "Message-ID": text, "MIME-Version": st.sampled_from(["1.0", "2", ""]),
        "Content-Transfer-Encoding": st.sampled_from(["base64", "quoted-printable", "7bit", "x-bogus"]) | text,
        "Content-Type": st.sampled_from(["text/plain", "multipart/mixed", 'multipart/mixed; boundary="b"',
                                         "multipart/encrypted", "multipart/report", "message/rfc822",
                                         'text/plain; charset="x-unknown"']) | text,
        "Autocrypt": ac, "Autocrypt-Gossip": ac,
        "Secure-Join": st.sampled_from(["vc-request", "vc-request-with-auth", "vc-auth-required",
                                        "vc-contact-confirm", "vg-request", "VC-REQUEST "]) | text,
        "Secure-Join-Invitenumber": st.sampled_from([mb["invite"]["invitenumber"], "wrong", ""]) | text,
        "Secure-Join-Auth": st.sampled_from([mb["invite"]["auth"], "wrong"]) | text,
        "Secure-Join-Fingerprint": st.sampled_from([mb["owner_fpr"], "0" * 40, "zz"]) | text,
        "Auto-Submitted": st.sampled_from(["auto-replied", "no"]), "Chat-Version": st.just("1.0"), "X-Fuzz": text,
    }
    header = st.sampled_from(sorted(set(values) - {"From"})).flatmap(lambda n: st.tuples(st.just(n), values[n]))
    # Most messages look nearly right (a From, and the headers of a Secure-Join step or an Autocrypt
    # offer, each value still fuzzed); random extra headers come on top.
    templates = st.sampled_from([(), ("Autocrypt",), ("Secure-Join-Invitenumber", "Autocrypt"),
                                 ("Secure-Join", "Secure-Join-Auth", "Secure-Join-Fingerprint")])
    froms = (st.just([OWNER]) | st.just([f'"Owner" <{OWNER}>']) | st.just([STRANGER])
             | st.lists(addr, max_size=2))
    start = st.tuples(froms, templates).flatmap(lambda t: st.tuples(
        *[st.just(("From", a)) for a in t[0]] + [st.tuples(st.just(n), values[n]) for n in t[1]]))
    headers = st.tuples(start, st.lists(header, max_size=8)).map(lambda t: list(t[0]) + t[1])
    pgp = st.sampled_from(mb["armored"]) | b64ish.map(lambda t: b"-----BEGIN PGP MESSAGE-----\r\n\r\n" + t.encode()
                                                      + b"\r\n-----END PGP MESSAGE-----\r\n")
    leaf = st.tuples(st.sampled_from(["text/plain", "image/jpeg", "application/octet-stream", "message/rfc822",
                                      "application/pgp-encrypted"]),
                     st.sampled_from(["", "base64", "quoted-printable", "x-bogus"]),
                     st.binary(max_size=200) | b64ish.map(str.encode) | pgp).map(lambda t: ("leaf",) + t)
    encrypted = pgp.map(lambda a: ("node", "encrypted", "e", [("leaf", "application/pgp-encrypted", "", b"Version: 1"),
                                                              ("leaf", "application/octet-stream", "", a)]))
    deep = st.integers(2, 80).map(lambda n: functools.reduce(
        lambda part, i: ("node", "mixed", f"d{i}", [part]), range(n), ("leaf", "text/plain", "", b"x")))
    tree = st.recursive(leaf | encrypted | deep, lambda kids: st.tuples(
        st.just("node"), st.sampled_from(["mixed", "alternative", "encrypted", "signed", "report"]),
        st.text("abcXYZ-_'()+,./:=? ", min_size=0, max_size=12), st.lists(kids, max_size=4)), max_leaves=12)
    return headers, tree


def _render(part):
    if part[0] == "leaf":
        _, ctype, cte, payload = part
        head = f"Content-Type: {ctype}\r\n" + (f"Content-Transfer-Encoding: {cte}\r\n" if cte else "")
        return head.encode() + b"\r\n" + payload + b"\r\n"
    _, subtype, boundary, kids = part
    params = '; protocol="application/pgp-encrypted"' if subtype == "encrypted" else ""
    out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}\r\n\r\n'.encode()
    for kid in kids:
        out += f"--{boundary}\r\n".encode() + _render(kid)
    return out + f"--{boundary}--\r\n".encode()


@st.composite
def _structured_mail(draw, mb):
    headers, tree = _mail_strategies(mb)
    lines = b"".join(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in draw(headers))
    return lines + b"MIME-Version: 1.0\r\n" + _render(draw(tree))


def test_inbound_mail_fuzz(mailbox):
    """Structured hostile mail: random headers (Autocrypt, Secure-Join, huge lines), nested
    multiparts, bad base64, real and broken OpenPGP payloads."""
    @MAIL_FUZZ
    @given(_structured_mail(mailbox))
    def check(raw):
        TRIED["inbound mail (structured)"] = TRIED.get("inbound mail (structured)", 0) + 1
        _handle(mailbox, raw)
    check()


def test_inbound_bytes_fuzz(mailbox):
    """Arbitrary bytes, and real messages cut and spliced with random bytes."""
    @MAIL_FUZZ
    @given(st.binary(max_size=2000)
           | st.tuples(st.sampled_from(mailbox["whole"]), st.integers(0, 6000), st.integers(0, 6000),
                       st.binary(max_size=64)).map(lambda t: t[0][:t[1]] + t[3] + t[0][t[2]:]))
    def check(raw):
        TRIED["inbound mail (arbitrary bytes)"] = TRIED.get("inbound mail (arbitrary bytes)", 0) + 1
        _handle(mailbox, raw)
    check()
