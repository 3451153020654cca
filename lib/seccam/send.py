"""jobs/send: encrypt what is ready, then submit the outbox over one SMTP connection.

This module owns the outbox transitions (docs/spool.md)::

    outbox/new --claim--> outbox/active --250 after DATA--> (removed)
                                        --temporary failure--> outbox/deferred (mtime = next attempt)
                                        --permanent refusal of the message--> outbox/failed (+ .reason)
    outbox/deferred --mtime <= now--> outbox/new

A run, under the ``send`` lock (a second run exits 0 at once: the first one
sends everything):

1. runs the encrypt step (seccam.encrypt.process), so a set that the capture
   job could not encrypt is picked up here;
2. returns ``outbox/active`` left by a dead run to ``outbox/new`` and due
   deferred messages too;
3. sends ``outbox/new`` oldest first (names sort in send order) over one
   connection, opened when there is something to send, or already while a
   capture job runs (it will have something soon: seccam-send.path starts
   this job when a capture begins); while a capture or encrypt job runs it
   keeps watching for their messages. A message leaves the outbox only after
   the server accepted it.

Retry policy, Postfix-style but impatient, because an alarm is urgent:

* a message the server refuses temporarily (4xx) is deferred; its next
  attempt time (the file's mtime) is its age, clamped to
  [:data:`BACKOFF_MIN_S`, :data:`BACKOFF_MAX_S`] = [1 min, 15 min], so the delay
  roughly doubles per attempt. A second temporary refusal in a row ends the
  run (the server is throttling: "450 too many messages") and defers the rest;
* when the connection or the account fails (refused, DNS, TLS, timeout, 421,
  login), every remaining message is deferred and the outage is recorded in
  ``state/outage.json``. While it lasts, each run (cron, every minute) probes
  with one connection once :data:`BACKOFF_MIN_S` has passed (an authentication
  failure waits :data:`AUTH_RETRY_S`, so a wrong password never locks the
  account and never burns the messages: they stay deferred, not failed);
* the first message that gets through ends the outage: every deferred
  message becomes due at once, alarms go out first (oldest first, preview
  before full), then one summary of what happened while offline, then the
  newest heartbeat. Older queued heartbeats collapse into the newest one; the
  summary counts them;
* a message the server refuses permanently (5xx: too large, recipient
  rejected) goes to ``outbox/failed`` with the reason; ``seccam status`` and the
  next heartbeat report it;
* a token bucket (``[delivery] rate_per_minute``, ``burst``) paces submissions;
  chatmail relays allow 60 per minute with a burst of 10.

``seccam flush`` (like ``postqueue -f``) makes every deferred message due now.

Each outbox file is the complete RFC 5322 message, ciphertext only. The
envelope is read from its outer ``From:``/``To:`` headers; a file that is not
``multipart/encrypted`` is never sent (it goes to ``corrupt/``).

Exit codes: 0 all sent or nothing to do; 75 something is deferred; 69 a
message was refused permanently or the account is unusable; 78 configuration.
A run that deferred or failed something says so in one line on stderr
(through seccam.runtime); messages still waiting from an earlier run give 75
without a line, so cron does not mail every minute about the same outage.
"""

import contextlib
import datetime as _dt
import logging
import os
import time

from .errors import EX_OK, EX_TEMPFAIL, ConfigError, PermanentError, SeccamError, TemporaryError
from .faults import checkpoint

log = logging.getLogger("seccam.send")

PROG = "seccam-send"
BACKOFF_MIN_S = 60
BACKOFF_MAX_S = 900
AUTH_RETRY_S = 900
MESSAGE_SUFFIX = ".eml"
# A run sends what it finds, then looks again for what arrived meanwhile; bounded.
MAX_ROUNDS = 100
# ``seccam flush`` waits this long for a running send job instead of leaving at once.
FLUSH_LOCK_WAIT_S = 60


def main(argv=None):
    from .runtime import job_main
    return job_main(PROG, "Encrypt ready image sets and send the queued messages.", work, argv)


