"""Finding an address's servers (seccam.mailservers) as mail clients do: autoconfig documents,
RFC 6186 SRV records over a real (loopback) DNS exchange (seccam.srv), the chatmail convention."""

import struct

import pytest

from helpers.dnsstub import DnsStub, answer, free_udp_port
from helpers.relay import AUTOCONFIG
from helpers.setupkit import relay  # noqa: F401 - fixture
from seccam import mailservers, srv
from seccam.errors import DataError, TemporaryError
from seccam.mailservers import Found, Server, discover, from_srv, parse_autoconfig

ADDR = "cam@example.org"


def doc(*servers, wrap=True):
    body = "".join(servers)
    return (f'<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="example.org">{body}'
            '</emailProvider></clientConfig>' if wrap else body).encode()


def server(tag, kind, host, port, socket, user="%EMAILADDRESS%"):
    return (f'<{tag} type="{kind}"><hostname>{host}</hostname><port>{port}</port>'
            f'<socketType>{socket}</socketType><username>{user}</username></{tag}>')


def test_a_chatmail_relays_autoconfig_document_gives_its_implicit_tls_servers():
    data = AUTOCONFIG.format(domain="nine.testrun.org", imaps=993, imap=143, smtps=465, smtp=587).encode()
    imap, smtp, login = parse_autoconfig(data, "x@nine.testrun.org")
    assert imap == Server("nine.testrun.org", 993, "tls") and smtp == Server("nine.testrun.org", 465, "tls")
    assert login == "x@nine.testrun.org"


def test_autoconfig_prefers_tls_skips_plain_pop3_and_junk_and_fills_in_the_username():
    data = doc(server("incomingServer", "pop3", "pop.example.org", 995, "SSL"),
               server("incomingServer", "imap", "plain.example.org", 143, "plain"),
               server("incomingServer", "imap", "bad host", 993, "SSL"),
               server("incomingServer", "imap", "imap.example.org", "x", "SSL"),
               server("incomingServer", "imap", "imap.example.org", 0, "SSL"),
               server("incomingServer", "imap", "st.example.org", 143, "STARTTLS", "%EMAILLOCALPART%"),
               server("incomingServer", "imap", "IMAP.example.org", "", "SSL", "%EMAILLOCALPART%"),
               server("outgoingServer", "smtp", "smtp.example.org", 587, "STARTTLS", "%EMAILLOCALPART%"),
               "<other/>")
    imap, smtp, login = parse_autoconfig(data, ADDR)
    assert imap == Server("imap.example.org", 993, "tls") and smtp == Server("smtp.example.org", 587, "starttls")
    assert login == "cam"


def test_autoconfig_with_a_namespace_is_read_too():
    data = (b'<clientConfig xmlns="http://example.org/ns"><emailProvider>'
            + doc(server("incomingServer", "imap", "i.example.org", 993, "SSL"),
                  server("outgoingServer", "smtp", "s.example.org", 465, "SSL"), wrap=False)
            + b"</emailProvider></clientConfig>")
    assert parse_autoconfig(data, ADDR)[:2] == (Server("i.example.org", 993, "tls"), Server("s.example.org", 465, "tls"))


