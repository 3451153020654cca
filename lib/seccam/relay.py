"""A new account on a chatmail relay, made by one HTTPS request.

What a chatmail relay does (chatmail/relay: chatmaild/newemail.py, the
``/new`` location of cmdeploy's nginx.conf.j2, doveauth.py), and what this
module relies on:

* ``POST https://RELAY/new`` with an empty body answers JSON
  ``{"email": "<random>@RELAY", "password": "<random>"}`` (a GET is
  redirected to ``dcaccount:https://RELAY/new`` for browsers). A relay with a
  self-signed certificate adds ``"dclogin_url"`` (``dclogin:...&ic=3``, with
  ``ih``/``sh`` when it is reached by IP address). An error answer may be
  ``{"reason": "..."}``.
* The account exists from its first IMAP or SMTP login with that password;
  IMAPS 993 and SMTPS 465 on the relay's own name. The relay also publishes
  those servers as an autoconfig document at
  ``/.well-known/autoconfig/mail/config-v1.1.xml``.
* Relays delete accounts nobody logged into over IMAP for a while (90 days by
  default) and mail after some days. The camera's inbox job logs in every 5
  minutes, so its account stays.

A relay is named as Delta Chat names it: ``RELAY`` (a host name, optionally
``:PORT``), ``https://RELAY/new`` or the ``DCACCOUNT:https://RELAY/new`` (or
``DCACCOUNT:RELAY``) that a relay's web page shows. The answer's address must
be on the relay's own domain: a relay cannot hand out someone else's address.

:data:`DEFAULT_RELAY` is only the suggestion seccam makes; any relay works
(a list: https://chatmail.at/relays).
"""

import dataclasses
import json
import urllib.parse

from . import dclogin, https
from .errors import DataError, PermanentError

DEFAULT_RELAY = "nine.testrun.org"
RELAY_LIST = "https://chatmail.at/relays"
NEW_PATH = "/new"
AUTOCONFIG_PATH = "/.well-known/autoconfig/mail/config-v1.1.xml"
DCACCOUNT = "dcaccount:"


class NotARelayError(DataError):
    """The server answered, but not as a chatmail relay's /new does."""


@dataclasses.dataclass(frozen=True)
class Relay:
    """Where to ask: ``url`` (``https://HOST[:PORT]/new``), ``host`` (the mail domain it must hand
    out), ``origin`` (``https://HOST[:PORT]``, where its autoconfig document is)."""

    url: str
    host: str
    origin: str

    @property
    def name(self):
        return urllib.parse.urlsplit(self.origin).netloc


@dataclasses.dataclass(frozen=True)
class NewAccount:
    address: str
    password: str
    relay: Relay
    login_url: dclogin.Login | None = None

    def __repr__(self):  # never show the password
        return f"NewAccount(address={self.address!r}, relay={self.relay.name!r})"


def parse_relay(text):
    """The :class:`Relay` for ``text``: ``HOST[:PORT]``, ``https://HOST[:PORT][/new]``, ``DCACCOUNT:...``."""
    from .errors import UsageError
    raw = text.strip()
    if raw.lower().startswith(DCACCOUNT):
        raw = raw[len(DCACCOUNT):]
        if raw.startswith("//") and not raw.lower().startswith("//https:"):
            raw = raw[2:]
    if not raw:
        raise UsageError("no relay given (e.g. nine.testrun.org; a list: " + RELAY_LIST + ")")
    if "://" not in raw:
        raw = "https://" + raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme.lower() != "https":
        raise UsageError(f"{text.strip()}: a relay is asked over HTTPS only (https://RELAY/new)")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise UsageError(f"{text.strip()}: not a valid port") from None
    if not host or parts.username or parts.password or any(c.isspace() for c in raw):
        raise UsageError(f"{text.strip()}: not a relay name or URL (e.g. nine.testrun.org)")
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port and port != 443 else ""
    path = parts.path if parts.path not in ("", "/") else NEW_PATH
    url = urllib.parse.urlunsplit(("https", netloc, path, parts.query, ""))
    return Relay(url=url, host=host.lower(), origin=f"https://{netloc}")


