"""The encrypt step: plaintext image sets in, encrypted messages out, as early as possible.

This module owns the transitions ``sets/ready -> sets/active -> (outbox/new +
set removed) | sets/held | corrupt`` and ``sets/held -> sets/ready``. Nothing
but ciphertext ever enters the outbox; the plaintext set is removed as soon as
all of its messages are there.

:func:`process` runs under the ``encrypt`` lock. The capture and heartbeat jobs
call it right after publishing a set, and jobs/send calls it first:

1. recover ``sets/active`` (a crashed run's claim) back to ``sets/ready``;
2. check that encryption is possible at all: an ``[account]`` (the From
   address), at least one recipient, the camera key, and a usable key for at
   least one recipient. If not, every set waits in ``sets/held`` with a
   ``.reason`` that says what to do; once the problem is gone, held sets go
   back to ready;
3. claim each ready set by rename, build and encrypt its messages (one gpg
   call per message: signed by the camera key, encrypted to every recipient
   that has a usable pinned key and to the camera itself), publish each into
   ``outbox/new``, then remove the set. A set whose ``meta.json`` is malformed
   goes to ``corrupt/``.

Recipients are independent: one recipient without a usable key (not yet
imported, expired, revoked) never holds anybody else's pictures. Each alarm
set, and each incident's closing summary, becomes the messages for the
recipients that have a key, and, for every recipient that has none, a *copy*
of the set that waits for that one key in ``sets/held`` (ID
``<event>-to<8 hex>-alarm`` or ``...-closing``, ``meta.json`` naming the one
address in ``for``, the images hard links of the original's). When that key
arrives, the copy goes out to that recipient alone (same group chat, outer
``To:`` only that address); heartbeats, welcomes, incident updates and outage
summaries are not kept for a missing recipient (stale by then; ``seccam
status`` and the heartbeat name the recipient that has no key).

Plaintext waits in ``sets/held`` at most ``[delivery] hold_days`` (default
7): older held sets are deleted, logged and counted like budget prunes
(``state/pruned.json``), so that ``seccam status`` and the heartbeat report
them.

Outbox names sort in send order (set time, then every preview, then every full image)::

    <set id>.<nn>.<camera>.<preview|full|sheet|text>.eml

Kill safety: a message is skipped when its name already exists in any outbox
state or the set records it as published (``.published-<name>`` inside the
set directory). A message built twice (killed in the tiny window between
publishing and recording, after jobs/send already sent it) has the same
Message-ID, so Delta Chat shows it once.

What each set becomes (docs/deltachat.md):

* alarm: a preview message per working camera, then a full-size message per
  camera (every preview first, so they arrive before anything else);
  failed cameras are named in the text of the first message; if no camera
  worked, one text-only message still reports the alarm;
* heartbeat: one message per working camera (the full image, or the preview
  with ``[delivery] heartbeat_image = "preview"`` to save mobile data) with
  the health summary in the first; one text-only message if no camera worked;
* welcome (jobs/inbox, after a completed Secure-Join): like a heartbeat, but
  always the full image, and the first line says the chat is connected;
* summary (jobs/send, back online after an outage): one text-only message;
* update and closing (seccam.incident: an incident's "motion continues" and its
  summary with the contact sheets): the messages its ``meta.json`` lists, one
  image each (an update's picture, a contact sheet), the text in the first.
* snap (jobs/capture, a person's ``/snap`` in the chat, seccam.snap): like an
  alarm, headed "Snapshot ..., requested by ...", into the chat the command
  came from;
* reply (seccam.replies: an answer to a chat command, an armed-state
  announcement): one text-only message. A reply or a snap that names one
  recipient (``to``; a command from a 1:1 chat) goes to that recipient alone,
  without the group headers, so that it lands in that 1:1 chat.

With one recipient the messages form a 1:1 chat; with several, one encrypted
Delta Chat group (``Chat-Group-ID`` stable per camera key, ``Chat-Group-Name``,
``Chat-Group-Member-Fpr``, ``Autocrypt-Gossip`` for every member).
"""

import base64
import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import re
from pathlib import Path

from . import mime
from .faults import checkpoint
from .spool import SpoolFormatError, read_json

log = logging.getLogger("seccam.encrypt")

