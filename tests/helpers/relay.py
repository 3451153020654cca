"""A loopback stand-in of a chatmail relay's account endpoints, backed by helpers.mailserver.

It follows chatmail/relay (https://github.com/chatmail/relay, read at commit 48ad92b, 2026-08):

* ``chatmaild/src/chatmaild/newemail.py``: ``create_newemail_dict`` (a local part of
  ``username_max_length`` = 9 characters of ``[a-z0-9]``, a password of
  ``password_min_length + 3`` = 12 characters of ASCII letters, digits and punctuation),
  ``create_dclogin_url`` (``dclogin:ADDR?p=...&v=1[&ih=..&sh=..]&ic=3`` for a relay with a
  self-signed certificate) and ``print_new_account`` (JSON ``email``, ``password``, and
  ``dclogin_url`` only in self-signed mode);
* ``cmdeploy/src/cmdeploy/nginx/nginx.conf.j2``, ``location /new``: a GET is redirected
  (301) to ``dcaccount:https://DOMAIN/new``, a POST runs newemail.py;
* ``cmdeploy/src/cmdeploy/nginx/autoconfig.xml.j2``, served at
  ``/.well-known/autoconfig/mail/config-v1.1.xml`` (IMAP 993 SSL, 143 STARTTLS, SMTP 465 SSL,
  587 STARTTLS, username ``%EMAILADDRESS%``);
* ``doveauth.py`` creates the account at its first login with the password given then. Here
  the stand-in creates it on /new in the MailServer (Dovecot passwd-file + SMTP auth,
  ``MailServer.create_account``), which looks the same from the client's side: the returned
  address and password log in over IMAP and SMTP.

What differs, because a test machine cannot have it: the relay's domain is ``localhost`` (the
name in the test certificate, which Delta Chat accepts as an address domain), HTTPS listens on
a free port instead of 443, and the mail servers are the MailServer's free ports, so the
autoconfig document (and, in self-signed mode, the dclogin_url's ``ip``/``sp``/``is``/``ss``,
fields Delta Chat defines) name those ports.

``mode`` selects a misbehaving relay for the failure tests:
``ok``, ``self-signed`` (adds dclogin_url), ``garbage`` (200 with HTML), ``not-object`` (a
JSON list), ``missing-fields`` (no password), ``wrong-domain`` (an address elsewhere),
``http-500``, ``http-404``, ``reason`` (403 with ``{"reason": ...}`` as a relay that refuses
new accounts), ``redirect`` (301 to dcaccount:, what a GET gets), ``hang`` (accepts and never
answers), ``wrong-password`` (the account exists but the password handed out is not its own:
login refused after creation), ``no-autoconfig`` (404 for the autoconfig document: the
client falls back to the relay's own name and ports 993/465, which fail here).
"""

from __future__ import annotations

import http.server
import json
import secrets
import ssl
import string
import threading
import urllib.parse

ALPHANUMERIC = string.ascii_lowercase + string.digits
ALPHANUMERIC_PUNCT = string.ascii_letters + string.digits + string.punctuation
USERNAME_LENGTH = 9
PASSWORD_LENGTH = 9 + 3

AUTOCONFIG = """<?xml version="1.0" encoding="UTF-8"?>

<clientConfig version="1.1">
  <emailProvider id="{domain}">
    <domain>{domain}</domain>
    <displayName>{domain} chatmail</displayName>
    <displayShortName>{domain}</displayShortName>
    <incomingServer type="imap">
      <hostname>{domain}</hostname>
      <port>{imaps}</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <incomingServer type="imap">
      <hostname>{domain}</hostname>
      <port>{imap}</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{domain}</hostname>
      <port>{smtps}</port>
      <socketType>SSL</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>{domain}</hostname>
      <port>{smtp}</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"""


