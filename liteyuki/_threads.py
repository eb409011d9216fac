"""Threads that leave the stop signals to the main thread.

The kernel hands a process-directed signal (Ctrl+C's SIGINT, the host's SIGTERM) to any
thread that does not block it. CPython runs the Python handler on the main thread only,
and it interrupts a blocking call only in the thread the kernel chose: a SIGTERM taken by
a reader thread leaves the main thread asleep in ``Event.wait()`` or ``lock.acquire()``
until something else wakes it, and a child told to stop "did not stop in time". Every
thread liteyuki starts blocks SIGINT and SIGTERM, so the kernel delivers them to the main
thread, whose blocking call then returns with EINTR and runs the handler at once.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class QuietThread(threading.Thread):
    """A ``threading.Thread`` born with SIGINT and SIGTERM blocked."""

    def start(self) -> None:
        # A new thread inherits its creator's mask: block around the start, not in run(),
        # so no signal can land in the window before the thread masks itself. A signal that
        # arrives meanwhile stays pending and reaches this thread when the mask is restored.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def requiet() -> None:
    """Block the stop signals again in a liteyuki thread after a library unblocked them
    (``multiprocessing``'s resource tracker does, once, when it starts)."""
    if isinstance(threading.current_thread(), QuietThread):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
