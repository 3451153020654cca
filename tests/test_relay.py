"""seccam.relay and seccam.https against the stand-in chatmail relay (tests/helpers/relay.py):
the names a relay goes by, a good /new answer, and every way a server can fail to be one."""

import json
import socket
import ssl
import threading
import time

import pytest

from helpers.relay import ChatmailRelay
from helpers.setupkit import relay  # noqa: F401 - fixture
from seccam import https
from seccam.errors import PermanentError, UsageError
from seccam.relay import NotARelayError, operator_notice, parse_relay, request_account


@pytest.mark.parametrize("text,url,host,origin", [
    ("nine.testrun.org", "https://nine.testrun.org/new", "nine.testrun.org", "https://nine.testrun.org"),
    ("Nine.Testrun.org:8443", "https://nine.testrun.org:8443/new", "nine.testrun.org",
     "https://nine.testrun.org:8443"),
    ("https://nine.testrun.org/new", "https://nine.testrun.org/new", "nine.testrun.org", "https://nine.testrun.org"),
    ("https://nine.testrun.org:443/", "https://nine.testrun.org/new", "nine.testrun.org", "https://nine.testrun.org"),
    ("DCACCOUNT:https://nine.testrun.org/new", "https://nine.testrun.org/new", "nine.testrun.org",
     "https://nine.testrun.org"),
    ("dcaccount://nine.testrun.org", "https://nine.testrun.org/new", "nine.testrun.org", "https://nine.testrun.org"),
    ("DCACCOUNT:https://example.org/new_email?t=1w_7wDjgjelxeX884x96v3",
     "https://example.org/new_email?t=1w_7wDjgjelxeX884x96v3", "example.org", "https://example.org"),
    ("192.0.2.7", "https://192.0.2.7/new", "192.0.2.7", "https://192.0.2.7"),
    ("[2001:db8::1]:8443", "https://[2001:db8::1]:8443/new", "2001:db8::1", "https://[2001:db8::1]:8443"),
])
def test_a_relay_goes_by_its_name_its_url_or_its_dcaccount_url(text, url, host, origin):
    rel = parse_relay(text)
    assert (rel.url, rel.host, rel.origin) == (url, host, origin)


@pytest.mark.parametrize("text,message", [
    ("", "no relay given"), ("DCACCOUNT:", "no relay given"),
    ("http://nine.testrun.org/new", "over HTTPS only"), ("ftp://x.org", "over HTTPS only"),
    ("nine.testrun.org:99999", "not a valid port"), ("user:pw@nine.testrun.org", "not a relay name"),
    ("nine testrun.org", "not a relay name"),
])
def test_a_bad_relay_name_is_a_usage_error(text, message):
    with pytest.raises(UsageError, match=message):
        parse_relay(text)


def test_a_relay_hands_out_a_working_account_on_its_own_domain(relay, mailserver):
    new = request_account(parse_relay(relay.name), ca_file=relay.cafile, timeout_s=10)
    assert new.address.endswith("@localhost") and new.address in relay.created
    assert len(new.address.partition("@")[0]) == 9 and len(new.password) == 12
    assert mailserver.users[new.address] == new.password and new.login_url is None
    assert relay.requests == [("POST", "/new")]
    assert new.password not in repr(new)


def test_a_self_signed_relays_dclogin_url_is_read_and_must_match(relay):
    relay.mode = "self-signed"
    new = request_account(parse_relay(relay.name), ca_file=relay.cafile)
    assert new.login_url.address == new.address and new.login_url.accepts_invalid_certificates
    assert new.login_url.imap_port == relay.mailserver.imaps_port


@pytest.mark.parametrize("mode,error,message", [
    ("garbage", NotARelayError, "is not JSON; not a chatmail relay"),
    ("not-object", NotARelayError, "is not a JSON object"),
    ("missing-fields", NotARelayError, "the answer has no password; not a chatmail relay's /new"),
    ("wrong-domain", PermanentError, r"handed out \w+@example.org, which is not on its own domain localhost"),
    ("http-500", https.HttpTemporaryError, "HTTP 500 Internal Server Error"),
    ("http-404", https.HttpPermanentError, "HTTP 404 Not Found"),
    ("reason", https.HttpPermanentError, "HTTP 403 Forbidden: account creation is disabled on this relay"),
    ("redirect", NotARelayError, "HTTP 301 redirect to dcaccount:https://localhost/new instead of a new account"),
])
def test_a_server_that_is_not_a_working_relay_is_one_line_naming_it(relay, mode, error, message):
    relay.mode = mode
    with pytest.raises(error, match=message) as err:
        request_account(parse_relay(relay.name), ca_file=relay.cafile)
    assert str(err.value).startswith(f"{relay.name}: ") and "\n" not in str(err.value)
    assert relay.created == []