class ChatmailRelay:
    """``with ChatmailRelay(mailserver) as relay: relay.name`` -> ``localhost:PORT``.

    Attributes: ``name`` (what ``seccam account new`` takes), ``url`` (its /new), ``cafile``
    (the certificate to pass as --ca-file), ``created`` (addresses handed out), ``requests``
    ([(method, path)]), ``mode`` (may be changed between requests).
    """

    def __init__(self, mailserver, mode="ok", domain="localhost"):
        self.mailserver = mailserver
        self.mode = mode
        self.domain = domain
        self.created: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.cafile = mailserver.cafile
        self._hang = threading.Event()
        self._server = None
        self._thread = None

    def __enter__(self) -> "ChatmailRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def name(self) -> str:
        return f"{self.domain}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.name}/new"

    def start(self) -> "ChatmailRelay":
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                relay.requests.append(("GET", self.path))
                path = urllib.parse.urlsplit(self.path).path
                if path == "/new":
                    return self._send(301, b"", location=f"dcaccount:https://{relay.domain}/new")
                if path == "/.well-known/autoconfig/mail/config-v1.1.xml" and relay.mode != "no-autoconfig":
                    ms = relay.mailserver
                    doc = AUTOCONFIG.format(domain=relay.domain, imaps=ms.imaps_port, imap=ms.imap_port,
                                            smtps=ms.smtps_port, smtp=ms.smtp_port)
                    return self._send(200, doc.encode(), "application/xml")
                return self._send(404, b"not found", "text/plain")

            def do_POST(self):
                relay.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if urllib.parse.urlsplit(self.path).path != "/new":
                    return self._send(404, b"not found", "text/plain")
                status, body, ctype, extra = relay._new_answer()
                if status is None:  # hang: hold the connection, answer nothing
                    relay._hang.wait(120)
                    return None
                return self._send(status, body, ctype, **extra)

            def _send(self, status, body, ctype="application/json", location=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.mailserver.certfile, self.mailserver.keyfile)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="chatmail-relay", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._hang.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- /new ------------------------------------------------------------------------------
    def new_credentials(self, domain=None):
        user = "".join(secrets.choice(ALPHANUMERIC) for _ in range(USERNAME_LENGTH))
        password = "".join(secrets.choice(ALPHANUMERIC_PUNCT) for _ in range(PASSWORD_LENGTH))
        return f"{user}@{domain or self.domain}", password

    def _new_answer(self):
        mode = self.mode
        if mode == "hang":
            return None, b"", "", {}
        if mode == "garbage":
            return 200, b"<html><body>Welcome to nginx!</body></html>", "text/html", {}
        if mode == "not-object":
            return 200, b'["email", "password"]', "application/json", {}
        if mode == "http-500":
            return 500, b"<html>500 Internal Server Error</html>", "text/html", {}
        if mode == "http-404":
            return 404, b"not found", "text/plain", {}
        if mode == "reason":
            return 403, json.dumps({"reason": "account creation is disabled on this relay"}).encode(), \
                "application/json", {}
        if mode == "redirect":
            return 301, b"", "text/html", {"location": f"dcaccount:https://{self.domain}/new"}
        addr, password = self.new_credentials("example.org" if mode == "wrong-domain" else None)
        if mode == "missing-fields":
            return 200, json.dumps({"email": addr}).encode(), "application/json", {}
        if mode != "wrong-domain":
            self.mailserver.create_account(addr, password)
            self.created.append(addr)
        answer = {"email": addr, "password": password}
        if mode == "wrong-password":
            answer["password"] = password + "x"
        if mode == "self-signed":
            ms = self.mailserver
            answer["dclogin_url"] = (
                f"dclogin:{urllib.parse.quote(addr, safe='@[]')}?p={urllib.parse.quote(password, safe='')}"
                f"&v=1&ih={self.domain}&ip={ms.imaps_port}&is=ssl&sh={self.domain}&sp={ms.smtps_port}&ss=ssl&ic=3")
        return 200, json.dumps(answer).encode(), "application/json", {}