def address_domain(address):
    """The domain of ``address``, lower case, brackets of an IP literal removed."""
    domain = address.rpartition("@")[2].lower()
    return domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain


def request_account(relay, ca_file=None, timeout_s=https.DEFAULT_TIMEOUT_S):
    """POST to the relay's /new and return the checked :class:`NewAccount`.

    Nothing is created on the camera; the account on the relay only exists
    after the first login with it (seccam.account.check does that).
    """
    resp = https.request("POST", relay.url, ca_file=ca_file, timeout_s=timeout_s)
    where = relay.name
    if resp.status != 200:
        reason = _error_reason(resp.body)
        detail = f": {reason}" if reason else ""
        if 300 <= resp.status < 400:
            target = resp.headers.get("location", "")
            raise NotARelayError(f"{where}: HTTP {resp.status} redirect{' to ' + _short(target) if target else ''} "
                                 f"instead of a new account; is {relay.url} a chatmail relay's /new?")
        cls = https.HttpTemporaryError if resp.status >= 500 or resp.status == 429 else https.HttpPermanentError
        raise cls(f"{where}: HTTP {resp.status} {resp.reason}{detail} (from {relay.url})")
    try:
        answer = json.loads(resp.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotARelayError(f"{where}: the answer to {relay.url} is not JSON; not a chatmail relay "
                             f"(see {RELAY_LIST})") from None
    if not isinstance(answer, dict):
        raise NotARelayError(f"{where}: the answer to {relay.url} is not a JSON object; not a chatmail relay")
    email, password = answer.get("email"), answer.get("password")
    missing = [k for k, v in (("email", email), ("password", password)) if not isinstance(v, str) or not v]
    if missing:
        raise NotARelayError(f"{where}: the answer has no {' and no '.join(missing)}; not a chatmail relay's "
                             f"/new (it answers {{\"email\": ..., \"password\": ...}})")
    email = email.strip().lower()
    if email.count("@") != 1 or not email.partition("@")[0] or any(c.isspace() or c in "<>\"/\\" for c in email):
        raise NotARelayError(f"{where}: the answer's email is not an address")
    if address_domain(email) != relay.host:
        raise PermanentError(f"{where}: handed out {email}, which is not on its own domain {relay.host}; "
                             "refusing it")
    if any(c in password for c in "\r\n\0") or password != password.strip():
        raise NotARelayError(f"{where}: the answer's password has white space at its ends or line breaks; "
                             "seccam cannot store it")
    login_url = None
    if answer.get("dclogin_url") is not None:
        if not isinstance(answer["dclogin_url"], str):
            raise NotARelayError(f"{where}: the answer's dclogin_url is not a string")
        try:
            login_url = dclogin.parse(answer["dclogin_url"])
        except dclogin.LoginURLError as exc:
            raise NotARelayError(f"{where}: the answer's dclogin_url is broken: {exc}") from None
        if login_url.address != email or login_url.password != password:
            raise NotARelayError(f"{where}: the answer's dclogin_url is for another account than its email")
    return NewAccount(address=email, password=password, relay=relay, login_url=login_url)


def _error_reason(body):
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    reason = answer.get("reason") if isinstance(answer, dict) else None
    return _short(reason) if isinstance(reason, str) else None


def _short(text, limit=120):
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def operator_notice(name):
    """What the operator of relay ``name`` can see, in words for the owner."""
    return (f"What the operator of {name} can see: the camera's address, when it logs in and sends, the "
            "addresses it writes to and their sizes, and your network's IP address. Not the pictures or "
            "texts: everything is end-to-end encrypted on the camera before it leaves (the relay refuses "
            "unencrypted mail anyway). Relays delete mail after some days and accounts unused for months; "
            "the camera logs in every few minutes.")
