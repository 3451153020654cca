"""Finding an address's IMAP and SMTP servers, the way mail clients do.

In order, the first that gives both servers wins:

1. the provider's **autoconfig** document (Thunderbird's format, which Delta
   Chat reads too): ``https://autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=ADDRESS``,
   then ``https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml`` (chatmail
   relays publish theirs there). Fetched over verified HTTPS from the
   domain's own servers, so it is trusted;
2. **SRV records** (RFC 6186, with RFC 8314's implicit-TLS ``_submissions``
   preferred): ``_imaps._tcp``/``_imap._tcp`` and
   ``_submissions._tcp``/``_submission._tcp`` of the domain. DNS answers are
   not authenticated, so a server outside the address's domain is marked
   ``confirm`` (RFC 6186 section 6): the password goes there only when the
   person agrees;
3. the **chatmail convention**: the domain itself, IMAPS 993 and SMTPS 465.
   Whether that is right is for the login check to tell.

Only TLS (implicit or STARTTLS) servers are taken; a document that offers
only plain-text connections is as good as none. Explicit hosts on the
command line skip all of this.
"""

import dataclasses
import logging
import urllib.parse

from . import https, srv
from .errors import DataError, SeccamError

log = logging.getLogger("seccam.mailservers")

DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("smtp", "tls"): 465,
                 ("smtp", "starttls"): 587, ("imap", "plain"): 143, ("smtp", "plain"): 25}
_SOCKET_TYPES = {"ssl": "tls", "tls": "tls", "starttls": "starttls"}
MAX_DOC_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str  # tls | starttls | plain

    def __str__(self):
        return f"{self.host}:{self.port} ({self.security})"


@dataclasses.dataclass(frozen=True)
class Found:
    """Both servers, the login they want (None: the address), where they were found, and whether
    the person must confirm them before the password is sent there."""

    imap: Server
    smtp: Server
    login: str | None
    source: str
    confirm: bool = False


def default_port(kind, security):
    return DEFAULT_PORTS[(kind, security)]


def domain_of(address):
    domain = address.rpartition("@")[2].lower()
    return domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain


def within(host, domain):
    host, domain = host.lower().rstrip("."), domain.lower().rstrip(".")
    return host == domain or host.endswith("." + domain)


# -- autoconfig -------------------------------------------------------------------------
def parse_autoconfig(data, address):
    """(imap Server, smtp Server, login) from a Thunderbird autoconfig document; raises DataError."""
    import xml.etree.ElementTree as ET

    if len(data) > MAX_DOC_BYTES:
        raise DataError("autoconfig document larger than 64 KiB")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise DataError("autoconfig document with a DTD; refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"autoconfig document is not XML ({exc})") from None
    local, _, domain = address.rpartition("@")
    substitutions = {"%EMAILADDRESS%": address, "%EMAILLOCALPART%": local, "%EMAILDOMAIN%": domain}
    found = {"imap": [], "smtp": []}
    for element in root.iter():
        tag = _tag(element)
        if tag not in ("incomingserver", "outgoingserver"):
            continue
        kind = (element.get("type") or "").strip().lower()
        if (tag, kind) not in (("incomingserver", "imap"), ("outgoingserver", "smtp")):
            continue
        fields = {_tag(child): (child.text or "").strip() for child in element}
        security = _SOCKET_TYPES.get(fields.get("sockettype", "").lower())
        host = fields.get("hostname", "")
        if not security or not host or any(c.isspace() or c in "/@" for c in host):
            continue
        try:
            port = int(fields.get("port") or default_port(kind, security))
        except ValueError:
            continue
        if not 0 < port < 65536:
            continue
        username = fields.get("username") or "%EMAILADDRESS%"
        for placeholder, value in substitutions.items():
            username = username.replace(placeholder, value)
        found[kind].append((Server(host.lower(), port, security), username))
    if not found["imap"] or not found["smtp"]:
        missing = " and ".join(k.upper() for k in ("imap", "smtp") if not found[k])
        raise DataError(f"autoconfig document lists no {missing} server with TLS")
    # Prefer implicit TLS, then the document's order.
    imap = sorted(found["imap"], key=lambda s: s[0].security != "tls")[0]
    smtp_same_login = [s for s in found["smtp"] if s[1] == imap[1]]
    if not smtp_same_login:
        raise DataError("autoconfig document wants different logins for IMAP and SMTP; seccam uses one: "
                        "give the servers with --imap-host/--smtp-host and the login with --login")
    smtp = sorted(smtp_same_login, key=lambda s: s[0].security != "tls")[0]
    return imap[0], smtp[0], imap[1]


def _tag(element):
    return element.tag.rpartition("}")[2].strip().lower() if isinstance(element.tag, str) else ""


def autoconfig_urls(address, origin=None):
    """Where the autoconfig document may be; ``origin`` (``https://HOST[:PORT]``) first when given."""
    domain = domain_of(address)
    quoted = urllib.parse.quote(address, safe="@.")
    urls = [] if origin is None else [origin + "/.well-known/autoconfig/mail/config-v1.1.xml"]
    urls += [f"https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={quoted}",
             f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml"]
    return list(dict.fromkeys(urls))


def fetch_autoconfig(url, address, ca_file=None, timeout_s=10.0):
    resp = https.request("GET", url, ca_file=ca_file, timeout_s=timeout_s, max_bytes=MAX_DOC_BYTES)
    if resp.status != 200:
        raise DataError(f"HTTP {resp.status}")
    return parse_autoconfig(resp.body, address)


# -- SRV ----------------------------------------------------------------------------------
_SRV_NAMES = {"imap": (("_imaps._tcp", "tls"), ("_imap._tcp", "starttls")),
              "smtp": (("_submissions._tcp", "tls"), ("_submission._tcp", "starttls"))}


def from_srv(domain, lookup=srv.lookup):
    """(imap Server, smtp Server) from RFC 6186 SRV records, or None when the domain has none."""
    chosen = {}
    for kind, names in _SRV_NAMES.items():
        for prefix, security in names:
            records = [r for r in lookup(f"{prefix}.{domain}") if r[3] not in ("", ".")]
            if records:
                _, _, port, target = records[0]
                chosen[kind] = Server(target, port, security)
                break
    if len(chosen) != 2:
        return None
    return chosen["imap"], chosen["smtp"]


# -- all of it ------------------------------------------------------------------------------
def discover(address, ca_file=None, timeout_s=10.0, origin=None, fetch=fetch_autoconfig, lookup=srv.lookup):
    """The :class:`Found` servers of ``address``; the last resort is the chatmail convention."""
    domain = domain_of(address)
    for url in autoconfig_urls(address, origin):
        try:
            imap, smtp, login = fetch(url, address, ca_file=ca_file, timeout_s=timeout_s)
        except SeccamError as exc:
            log.debug("autoconfig=%s result=%r", url, str(exc))
            continue
        return Found(imap, smtp, None if login == address else login, f"autoconfig {url.split('?')[0]}")
    try:
        pair = from_srv(domain, lookup)
    except (SeccamError, ValueError) as exc:
        log.debug("srv domain=%s result=%r", domain, str(exc))
        pair = None
    if pair:
        imap, smtp = pair
        return Found(imap, smtp, None, f"SRV records of {domain}",
                     confirm=not (within(imap.host, domain) and within(smtp.host, domain)))
    return Found(Server(domain, 993, "tls"), Server(domain, 465, "tls"), None,
                 f"{domain} itself (as chatmail relays do)")