def work(config, args=None, now=None, smtp_factory=None, **pacing):
    from .spool import Spool

    if config.account is None:
        raise ConfigError(f"{config.path}: no [account] section: the send job needs the camera's mail account")
    spool = Spool(config.spool_dir).ensure()
    flush = bool(getattr(args, "flush", False))
    with contextlib.ExitStack() as stack:
        try:
            # The running job looks for new arrivals before it ends, so a second one can leave at once.
            stack.enter_context(spool.lock("send", timeout_s=FLUSH_LOCK_WAIT_S if flush else 0))
        except TemporaryError:
            if flush:
                raise
            log.info("state=skipped reason=another-send-job-running")
            return EX_OK
        encrypt_error = _encrypt(config, spool)
        code = deliver(config, spool, now=now, smtp_factory=smtp_factory, flush=flush, **pacing)
    if encrypt_error is not None:
        # The outbox went out; now say, in the one line a cron job may print, why
        # new images are not being encrypted (gpg broken, configuration).
        raise encrypt_error
    return code


def _encrypt(config, spool):
    from . import encrypt
    from .spool import LockBusy
    try:
        # If another job (capture) is encrypting right now, do not wait for it:
        # deliver what is already in the outbox; deliver() keeps watching for the
        # rest while that job holds the encrypt lock.
        encrypt.process(config, spool, lock_timeout_s=0)
    except LockBusy:
        log.info("step=encrypt state=skipped reason=another-job-encrypting")
        return None
    except SeccamError as exc:
        # What is already in the outbox still goes out; work() reports this afterwards.
        log.error("step=encrypt error=%r", str(exc))
        return exc
    held = spool.items("sets.held")
    if held:
        log.warning("step=encrypt held_sets=%d reason=%r", len(held), spool.read_reason(held[0]))
    return None


def envelope(raw):
    """``(from_addr, [to_addr, ...])`` from the outer headers of ``raw``; ValueError if unusable."""
    import email.parser
    import email.policy
    import email.utils

    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end + 4]  # only the header block: the body is a 450 kB image
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "multipart/encrypted":
        raise ValueError(f"not an encrypted message (Content-Type {ctype or 'missing'}); refusing to send it")
    senders = [a for _, a in email.utils.getaddresses(headers.get_all("From", [])) if a]
    recipients = [a for _, a in email.utils.getaddresses(headers.get_all("To", [])) if a]
    if len(senders) != 1:
        raise ValueError("no single From: address")
    if not recipients:
        raise ValueError("no To: address")
    return senders[0], recipients


def next_attempt(name, now):
    """When to retry a message refused temporarily: its age, clamped to [1 min, 15 min]."""
    from .health import name_time
    created = name_time(name)
    age = now - created if created is not None else 0
    return now + min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, age))


def due_deferred(spool, now, everything=False):
    """Move deferred messages whose next attempt time (mtime) has come (or all) back to outbox/new."""
    moved = 0
    for path in spool.items("outbox.deferred"):
        try:
            due = everything or path.stat().st_mtime <= now
        except FileNotFoundError:  # pragma: no cover - race: moved between listing and stat
            continue
        if due and spool.move(path, "outbox.new") is not None:
            moved += 1
            log.info("message=%s state=outbox.new from=outbox.deferred", path.name)
    return moved


def kind_of(name):
    """Send class of an outbox message: 0 alarm, 1 summary/other, 2 heartbeat."""
    if "-heartbeat." in name:
        return 2
    if "-alarm." in name:
        return 0
    return 1


def _set_of(name):
    """The set ID of ``<set id>.<nn>.<camera>.<kind>.eml``."""
    return name.rsplit(".", 4)[0]