SET_SUFFIX = ".set"
MESSAGE_SUFFIX = ".eml"
# gpg processes at once for one set; a Pi 4 has 4 cores, a Pi Zero 1.
MAX_GPG_PROCESSES = 4
OUTBOX_STATES = ("outbox.new", "outbox.active", "outbox.deferred", "outbox.failed")
_PUBLISHED_PREFIX = ".published-"
_CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
LOCK_TIMEOUT_S = 600
KINDS = ("alarm", "heartbeat", "welcome", "summary", "update", "closing", "snap", "reply")
# Kinds whose meta.json lists its messages ready-made (seccam.incident writes them).
LISTED = ("update", "closing")
COPY_MARK = "-to"  # <event>-to<8 hex of the address>-alarm: a held copy for one recipient
# What a recipient without a key gets later, from a copy held for them: every first alarm and every
# incident's closing summary (its contact sheets hold every capture); updates and heartbeats are
# stale by then.
HELD_FOR_MISSING = ("alarm", "closing")
COPY_TMP_SUFFIX = ".copy-set"  # a held copy while it is written in tmp/ (under the encrypt lock)
_COPY_PREFIX = ".held-for-"


@dataclasses.dataclass
class Result:
    sets: int = 0          # sets fully turned into messages and removed
    messages: int = 0      # messages published into outbox/new
    held: int = 0          # sets moved to sets/held by this run (whole sets and per-recipient copies)
    released: int = 0      # held sets moved back to sets/ready
    expired: int = 0       # held sets deleted after hold_days
    set_aside: int = 0     # sets moved to corrupt/


@dataclasses.dataclass(frozen=True)
class Planned:
    """One message of a set, before encryption."""

    nn: int
    camera: str            # camera name, or "all" for a text-only message
    kind: str              # "preview" | "full" | "text"
    subject: str
    text: str
    image: Path | None

    def outbox_name(self, set_id):
        return f"{set_id}.{self.nn:02d}.{self.camera}.{self.kind}{MESSAGE_SUFFIX}"


class Hold(Exception):
    """Encryption is not possible now; the reason says what a person has to do."""


@dataclasses.dataclass(frozen=True)
class Crypto:
    """Everything the messages of this run need from GnuPG, looked up once."""

    gpg: object
    camera_fpr: str
    sender: str
    display_name: str
    recipients: tuple            # addresses, To: order
    recipient_fprs: tuple        # same order
    autocrypt: str               # the camera's Autocrypt header value
    gossip: tuple                # ((addr, keydata), ...), several recipients only
    group: mime.Group | None
    heartbeat_image: str = "full"  # "full" | "preview"
    missing: tuple = ()          # recipients without a usable key: their alarms wait as copies
    deliver_to: tuple | None = None  # outer To/envelope if not every recipient (a held copy)

    def one_to_one(self, address):
        """The messages of a 1:1 chat with ``address``: encrypted and delivered to that recipient, no group."""
        fpr = self.recipient_fprs[self.recipients.index(address)]
        return dataclasses.replace(self, recipients=(address,), recipient_fprs=(fpr,), group=None, gossip=(),
                                   deliver_to=None, missing=())

    def only_for(self, address):
        """The same messages (same group, same members), encrypted to and delivered to ``address``."""
        fpr = self.recipient_fprs[self.recipients.index(address)]
        return dataclasses.replace(self, recipient_fprs=(fpr,), deliver_to=(address,), missing=())


