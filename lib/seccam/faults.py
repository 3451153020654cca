"""Named checkpoints where the fault-injection tests stop a job to SIGKILL it.

``checkpoint("capture.published")`` does nothing unless the environment
variable ``SECCAM_STOP_AT`` names that checkpoint; then the process stops
itself (SIGSTOP) so a test can kill it at exactly that instant, between two
renames. This is the only test seam in the jobs; it costs one dictionary
lookup. Checkpoint names are listed in docs/reliability.md.
"""

import os
import signal


def checkpoint(name):
    if os.environ.get("SECCAM_STOP_AT") == name:
        # The fault tests SIGKILL the stopped process, so its coverage data is never written.
        os.kill(os.getpid(), signal.SIGSTOP)  # pragma: no cover - see the line above
