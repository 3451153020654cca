"""Figures the fault-injection suites record for docs/reliability.md.

``record("outage", scenario="server stopped", queued=4, delivered=4, lost=0, duplicated=0)``
appends one JSON line to ``$SECCAM_FIGURES`` when it is set (tests/reliability
sets it); otherwise it does nothing. The tests assert the same numbers, so a
figure in the table is always one a test checked.
"""

import json
import os


def record(table, **row):
    path = os.environ.get("SECCAM_FIGURES")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"table": table, **row}, sort_keys=True) + "\n")
