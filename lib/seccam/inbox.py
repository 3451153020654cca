"""``jobs/inbox``: read the camera's mailbox; onboarding by invite and Autocrypt key import.

This module owns what happens to mail that reaches the camera: every message
in the IMAP INBOX is fetched, handled and then deleted, so the mailbox never
grows without bound. It also owns the ``inbox`` job lock and the
``quarantine/*.inbox.eml`` items it sets aside.

Every inbound message is hostile until proven otherwise:

* a message larger than :data:`MAX_MESSAGE_BYTES` is never downloaded (a
  partial fetch caps what is read even if the server's size is a lie): it is
  logged and deleted;
* before parsing, the number of ``multipart`` declarations is capped
  (:data:`MAX_MIME_PARTS`; Python's parser recurses and a deep nest would
  crash it); after parsing, the nesting depth is capped (:data:`MAX_MIME_DEPTH`);
  garbage that does not parse is logged and deleted;
* decryption output is capped (``gpg --max-output``) against compression bombs;
* nothing from a message is ever written to disk except the raw message
  itself, by seccam.spool under a name of its own, when it is set aside: an
  encrypted message that cannot be decrypted goes to ``quarantine/`` with a
  ``.reason``. The quarantine has its own cap (:data:`MAX_SET_ASIDE` items,
  :data:`MAX_SET_ASIDE_BYTES`), is pruned oldest first, and is not counted in
  the spool budget, so that mail from strangers never displaces an alarm.
  Attachments are never extracted.

What a message is used for:

* Secure-Join (seccam.securejoin): a clear-text ``vc-request`` naming an
  open invite, and an encrypted, signed ``vc-request-with-auth``. The replies
  are sent at once over SMTP (queued in the outbox if the server is
  unavailable). After a completed join the camera sends a *welcome*: an
  image set of kind ``welcome`` (an image from every camera and the health
  summary) through the normal encrypt and send steps.
* Keys (seccam.autocrypt, seccam.keys): the outer headers of an encrypted
  message carry no authority, so its outer ``Autocrypt:`` header is never
  read. The inner part counts as written by a recipient only when
  seccam.authn proves it (signed by the key pinned for that recipient, inner
  ``From`` = that recipient, addressed to the camera, fresh, never acted on
  before, recorded in the replay journal first); the key in its inner
  ``Autocrypt:`` header can then refresh the pinned key or become a
  *verified* pending key. Everything else (clear text, unauthenticated inner
  parts) can offer a key only as an unverified pending change: mail never
  pins or replaces a key (seccam.keys).
* Commands (seccam.control): the first line of the text of an authenticated
  inner part, e.g. ``/snap``, ``/disarm 2h``. Only after the replay journal
  recorded the message (record before act: a run killed in between has acted
  at most once). The answers are camera messages like any other (seccam.replies
  sets, encrypted and sent through the outbox at once); a ``/snap`` becomes a
  request for the capture job (seccam.snap). A command in clear text or in an
  unauthenticated message is logged and ignored, without an answer.
* Anything else is logged and deleted.

A temporary failure (IMAP/SMTP unreachable, disk full) leaves the message on
the server for the next run; one bad message never stops the others.

Two ways to run (``jobs/inbox``): one pass over the mailbox, or, with
``--watch`` (what cron runs every minute), a pass and then IMAP IDLE until just
before the next cron start, each arrival handled as the server reports it; a
server without IDLE is asked every :data:`POLL_S` seconds. The ``inbox`` lock
makes overlapping runs take turns: a run started while the previous one still
finishes waits for it (until its own end) instead of handling the same mail.
"""

import contextlib
import dataclasses
import email
import email.policy
import email.utils
import logging
import re
import time

from .errors import EX_OK, ConfigError, SeccamError, TemporaryError
from .faults import checkpoint

log = logging.getLogger("seccam.inbox")

PROG = "seccam-inbox"
MAX_MESSAGE_BYTES = 1 << 20
MAX_PLAINTEXT_BYTES = 4 << 20
MAX_MIME_DEPTH = 8
MAX_MIME_PARTS = 64
MAX_PER_RUN = 100
# The quarantine's own cap: enough to show a person what arrived, too small to matter on an SD card.
MAX_SET_ASIDE = 20
MAX_SET_ASIDE_BYTES = 4 * MAX_MESSAGE_BYTES
SET_ASIDE_SUFFIX = ".inbox.eml"
_MULTIPART_RE = re.compile(rb"content-type:\s*multipart/", re.I)
# --watch: cron starts the job every PERIOD_S; it idles until MARGIN_S before the next start
# (so that it has ended when systemd is asked to start it again: a start while it still runs
# would only wait for it, and the minute after would have no watcher), or makes one pass only
# when less than MIN_WATCH_S would be left.
PERIOD_S = 60
MARGIN_S = 2
MIN_WATCH_S = 5
# Without IDLE, look this often; after a lost connection, wait this long before connecting again.
POLL_S = 3
RECONNECT_S = 5


