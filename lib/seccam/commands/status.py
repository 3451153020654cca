"""``seccam status``: what a person inspecting the spool wants to know.

It leads with what keeps alarms from being sent at all (seccam.health.blockers:
no account, no camera key, a recipient without a usable key), then the rest.
``--json`` has the same under ``"blockers"`` (``[]`` when alarms can be sent).
"""

HELP = ("what blocks alarms, then the current incident, queues, last motion and capture, cameras, poller, "
        "outage, invites, free disk")
USES_GPG = True


_LABELS = {
    "events.new": "motion events waiting for capture",
    "events.active": "motion events being captured",
    "requests.new": "/snap requests waiting for the cameras",
    "requests.active": "/snap requests being captured",
    "sets.ready": "image sets waiting for encryption",
    "sets.active": "image sets being encrypted",
    "sets.held": "image sets held (see reasons)",
    "outbox.new": "encrypted messages waiting to be sent",
    "outbox.active": "messages being sent",
    "outbox.deferred": "messages deferred (will retry)",
    "outbox.failed": "messages failed (need you)",
    "corrupt": "items set aside (need you)",
    "quarantine": "inbound mail the camera could not use (capped, oldest dropped first)",
}


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _age(seconds):
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"


def _outage_lines(outage):
    if not outage:
        return []
    waiting = outage["waiting"]
    lines = [f"OFFLINE since {outage['since'] or '?'} (last error: {outage['last_error'] or 'unknown'}), "
             f"{waiting} message{'' if waiting == 1 else 's'} waiting"]
    how = ("the server refuses the camera's login: fix the account password, then run seccam flush"
           if outage.get("auth") else "retried automatically; to retry now: seccam flush")
    lines.append(f"            {outage['attempts']} attempt(s), last at {outage.get('last_attempt') or '?'}; {how}")
    if outage.get("collapsed_heartbeats"):
        lines.append(f"            {outage['collapsed_heartbeats']} stale heartbeat(s) dropped "
                     "(only the newest is sent)")
    return lines


def _incident_lines(info):
    """The current incident, incidents waiting for their summary, captures kept in the spool."""
    if not info:
        return []
    if info.get("error"):
        return [f"incidents   {info['error']}"]
    lines = []
    if info.get("gap_s", 0) <= 0:
        lines.append("incidents   off ([incident] gap_s = 0): every capture is sent as an alarm")
    inc = info.get("open")
    if inc:
        lines.append(f"incident    in progress since {inc['since']}: {inc['events']} motion event(s), "
                     f"{inc['captures']} capture(s), last motion {inc['last_motion']}")
        lines.append(f"            {inc['updates']} update(s) sent (last {inc['last_update'] or 'none yet'}); "
                     f"ends at {inc['ends']} unless motion continues")
    if info.get("closing"):
        lines.append(f"incidents   {info['closing']} ended, summary being made (jobs/incident, every minute)")
    if info.get("kept_captures"):
        lines.append(f"kept        {info['kept_captures']} capture(s) of {info['closed']} ended and "
                     f"{1 if inc else 0} running incident(s), full size, in incidents/ of the spool")
    return lines


def _armed_lines(armed):
    """The armed state, a section of its own (seccam.armed; ``seccam arm``, ``seccam disarm``, /arm, /disarm)."""
    if armed["armed"]:
        return [f"armed       {armed['text']}"]
    return [f"DISARMED    {armed['text']}",
            f"            motion events since: {armed.get('motion_since', 0)}; arm again: seccam arm (or /arm)"]


def _invite_lines(invites):
    if not invites:
        return []
    if invites.get("error"):
        return [f"invites     {invites['error']}"]
    lines = [f"invites     {invites['count']} open" + (" (revoke with: seccam invite revoke ID)"
                                                         if invites["count"] else "")]
    for inv in invites["open"]:
        if "error" in inv:
            lines.append(f"  {inv.get('id')}  {inv['error']}")
            continue
        left = inv["uses_left"]
        pending = f", {inv['pending_joins']} join(s) in progress" if inv.get("pending_joins") else ""
        lines.append(f"  {inv['id']}  {inv.get('label') or '(no label)'}: {left} use{'' if left == 1 else 's'} left, "
                     f"expires {inv['expires']}{pending}")
    return lines


