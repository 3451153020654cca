"""A loopback DNS server that answers SRV questions, for seccam.srv's tests.

``DnsStub(records)`` listens on 127.0.0.1 (UDP and TCP, the same free port) and answers from
``records`` ({name: [(priority, weight, port, target), ...]}) as RFC 1035 / RFC 2782 say:
the question echoed, answers with the owner name compressed to a pointer, NXDOMAIN for an
unknown name. ``mode`` makes it misbehave: ``servfail``, ``truncate`` (UDP answers have TC
set and no records; TCP gives the full answer), ``tcp-truncate`` (TCP is truncated too),
``tcp-close`` (TCP closes mid-answer), ``stray`` (a datagram with the wrong ID
first, then the answer), ``silent`` (never answers). ``queries`` records (transport, name).
"""

import socket
import socketserver
import struct
import threading


def _name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_question(msg):
    ident = struct.unpack("!H", msg[:2])[0]
    pos, labels = 12, []
    while msg[pos]:
        labels.append(msg[pos + 1:pos + 1 + msg[pos]].decode())
        pos += 1 + msg[pos]
    qtype = struct.unpack("!H", msg[pos + 1:pos + 3])[0]
    return ident, ".".join(labels), qtype, msg[12:pos + 5]


def answer(msg, records, rcode=0, truncated=False):
    ident, name, qtype, question = parse_question(msg)
    found = records.get(name)
    if found is None and rcode == 0:
        rcode = 3
    flags = 0x8180 | rcode | (0x0200 if truncated else 0)
    rrs = [] if truncated or rcode else found
    out = struct.pack("!HHHHHH", ident, flags, 1, len(rrs), 0, 0) + question
    for prio, weight, port, target in rrs:
        rdata = struct.pack("!HHH", prio, weight, port) + _name(target)
        out += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 300, len(rdata)) + rdata
    return out


class DnsStub:
    def __init__(self, records, mode="ok"):
        self.records = records
        self.mode = mode
        self.queries = []
        stub = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                name = parse_question(data)[1]
                stub.queries.append(("udp", name))
                if stub.mode == "silent":
                    return
                if stub.mode == "stray":
                    sock.sendto(b"\x00\x00" + answer(data, stub.records)[2:], self.client_address)
                sock.sendto(answer(data, stub.records, rcode=2 if stub.mode == "servfail" else 0,
                                   truncated=stub.mode.endswith("truncate") or stub.mode == "tcp-close"),
                            self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                length = struct.unpack("!H", self.request.recv(2))[0]
                data = b""
                while len(data) < length:
                    data += self.request.recv(length - len(data))
                stub.queries.append(("tcp", parse_question(data)[1]))
                if stub.mode == "tcp-close":
                    self.request.sendall(b"\x01")
                    return
                reply = answer(data, stub.records, truncated=stub.mode == "tcp-truncate")
                self.request.sendall(struct.pack("!H", len(reply)) + reply)

        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
        self.port = self.udp.server_address[1]
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        for server in (self.udp, self.tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