@pytest.mark.parametrize("data,message", [
    (b"<html>nope", "is not XML"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><clientConfig/>', "with a DTD; refused"),
    (b"<clientConfig>" + b" " * 70000 + b"</clientConfig>", "larger than 64 KiB"),
    (doc(server("incomingServer", "imap", "i.example.org", 143, "plain"),
         server("outgoingServer", "smtp", "s.example.org", 25, "plain")), "no IMAP and SMTP server with TLS"),
    (doc(server("incomingServer", "imap", "i.example.org", 993, "SSL", "a"),
         server("outgoingServer", "smtp", "s.example.org", 465, "SSL", "b")), "different logins for IMAP and SMTP"),
])
def test_unusable_autoconfig_documents_are_refused(data, message):
    with pytest.raises(DataError, match=message):
        parse_autoconfig(data, ADDR)


def test_autoconfig_urls_are_where_thunderbird_and_delta_chat_look():
    assert mailservers.autoconfig_urls("a+b@Example.org") == [
        "https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=a%2Bb@Example.org",
        "https://example.org/.well-known/autoconfig/mail/config-v1.1.xml"]
    assert mailservers.autoconfig_urls("a@example.org", origin="https://example.org")[0] == \
        "https://example.org/.well-known/autoconfig/mail/config-v1.1.xml"
    assert len(mailservers.autoconfig_urls("a@example.org", origin="https://example.org")) == 2


def test_the_relays_own_autoconfig_document_over_verified_https(relay):
    imap, smtp, login = mailservers.fetch_autoconfig(
        f"https://{relay.name}/.well-known/autoconfig/mail/config-v1.1.xml", "x@localhost", ca_file=relay.cafile)
    assert imap == Server("localhost", relay.mailserver.imaps_port, "tls") and login == "x@localhost"
    relay.mode = "no-autoconfig"
    with pytest.raises(DataError, match="HTTP 404"):
        mailservers.fetch_autoconfig(f"https://{relay.name}/.well-known/autoconfig/mail/config-v1.1.xml",
                                     "x@localhost", ca_file=relay.cafile)


def test_discover_tries_autoconfig_then_srv_then_the_domain_itself():
    tried = []

    def fetch(url, address, **kw):
        tried.append(url)
        raise DataError("HTTP 404")

    srv_records = {"_imaps._tcp.example.org": [(0, 1, 993, "imap.example.org")],
                   "_submissions._tcp.example.org": [(0, 1, 465, "smtp.example.org")]}
    found = discover(ADDR, fetch=fetch, lookup=lambda name: srv_records.get(name, []))
    assert found == Found(Server("imap.example.org", 993, "tls"), Server("smtp.example.org", 465, "tls"), None,
                          "SRV records of example.org", confirm=False)
    assert tried == mailservers.autoconfig_urls(ADDR)
    found = discover(ADDR, fetch=fetch, lookup=lambda name: [])
    assert found == Found(Server("example.org", 993, "tls"), Server("example.org", 465, "tls"), None,
                          "example.org itself (as chatmail relays do)")

    def broken(name):
        raise srv.DnsError("no DNS answer")
    assert discover(ADDR, fetch=fetch, lookup=broken).source == "example.org itself (as chatmail relays do)"


def test_discover_takes_the_first_autoconfig_that_works_and_its_login():
    def fetch(url, address, **kw):
        if "autoconfig.example.org" in url:
            raise TemporaryError("cannot resolve")
        return Server("i.example.org", 993, "tls"), Server("s.example.org", 465, "tls"), "cam"
    found = discover(ADDR, fetch=fetch, lookup=lambda name: pytest.fail("SRV asked"))
    assert found.login == "cam" and found.source.startswith("autoconfig https://example.org/.well-known")


def test_srv_targets_outside_the_domain_must_be_confirmed_and_dot_means_no_service():
    records = {"_imaps._tcp.example.org": [(0, 0, 993, ".")],
               "_imap._tcp.example.org": [(10, 5, 143, "imap.provider.net"), (0, 5, 143, "imap.example.org")],
               "_submission._tcp.example.org": [(0, 1, 587, "smtp.provider.net")]}
    found = discover(ADDR, fetch=lambda *a, **k: (_ for _ in ()).throw(DataError("x")),
                     lookup=lambda name: records.get(name, []))
    assert found.imap == Server("imap.provider.net", 143, "starttls")  # as sorted by the caller, first record
    assert found.smtp == Server("smtp.provider.net", 587, "starttls") and found.confirm
    assert from_srv("example.org", lambda name: {"_imaps._tcp.example.org": [(0, 0, 993, "i.example.org")]}
                    .get(name, [])) is None


# -- seccam.srv against a DNS server ---------------------------------------------------------
RECORDS = {"_imaps._tcp.example.org": [(10, 1, 993, "backup.example.org"), (0, 5, 993, "imap.example.org"),
                                       (0, 9, 993, "imap2.example.org")]}


def test_srv_lookup_sorts_by_priority_then_weight_and_follows_compression():
    with DnsStub(RECORDS) as dns:
        records = srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)
    assert records == [(0, 9, 993, "imap2.example.org"), (0, 5, 993, "imap.example.org"),
                       (10, 1, 993, "backup.example.org")]