def collapse_heartbeats(spool):
    """Remove queued heartbeat messages older than the newest heartbeat; return how many sets went."""
    queued = [p for state in ("outbox.new", "outbox.deferred") for p in spool.items(state)
              if kind_of(p.name) == 2]
    sets = sorted({_set_of(p.name) for p in queued})
    if len(sets) < 2:
        return 0
    stale = set(sets[:-1])
    for path in queued:
        if _set_of(path.name) in stale:
            spool.remove(path)
            log.info("message=%s state=removed reason=stale-heartbeat newest=%s", path.name, sets[-1])
    return len(stale)


def defer(spool, path, next_attempt, why):
    dest = spool.move(path, "outbox.deferred")
    if dest is None:  # pragma: no cover - race: the spool budget pruned it from outbox/new between listing and move
        return None
    os.utime(dest, (next_attempt, next_attempt))
    when = _dt.datetime.fromtimestamp(next_attempt, _dt.timezone.utc).isoformat(timespec="seconds")
    spool.write_reason(dest, f"temporary failure: {why}; next attempt {when}")
    log.warning("message=%s state=outbox.deferred next_attempt=%s error=%r", dest.name, when, why)
    return dest


def fail(spool, path, why):
    dest = spool.move(path, "outbox.failed")
    if dest is not None:
        spool.write_reason(dest, f"refused permanently: {why}")
        log.error("message=%s state=outbox.failed error=%r", dest.name, why)
    return dest


class RateLimit:
    """A token bucket shared by all runs (``state/ratelimit.json``, written by the send job only)."""

    def __init__(self, spool, per_minute, burst, clock=time.time, sleep=time.sleep):
        self.spool, self.rate, self.burst = spool, per_minute / 60.0, float(burst)
        self.clock, self.sleep = clock, sleep
        stamp = spool.read_state("ratelimit") or {}
        now = clock()
        tokens, ts = stamp.get("tokens"), stamp.get("ts")
        if isinstance(tokens, (int, float)) and isinstance(ts, (int, float)) and ts <= now:
            self.tokens = min(self.burst, tokens + (now - ts) * self.rate)
        else:
            self.tokens = self.burst
        self.ts = now
        self.waited = 0.0

    def take(self):
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.ts) * self.rate)
        self.ts = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            log.info("state=paced wait_s=%.1f", wait)
            self.sleep(wait)
            self.waited += wait
            self.tokens, self.ts = 1.0, self.clock()
        self.tokens -= 1

    def save(self):
        self.spool.write_state("ratelimit", {"tokens": self.tokens, "ts": self.ts})


def _probe_at(exc, now):
    """Next attempt after a connection or account failure: 1 min, or 15 min after a refused login."""
    return now + (AUTH_RETRY_S if getattr(exc, "auth", False) else BACKOFF_MIN_S)


def _probe_due(outage, now):
    if not outage:
        return False
    wait = AUTH_RETRY_S if outage.get("auth") else BACKOFF_MIN_S
    last = outage.get("last_attempt")
    return not isinstance(last, (int, float)) or now - last >= wait


