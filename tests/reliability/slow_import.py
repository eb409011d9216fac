"""A module that takes 60 s to import in a child: a child whose target lives here is slow to start."""

from __future__ import annotations

import os
import time

# Set by the host for its children only (and checked the way the runtime does).
if os.environ.get("LITEYUKI_CHILD_NAME") and os.environ.get("LITEYUKI_HOST_PID") == str(os.getppid()):
    print("IMPORT", os.getpid(), flush=True)
    time.sleep(60)  # the slow start-up under test


def target() -> None:
    print("TARGET RUNNING", os.getpid(), flush=True)