# -- entry point -----------------------------------------------------------------------
def process(config, spool, now=None, lock_timeout_s=LOCK_TIMEOUT_S, crypto=None):
    """Encrypt every ready set (see the module docstring); return a :class:`Result`.

    ``crypto``: what :func:`prepare` returned moments ago (the capture job
    prepares while its cameras expose); None prepares here.

    Raises SeccamError only for problems of the whole step (gpg unusable, lock
    not had in time); the sets stay in ``sets/ready`` for the next run.
    """
    spool.ensure()
    result = Result()
    with spool.lock("encrypt", timeout_s=lock_timeout_s):
        # Only this step writes *.eml into tmp/, and only under this lock: leftovers are a dead run's.
        spool.clean_tmp(MESSAGE_SUFFIX)
        spool.clean_tmp(COPY_TMP_SUFFIX)  # a held copy a killed run was still writing
        for path in spool.recover("sets.active", "sets.ready"):
            log.info("set=%s state=sets.ready recovered=1", _set_id(path))
        if not spool.items("sets.ready", suffix=SET_SUFFIX) and not spool.items("sets.held", suffix=SET_SUFFIX):
            return result  # nothing to do: do not even start gpg
        try:
            crypto = crypto or prepare(config)
        except Hold as hold:
            result.held += _hold_all(spool, str(hold))
            result.expired += _expire_held(config, spool, now)
            return result
        result.released += _release_held(spool, crypto)
        result.expired += _expire_held(config, spool, now)
        for path in spool.items("sets.ready", suffix=SET_SUFFIX):
            claimed = spool.claim(path, "sets.active")
            # The spool budget (seccam.budget, under its own lock) may prune a set at any moment.
            if claimed is None:  # pragma: no cover - race: the set was pruned between listing and claim
                continue
            _process_set(spool, claimed, crypto, result)
    return result


def prepare(config, gpg=None):
    """Check that messages can be encrypted now and gather the keys; raise Hold if not."""
    from . import keys

    if config.account is None:
        raise Hold("no [account] in the configuration: the camera needs its own mail address; "
                   "add [account] (docs/configuration.md)")
    recipients = tuple(keys.recipients(config))
    if not recipients:
        raise Hold("no recipients: add [delivery] recipients = [\"you@example.org\"] to the configuration")
    if gpg is None:
        from .gpg import Gpg
        gpg = Gpg(config.state_dir / "gnupg")
    camera_fpr = gpg.camera_key()
    if camera_fpr is None:
        raise Hold("the camera has no key yet: run seccam keys init")
    store = keys.open_store(config, gpg)
    fprs = store.encryption_fingerprints(recipients)
    missing = tuple(a for a in recipients if keys.normalize(a) not in fprs)
    if len(missing) == len(recipients):
        raise Hold(f"no usable key for {', '.join(missing)}: import the key: seccam keys import FILE "
                   f"(an exported public key or the contact's vCard from Delta Chat), or: seccam invite")
    several = len(recipients) > 1  # a group as soon as several may receive, even while one has no key
    recipients = tuple(a for a in recipients if a not in missing)
    recipient_fprs = tuple(fprs[keys.normalize(a)] for a in recipients)
    from . import autocrypt
    address = config.account.address
    autocrypt_value = autocrypt.build_header(address, gpg.export_minimal(camera_fpr))
    group = gossip = None
    if several:
        group = mime.Group(group_id=group_id(config, camera_fpr), name=config.delivery.group_name,
                           member_fprs=recipient_fprs)
        gossip = tuple((a, gpg.export_minimal(f)) for a, f in zip(recipients, recipient_fprs))
    if missing:
        log.warning("step=encrypt recipients_without_key=%s (their alarms wait as held copies)", ",".join(missing))
    return Crypto(gpg=gpg, camera_fpr=camera_fpr, sender=address, display_name=config.account.display_name,
                  recipients=recipients, recipient_fprs=recipient_fprs, autocrypt=autocrypt_value,
                  gossip=gossip or (), group=group, heartbeat_image=config.delivery.heartbeat_image,
                  missing=missing)


def missing_key_reason(address):
    return (f"no usable key for {address}: this copy of the alarm waits for it (seccam keys import FILE, "
            "or seccam invite); the other recipients got theirs")


def group_id(config, camera_fpr):
    """``delivery.group_id``, or one derived from the camera key (stable while the key is)."""
    if config.delivery.group_id:
        return config.delivery.group_id
    digest = hashlib.sha256(b"seccam-group\0" + camera_fpr.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:22]


# -- held sets ---------------------------------------------------------------------------
def _hold_all(spool, reason):
    held = 0
    for path in spool.items("sets.ready", suffix=SET_SUFFIX):
        dest = spool.move(path, "sets.held")
        if dest is None:  # pragma: no cover - race: the budget pruned the set between listing and move
            continue
        spool.write_reason(dest, reason)
        held += 1
        log.warning("set=%s state=sets.held reason=%r", _set_id(dest), reason)
    # Keep the reason of sets already held current (e.g. a second recipient added).
    for path in spool.items("sets.held", suffix=SET_SUFFIX):
        if spool.read_reason(path) != reason:
            spool.write_reason(path, reason)
    return held