def deliver(config, spool, now=None, smtp_factory=None, flush=False, clock=time.time, sleep=time.sleep,
            more_coming=None):
    """Send what is queued (see the module docstring); return the exit code.

    When the outbox is empty, the run keeps watching it while ``more_coming()``
    is true (default: another job holds the ``capture`` or the ``encrypt``
    lock), and opens its SMTP connection meanwhile: started by
    seccam-send.path when a capture begins (``state/capturing.json``), it is
    connected and authenticated by the time the first picture is encrypted."""
    from .transport import Smtp, SmtpPermanentError, SmtpTemporaryError

    now = clock() if now is None else now
    smtp_factory = smtp_factory or Smtp
    more_coming = more_coming or (lambda: spool.lock_held("capture") or spool.lock_held("encrypt"))
    for path in spool.recover("outbox.active", "outbox.new"):
        log.info("message=%s state=outbox.new recovered=1", path.name)
    outage = spool.read_state("outage")
    collapsed = collapse_heartbeats(spool)
    if collapsed and outage is not None:
        outage["collapsed_heartbeats"] = int(outage.get("collapsed_heartbeats", 0)) + collapsed
        collapsed_pending = 0
    else:
        collapsed_pending = collapsed  # counted once this run's failure opens an outage
    probing = _probe_due(outage, now)
    due_deferred(spool, now, everything=flush or probing)
    limiter = RateLimit(spool, config.delivery.rate_per_minute, config.delivery.burst, clock, sleep)
    sent = failed = deferred = 0
    alarms_sent = set()
    session_error = last_error = None
    temp_in_a_row = 0
    summary_done = False
    smtp = None
    try:
        for _ in range(MAX_ROUNDS):
            queue = _queue(spool)
            if outage is not None and sent and not summary_done:
                # Back online: alarms first, then the summary, then the rest.
                if not any(kind_of(p.name) == 0 for p in queue):
                    summary_done = True
                    if _summary(config, spool, outage, now, len(alarms_sent)):
                        continue
            elif outage is not None and not summary_done:
                queue = [p for p in queue if kind_of(p.name) == 0] or queue
            if not queue:
                if smtp is None and outage is None and more_coming():
                    smtp = _preconnect(config, smtp_factory)
                if not _wait_for_encryption(spool, clock, sleep, more_coming):
                    break
                continue
            for path in queue:
                if session_error is not None or temp_in_a_row >= 2:
                    why = str(session_error or last_error)
                    when = _probe_at(session_error, now) if session_error is not None else next_attempt(path.name, now)
                    if defer(spool, path, when, why) is not None:
                        deferred += 1
                    continue
                claimed = spool.claim(path, "outbox.active")
                # Only this job (under the send lock) claims; the spool budget may prune outbox/new meanwhile.
                if claimed is None:  # pragma: no cover - race: pruned between listing and rename
                    continue
                try:
                    raw = claimed.read_bytes()
                    from_addr, to_addrs = envelope(raw)
                except (OSError, ValueError) as exc:
                    spool.set_aside(claimed, f"unsendable outbox file: {exc}")
                    log.error("message=%s state=corrupt error=%r", path.name, str(exc))
                    continue
                limiter.take()
                try:
                    if smtp is None:
                        smtp = smtp_factory(config.account)
                    checkpoint("send.before-submit")
                    refused = smtp.send(raw, from_addr, to_addrs)
                except (SmtpTemporaryError, SmtpPermanentError) as exc:
                    last_error = str(exc)
                    if exc.scope == "session":
                        session_error = exc
                        outage = _outage(outage, exc, now)
                        defer(spool, claimed, _probe_at(exc, now), str(exc))
                        deferred += 1
                    elif exc.temporary:
                        temp_in_a_row += 1
                        defer(spool, claimed, next_attempt(claimed.name, now), str(exc))
                        deferred += 1
                    else:
                        temp_in_a_row = 0
                        fail(spool, claimed, str(exc))
                        failed += 1
                    continue
                checkpoint("send.accepted")
                spool.remove(claimed)
                sent += 1
                temp_in_a_row = 0
                if kind_of(path.name) == 0:
                    alarms_sent.add(_set_of(path.name))
                if outage is not None and sent == 1:
                    # The first message through ends the wait for everything deferred.
                    due_deferred(spool, now, everything=True)
                if refused:
                    log.warning("message=%s state=sent refused_recipients=%r", path.name, refused)
                else:
                    log.info("message=%s state=sent recipients=%d bytes=%d", path.name, len(to_addrs), len(raw))
            if session_error is not None:
                break
    finally:
        if smtp is not None:
            smtp.close()
        limiter.save()
    if session_error is not None:
        outage["collapsed_heartbeats"] = int(outage.get("collapsed_heartbeats", 0)) + collapsed_pending
        spool.write_state("outage", outage)
    elif sent and outage is not None:
        (spool.dir("state") / "outage.json").unlink(missing_ok=True)
        log.info("state=online outage_since=%s sent=%d", outage.get("since_iso"), sent)
    elif outage is not None and collapsed:
        spool.write_state("outage", outage)
    if sent or deferred or failed:
        log.info("state=done sent=%d deferred=%d failed=%d paced_s=%.1f", sent, deferred, failed, limiter.waited)
    if isinstance(session_error, SmtpPermanentError):
        raise session_error
    if failed:
        raise PermanentError(f"{failed} message(s) refused permanently, kept in {spool.dir('outbox.failed')}: "
                             f"{last_error}")
    if deferred:
        raise TemporaryError(f"{deferred} message(s) deferred: {last_error}")
    # Messages deferred by an earlier run and not due yet: no news, no line on stderr.
    return EX_TEMPFAIL if spool.items("outbox.deferred") else EX_OK


