"""What the spool says about the camera's health, for ``seccam status`` and heartbeats.

Read-only: this module derives everything from the spool's directories and
stamps (and, for the key store and the open invites, from the state dir) and
writes nothing, so it is safe to run at any moment, as any user who can read
the spool. It never reports an invite's secrets (invite number, auth secret).

:func:`blockers` says what keeps alarms from being sent at all (no account,
no camera key, a recipient without a usable key): ``seccam status`` shows
it first. Each check is a function in :data:`BLOCKER_CHECKS`; a new one is
appended there.
"""

import calendar
import shutil
import time

from . import events

QUEUES = ("events.new", "events.active", "requests.new", "requests.active", "sets.ready", "sets.active",
          "sets.held", "outbox.new", "outbox.active", "outbox.deferred", "outbox.failed", "corrupt", "quarantine")
# The poller refreshes its stamp every liveness_s; this many missed refreshes mean it is down.
POLLER_GRACE = 3
# What jobs/inbox sets aside in corrupt/ (seccam.inbox.SET_ASIDE_SUFFIX; not imported: inbox pulls in email).
INBOX_SET_ASIDE_SUFFIX = ".inbox.eml"
WAITING = ("outbox.new", "outbox.active", "outbox.deferred")


def name_time(name):
    """The creation time encoded at the start of a spool item's name, or None."""
    try:
        return calendar.timegm(time.strptime(name[:15], "%Y%m%dT%H%M%S")) + int(name[16:22]) / 1e6
    except (ValueError, IndexError):
        return None


def _queue(spool, state, now):
    items = spool.items(state)
    info = {"count": len(items)}
    times = [t for t in (name_time(p.name) for p in items) if t is not None]
    if times:
        info["oldest_age_s"] = round(now - min(times), 1)
    if state in ("sets.held", "outbox.failed", "corrupt", "quarantine"):
        info["reasons"] = {p.name: spool.read_reason(p) or "no reason recorded" for p in items[:20]}
    if state == "corrupt":
        info["inbox_mail"] = sum(p.name.endswith(INBOX_SET_ASIDE_SUFFIX) for p in items)
    return info


def held_for(spool):
    """``{address: n}``: alarms held for one recipient who has no usable key (seccam.encrypt's copies)."""
    import json
    out = {}
    for path in spool.items("sets.held"):
        if "-to" not in path.name:
            continue
        try:
            address = json.loads((path / "meta.json").read_text(encoding="utf-8")).get("for")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(address, str):
            out[address] = out.get(address, 0) + 1
    return out


def outage(spool, queues):
    """The open outage of jobs/send (``state/outage.json``), or None while mail goes out."""
    stamp = spool.read_state("outage")
    if not stamp:
        return None

    def when(key):
        return events.iso(stamp[key]) if isinstance(stamp.get(key), (int, float)) else None

    return {"since": stamp.get("since_iso") or when("since"), "last_error": stamp.get("error"),
            "attempts": int(stamp.get("attempts") or 0), "last_attempt": when("last_attempt"),
            "auth": bool(stamp.get("auth")), "collapsed_heartbeats": int(stamp.get("collapsed_heartbeats") or 0),
            "waiting": sum(queues[s]["count"] for s in WAITING)}


def open_invites(config, now):
    """The invites a Delta Chat user can still scan: id, label, uses left, expiry, never the secrets."""
    try:
        from . import invites
        records = invites.InviteStore(config.state_dir).all()
    except Exception as exc:  # status must show what it can, whatever a sub-report does
        return {"count": 0, "open": [], "error": f"cannot read invites: {exc}"}
    out = []
    for rec in records:
        try:
            if invites.status(rec, now) != invites.OPEN:
                continue
            uses_left = int(rec.get("uses", 1)) - int(rec.get("used", 0))
        except (TypeError, ValueError) as exc:
            out.append({"id": rec.get("id"), "error": f"unreadable invite: {exc}"})
            continue
        out.append({"id": rec["id"], "label": rec.get("label"), "uses_left": uses_left,
                    "expires": rec["expires"], "pending_joins": len(rec.get("pending") or [])})
    return {"count": sum("error" not in i for i in out), "open": out}


def poller(config, spool, now):
    stamp = spool.read_state("poller") or {}
    seen = spool.state_mtime("poller")
    if seen is None:
        return {"alive": False, "last_seen": None}
    age = now - seen
    info = {"alive": age <= POLLER_GRACE * config.sensors.liveness_s, "last_seen": events.iso(seen),
            "age_s": round(age, 1), "started": stamp.get("started"), "pid": stamp.get("pid")}
    previous = stamp.get("previous")
    if isinstance(previous, dict) and previous.get("last_seen") and stamp.get("started"):
        info["down"] = {"from": previous["last_seen"], "to": stamp["started"],
                        "clean_stop": bool(previous.get("clean_stop"))}
    return info


