"""The spool's size budget, and pruning in a documented order when it is reached.

A week of heartbeats from four cameras, or a long outage, must not fill a
small SD card. Before a job writes images it calls :func:`make_room`; when the
spool is over its budget, or the filesystem is nearly full, items are removed
in this order (docs/reliability.md):

1. heartbeats, oldest first, but never the newest one;
2. preview messages whose full-size image was delivered already;
3. alarms, oldest first: their full-size images first, then their previews.

Motion events (a few hundred bytes) and items in ``corrupt/`` are never
pruned. ``quarantine/`` (inbound mail the inbox set aside) does not count
against the budget at all: anyone can send mail to the camera, and a stranger
must not be able to push an alarm out; the inbox caps it on its own
(seccam.inbox, :data:`~seccam.inbox.MAX_SET_ASIDE_BYTES`). Every pruned item is logged and counted in ``state/pruned.json``
(owner: whoever holds the ``prune`` lock), which ``seccam status`` and the next
heartbeat report. An item is pruned by renaming it into ``tmp/`` first, so an
item that a job claims at that very moment is simply not pruned.
"""

import logging
import os
import shutil
import time

from .spool import REASON_SUFFIX, unique_name

log = logging.getLogger("seccam.budget")

MB = 1000 * 1000
# Default budget: this share of the spool's filesystem, within these bounds.
DEFAULT_SHARE = 0.10
DEFAULT_MIN_BYTES = 50 * MB
DEFAULT_MAX_BYTES = 2000 * MB
# Never let the filesystem's free space fall below this (the OS needs it too).
DEFAULT_MIN_FREE_BYTES = 64 * MB
# What a capture writes, estimated before starting: a JPEG of camera noise at
# quality 85 is about 30 % of the raw RGB size (measured: 720x540 -> 330 kB);
# real scenes compress better, so this errs on the safe side.
JPEG_SHARE = 0.3


# A camera module whose size is decided on the Pi (resolution not set) is counted at the
# largest sensor seccam knows at full resolution (64 MP would be larger, but none is supported).
LARGEST_SENSOR = (4656, 3496)


def room_for(cameras):
    """Bytes a capture of ``cameras`` may write (full image + preview each)."""
    total = 0
    for c in cameras:
        w, h = c.resolution or LARGEST_SENSOR
        pw, ph = c.preview_resolution or (320, 240)
        total += JPEG_SHARE * 3 * (w * h + pw * ph)
    return int(total)

PRUNABLE = ("sets.ready", "sets.held", "outbox.new", "outbox.deferred", "outbox.failed")


def size_of(path):
    """Bytes used by a file or a directory tree (allocated blocks, as df sees them)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path):
        return st.st_blocks * 512
    total = st.st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # pragma: no cover - race: removed between walk and lstat
                continue
    return total


def budget_bytes(config, spool):
    """The configured budget, or the default share of the spool's filesystem."""
    if config.spool_budget_mb is not None:
        return int(config.spool_budget_mb * MB)
    total = shutil.disk_usage(spool.root).total
    return int(min(DEFAULT_MAX_BYTES, max(DEFAULT_MIN_BYTES, total * DEFAULT_SHARE)))


def usage(spool):
    """Bytes the spool uses, without the inbox's quarantine (capped separately)."""
    return size_of(spool.root) - size_of(spool.dir("quarantine"))


def classify(name):
    """(kind, part) of a spool item from its name: kind alarm|heartbeat, part preview|full|text|set.

    Everything that is not a heartbeat counts as an alarm and is pruned last: that includes the
    welcome after a Secure-Join (``-welcome``, the owner's proof that joining worked) and the
    back-online summary (``-summary``).
    """
    kind = "heartbeat" if "-heartbeat" in name else "alarm"
    for part in ("preview", "full", "text"):
        if f".{part}." in name:
            return kind, part
    return kind, "set"


def _set_id(name):
    return name.split(".set", 1)[0].split("-alarm", 1)[0].split("-heartbeat", 1)[0]


def candidates(spool):
    """Every prunable item in pruning order (first = pruned first)."""
    items = []
    for state in PRUNABLE:
        for path in spool.items(state):
            items.append((path.name, state, path))
    items.sort()
    heartbeats = [(n, s, p) for n, s, p in items if classify(n)[0] == "heartbeat"]
    if heartbeats:
        newest = _set_id(heartbeats[-1][0])
        heartbeats = [h for h in heartbeats if _set_id(h[0]) != newest]
    alarms = [(n, s, p) for n, s, p in items if classify(n)[0] == "alarm"]
    present = {n for n, _, _ in alarms}
    orphan_previews = []
    for n, s, p in alarms:
        if classify(n)[1] == "preview" and n.replace(".preview.", ".full.") not in present \
                and _set_id(n) not in {_set_id(x) for x in present if classify(x)[1] == "set"}:
            orphan_previews.append((n, s, p))
    rest = [a for a in alarms if a not in orphan_previews]
    # Within alarms: oldest first; in one alarm the full image goes before its preview.
    rest.sort(key=lambda a: (_set_id(a[0]), {"full": 0, "set": 1, "text": 2, "preview": 3}[classify(a[0])[1]]))
    return heartbeats + orphan_previews + rest


def min_free_bytes(config):
    """Free space the filesystem must keep for the system."""
    return DEFAULT_MIN_FREE_BYTES if config.min_free_mb is None else int(config.min_free_mb * MB)


def make_room(config, spool, needed=0, now=None):
    """Prune until the spool is within budget and ``needed`` bytes fit; return what was pruned.

    Returns a list of (name, bytes). Raises nothing: the caller decides what a
    still-full disk means for its own work.
    """
    budget = budget_bytes(config, spool)
    min_free = min_free_bytes(config)
    pruned = []
    used = usage(spool)

    def over():
        free = shutil.disk_usage(spool.root).free
        return used + needed > budget or free - needed < min_free

    if not over():
        return pruned
    with spool.lock("prune", timeout_s=30):
        for name, state, path in candidates(spool):
            if not over():
                break
            size = size_of(path)
            grave = spool.dir("tmp") / unique_name(".pruned")
            try:
                os.rename(path, grave)
            except FileNotFoundError:  # pragma: no cover - race: claimed or sent between listing and rename
                continue
            spool.remove(grave)
            reason = path.with_name(path.name + REASON_SUFFIX)
            if reason.exists():
                spool.remove(reason)
            used -= size
            pruned.append((name, size))
            log.warning("pruned=%s state=%s bytes=%d reason=spool-budget", name, state, size)
        if pruned:
            record(spool, pruned, now)
    return pruned


def record(spool, pruned, now):
    """Count ``[(name, bytes), ...]`` removed from the spool in ``state/pruned.json`` (for status and
    the heartbeat). Callers hold the ``prune`` lock or, for held sets, the ``encrypt`` lock."""
    now = time.time() if now is None else now
    stamp = spool.read_state("pruned") or {}
    recent = (stamp.get("recent") or [])[-40:]
    recent += [{"name": n, "bytes": b, "time": now} for n, b in pruned]
    spool.write_state("pruned", {
        "count": int(stamp.get("count", 0)) + len(pruned),
        "bytes": int(stamp.get("bytes", 0)) + sum(b for _, b in pruned),
        "recent": recent[-50:],
        "last": now,
    })