def _release_held(spool, crypto):
    """Held sets back to ready: whole sets now that somebody has a key, a recipient's copy
    once that recipient has one."""
    released = 0
    for path in spool.items("sets.held", suffix=SET_SUFFIX):
        address = _copy_for(path)
        if address is not None and address not in crypto.recipients:
            reason = missing_key_reason(address)
            if spool.read_reason(path) != reason:
                spool.write_reason(path, reason)
            continue
        dest = spool.move(path, "sets.ready")
        if dest is not None:
            released += 1
            log.info("set=%s state=sets.ready released=1", _set_id(dest))
    return released


def _copy_for(path):
    """The one recipient a held copy is for, or None for a whole set (or an unreadable one)."""
    if COPY_MARK not in _set_id(path):
        return None
    try:
        meta = read_json(Path(path) / "meta.json")
    except (OSError, SpoolFormatError):
        return None
    value = meta.get("for")
    return value if isinstance(value, str) else None


def _created(set_id):
    """A set's creation time from its ID (``YYYYMMDDTHHMMSS.ffffffZ...``), or None."""
    try:
        return _dt.datetime.strptime(set_id[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None


def _expire_held(config, spool, now=None):
    """Delete held sets older than ``[delivery] hold_days``: plaintext must not wait for ever."""
    import time
    from . import budget
    now = time.time() if now is None else now
    limit = config.delivery.hold_days * 86400
    expired = []
    for path in spool.items("sets.held", suffix=SET_SUFFIX):
        created = _created(path.name)
        if created is None or now - created <= limit:
            continue
        size = budget.size_of(path)
        reason = spool.read_reason(path) or "unknown"
        spool.remove(path)
        expired.append((path.name, size))
        log.warning("set=%s state=removed reason=held-too-long hold_days=%s held_because=%r",
                    _set_id(path), config.delivery.hold_days, reason)
    if expired:
        budget.record(spool, expired, now)
    return len(expired)


# -- one set -------------------------------------------------------------------------------
def _set_id(path):
    return Path(path).name.removesuffix(SET_SUFFIX)


def _process_set(spool, path, crypto, result):
    set_id = _set_id(path)
    checkpoint("encrypt.claimed")
    try:
        meta = load_meta(path)
    except SpoolFormatError as exc:
        spool.set_aside(path, f"malformed image set: {exc}")
        result.set_aside += 1
        log.error("set=%s state=corrupt reason=%r", set_id, str(exc))
        return
    address = meta.get("for")
    if address is not None:
        if address not in crypto.recipients:  # pragma: no cover - released only once its key is usable
            spool.move(path, "sets.held")
            return
        crypto = crypto.only_for(address)
    to = chat_of(meta)
    if to is not None:
        if to not in crypto.recipients:
            # An answer to a person whose key cannot encrypt now: nobody else may read it.
            spool.remove(path)
            log.warning("set=%s state=removed reason=no-usable-key-for-1:1-answer to=%s", set_id, to)
            return
        crypto = crypto.one_to_one(to)
    planned = plan(meta, path, crypto.heartbeat_image)
    todo = []
    for item in planned:
        name = item.outbox_name(set_id)
        if _already_published(spool, path, name):
            log.info("set=%s message=%s skipped=already-published", set_id, name)
        else:
            todo.append((item, name))
    published = 0
    try:
        # One gpg process per core (at most 4): four cameras encrypt in about the
        # time of one. Messages are published in plan order, previews first, each
        # as soon as it and those before it are ready.
        with _pool(len(todo)) as pool:
            futures = [pool.submit(_build, crypto, set_id, meta, item) for item, _ in todo]
            try:
                for (item, name), future in zip(todo, futures):
                    raw = future.result()
                    spool.write("outbox.new", raw, name=name)
                    checkpoint("encrypt.published")
                    _mark_published(path, name)
                    published += 1
                    log.info("set=%s message=%s state=outbox.new bytes=%d", set_id, name, len(raw))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    except BaseException:
        # gpg failed, the disk is full, or we are being stopped: the set goes back to
        # ready untouched except for its progress marks.
        if spool.move(path, "sets.ready") is not None:
            log.warning("set=%s state=sets.ready reason=encrypt-interrupted published=%d", set_id, published)
        raise
    if crypto.missing and meta["kind"] in HELD_FOR_MISSING and "for" not in meta:
        for address in crypto.missing:
            result.held += _hold_copy(spool, path, set_id, meta, address)
    checkpoint("encrypt.before-remove")
    spool.remove(path)
    result.sets += 1
    result.messages += published
    log.info("set=%s state=encrypted messages=%d plaintext=removed", set_id, len(planned))


def copy_id(set_id, address):
    """The ID of the copy of set ``set_id`` (an alarm or an incident's closing summary) that waits
    for ``address``: the kind stays the last part of the name, for jobs/send's order and the budget."""
    digest = hashlib.sha256(address.encode("utf-8")).hexdigest()[:8]
    base, _, kind = set_id.rpartition("-")
    return f"{base}{COPY_MARK}{digest}-{kind}"


def _hold_copy(spool, path, set_id, meta, address):
    """Publish, once, a copy of the set at ``path`` for ``address`` into ``sets/held``."""
    from . import imageset
    cid = copy_id(set_id, address)
    mark = path / (_COPY_PREFIX + cid)
    if mark.exists() or imageset.exists(spool, cid):
        return 0
    # Not "*.set": jobs/capture removes those in tmp/ at start under its own lock, which we do not hold.
    tmp = spool.make_tmp_dir(COPY_TMP_SUFFIX)
    for name in os.listdir(path):  # every picture of the set (camera images, contact sheets)
        if not name.startswith(".") and name != "meta.json" and (path / name).is_file():
            os.link(path / name, tmp / name)  # the same bytes, no second copy on the card
    raw = {k: v for k, v in meta.items() if not k.startswith("_")}
    raw.update({"id": cid, "for": address, "copy_of": set_id})
    with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
        import json
        json.dump(raw, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    dest = spool.publish(tmp, "sets.held", cid + SET_SUFFIX)
    spool.write_reason(dest, missing_key_reason(address))
    _mark(mark)
    log.warning("set=%s state=sets.held copy_of=%s for=%s reason=no-usable-key", cid, set_id, address)
    return 1


def _build(crypto, set_id, meta, item):
    checkpoint("encrypt.before-gpg")
    return build_message(crypto, set_id, meta, item)


def _pool(jobs):
    """Worker threads for gpg: they wait on gpg processes, so the GIL is no obstacle."""
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=max(1, min(jobs, os.cpu_count() or 1, MAX_GPG_PROCESSES)))


def _already_published(spool, set_path, name):
    if (set_path / (_PUBLISHED_PREFIX + name)).exists():
        return True
    return any((spool.dir(state) / name).exists() for state in OUTBOX_STATES)


def _mark_published(set_path, name):
    _mark(set_path / (_PUBLISHED_PREFIX + name))


def _mark(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    os.close(fd)


def load_meta(path):
    """Read and check ``meta.json`` of the set at ``path``; raise SpoolFormatError."""
    try:
        meta = read_json(Path(path) / "meta.json")
    except FileNotFoundError:
        raise SpoolFormatError("meta.json is missing") from None
    if meta.get("version") != 1:
        raise SpoolFormatError(f"meta.json: unsupported version {meta.get('version')!r}")
    if meta.get("kind") not in KINDS:
        raise SpoolFormatError(f"meta.json: unknown kind {meta.get('kind')!r}")
    try:
        meta["_created"] = _dt.datetime.fromisoformat(meta["created"])
    except (KeyError, TypeError, ValueError):
        raise SpoolFormatError("meta.json: missing or invalid created time") from None
    if meta["_created"].tzinfo is None:
        meta["_created"] = meta["_created"].replace(tzinfo=_dt.timezone.utc)
    cameras = meta.get("cameras")
    if not isinstance(cameras, list):
        raise SpoolFormatError("meta.json: cameras is not a list")
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict) or not isinstance(cam.get("name"), str) or not _CAMERA_RE.match(cam["name"]):
            raise SpoolFormatError(f"meta.json: cameras[{i}] has no valid name")
        if not isinstance(cam.get("ok"), bool):
            raise SpoolFormatError(f"meta.json: cameras[{i}].ok is not true/false")
        if cam["ok"]:
            for key in ("full", "preview"):
                if not isinstance(cam.get(key), str) or not _FILE_RE.match(cam[key]):
                    raise SpoolFormatError(f"meta.json: cameras[{i}].{key} is not a file name")
    if not isinstance(meta.get("events", []), list):
        raise SpoolFormatError("meta.json: events is not a list")
    if "for" in meta and (not isinstance(meta["for"], str) or meta["kind"] not in HELD_FOR_MISSING):
        raise SpoolFormatError("meta.json: for is not one recipient's address of an alarm or a closing summary")
    health = meta.get("health")
    if health is not None and not isinstance(health, dict):
        raise SpoolFormatError("meta.json: health is not an object")
    if meta["kind"] in LISTED:
        messages = meta.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SpoolFormatError("meta.json: messages is not a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("subject"), str) or not isinstance(m.get("text"), str):
                raise SpoolFormatError(f"meta.json: messages[{i}] needs a subject and a text")
            if m.get("image") is not None and (not isinstance(m["image"], str) or not _FILE_RE.match(m["image"])):
                raise SpoolFormatError(f"meta.json: messages[{i}].image is not a file name")
            if not isinstance(m.get("camera", "all"), str) or not _CAMERA_RE.match(m.get("camera", "all")):
                raise SpoolFormatError(f"meta.json: messages[{i}].camera is not a camera name")
    if meta["kind"] == "reply" and not all(isinstance(meta.get(k), str) for k in ("subject", "text")):
        raise SpoolFormatError("meta.json: a reply needs a subject and a text")
    if meta["kind"] in ("snap", "reply") and not all(isinstance(e, dict) for e in meta.get("events", [])):
        raise SpoolFormatError("meta.json: events of a snap are not requests")
    to = chat_of(meta)
    if to is not None and (not isinstance(to, str) or "@" not in to):
        raise SpoolFormatError("meta.json: to is not one recipient's address")
    return meta


def chat_of(meta):
    """The one recipient whose 1:1 chat a reply or a snap answers, or None (the camera's chat)."""
    if meta.get("kind") == "reply":
        return meta.get("to")
    if meta.get("kind") == "snap" and meta.get("events"):
        return meta["events"][0].get("to")
    return None


# -- what the messages say -----------------------------------------------------------------------
def _local(when):
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _local_time(iso_text):
    try:
        return _dt.datetime.fromisoformat(iso_text).astimezone().strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return "?"


def _taken(cam):
    """", picture taken 19:11:00 CET" from the camera's capture time (the time on the picture), or ""."""
    try:
        when = _dt.datetime.fromisoformat(cam["captured"]).astimezone()
    except (KeyError, TypeError, ValueError):
        return ""
    return f", picture taken {when.strftime('%H:%M:%S %Z')}"


def _sensor_lines(meta):
    lines = []
    for ev in meta.get("events", []):
        if not isinstance(ev, dict):
            continue
        source = ev.get("source")
        if source == "trigger":
            lines.append("Test alarm (seccam trigger)")
            continue
        sensors = [s for s in ev.get("sensors", []) if isinstance(s, dict)]
        fired = ", ".join(f"GPIO {s.get('pin')} at {_local_time(s.get('active_at'))}" for s in sensors)
        what = "Button" if source == "button" else "Motion sensors"
        lines.append(f"{what}: {fired}" if fired else what)
    return lines


def plan(meta, set_path, heartbeat_image="full"):
    """The messages of one set, in send order."""
    when = _local(meta["_created"])
    if meta["kind"] == "summary":
        text = str((meta.get("health") or {}).get("text") or "Back online.")
        return [Planned(0, "all", "text", "Back online", text, None)]
    if meta["kind"] in LISTED:
        out = []
        for nn, m in enumerate(meta["messages"]):
            image = Path(set_path) / m["image"] if m.get("image") else None
            if image is not None and not image.is_file():
                image = None
            out.append(Planned(nn, m.get("camera", "all"), "sheet" if image else "text", m["subject"], m["text"],
                               image))
        return out
    if meta["kind"] == "reply":
        return [Planned(0, "all", "text", meta["subject"], meta["text"], None)]
    ok, failed = [], []
    for cam in meta["cameras"]:
        if cam["ok"] and not all((Path(set_path) / cam[k]).is_file() for k in ("full", "preview")):
            cam = {"name": cam["name"], "ok": False, "error": "image missing from the set"}
        (ok if cam["ok"] else failed).append(cam)
    failures = [f"Camera {c['name']} failed: {c.get('error') or 'unknown error'}" for c in failed]
    kind = meta["kind"]
    if kind == "alarm":
        head, label, health, sensors = f"Motion detected {when}", "Motion", None, _sensor_lines(meta)
        if meta.get("for"):
            head += " (held until your key reached the camera)"
    elif kind == "snap":
        who = sorted({str(e.get("by")) for e in meta.get("events", [])}) or ["?"]
        head = f"Snapshot {when}, requested by {', '.join(who)} (/snap)"
        label, health, sensors = "Snapshot", None, []
    elif kind == "welcome":
        head = f"Connected {when}: seccam will send its alarms and heartbeats here."
        label, health, sensors = "Connected", (meta.get("health") or {}).get("text"), []
        heartbeat_image = "full"  # a one-off: show the owner the best picture
    else:
        head, label, health, sensors = f"Heartbeat {when}", "Heartbeat", (meta.get("health") or {}).get("text"), []
    extra = failures + ([""] + [str(health)] if health else [])
    out = []
    if not ok:
        body = [head, "No camera worked." if meta["cameras"] else "No camera is configured."] + sensors + extra
        out.append(Planned(0, "all", "text", f"{label}: no image", "\n".join(body), None))
        return out
    if kind not in ("alarm", "snap"):
        for nn, cam in enumerate(ok):
            name = cam["name"]
            lines = [head, f"Camera {name}{_taken(cam)}"] + (extra if nn == 0 else [])
            out.append(Planned(nn, name, heartbeat_image, f"{label}: {name}", "\n".join(lines),
                               Path(set_path) / cam[heartbeat_image]))
        return out
    # Every camera's preview before any full image: the small previews reach the
    # owner before a burglar can unplug the camera (the original project's reason).
    for nn, cam in enumerate(ok):
        name = cam["name"]
        lines = [head, f"Camera {name}{_taken(cam)} (preview; full size follows)"] + sensors \
            + (extra if nn == 0 else [])
        out.append(Planned(nn, name, "preview", f"{label}: {name}", "\n".join(lines), Path(set_path) / cam["preview"]))
    for nn, cam in enumerate(ok, start=len(ok)):
        name = cam["name"]
        out.append(Planned(nn, name, "full", f"{label}: {name} (full size)",
                           f"Camera {name}, full size, {when}{_taken(cam)}", Path(set_path) / cam["full"]))
    return out


def build_message(crypto, set_id, meta, item):
    """The encrypted RFC 5322 message for ``item`` (bytes)."""
    domain = crypto.sender.rpartition("@")[2]
    env = mime.Envelope(
        from_name=crypto.display_name, from_addr=crypto.sender, to=crypto.recipients,
        date=meta["_created"],
        message_id=mime.make_message_id(domain, crypto.camera_fpr, set_id, item.nn, item.camera, item.kind),
        subject=item.subject,
    )
    attachment = None
    if item.image is not None:
        stamp = meta["_created"].astimezone(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        extra = {"preview": "-preview", "sheet": f"-{meta['kind']}{item.nn + 1}"}.get(item.kind, "")
        filename = f"{item.camera}-{stamp}{extra}.jpg"
        attachment = mime.Attachment(filename=filename, data=item.image.read_bytes())
    inner = mime.build_inner(env, item.text, attachment, group=crypto.group, gossip=crypto.gossip)
    binary = crypto.gpg.encrypt_sign(inner, list(crypto.recipient_fprs) + [crypto.camera_fpr],
                                     signer=crypto.camera_fpr, armor=False)
    armored = mime.armor(mime.reframe(binary))
    return mime.build_outer(env, crypto.autocrypt, armored, to=crypto.deliver_to)