def disk(spool):
    try:
        usage = shutil.disk_usage(spool.root)
    except OSError:
        return None
    return {"free_bytes": usage.free, "total_bytes": usage.total,
            "free_percent": round(100.0 * usage.free / usage.total, 1) if usage.total else 0.0}


def events_since(spool, since):
    count = 0
    for state in ("events.new", "events.active", "events.done"):
        for path in spool.items(state):
            t = name_time(path.name)
            if t is not None and (since is None or t > since):
                count += 1
    return count


def last_motion(spool):
    newest = None
    for state in ("events.new", "events.active", "events.done"):
        items = spool.items(state)
        if items:
            t = name_time(items[-1].name)
            if t is not None and (newest is None or t > newest):
                newest = t
    return newest


def _pruned(spool):
    stamp = spool.read_state("pruned") or {}
    return {"count": int(stamp.get("count", 0)), "bytes": int(stamp.get("bytes", 0)),
            "last": events.iso(stamp["last"]) if isinstance(stamp.get("last"), (int, float)) else None}


def incidents(config, spool, now):
    """The current incident and the kept captures (seccam.incident.describe)."""
    try:
        from . import incident
        return incident.describe(config, spool, now)
    except Exception as exc:  # status must show what it can, whatever a sub-report does
        return {"error": f"cannot read incidents: {exc}"}


def key_problems(config):
    """Recipient key changes waiting for the owner, or why the key store cannot be read."""
    try:
        from . import keys
        return keys.pending_changes(config)
    except Exception as exc:  # status must show what it can, whatever a sub-report does
        return [{"error": f"cannot read key store: {exc}"}]


def key_change_text(change):
    """One sentence on a pending key (seccam.keys.pending_changes), for status and the heartbeat."""
    what = ("A key for" if not change.get("pinned") else "A different key for")
    where = ("offered in a message signed by the current key" if change.get("verified") and change.get("pinned")
             else "from a completed invite or a person's import" if change.get("verified")
             else "from unauthenticated mail: anyone could have sent it")
    return f"{what} {change.get('address')} waits for you: {change.get('fingerprint')}, {where}."


# -- what blocks alarms -------------------------------------------------------------------------
class Facts:
    """What the blocker checks share: the configuration, the spool, and one Gpg made on first use."""

    def __init__(self, config, spool):
        self.config = config
        self.spool = spool
        self._gpg = None

    @property
    def gpg(self):
        if self._gpg is None:
            from .gpg import Gpg, home_for
            self._gpg = Gpg(home_for(self.config.state_dir))
        return self._gpg


def blocker(kind, message, fix):
    """One thing that keeps alarms from being sent: ``kind`` (stable, for scripts), what is
    wrong and what to do, each in words."""
    return {"kind": kind, "message": message, "fix": fix}


def _no_account(facts):
    if facts.config.account is None:
        return [blocker("no-account", f"no [account] in {facts.config.path}: the camera has no mail account to "
                        "send from", "add [account] (docs/setup.md, docs/configuration.md)")]
    return []


def _no_recipients(facts):
    from . import keys
    if not keys.recipients(facts.config):
        return [blocker("no-recipients", "nobody receives the alarms",
                        "add [delivery] recipients = [\"you@example.org\"] to the configuration")]
    return []


def _no_camera_key(facts):
    if facts.gpg.camera_key() is None:
        return [blocker("no-camera-key", "the camera has no key: it cannot sign or encrypt",
                        "sudo seccam keys init  (or put a backup back: sudo seccam keys restore FILE)")]
    return []


def _recipients_without_key(facts):
    from . import keys
    store = keys.open_store(facts.config, facts.gpg)
    recipients = keys.recipients(facts.config)
    missing = store.missing(recipients)
    # seccam.encrypt holds every alarm when nobody has a key, else only the copies for those without one.
    held = "every alarm is held until one of them has a key" if len(missing) == len(recipients) else \
        "its alarms are held until it has one (the others get theirs)"
    out = []
    for address in missing:
        record = store.record(address)
        why = "its key is expired, revoked or not usable" if record and record.get("fingerprint") else \
            "no key for it on the camera"
        out.append(blocker("recipient-without-key", f"{address}: {why}; {held}",
                           "sudo seccam invite (scan it in Delta Chat), or: sudo seccam keys import FILE"))
    return out


# (what it checks, check) in the order seccam status shows them; a check takes Facts and
# returns a list of blocker() dicts.
BLOCKER_CHECKS = [("the account", _no_account), ("the recipients", _no_recipients),
                  ("the camera key", _no_camera_key), ("the recipients' keys", _recipients_without_key)]


