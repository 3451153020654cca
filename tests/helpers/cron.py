"""Reading /etc/cron.d files in tests: their lines carry a user column that `crontab -n` does not know."""

import re

ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def without_user_column(text):
    """The cron.d file as `crontab -n` understands it: the same lines, the user column removed."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not ENV_LINE.match(stripped):
            fields = stripped.split(None, 6)
            line = " ".join(fields[:5] + fields[6:])
        out.append(line)
    return "\n".join(out) + "\n"
