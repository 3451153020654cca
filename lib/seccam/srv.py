"""DNS SRV look-ups (RFC 2782) for finding mail servers (RFC 6186, RFC 8314).

The standard library has no DNS resolver beyond host names, and this is one
query type asked once, at set-up: a small stub resolver is enough. It asks
the name servers of /etc/resolv.conf over UDP (over TCP when the answer is
truncated), checks that the answer is the answer to its question (ID,
question section, QR bit), and follows name compression.

Answers are not DNSSEC-validated: whoever controls the network can forge
them. seccam.mailservers therefore trusts an SRV target only inside the
address's own domain and otherwise asks the person first.
"""

import secrets
import socket
import struct

from .errors import TemporaryError

RESOLV_CONF = "/etc/resolv.conf"
TYPE_SRV = 33
CLASS_IN = 1
TIMEOUT_S = 3.0


class DnsError(TemporaryError):
    pass


def nameservers(path=RESOLV_CONF):
    """The ``nameserver`` addresses of resolv.conf (127.0.0.1 when it has none, as libc does)."""
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    found.append(fields[1].split("%")[0])
    except OSError:
        pass
    return found or ["127.0.0.1"]


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"not a DNS name: {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def build_query(name, qtype, ident):
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype,
                                                                                                CLASS_IN)


def read_name(msg, pos):
    """(name, position after it) at ``pos`` of ``msg``, following compression pointers."""
    labels, end, jumps = [], None, 0
    while True:
        if pos >= len(msg):
            raise ValueError("name runs past the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise ValueError("truncated pointer")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if length & 0xC0:
            raise ValueError("unknown label type")
        pos += 1
        if length == 0:
            return ".".join(labels), (end if end is not None else pos)
        labels.append(msg[pos:pos + length].decode("ascii", "replace"))
        pos += length


def parse_response(msg, name, qtype, ident):
    """The SRV records ``[(priority, weight, port, target)]`` of response ``msg``.

    Raises ValueError when ``msg`` is not the answer to this question; returns
    None when it is truncated (ask again over TCP).
    """
    if len(msg) < 12:
        raise ValueError("short message")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != ident or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    if flags & 0x0200:
        return None
    rcode = flags & 0x000F
    if rcode == 3:  # NXDOMAIN: no such name, no records
        return []
    if rcode != 0:
        raise DnsError(f"DNS server answered error {rcode} for {name}")
    pos = 12
    for _ in range(qd):
        qname, pos = read_name(msg, pos)
        if qname.lower().rstrip(".") != name.lower().rstrip(".") or msg[pos:pos + 2] != struct.pack("!H", qtype):
            raise ValueError("the answer is for another question")
        pos += 4
    records = []
    for _ in range(an):
        _, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise ValueError("truncated record")
        rtype, rclass, _, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        rdata_end = pos + rdlen
        if rdata_end > len(msg):
            raise ValueError("truncated record data")
        if rtype == TYPE_SRV and rclass == CLASS_IN:
            if rdlen < 7:
                raise ValueError("short SRV record")
            priority, weight, port = struct.unpack("!HHH", msg[pos:pos + 6])
            target, _ = read_name(msg, pos + 6)
            records.append((priority, weight, port, target.rstrip(".").lower()))
        pos = rdata_end
    return records


def lookup(name, servers=None, timeout_s=TIMEOUT_S, port=53):
    """SRV records of ``name``, best first (lowest priority, then highest weight); [] if none.

    ``servers`` defaults to resolv.conf's; ``port`` is for tests. Raises
    DnsError when no server gave an answer.
    """
    servers = servers or nameservers()
    problems = []
    for server in servers:
        try:
            records = _ask(server, port, name, timeout_s)
        except (OSError, ValueError, DnsError) as exc:
            problems.append(f"{server}: {exc}")
            continue
        return sorted(records, key=lambda r: (r[0], -r[1]))
    raise DnsError(f"no DNS answer for {name} ({'; '.join(problems)})")


def _ask(server, port, name, timeout_s):
    ident = secrets.randbits(16)
    query = build_query(name, TYPE_SRV, ident)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect((server, port))
        sock.send(query)
        while True:
            msg = sock.recv(4096)
            try:
                records = parse_response(msg, name, TYPE_SRV, ident)
                break
            except ValueError:  # someone else's datagram: keep waiting for ours until the timeout
                continue
    if records is not None:
        return records
    with socket.create_connection((server, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
        records = parse_response(_recv_exactly(sock, length), name, TYPE_SRV, ident)
    if records is None:
        raise ValueError("truncated answer over TCP")
    return records


def _recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed mid-answer")
        data += chunk
    return data