def blockers(config, spool):
    """What keeps alarms from being sent, from every check in BLOCKER_CHECKS (a check that
    fails says so as a blocker of its own: status must show what it can)."""
    facts = Facts(config, spool)
    out = []
    for what, check in BLOCKER_CHECKS:
        try:
            out.extend(check(facts))
        except Exception as exc:  # status must show what it can, whatever a check does
            out.append(blocker("check-failed", f"cannot check {what}: {exc}", "see the error; then sudo seccam status"))
    return out


def armed_state(spool, now):
    """The armed state in force (seccam.armed), with the motion events recorded while disarmed."""
    from . import armed
    state = armed.current(spool, now)
    info = state.as_json()
    info["text"] = state.text()
    if not state.armed:
        info["motion_since"] = events_since(spool, state.changed)
    return info


def snapshot(config, spool, now=None, with_keys=True, with_blockers=False):
    now = time.time() if now is None else now
    motion = last_motion(spool)
    cams = spool.read_state("cameras") or {}
    captured = [c.get("time") for c in cams.values() if isinstance(c, dict) and c.get("time")]
    heartbeat = spool.read_state("heartbeat") or {}
    queues = {state: _queue(spool, state, now) for state in QUEUES}
    snap = {
        "time": events.iso(now),
        "spool": str(spool.root),
        "queues": queues,
        "last_motion": events.iso(motion) if motion else None,
        "last_capture": max(captured) if captured else None,
        "last_heartbeat": heartbeat.get("time"),
        "cameras": {cam.name: cams.get(cam.name, {"ok": None}) for cam in config.cameras},
        "poller": poller(config, spool, now),
        "disk": disk(spool),
        "pruned": _pruned(spool),
        "outage": outage(spool, queues),
        "incident": incidents(config, spool, now),
        "held_for": held_for(spool),
        "armed": armed_state(spool, now),
    }
    if with_keys:
        snap["key_changes"] = key_problems(config)
        snap["invites"] = open_invites(config, now)
    if with_blockers:
        snap["blockers"] = blockers(config, spool)
    return snap


def _bytes(n):
    units = ("B", "KB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n} B" if i == 0 else f"{n:.1f} {units[i]}"


def summary_text(snap, since_count=None, results=None, since=None):
    """The short health text a heartbeat carries; ``since`` (ISO) is the previous heartbeat."""
    lines = []
    armed = snap.get("armed")
    if armed:
        lines.append(armed["text"] + (f" Motion events since: {armed['motion_since']}."
                                      if "motion_since" in armed else ""))
    if results is not None:
        cams = ", ".join(f"{r.camera} ok" if r.ok else f"{r.camera} FAILED ({r.error})" for r in results)
    else:
        cams = ", ".join(f"{n} {'ok' if c.get('ok') else 'FAILED' if c.get('ok') is False else 'not tried'}"
                         for n, c in snap["cameras"].items())
    lines.append(f"Cameras: {cams or 'none configured'}.")
    p = snap["poller"]
    lines.append("Motion sensors: watching." if p["alive"] else
                 f"Motion sensors: NOT RUNNING (last seen {p['last_seen'] or 'never'}).")
    down = p.get("down")
    if down and (since is None or down["to"] > since):
        how = "stopped" if down["clean_stop"] else "crashed or lost power"
        lines.append(f"Motion sensors were down from {down['from']} to {down['to']} ({how}).")
    if since_count is not None:
        lines.append(f"Motion events since the last heartbeat: {since_count}.")
    else:
        lines.append(f"Last motion: {snap.get('last_motion') or 'never'}.")
    from .incident import status_text
    current = status_text(snap.get("incident"))
    if current:
        lines.append(current)
    q = snap["queues"]
    waiting = sum(q[s]["count"] for s in WAITING)
    lines.append(f"Messages waiting to be sent: {waiting}.")
    for state, label in (("sets.held", "held"), ("outbox.failed", "failed"), ("corrupt", "set aside"),
                         ("quarantine", "mail the camera could not use, kept for you")):
        if q[state]["count"]:
            lines.append(f"{label.capitalize()}: {q[state]['count']} (see seccam status).")
    for address, count in sorted((snap.get("held_for") or {}).items()):
        lines.append(f"No usable key for {address}: {count} alarm(s) wait for it (the others got theirs).")
    pruned = snap.get("pruned") or {}
    if pruned.get("count"):
        lines.append(f"Pruned to stay within the spool budget: {pruned['count']} item(s), "
                     f"last at {pruned['last']}.")
    for change in snap.get("key_changes") or []:
        if "error" in change:
            lines.append(f"Key store: {change['error']}.")
        else:
            lines.append(f"{key_change_text(change)} Compare the fingerprint with {change.get('address')}'s own, "
                         "then accept on the camera: seccam keys accept ADDRESS FINGERPRINT.")
    d = snap["disk"]
    if d:
        lines.append(f"Free disk: {_bytes(d['free_bytes'])} ({d['free_percent']:g} %).")
    return "\n".join(lines)
