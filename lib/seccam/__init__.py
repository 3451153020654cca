"""seccam: a serverless, end-to-end encrypted security camera for the Raspberry Pi.

The package is split by responsibility; see docs/architecture.md. Importing
``seccam`` itself is free: nothing heavy (gpiozero, gnupg, smtplib) is imported
here, because every job's start-up time is part of the alarm latency.
"""

__version__ = "0.1.0"
