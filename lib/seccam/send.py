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
   connection, opened only if there is something to send. A message leaves
   the outbox only after the server accepted it.

Retry policy (basic; backoff and expiry are a later issue): a temporary
failure defers the message for :data:`RETRY_S`. When the connection or the
account fails (cannot connect, login refused, no STARTTLS), every remaining
message is deferred too, so ``outbox/new`` is empty when the job ends and the
systemd path unit does not restart it in a loop; cron retries every minute.

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

log = logging.getLogger("seccam.send")

PROG = "seccam-send"
RETRY_S = 300
MESSAGE_SUFFIX = ".eml"


def main(argv=None):
    from .runtime import job_main
    return job_main(PROG, "Encrypt ready image sets and send the queued messages.", work, argv)


def work(config, args=None, now=None, smtp_factory=None):
    from .spool import Spool

    if config.account is None:
        raise ConfigError(f"{config.path}: no [account] section: the send job needs the camera's mail account")
    spool = Spool(config.spool_dir).ensure()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(spool.lock("send", timeout_s=0))
        except TemporaryError:
            log.info("state=skipped reason=another-send-job-running")
            return EX_OK
        encrypt_code = _encrypt(config, spool)
        code = deliver(config, spool, now=now, smtp_factory=smtp_factory)
    return code or encrypt_code


def _encrypt(config, spool):
    from . import encrypt
    try:
        encrypt.process(config, spool)
    except SeccamError as exc:
        # What is already in the outbox still goes out.
        log.error("step=encrypt error=%r", str(exc))
        return exc.exit_code
    held = spool.items("sets.held")
    if held:
        log.warning("step=encrypt held_sets=%d reason=%r", len(held), spool.read_reason(held[0]))
    return EX_OK


def envelope(raw):
    """``(from_addr, [to_addr, ...])`` from the outer headers of ``raw``; ValueError if unusable."""
    import email.parser
    import email.policy
    import email.utils

    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
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


def due_deferred(spool, now):
    """Move deferred messages whose next attempt time (mtime) has come back to outbox/new."""
    moved = 0
    for path in spool.items("outbox.deferred"):
        try:
            due = path.stat().st_mtime <= now
        except FileNotFoundError:
            continue
        if due and spool.move(path, "outbox.new") is not None:
            moved += 1
            log.info("message=%s state=outbox.new from=outbox.deferred", path.name)
    return moved


def defer(spool, path, next_attempt, why):
    dest = spool.move(path, "outbox.deferred")
    if dest is None:
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


def deliver(config, spool, now=None, smtp_factory=None):
    """Send what is queued (steps 2-3 of the module docstring); return the exit code."""
    from .transport import Smtp, SmtpPermanentError, SmtpTemporaryError

    now = time.time() if now is None else now
    smtp_factory = smtp_factory or Smtp
    for path in spool.recover("outbox.active", "outbox.new"):
        log.info("message=%s state=outbox.new recovered=1", path.name)
    due_deferred(spool, now)
    queue = []
    for path in spool.items("outbox.new"):
        if path.name.endswith(MESSAGE_SUFFIX):
            queue.append(path)
        else:  # a stray file would keep the systemd path unit (DirectoryNotEmpty) firing
            spool.set_aside(path, "unexpected file in the outbox (messages are *.eml)")
            log.error("message=%s state=corrupt error=unexpected-file", path.name)
    sent = failed = deferred = 0
    session_error = last_error = None
    smtp = None
    try:
        for path in queue:
            if session_error is not None:
                defer(spool, path, now + RETRY_S, str(session_error))
                deferred += 1
                continue
            claimed = spool.claim(path, "outbox.active")
            if claimed is None:
                continue
            try:
                raw = claimed.read_bytes()
                from_addr, to_addrs = envelope(raw)
            except (OSError, ValueError) as exc:
                spool.set_aside(claimed, f"unsendable outbox file: {exc}")
                log.error("message=%s state=corrupt error=%r", path.name, str(exc))
                continue
            if smtp is None:
                smtp = smtp_factory(config.account)
            try:
                refused = smtp.send(raw, from_addr, to_addrs)
            except (SmtpTemporaryError, SmtpPermanentError) as exc:
                last_error = str(exc)
                if exc.scope == "session":
                    session_error = exc
                if exc.scope == "session" or exc.temporary:
                    defer(spool, claimed, now + RETRY_S, str(exc))
                    deferred += 1
                else:
                    fail(spool, claimed, str(exc))
                    failed += 1
                continue
            spool.remove(claimed)
            sent += 1
            if refused:
                log.warning("message=%s state=sent refused_recipients=%r", path.name, refused)
            else:
                log.info("message=%s state=sent recipients=%d bytes=%d", path.name, len(to_addrs), len(raw))
    finally:
        if smtp is not None:
            smtp.close()
    if queue:
        log.info("state=done sent=%d deferred=%d failed=%d", sent, deferred, failed)
    if isinstance(session_error, SmtpPermanentError):
        raise session_error
    if failed:
        raise PermanentError(f"{failed} message(s) refused permanently, kept in {spool.dir('outbox.failed')}: "
                             f"{last_error}")
    if deferred:
        raise TemporaryError(f"{deferred} message(s) deferred for {RETRY_S} s: {last_error}")
    # Messages deferred by an earlier run and not due yet: no news, no line on stderr.
    return EX_TEMPFAIL if spool.items("outbox.deferred") else EX_OK
