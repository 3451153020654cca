"""Remote control from the chat: ``/snap``, ``/status``, ``/arm``, ``/disarm``, ``/help``.

Who may command the camera is decided before this module is reached. jobs/inbox
calls :func:`handle` only for a message that seccam.authn proved was written by
a recipient (encrypted to the camera, signed by that recipient's pinned key,
the signed ``From:`` is that recipient, the signed ``To:``/``Cc:`` name the
camera, the signed time is within ``[control] window_s`` of the camera's clock
and not older than that recipient's last message acted on, and its Message-ID
was never acted on) and that the replay journal has recorded. Everything else
never gets here and is never answered: a stranger learns nothing.

What counts as a command: the first line of the message's text, nothing else.
Its first word starts with ``/``; case does not matter. A quoted reply starts
with the quote (``> ...``), so a ``/disarm`` further down is text, as is any
line after the first. Text that does not start with ``/`` is conversation: the
camera stays silent (a family talks in the group). Edits and deletions of
earlier messages (``Chat-Edit``, ``Chat-Delete``) are never commands.

=================================  =============================================
``/snap [CAMERA ...]``             pictures now, from every camera or the ones
                                   named, sent like an alarm and marked as
                                   requested by whom (seccam.snap; armed or not)
``/status``                        the health summary a heartbeat carries
``/disarm [DURATION|until HH:MM]`` no pictures for motion until then, or until
                                   ``/arm`` (seccam.armed)
``/arm``                           alarms on again
``/help``                          the list
=================================  =============================================

Anything else that starts with ``/`` gets a one-line answer, never silence.

Who may do what: every recipient may use every command; ``[control]
arm_disarm``, when set, lists who may ``/arm`` and ``/disarm``. With
``[control] enabled = false`` every command gets one line saying so.

Where answers go (seccam.replies): into the chat the command came from. With
several recipients the camera has a group; a command whose signed
``Chat-Group-ID`` is the camera's is answered in the group, any other in the
sender's 1:1 chat. A change of the armed state is announced to everyone
(seccam.armed) with who changed it; a command from a 1:1 chat also gets its
short answer there.
"""

import dataclasses
import logging
import time

from .faults import checkpoint

log = logging.getLogger("seccam.control")

MAX_TEXT_BYTES = 64 * 1024
NAMES = ("snap", "status", "arm", "disarm", "help")
USAGE = "/snap [CAMERA], /status, /arm, /disarm [2h | until 07:00], /help"


@dataclasses.dataclass(frozen=True)
class Command:
    name: str       # lower case, without the slash
    args: tuple
    line: str       # the first line as written, shortened (for logs and answers)


# -- reading a command -------------------------------------------------------------------
def text_of(message):
    """The text a person typed: the first text/plain part that is no attachment, or None."""
    for part in message.walk():
        if part.get_content_type() != "text/plain":
            continue
        if (part.get("Content-Disposition") or "").strip().lower().startswith("attachment"):
            continue
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload[:MAX_TEXT_BYTES].decode(charset, "replace")
        except LookupError:  # an unknown charset name
            return payload[:MAX_TEXT_BYTES].decode("utf-8", "replace")
    return None


def parse(message):
    """The :class:`Command` in the first line of ``message``'s text, or None (no command)."""
    if message.get("Chat-Edit") is not None or message.get("Chat-Delete") is not None:
        return None
    text = text_of(message)
    if not text:
        return None
    line = text.lstrip("\ufeff \t\r\n").split("\n", 1)[0].strip()
    if not line.startswith("/"):
        return None
    words = line.split()
    return Command(name=words[0][1:].lower(), args=tuple(words[1:]), line=line[:80])


def chat_of(config, message, sender, camera_key):
    """None to answer in the camera's chat (its group, or the 1:1 chat of its only recipient),
    else ``sender``: an answer in that recipient's 1:1 chat. ``camera_key()`` gives the camera's
    fingerprint (the group's ID derives from it)."""
    from . import keys
    from .encrypt import group_id
    if len(keys.recipients(config)) <= 1:
        return None
    values = message.get_all("Chat-Group-ID") or []
    if len(values) == 1:
        fpr = camera_key()
        if fpr and str(values[0]).strip() == group_id(config, fpr):
            return None
    return sender


# -- acting on it --------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    config: object
    spool: object
    sender: str             # the authenticated recipient
    to: str | None          # where answers go (see chat_of)
    now: float
    answers: int = 0        # reply sets published (answers and announcements)
    requests: int = 0       # /snap requests published

    def answer(self, text, subject):
        from . import replies
        # A microsecond later per message, so that names (and the send order) follow what was done.
        set_id = replies.new_id(self.now + (self.answers + 1) * 1e-6)
        replies.publish(self.spool, set_id, text, subject, to=self.to, now=self.now)
        self.answers += 1