def test_a_relay_that_never_answers_times_out(relay):
    relay.mode = "hang"
    with pytest.raises(https.HttpTemporaryError, match=r"no answer within 0.5 s"):
        request_account(parse_relay(relay.name), ca_file=relay.cafile, timeout_s=0.5)


def test_an_unreachable_relay_and_an_untrusted_certificate(relay):
    with pytest.raises(https.HttpTemporaryError, match="cannot connect: Connection refused"):
        request_account(parse_relay(f"localhost:{_closed_port()}"), timeout_s=2)
    with pytest.raises(https.HttpPermanentError,
                       match="TLS certificate not trusted: .*give its CA certificate with --ca-file"):
        request_account(parse_relay(relay.name), timeout_s=5)
    assert relay.created == []


def test_odd_answers_in_fields_are_refused(relay, monkeypatch):
    answers = iter([
        {"email": "a b@localhost", "password": "x" * 12},
        {"email": "ab@localhost", "password": " padded "},
        {"email": "ab@localhost", "password": "x" * 12, "dclogin_url": 5},
        {"email": "ab@localhost", "password": "x" * 12, "dclogin_url": "dclogin:ab@localhost?v=1"},
        {"email": "ab@localhost", "password": "x" * 12, "dclogin_url": "dclogin:cd@localhost?p=y&v=1"},
    ])
    monkeypatch.setattr(relay, "_new_answer", lambda: (200, json.dumps(next(answers)).encode(), "application/json", {}))
    for message in ("email is not an address", "white space at its ends", "dclogin_url is not a string",
                    "dclogin_url is broken: dclogin URL without a password", "dclogin_url is for another account"):
        with pytest.raises(NotARelayError, match=message):
            request_account(parse_relay(relay.name), ca_file=relay.cafile)


def test_the_operator_notice_says_metadata_not_content():
    text = operator_notice("nine.testrun.org")
    assert "nine.testrun.org" in text and "IP address" in text and "Not the pictures" in text


# -- seccam.https ------------------------------------------------------------------------
def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_https_refuses_other_schemes_and_caps_the_answer(relay):
    for url in ("http://localhost/new", "https:///x"):
        with pytest.raises(https.HttpPermanentError, match="only https:// URLs"):
            https.request("GET", url)
    with pytest.raises(https.HttpPermanentError, match="not a valid port"):
        https.request("GET", "https://localhost:x/")
    with pytest.raises(https.HttpPermanentError, match="larger than 100 bytes"):
        https.request("GET", f"https://{relay.name}/.well-known/autoconfig/mail/config-v1.1.xml",
                      ca_file=relay.cafile, max_bytes=100)
    resp = https.request("GET", f"https://{relay.name}/nothing?x=1", ca_file=relay.cafile)
    assert resp.status == 404 and relay.requests[-1] == ("GET", "/nothing?x=1")


def test_https_names_a_broken_tls_handshake_and_a_broken_http_answer(mailserver):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(mailserver.certfile, mailserver.keyfile)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def serve(kind):
            conn, _ = srv.accept()
            with conn:
                if kind == "plain":
                    conn.recv(100)
                    conn.sendall(b"this is not TLS\r\n" * 10)
                elif kind == "trickle":
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1000)
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                        try:
                            for _ in range(20):  # a byte every 0.2 s: no single read times out
                                time.sleep(0.2)
                                tls.sendall(b"x")
                        except OSError:  # the client gave up, as it should
                            pass
                else:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1000)
                        tls.sendall(b"NOT-HTTP garbage\r\n\r\n")

        for kind, error, message in (("plain", https.HttpTemporaryError, "TLS failed"),
                                     ("tls", https.HttpTemporaryError, "broken HTTP answer"),
                                     ("trickle", https.HttpTemporaryError, "no answer within 1 s")):
            thread = threading.Thread(target=serve, args=(kind,))
            thread.start()
            with pytest.raises(error, match=message):
                https.request("GET", f"https://localhost:{port}/", ca_file=mailserver.cafile,
                              timeout_s=1 if kind == "trickle" else 5)
            thread.join(10)


def test_https_names_an_unknown_host():
    with pytest.raises(https.HttpTemporaryError, match="cannot resolve the name"):
        https.request("GET", "https://no-such-host.invalid/", timeout_s=5)


def test_the_stand_in_redirects_a_get_as_a_relay_does(relay):
    resp = https.request("GET", relay.url, ca_file=relay.cafile)
    assert resp.status == 301 and resp.headers["location"] == "dcaccount:https://localhost/new"
    with ChatmailRelay(relay.mailserver, mode="http-404") as other:
        assert https.request("POST", f"https://{other.name}/other", ca_file=other.cafile).status == 404


