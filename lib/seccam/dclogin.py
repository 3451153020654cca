"""Delta Chat's account login URL: ``dclogin:ADDRESS?p=PASSWORD&v=1[&options]``.

The scheme as Delta Chat's core reads it (chatmail/core src/qr/dclogin_scheme.rs,
and the URI-scheme list of deltachat/interface):

* ``dclogin:`` or ``dclogin://``, any case; the address is what comes before
  the first ``?`` or ``/`` (percent-encoded, e.g. ``user@%5b192.0.2.1%5d``);
  a path after it is ignored; the query must not be empty;
* ``v``: the version, required; only ``1`` is defined (another number is
  "unsupported version", not a malformed URL);
* ``p``: the password, required;
* ``ih``, ``ip``, ``iu``, ``ipw``, ``is``: IMAP host, port, user name,
  password (instead of ``p``), security;
* ``sh``, ``sp``, ``su``, ``spw``, ``ss``: the same for SMTP;
* security is ``ssl``, ``starttls``, ``plain`` or ``default`` (automatic);
* ``ic``: certificate checks, ``0`` automatic, ``1`` strict, ``2`` and ``3``
  accept invalid certificates;
* parameters Delta Chat does not know are ignored; a repeated one counts
  with its last value; ``+`` in a value is a space (form encoding).

A chatmail relay whose certificate is self-signed puts such a URL into its
``/new`` answer (``dclogin_url``, with ``ic=3``). seccam never switches
certificate checks off: :attr:`Login.accepts_invalid_certificates` only lets
the caller say why a check failed and that ``--ca-file`` is the way.

Errors never contain the URL or a value from it: the URL carries a password.
"""

import dataclasses
import urllib.parse

from .errors import DataError

SCHEME = "dclogin:"
SECURITY = {"ssl": "tls", "starttls": "starttls", "plain": "plain", "default": None}
CERTIFICATE_CHECKS = {"0": "automatic", "1": "strict", "2": "accept-invalid", "3": "accept-invalid"}


@dataclasses.dataclass(frozen=True)
class Login:
    """A decoded ``dclogin:`` URL. Security is ``tls``/``starttls``/``plain`` or None (automatic)."""

    address: str
    password: str
    imap_host: str | None = None
    imap_port: int | None = None
    imap_user: str | None = None
    imap_password: str | None = None
    imap_security: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_security: str | None = None
    certificate_checks: str | None = None

    @property
    def accepts_invalid_certificates(self):
        return self.certificate_checks == "accept-invalid"

    def __repr__(self):  # never show a password, e.g. in a traceback
        return f"Login(address={self.address!r}, imap_host={self.imap_host!r}, smtp_host={self.smtp_host!r})"


class LoginURLError(DataError):
    """A malformed ``dclogin:`` URL."""


def looks_like(text):
    return text.strip()[:len(SCHEME)].lower() == SCHEME


def parse(url):
    """Decode ``url``; raise LoginURLError naming what is wrong (never a value)."""
    url = url.strip()
    if not looks_like(url):
        raise LoginURLError("not a Delta Chat login URL (it must start with dclogin:)")
    payload = url[len(SCHEME):]
    if payload.startswith("//"):
        payload = payload[2:]
    head, sep, query = payload.partition("?")
    try:
        address = urllib.parse.unquote(head.split("/", 1)[0], errors="strict")
    except UnicodeDecodeError:
        raise LoginURLError("dclogin URL whose address is not UTF-8") from None
    if not sep or not query:
        raise LoginURLError("dclogin URL without parameters (it needs at least p= and v=)")
    if not _may_be_address(address):
        raise LoginURLError("dclogin URL without a valid address before the '?'")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise LoginURLError("dclogin URL with a parameter that is not UTF-8") from None
    params = dict(pairs)
    version = params.get("v")
    if version is None:
        raise LoginURLError("dclogin URL without a version (v=1)")
    if not version.isascii() or not version.isdigit():
        raise LoginURLError("dclogin URL with a version that is not a number")
    if int(version) != 1:
        raise LoginURLError(f"dclogin URL of version {int(version)}; seccam understands version 1 "
                            "(update seccam, or enter the account with seccam account set)")
    if "p" not in params:
        raise LoginURLError("dclogin URL without a password (p=)")
    return Login(
        address=address.lower(),
        password=params["p"],
        imap_host=_host(params, "ih"), imap_port=_port(params, "ip"), imap_user=params.get("iu") or None,
        imap_password=params.get("ipw") or None, imap_security=_security(params, "is"),
        smtp_host=_host(params, "sh"), smtp_port=_port(params, "sp"), smtp_user=params.get("su") or None,
        smtp_password=params.get("spw") or None, smtp_security=_security(params, "ss"),
        certificate_checks=_checks(params),
    )


def _may_be_address(address):
    # Delta Chat's own rule (deltachat-contact-tools EmailAddress::new): a local part, '@', a domain
    # that does not end with a dot, no white space and no angle brackets.
    local, at, domain = address.rpartition("@")
    return (bool(at and local and domain) and not domain.endswith(".")
            and not any(c.isspace() or c in "<>" for c in address))


def _host(params, key):
    value = params.get(key)
    if value is None or value == "":
        return None
    if any(c.isspace() or c in "/@?#" for c in value):
        raise LoginURLError(f"dclogin URL: {key}= is not a host name")
    return value


def _port(params, key):
    value = params.get(key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) < 65536:
        raise LoginURLError(f"dclogin URL: {key}= is not a port number (1-65535)")
    return int(value)


def _security(params, key):
    value = params.get(key)
    if value is None:
        return None
    if value not in SECURITY:
        raise LoginURLError(f"dclogin URL: unknown {key}= security (ssl, starttls, plain or default)")
    return SECURITY[value]


def _checks(params):
    value = params.get("ic")
    if value is None:
        return None
    if value not in CERTIFICATE_CHECKS:
        raise LoginURLError("dclogin URL: unknown ic= certificate checks (0, 1, 2 or 3)")
    return CERTIFICATE_CHECKS[value]


def build(address, password, **options):
    """A ``dclogin:`` URL (for tests and for showing the account to another client)."""
    query = [("p", password), ("v", "1")] + [(k, str(v)) for k, v in options.items() if v is not None]
    return (SCHEME + urllib.parse.quote(address, safe="@[]") + "?"
            + "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in query))