def handle(config, spool, sender, message, now=None, camera_key=lambda: None):
    """Act on the command in ``message`` (already authenticated and journaled) from ``sender``;
    ``camera_key()`` is the camera's fingerprint (asked only when the chat must be told apart).

    Returns ``(context, log fields)``, or None when the message holds no command.
    Raises TemporaryError (disk, locks): the inbox keeps the mail; the journal has it already,
    so the command is then acted on at most once.
    """
    command = parse(message)
    if command is None:
        return None
    now = time.time() if now is None else now
    ctx = Context(config, spool, sender, chat_of(config, message, sender, camera_key), now)
    checkpoint("control.parsed")
    if not config.control.enabled:
        outcome = "disabled"
        ctx.answer("Commands are turned off on this camera ([control] enabled = false).", "Commands off")
    else:
        outcome = _dispatch(ctx, command)
    log.info("command=%r from=%s chat=%s outcome=%s", command.line, sender, ctx.to or "camera-chat", outcome)
    return ctx, f"command={command.name!r} outcome={outcome}"


def _dispatch(ctx, command):
    if command.name == "snap":
        return _snap(ctx, command)
    if command.name == "status":
        return _status(ctx)
    if command.name in ("arm", "disarm"):
        return _arm(ctx, command)
    if command.name == "help":
        ctx.answer(help_text(ctx.config), "Help")
        return "help"
    ctx.answer(f"Unknown command {command.line.split()[0][:40]}. Commands: {USAGE}.", "Unknown command")
    return "unknown"


def help_text(config):
    cams = ", ".join(c.name for c in config.cameras) or "none configured"
    who = ("every recipient" if config.control.arm_disarm is None
           else ", ".join(config.control.arm_disarm) or "nobody")
    return ("Commands (the first line of a message, in this chat):\n"
            f"/snap - pictures from every camera now; /snap CAMERA - from one ({cams})\n"
            "/status - armed or not, cameras, last motion, queues, disk, sensors, pending keys\n"
            "/disarm - no pictures for motion until /arm; /disarm 2h, /disarm until 07:00 - for a while "
            "(motion is still recorded; heartbeats go on)\n"
            "/arm - alarms on again\n"
            "/help - this list\n"
            f"Who may /arm and /disarm: {who}. Every change is announced here with who made it.")


def _snap(ctx, command):
    from . import snap
    if not ctx.config.cameras:
        ctx.answer("No camera is configured, so there is nothing to take a picture with.", "Snapshot")
        return "no-camera"
    names = {c.name.lower(): c.name for c in ctx.config.cameras}
    wanted = []
    for arg in command.args:
        name = names.get(arg.lower())
        if name is None:
            ctx.answer(f"No camera named {arg[:40]!r}. Cameras: {', '.join(names.values())}.", "Snapshot")
            return "unknown-camera"
        if name not in wanted:
            wanted.append(name)
    path = snap.request(ctx.spool, ctx.sender, wanted or None, ctx.to, command.line, now=ctx.now)
    ctx.requests += 1
    checkpoint("control.acted")
    log.info("request=%s by=%s cameras=%s state=requests.new", path.name, ctx.sender, ",".join(wanted) or "all")
    return "requested"


def _status(ctx):
    from . import events, health
    snap = health.snapshot(ctx.config, ctx.spool, ctx.now)
    ctx.answer(f"Status {events.iso(ctx.now)[:19].replace('T', ' ')} UTC\n" + health.summary_text(snap),
               "Status")
    checkpoint("control.acted")
    return "status"


def _arm(ctx, command):
    from . import armed
    allowed = ctx.config.control.arm_disarm
    if allowed is not None and ctx.sender not in allowed:
        ctx.answer(f"Only {', '.join(allowed) or 'nobody'} may arm or disarm this camera "
                   "([control] arm_disarm).", "Not allowed")
        return "not-allowed"
    until = None
    if command.name == "disarm":
        try:
            until = armed.parse_until(command.args, ctx.now)
        except armed.BadTime as exc:
            ctx.answer(f"{exc}. Nothing changed.", "Disarm")
            return "bad-time"
    elif command.args:
        ctx.answer("/arm takes no argument. Nothing changed.", "Arm")
        return "bad-argument"
    state, changed = armed.change(ctx.spool, command.name == "arm", ctx.sender, "chat", until, now=ctx.now)
    checkpoint("control.acted")
    if not changed:
        ctx.answer(f"Nothing changed: {state.text()}", "Armed" if state.armed else "Disarmed")
        return "unchanged"
    ctx.answers += 1  # the announcement to everyone (seccam.armed)
    if ctx.to is not None:  # asked in a 1:1 chat: the announcement went to the group
        ctx.answer(f"Done: {state.text()} (announced in the group)", "Armed" if state.armed else "Disarmed")
    return "armed" if state.armed else "disarmed"
