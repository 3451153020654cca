"""Delivery from inside the capture job: one interpreter start fewer on the alarm path.

Without it an alarm costs three processes on its critical path: the capture
job, then jobs/send, started by seccam-send.path once the first preview is
in ``outbox/new`` (Python start-up, imports, then DNS, TCP, TLS and AUTH with
the relay, all after the picture is ready). The courier is a thread of the
capture job that does jobs/send's work for this run's alarm:

* it is started when an alarm is certain to need delivery, or when an early
  capture starts: while the cameras expose, it imports the mail modules and
  opens and authenticates the SMTP connection;
* it takes the ``send`` lock (so jobs/send, started by the path unit anyway,
  finds it busy and leaves at once, as two jobs/send runs do) and runs
  :func:`seccam.send.deliver` (the same transitions, retry policy, pacing and
  outage handling), which sends each message the moment the encrypt step
  publishes it and keeps watching until the capture job says it is done;
* if another jobs/send run holds the lock, the courier retries the lock
  while this job is still producing, then leaves delivery to that run (and
  to the path unit, which starts jobs/send again while ``outbox/new`` is not
  empty).

Nothing here owns a spool transition of its own: the outbox belongs to
whoever holds the ``send`` lock, and that rule stays. A capture job killed
at any instant leaves messages in ``outbox/new`` or ``outbox/active``; the
next jobs/send run (path unit or cron) recovers and sends them. A delivery
problem never fails the capture job: it is logged, and jobs/send (cron,
every minute) reports and retries it as always.
"""

import logging
import threading
import time

from .errors import SeccamError

log = logging.getLogger("seccam.courier")

#: How often a courier whose lock is busy looks again.
RETRY_LOCK_S = 0.05
#: The longest a capture job waits for its courier after capturing (then jobs/send takes over).
JOIN_TIMEOUT_S = 120.0


class Courier:
    """A delivery thread for one capture job run. ``start()`` is idempotent; ``finish()`` says that
    nothing more will be encrypted by this run and waits for the thread."""

    def __init__(self, config, spool, smtp_factory=None):
        self.config = config
        self.spool = spool
        self.smtp_factory = smtp_factory
        self.error = None
        self.sent = False
        self._producing = threading.Event()
        self._thread = None

    def start(self):
        if self._thread is not None:
            return
        self._producing.set()
        self._thread = threading.Thread(target=self._run, name="seccam-courier", daemon=True)
        self._thread.start()

    def finish(self, timeout_s=JOIN_TIMEOUT_S):
        if self._thread is None:
            return
        self._producing.clear()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # pragma: no cover - a relay that stalls longer than SMTP's own timeouts
            log.warning("courier=still-sending after_s=%g; jobs/send will finish the delivery", timeout_s)

    # -- the thread -----------------------------------------------------------------
    def _more_coming(self):
        return self._producing.is_set() or self.spool.lock_held("encrypt")

    def _run(self):
        from .spool import LockBusy

        while True:
            try:
                with self.spool.lock("send", timeout_s=0):
                    self._deliver()
                return
            except LockBusy:
                if not self._more_coming():
                    # That run sends what is queued; whatever it misses restarts jobs/send (path unit).
                    log.info("courier=done reason=another-send-job-delivers")
                    return
                time.sleep(RETRY_LOCK_S)
            except Exception as exc:  # noqa: BLE001 - a delivery problem must never fail the capture
                self.error = exc
                log.warning("courier=failed error=%r; jobs/send retries", str(exc))
                return

    def _deliver(self):
        from . import send
        from .transport import Smtp

        factory = self.smtp_factory or Smtp
        smtp = factory(self.config.account)
        try:
            smtp.connect()  # while the cameras expose: DNS, TCP, TLS, AUTH are off the critical path
        except SeccamError as exc:
            # deliver() connects again for the first message and applies its outage policy.
            log.info("courier=preconnect-failed error=%r", str(exc))
        try:
            send.deliver(self.config, self.spool, smtp_factory=lambda account: smtp, more_coming=self._more_coming)
            self.sent = True
        except SeccamError as exc:
            self.error = exc
            log.warning("courier=incomplete error=%r; jobs/send retries", str(exc))
        finally:
            smtp.close()