def _blocker_lines(blockers):
    if blockers is None:
        return []
    if not blockers:
        return ["ready       alarms can be sent: account, camera key and a usable key for every recipient"]
    lines = [f"BLOCKED     no alarm can be sent until {'this is' if len(blockers) == 1 else 'these are'} fixed:"]
    for b in blockers:
        lines.append(f"  - {b['message']}")
        lines.append(f"      fix: {b['fix']}")
    return lines


def render(snap):
    out = _blocker_lines(snap.get("blockers"))
    out.append(f"spool {snap['spool']}")
    out.extend(_outage_lines(snap.get("outage")))
    out.extend(_armed_lines(snap["armed"]))
    p = snap["poller"]
    if p["alive"]:
        out.append(f"poller      alive (pid {p.get('pid')}, stamp {p['age_s']:g}s old, started {p.get('started')})")
    else:
        out.append(f"poller      NOT RUNNING (last seen {p['last_seen'] or 'never'})")
    out.extend(_incident_lines(snap.get("incident")))
    out.append(f"last motion    {snap['last_motion'] or 'never'}")
    out.append(f"last capture   {snap['last_capture'] or 'never'}")
    out.append(f"last heartbeat {snap['last_heartbeat'] or 'never'}")
    out.append("cameras:")
    for name, cam in snap["cameras"].items():
        if cam.get("ok") is None:
            out.append(f"  {name:12} not tried yet")
        elif cam["ok"]:
            out.append(f"  {name:12} ok at {cam['time']} ({cam.get('seconds', 0):g}s)")
        else:
            out.append(f"  {name:12} FAILED at {cam['time']}: {cam.get('error')}"
                       f" (last ok {cam.get('last_ok') or 'never'})")
    out.append("queues:")
    for state, info in snap["queues"].items():
        age = f", oldest {_age(info['oldest_age_s'])}" if "oldest_age_s" in info else ""
        inbox = f", {info['inbox_mail']} of them mail the inbox set aside" if info.get("inbox_mail") else ""
        out.append(f"  {state:16} {info['count']:5}  {_LABELS[state]}{inbox}{age}")
        for item, reason in (info.get("reasons") or {}).items():
            out.append(f"      {item}: {reason}")
    for address, count in sorted((snap.get("held_for") or {}).items()):
        out.append(f"NO KEY for {address}: {count} alarm(s) held for them alone (the others got theirs); "
                   "seccam invite, or seccam keys import FILE")
    for change in snap.get("key_changes") or []:
        if "error" in change:
            out.append(f"keys: {change['error']}")
        else:
            from ..health import key_change_text
            out.append(f"KEY: {key_change_text(change)} Compare it with the fingerprint {change.get('address')}'s "
                       f"Delta Chat shows, then: seccam keys accept {change.get('address')} "
                       f"{change.get('fingerprint')}")
    out.extend(_invite_lines(snap.get("invites")))
    pruned = snap.get("pruned") or {}
    if pruned.get("count"):
        out.append(f"pruned      {pruned['count']} item(s), {pruned['bytes'] / 1e6:.1f} MB to stay within the spool "
                   f"budget (last {pruned['last']})")
    d = snap["disk"]
    if d:
        out.append(f"free disk   {d['free_bytes'] / 1e9:.2f} GB of {d['total_bytes'] / 1e9:.2f} GB "
                   f"({d['free_percent']:g} %)")
    return "\n".join(out)


def run(args, config):
    import json

    from ..health import snapshot
    from ..spool import Spool

    snap = snapshot(config, Spool(config.spool_dir), with_blockers=True)
    print(json.dumps(snap, indent=1, sort_keys=True) if args.json else render(snap))
    return 0