def test_srv_lookup_nxdomain_is_no_records_and_servfail_tries_the_next_server():
    with DnsStub(RECORDS) as dns:
        assert srv.lookup("_imap._tcp.example.org", servers=["127.0.0.1"], port=dns.port) == []
        dns.mode = "servfail"
        with pytest.raises(srv.DnsError, match=r"no DNS answer for _imaps._tcp.example.org .*error 2"):
            srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)


def test_a_truncated_answer_is_asked_again_over_tcp_and_a_stray_datagram_is_ignored():
    with DnsStub(RECORDS, mode="truncate") as dns:
        assert len(srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)) == 3
        assert [q[0] for q in dns.queries] == ["udp", "tcp"]
        dns.mode = "stray"
        assert len(srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)) == 3


def test_tcp_answers_that_are_truncated_again_or_cut_off_are_errors():
    with DnsStub(RECORDS, mode="tcp-truncate") as dns:
        with pytest.raises(srv.DnsError, match="truncated answer over TCP"):
            srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)
        dns.mode = "tcp-close"
        with pytest.raises(srv.DnsError, match="connection closed mid-answer"):
            srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=dns.port)


def test_a_silent_or_absent_server_times_out():
    with DnsStub(RECORDS, mode="silent") as silent:
        with pytest.raises(srv.DnsError, match="timed out"):
            srv.lookup("_imaps._tcp.example.org", servers=["127.0.0.1"], port=silent.port, timeout_s=0.3)
    with pytest.raises(srv.DnsError, match="no DNS answer"):
        srv.lookup("x.example.org", servers=["127.0.0.1"], port=free_udp_port(), timeout_s=0.3)


def test_nameservers_come_from_resolv_conf(short_tmp):
    conf = short_tmp / "resolv.conf"
    conf.write_text("# comment\nsearch lan\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver\n")
    assert srv.nameservers(str(conf)) == ["192.0.2.53", "fe80::1"]
    assert srv.nameservers(str(short_tmp / "missing")) == ["127.0.0.1"]


def test_the_response_parser_refuses_what_is_not_the_answer_to_the_question():
    query = srv.build_query("_imaps._tcp.example.org", srv.TYPE_SRV, 4660)
    good = answer(query, RECORDS)
    assert len(srv.parse_response(good, "_imaps._tcp.example.org", srv.TYPE_SRV, 4660)) == 3
    bad = {
        "short message": good[:5],
        "not the answer": good[:2] + b"\x01\x00" + good[4:],             # QR bit clear
        "another question": answer(srv.build_query("other.example.org", 33, 4660), {"other.example.org": []}),
        "truncated record data": good[:-5],
        "truncated record$": good[:len(good) - len(srv.encode_name("backup.example.org")) - 6 - 10 + 4],
        "name runs past": good[:12] + b"\x05ab",
        "unknown label type": good[:12] + b"\x80",
        "compression loop": good[:12] + b"\xc0\x0c",
        "truncated pointer": good[:12] + b"\xc0",
    }
    for message, msg in bad.items():
        with pytest.raises(ValueError, match=message):
            srv.parse_response(msg, "_imaps._tcp.example.org", srv.TYPE_SRV, 4660)
    header = struct.pack("!HHHHHH", 4660, 0x8180, 1, 1, 0, 0) + query[12:]
    short_srv = header + b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 300, 3) + b"\x00\x00\x00"
    with pytest.raises(ValueError, match="short SRV record"):
        srv.parse_response(short_srv, "_imaps._tcp.example.org", srv.TYPE_SRV, 4660)
    other_type = header + b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, 2) + b"\xc0\x0c"  # a CNAME: skipped
    assert srv.parse_response(other_type, "_imaps._tcp.example.org", srv.TYPE_SRV, 4660) == []
    with pytest.raises(ValueError, match="not a DNS name"):
        srv.encode_name("a..b")
    assert srv.encode_name("bücher.example") == b"\x0dxn--bcher-kva\x07example\x00"
