"""The plain liteyuki child of rows 7 and 8: a module of its own, like ``_bare``.

A spawn target's module is imported in the child before the target runs, so
this one imports only what the row measures (``liteyuki.comm``), not the
benchmark children's harness (``_targets`` imports asyncio and the storage
facade for the other rows).
"""

from __future__ import annotations

import threading

from liteyuki import comm


def idle_child(timeout: float) -> None:
    """A plain child that says "up" on its active channel, then idles until stopped."""
    comm.active_channel.send("up")
    threading.Event().wait(timeout)  # idle; the host stops us with a stop request long before
