"""The one HTTPS client: a chatmail relay's ``/new`` and autoconfig documents.

Rules, the same as for SMTP and IMAP (seccam.transport, seccam.imap):

* HTTPS only, the certificate always verified against the system's CAs or
  the ``ca_file`` given (a relay with a self-signed certificate: its CA
  through ``--ca-file``); verification is never switched off;
* one deadline for the whole exchange (connect, send, every read), so a
  server that accepts the connection and then says nothing, or trickles,
  cannot hang the command;
* redirects are not followed (Delta Chat's core does not follow them for
  ``/new`` either), bodies are read up to ``max_bytes``.

Failures are one line naming the host: :class:`HttpTemporaryError`
(unreachable, timeout, 5xx: try again later) or :class:`HttpPermanentError`
(certificate not trusted, 4xx, answer too large).
"""

import dataclasses
import time
import urllib.parse

from .errors import PermanentError, TemporaryError

DEFAULT_TIMEOUT_S = 30.0
MAX_BYTES = 64 * 1024
USER_AGENT = "seccam"


class HttpTemporaryError(TemporaryError):
    pass


class HttpPermanentError(PermanentError):
    pass


@dataclasses.dataclass(frozen=True)
class Response:
    url: str
    status: int
    reason: str
    headers: dict
    body: bytes


def tls_context(ca_file=None):
    import ssl
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def request(method, url, ca_file=None, timeout_s=DEFAULT_TIMEOUT_S, max_bytes=MAX_BYTES, body=b""):
    """Send one request and return the :class:`Response`, whatever its status."""
    import http.client
    import socket
    import ssl

    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise HttpPermanentError(f"{url}: only https:// URLs are used")
    host = parts.hostname
    try:
        port = parts.port or 443
    except ValueError:
        raise HttpPermanentError(f"{url}: not a valid port") from None
    where = host if port == 443 else f"{host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout_s
    conn = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=tls_context(ca_file))
    try:
        conn.request(method, path, body=body if method == "POST" else None,
                     headers={"User-Agent": USER_AGENT, "Accept": "application/json, application/xml, */*"})
        _tick(conn, deadline)
        resp = conn.getresponse()
        chunks, size = [], 0
        while size <= max_bytes:
            _tick(conn, deadline)
            chunk = resp.read1(min(16384, max_bytes + 1 - size))  # one recv: the deadline is checked between
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise HttpPermanentError(f"{where}: the answer is larger than {max_bytes} bytes")
        return Response(url, resp.status, resp.reason or "", {k.lower(): v for k, v in resp.getheaders()},
                        b"".join(chunks))
    except (HttpPermanentError, HttpTemporaryError):
        raise
    except ssl.SSLCertVerificationError as exc:
        hint = " (give its CA certificate with --ca-file)" if not ca_file else f" by {ca_file}"
        raise HttpPermanentError(f"{where}: TLS certificate not trusted: {exc.verify_message}{hint}") from None
    except (TimeoutError, socket.timeout):
        raise HttpTemporaryError(f"{where}: no answer within {timeout_s:g} s") from None
    except ssl.SSLError as exc:
        raise HttpTemporaryError(f"{where}: TLS failed: {exc.reason or exc}") from None
    except socket.gaierror as exc:
        raise HttpTemporaryError(f"{where}: cannot resolve the name: {exc.strerror or exc}") from None
    except OSError as exc:
        raise HttpTemporaryError(f"{where}: cannot connect: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:
        raise HttpTemporaryError(f"{where}: broken HTTP answer ({type(exc).__name__})") from None
    finally:
        conn.close()


def _tick(conn, deadline):
    """Shorten the socket's timeout to what is left of the deadline (past it: the next read times out)."""
    if conn.sock is not None:
        conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