class Hostile(Exception):
    """A message was refused before use; ``str()`` says why (for the log)."""


@dataclasses.dataclass
class Result:
    fetched: int = 0
    deleted: int = 0
    kept: int = 0                 # left on the server after a temporary failure
    set_aside: int = 0
    oversize: int = 0
    dropped: int = 0              # refused (hostile, garbage, unexpected) or of no use
    keys_changed: int = 0         # keys pinned (by a completed Secure-Join; mail alone never pins)
    ignored: int = 0              # encrypted mail without authority (not authenticated, or a replay)
    replies_sent: int = 0
    replies_queued: int = 0
    commands: int = 0             # authenticated commands acted on (seccam.control)
    answers: int = 0              # reply sets they published (sent at the end of the pass)
    requests: int = 0             # /snap requests for the capture job
    passes: int = 0
    joined: list = dataclasses.field(default_factory=list)   # [(address, invite id)]
    rejected: list = dataclasses.field(default_factory=list)  # [(step, reason)]


# -- parsing with limits --------------------------------------------------------------
def mime_depth(message):
    """Nesting depth of ``message`` (1 for a single part), computed without recursion."""
    deepest, stack = 0, [(message, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload)
    return deepest


def parse(raw):
    """``raw`` as an email.message.Message, or Hostile if it is too complex or no mail at all."""
    if len(_MULTIPART_RE.findall(raw)) > MAX_MIME_PARTS:
        raise Hostile(f"more than {MAX_MIME_PARTS} multipart parts")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except (RecursionError, ValueError, TypeError, IndexError) as exc:  # the parser is lenient; be safe
        raise Hostile(f"unparseable: {type(exc).__name__}") from None
    if not message.keys():
        raise Hostile("no header")
    depth = mime_depth(message)
    if depth > MAX_MIME_DEPTH:
        raise Hostile(f"MIME nesting depth {depth} > {MAX_MIME_DEPTH}")
    return message


def single_from(message):
    pairs = email.utils.getaddresses([str(v) for v in message.get_all("From") or []])
    addrs = [a.strip().lower() for _, a in pairs if a]
    return addrs[0] if len(addrs) == 1 and addrs[0].count("@") == 1 else None


def encrypted_payload(message):
    """The armored OpenPGP data of an RFC 3156 message, or Hostile."""
    if message.get_content_type() != "multipart/encrypted":
        raise Hostile("not multipart/encrypted")
    parts = message.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        raise Hostile("multipart/encrypted without exactly two parts")
    data = parts[1].get_payload(decode=True)
    if not data or b"-----BEGIN PGP MESSAGE-----" not in data:
        raise Hostile("no armored OpenPGP message in the second part")
    return data


# -- one run ---------------------------------------------------------------------------
class _Session:
    """Per-run helpers created on first use: gpg, key store, inviter, SMTP connection."""

    def __init__(self, config, spool, now, smtp_factory):
        self.config = config
        self.spool = spool
        self.now = now
        self.smtp_factory = smtp_factory
        self._gpg = self._store = self._inviter = self._smtp = self._journal = None
        self.result = Result()
        self.done = Result()  # what the previous passes already followed up (welcome, send)
        self.send_now = False

    @property
    def gpg(self):
        if self._gpg is None:
            from .gpg import Gpg, home_for
            self._gpg = Gpg(home_for(self.config.state_dir))
        return self._gpg

    @property
    def store(self):
        if self._store is None:
            from . import keys
            self._store = keys.open_store(self.config, self.gpg)
        return self._store

    @property
    def inviter(self):
        if self._inviter is None:
            from .invites import InviteStore
            from .securejoin import Inviter
            self._inviter = Inviter(self.config, self.gpg, InviteStore(self.config.state_dir), self.store,
                                    now=self.now)
        return self._inviter

    def close(self):
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    # -- replies ------------------------------------------------------------------------
    def send_reply(self, raw, to_addr):
        """Send a Secure-Join reply now; if the server is unavailable, queue it for jobs/send."""
        from .spool import unique_name
        from .transport import Smtp, SmtpPermanentError, SmtpTemporaryError

        try:
            if self._smtp is None:
                self._smtp = (self.smtp_factory or Smtp)(self.config.account)
            self._smtp.send(raw, self.config.account.address, [to_addr])
        except SmtpTemporaryError as exc:
            self.close()
            path = self.spool.write("outbox.new", raw, name=unique_name(".securejoin.eml"))
            self.result.replies_queued += 1
            log.warning("reply=%s to=%s state=outbox.new error=%r", path.name, to_addr, str(exc))
            return
        except SmtpPermanentError as exc:
            self.close()
            log.error("reply to=%s state=failed error=%r", to_addr, str(exc))
            return
        self.result.replies_sent += 1
        log.info("reply to=%s state=sent bytes=%d", to_addr, len(raw))

    @property
    def journal(self):
        if self._journal is None:
            from .authn import Journal
            self._journal = Journal(self.config.state_dir, window_s=self.config.control.window_s)
        return self._journal

    def set_aside(self, raw, reason):
        """Keep ``raw`` in the quarantine for a person, pruning the oldest beyond its cap."""
        if len(raw) > MAX_SET_ASIDE_BYTES:  # pragma: no cover - MAX_MESSAGE_BYTES keeps every message smaller
            log.warning("state=dropped reason=%r bytes=%d", reason, len(raw))
            return None
        _prune_quarantine(self.spool, MAX_SET_ASIDE - 1, MAX_SET_ASIDE_BYTES - len(raw))
        path = self.spool.write("quarantine", raw, suffix=SET_ASIDE_SUFFIX)
        self.spool.write_reason(path, reason)
        self.result.set_aside += 1
        return path


def set_aside_items(spool):
    """The quarantined messages, oldest first."""
    return spool.items("quarantine", suffix=SET_ASIDE_SUFFIX)


def _prune_quarantine(spool, max_items, max_bytes):
    items = set_aside_items(spool)
    sizes = []
    for path in items:
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:  # pragma: no cover - race: a person removed it just now
            sizes.append(0)
    total = sum(sizes)
    for path, size in zip(items, sizes):
        if len(items) <= max_items and total <= max_bytes:
            break
        spool.remove(path)
        items = items[1:]
        total -= size
        log.info("quarantined=%s state=removed reason=quarantine-full", path.name)


def handle(session, raw):
    """Handle one message; return ``(disposition, detail)`` for the log line.

    Raises TemporaryError when the message must stay on the server for the next run.
    """
    from . import autocrypt, securejoin
    from .gpg import GpgError

    try:
        message = parse(raw)
    except Hostile as exc:
        return "dropped", f"reason={str(exc)!r}"
    sender = single_from(message)
    if sender is None:
        return "dropped", "reason='no single From address'"
    if sender == session.config.account.address:
        return "dropped", "reason='own address'"
    step = securejoin.step_of(message)
    if message.get_content_type() == "multipart/encrypted":
        try:
            payload = encrypted_payload(message)
            decrypted = session.gpg.decrypt_verify(payload, max_output=MAX_PLAINTEXT_BYTES)
        except (Hostile, GpgError) as exc:
            path = session.set_aside(raw, f"inbox: cannot decrypt mail from {sender}: {exc}")
            return "set-aside", f"from={sender} item={path.name if path else '-'} reason={str(exc)!r}"
        try:
            inner = parse(decrypted.plaintext)
        except Hostile as exc:
            path = session.set_aside(raw, f"inbox: decrypted mail from {sender} is unusable: {exc}")
            return "set-aside", f"from={sender} item={path.name if path else '-'} reason={str(exc)!r}"
        inner_step = securejoin.step_of(inner)
        if inner_step == securejoin.REQUEST_WITH_AUTH:
            return _securejoin(session, session.inviter.handle_request_with_auth(message, inner, decrypted.signer))
        if inner_step is not None:
            return "dropped", f"from={sender} reason='unexpected Secure-Join step' step={inner_step[:40]!r}"
        if inner.get_content_type() == "multipart/report":
            return "dropped", f"from={sender} reason=report"
        return _encrypted(session, sender, inner, decrypted)
    if step == securejoin.REQUEST:
        return _securejoin(session, session.inviter.handle_request(message))
    if step is not None:
        return "dropped", f"from={sender} reason='Secure-Join step in clear text' step={step[:40]!r}"
    outcome = autocrypt.process_incoming(message, session.store, session.now())
    return "autocrypt", f"from={sender} outcome={outcome} signed_by=-{_ignored_command(message, 'clear text')}"


def _ignored_command(message, why):
    """A log field when mail without authority looks like a command (it gets no answer)."""
    from . import control
    command = control.parse(message)
    return f" command={command.line[:40]!r} command_ignored={why!r}" if command else ""


def _encrypted(session, claimed, inner, decrypted):
    """A decrypted message that is no Secure-Join step. From here on only the signed inner
    part counts: ``claimed`` (the outer From) is for the log line, nothing else."""
    from . import authn, autocrypt, control

    now = session.now()
    try:
        sender = authn.authenticate(inner, decrypted, session.store.pinned_addresses,
                                    session.config.account.address, now, window_s=session.config.control.window_s)
    except authn.NotAuthentic as exc:
        # Without authority the inner Autocrypt is worth what clear text is: at most an
        # unverified pending key for a person to look at.
        session.result.ignored += 1
        outcome = autocrypt.process_incoming(inner, session.store, now)
        return "unauthenticated", (f"from={claimed} reason={str(exc)!r} signed_by={decrypted.signer or '-'} "
                                   f"autocrypt={outcome}{_ignored_command(inner, 'not authenticated')}")
    if not session.journal.admit(sender, now=now):
        session.result.ignored += 1
        return "replay", (f"from={sender.address} signed_by={sender.fingerprint} reason='acted on before'"
                          f"{_ignored_command(inner, 'replay')}")
    checkpoint("inbox.admitted")
    # Recorded in the journal: from here on the message is acted on at most once.
    handled = control.handle(session.config, session.spool, sender.address, inner, now, session.gpg.camera_key)
    fields = ""
    if handled is not None:
        ctx, fields = handled
        session.result.commands += 1
        session.result.answers += ctx.answers
        session.result.requests += ctx.requests
        fields = " " + fields
    outcome = autocrypt.process_incoming(inner, session.store, now, verified=True)
    return "autocrypt", f"from={sender.address} outcome={outcome} signed_by={sender.fingerprint}{fields}"


def _securejoin(session, handled):
    if handled.reply is not None:
        session.send_reply(handled.reply, handled.address)
    if handled.outcome == "joined":
        session.result.joined.append((handled.address, handled.invite))
        session.result.keys_changed += 1
    elif handled.outcome in ("rejected", "key-pending"):
        session.result.rejected.append((handled.step, handled.reason))
    return "securejoin", handled.log_fields()


def poll(config, spool, now=None, imap_factory=None, smtp_factory=None, lock_timeout_s=0, welcome=True,
         until=None, sleep=time.sleep):
    """Fetch and handle every message in the INBOX (at most MAX_PER_RUN); return a Result,
    or None when another inbox run holds the lock.

    With ``until`` (POSIX time) keep watching the mailbox until then: after the first
    pass, wait for the server to report new mail (IDLE) and make a pass for each arrival;
    without IDLE, a pass every :data:`POLL_S`. The lock is waited for until then, too."""
    if config.account is None:
        raise ConfigError(f"{config.path}: no [account] section: the inbox job needs the camera's mail account")
    if not config.account.imap_host:
        raise ConfigError(f"{config.path}: account.imap_host is not set: the inbox job reads the camera's IMAP "
                          "mailbox (docs/configuration.md)")
    from .imap import Imap, ImapTemporaryError, NoIdle

    clock = (lambda: now) if now is not None else time.time
    spool.ensure()
    session = _Session(config, spool, clock, smtp_factory)
    result = session.result
    wait_s = lock_timeout_s if until is None else max(lock_timeout_s, until - clock())
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(spool.lock("inbox", timeout_s=wait_s))
        except TemporaryError:
            log.info("state=skipped reason=another-inbox-job-running")
            return None
        stack.callback(session.close)
        box = stack.enter_context((imap_factory or Imap)(config.account))
        idle = None
        while True:
            more = _pass(session, box)
            _follow_up(session, welcome, smtp_factory)
            remaining = (until or 0) - clock()
            if remaining <= 0:
                break
            if more:
                continue  # more than MAX_PER_RUN were waiting: the next pass at once
            try:
                idle = box.can_idle() if idle is None else idle
                if idle:
                    box.idle(remaining)
                else:
                    sleep(min(POLL_S, remaining))
            except NoIdle as exc:
                idle = False
                log.warning("imap=%s idle=refused error=%r (polling every %d s instead)", box.where, str(exc), POLL_S)
                box.connect()
            except ImapTemporaryError as exc:
                log.warning("imap=%s state=reconnecting error=%r", box.where, str(exc))
                sleep(min(RECONNECT_S, max(0.0, until - clock())))
                box.connect()
        _prune_invites(session)
    return result


def _pass(session, box):
    """Handle what the INBOX holds now; True if more than MAX_PER_RUN were waiting."""
    from . import armed, replies

    result = session.result
    before, joined_before = dataclasses.replace(result), len(result.joined)
    result.passes += 1
    if result.passes == 1:
        replies.clean(session.spool, session.now())
        # Answers a killed run published but did not send: send them now, not at jobs/send's next run.
        session.send_now = any(p.name.endswith(replies.SUFFIX + replies.SET_SUFFIX)
                               for p in session.spool.items("sets.ready"))
    if armed.announce_pending(session.spool, session.now()):  # a change a killed run did not announce
        session.send_now = True
    if armed.expire(session.spool, session.now()):  # a disarm ran out: "Armed again" in the chat
        session.send_now = True
    listed = box.list()
    for uid, size in listed[:MAX_PER_RUN]:
        if not _one(session, box, uid, size):
            break
    if result.deleted > before.deleted:
        box.expunge()
    if result.fetched > before.fetched or result.oversize > before.oversize:
        log.info("state=done fetched=%d deleted=%d kept=%d set_aside=%d dropped=%d joined=%d commands=%d",
                 result.fetched - before.fetched, result.deleted - before.deleted, result.kept - before.kept,
                 result.set_aside - before.set_aside, result.dropped - before.dropped,
                 len(result.joined) - joined_before, result.commands - before.commands)
    return len(listed) > MAX_PER_RUN and result.kept == before.kept


def _follow_up(session, welcome, smtp_factory):
    """After a pass: the welcome for new joiners, and send what the pass queued (answers,
    held sets released by a new key) now rather than at jobs/send's next run."""
    result, done, config, spool = session.result, session.done, session.config, session.spool
    joined = result.joined[len(done.joined):]
    send = bool(session.send_now or result.answers > done.answers
                or (result.keys_changed > done.keys_changed and spool.items("sets.held")))
    session.send_now = False
    if welcome and joined:
        send_welcome(config, spool, [address for address, _ in joined], session.now())
        send = True
    session.done = dataclasses.replace(result, joined=list(result.joined))
    if send:
        _run_send(config, smtp_factory)


def _one(session, box, uid, size):
    """Handle message ``uid``; return False to stop the run (temporary failure)."""
    result = session.result
    if size is not None and size > MAX_MESSAGE_BYTES:
        box.delete(uid)
        result.oversize += 1
        result.deleted += 1
        log.warning("uid=%d bytes=%d state=deleted reason=oversize limit=%d", uid, size, MAX_MESSAGE_BYTES)
        return True
    raw = box.fetch(uid, MAX_MESSAGE_BYTES)
    if raw is None:
        return True
    result.fetched += 1
    if len(raw) > MAX_MESSAGE_BYTES:
        box.delete(uid)
        result.oversize += 1
        result.deleted += 1
        log.warning("uid=%d bytes>%d state=deleted reason=oversize", uid, MAX_MESSAGE_BYTES)
        return True
    try:
        disposition, detail = handle(session, raw)
    except TemporaryError as exc:
        result.kept += 1
        log.warning("uid=%d state=kept reason=temporary error=%r", uid, str(exc))
        return False
    except SeccamError as exc:
        disposition, detail = "dropped", f"error={str(exc)!r}"
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the queue; keep the mail for a human
        log.exception("uid=%d unexpected error", uid)
        path = session.set_aside(raw, f"inbox: internal error {type(exc).__name__}: {exc}")
        disposition, detail = "set-aside", f"item={path.name if path else '-'} error={type(exc).__name__}"
    if disposition == "dropped":
        result.dropped += 1
    checkpoint("inbox.handled")
    box.delete(uid)
    result.deleted += 1
    level = logging.WARNING if disposition in ("set-aside",) or "outcome=rejected" in detail else logging.INFO
    log.log(level, "uid=%d bytes=%d disposition=%s %s state=deleted", uid, len(raw), disposition, detail)
    return True


def _prune_invites(session):
    """Forget long-closed invites; remove keys imported at step 1 of joins that never finished."""
    from .invites import InviteStore

    orphans = InviteStore(session.config.state_dir).prune(now=session.now())
    if not orphans:
        return
    pinned = {rec.get("fingerprint") for rec in session.store.records()}
    for rec in session.store.records():
        pinned.update(p.get("fingerprint") for p in rec.get("pending", []))
    waiting = {p.get("fingerprint") for inv in InviteStore(session.config.state_dir).all() for p in inv["pending"]}
    camera = session.gpg.camera_key()
    for fpr in set(orphans) - pinned - waiting - {camera, None}:
        try:
            session.gpg.delete_key(fpr)
            log.info("event=unjoined_key_removed fingerprint=%s", fpr)
        except SeccamError as exc:
            log.warning("event=unjoined_key_remove_failed fingerprint=%s error=%r", fpr, str(exc))


# -- after a join ---------------------------------------------------------------------
def send_welcome(config, spool, addresses, now=None):
    """Capture every camera and publish a ``welcome`` set (``<ID>-welcome.set``) for ``addresses``.

    seccam.encrypt turns it into one message per working camera with the full
    image, the first one opening with "Connected <time>: ..." and carrying the
    health summary (one text-only message if no camera worked). Its outbox names
    end in ``-welcome.<nn>...``: jobs/send ranks it after alarms and before
    heartbeats, and seccam.budget prunes it with the alarms, last.
    """
    from . import health, imageset
    from .capture import LOCK_WAIT_S
    from .spool import unique_name

    now = time.time() if now is None else now
    try:
        with spool.lock("capture", timeout_s=LOCK_WAIT_S):
            set_id = unique_name(now_ns=int(now * 1e9)) + "-welcome"

            def make_health(results):
                snap = health.snapshot(config, spool, now)
                who = ", ".join(addresses)
                text = (f"{who} joined by invite. Alarms come as a preview, then the full image from every "
                        "camera; everything in this chat is end-to-end encrypted.\n\n"
                        + health.summary_text(snap, None, results))
                return {"text": text, "welcome": list(addresses)}

            path, _ = imageset.capture(config, spool, "welcome", set_id, (), health=make_health, now=now)
    except SeccamError as exc:
        log.error("event=welcome state=failed error=%r", str(exc))
        return None
    log.info("event=welcome set=%s recipients=%s state=sets.ready", path.name, ",".join(addresses))
    return path


def _run_send(config, smtp_factory=None):
    """Encrypt what is ready and send it now (the welcome, held sets released by a new key)."""
    from . import send
    try:
        return send.work(config, None, smtp_factory=smtp_factory)
    except SeccamError as exc:
        log.warning("step=send error=%r (jobs/send retries)", str(exc))
        return exc.exit_code


# -- the job -----------------------------------------------------------------------------
def watch_until(now, period_s=PERIOD_S, margin_s=MARGIN_S):
    """When a run started at ``now`` by a cron line every ``period_s`` should stop watching:
    ``margin_s`` before the next start, or None (one pass only) if too little is left."""
    end = (now // period_s + 1) * period_s - margin_s
    return end if end - now >= MIN_WATCH_S else None


def work(config, args=None):
    from .spool import Spool
    if config.account is not None and not config.account.imap_host:
        # IMAP is optional (send-only set-ups); cron runs this job anyway: say it once, quietly.
        log.info("state=skipped reason=no-imap_host")
        return EX_OK
    until = None
    if args is not None and args.watch:
        until = watch_until(time.time(), args.period)
        log.debug("watch=%s", time.strftime("until-%H:%M:%S", time.localtime(until)) if until else "one-pass")
    poll(config, Spool(config.spool_dir), until=until)
    return EX_OK


def _period(text):
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_WATCH_S + MARGIN_S + 1:
        raise argparse.ArgumentTypeError(f"expected whole seconds, at least {MIN_WATCH_S + MARGIN_S + 1}: {text!r}")
    return value


def _add_arguments(parser):
    parser.add_argument("--watch", action="store_true",
                        help="after the first pass, wait for new mail (IMAP IDLE) and handle each arrival at once, "
                             "until just before cron's next start (the crontab starts it every minute)")
    parser.add_argument("--period", type=_period, default=PERIOD_S, metavar="SECONDS",
                        help=f"with --watch: how often cron starts this job (default {PERIOD_S})")


def main(argv=None):
    from .runtime import job_main
    return job_main(PROG, "Read the camera's mailbox: invites, keys, commands from the chat; delete processed mail.",
                    work, argv, _add_arguments)