# While another job is encrypting, look for its messages this often, this long.
ENCRYPT_POLL_S = 0.02
ENCRYPT_WAIT_S = 60


def _preconnect(config, smtp_factory):
    """Open the SMTP session before there is a message: DNS, TCP, TLS and AUTH happen while the
    cameras expose. A failure is only logged: the first message connects again, and the outage
    policy judges that attempt, not this one."""
    smtp = smtp_factory(config.account)
    connect = getattr(smtp, "connect", None)
    if connect is not None:
        try:
            connect()
        except SeccamError as exc:
            log.info("state=preconnect-failed error=%r", str(exc))
    return smtp


def _wait_for_encryption(spool, clock, sleep, more_coming):
    """While ``more_coming()`` (a capture or encrypt job runs), wait for its next message; True if one came."""
    deadline = clock() + ENCRYPT_WAIT_S
    while more_coming() and clock() < deadline:
        if spool.items("outbox.new"):
            return True
        sleep(ENCRYPT_POLL_S)
    return bool(spool.items("outbox.new"))


def _queue(spool):
    queue = []
    for path in spool.items("outbox.new"):
        if path.name.endswith(MESSAGE_SUFFIX):
            queue.append(path)
        else:  # a stray file would keep the systemd path unit (DirectoryNotEmpty) firing
            spool.set_aside(path, "unexpected file in the outbox (messages are *.eml)")
            log.error("message=%s state=corrupt error=unexpected-file", path.name)
    return sorted(queue, key=lambda p: (kind_of(p.name), p.name))


def _outage(outage, exc, now):
    import datetime as dt
    outage = dict(outage or {})
    if "since" not in outage:
        outage["since"] = now
        outage["since_iso"] = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds")
        log.warning("state=offline error=%r", str(exc))
    outage["last_attempt"] = now
    outage["error"] = str(exc)
    outage["auth"] = bool(getattr(exc, "auth", False))
    outage["attempts"] = int(outage.get("attempts", 0)) + 1
    return outage


def _summary(config, spool, outage, now, alarm_sets):
    """Publish and encrypt the 'back online' summary; True if a message was queued."""
    from . import encrypt, events, health
    from .spool import unique_name
    since = outage.get("since", now)
    minutes = max(0, round((now - since) / 60))
    text = [f"Back online. The camera could not send for about {minutes} minute(s), "
            f"from {events.iso(since)} to {events.iso(now)} (last error: {outage.get('error')}).",
            f"Alarms from that time: {alarm_sets} (delivered above).",
            f"Motion events recorded meanwhile: {health.events_since(spool, since)}."]
    if outage.get("collapsed_heartbeats"):
        text.append(f"Heartbeats skipped: {outage['collapsed_heartbeats']} (only the newest is sent).")
    set_id = unique_name(now_ns=int(now * 1e9)) + "-summary"
    tmp = spool.make_tmp_dir(".set")
    meta = {"version": 1, "kind": "summary", "id": set_id, "created": events.iso(now), "events": [],
            "cameras": [], "health": {"text": "\n".join(text)}}
    import json
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    spool.publish(tmp, "sets.ready", set_id + ".set")
    log.info("set=%s kind=summary state=sets.ready outage_minutes=%d", set_id, minutes)
    try:
        result = encrypt.process(config, spool)
    except SeccamError as exc:
        log.error("step=encrypt-summary error=%r", str(exc))
        return False
    return bool(result.messages)
