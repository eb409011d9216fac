"""A plain child whose passive callback is registered when its module is imported.

That happens while the spawned child unpickles its target, before the bootstrap
runs: the dispatch loop is wanted before there is a way to start it, and must
start once the bootstrap provides one.
"""

from __future__ import annotations

import os
import threading

from liteyuki import comm
from liteyuki.comm.lowlevel import CHILD_ENV


def _echo(msg: str) -> None:
    comm.active_channel.send(f"echo {msg}")


if os.environ.get(CHILD_ENV):  # in the child only: the host imports this module to name the target
    comm.passive_channel.on_receive()(_echo)


def target(timeout: float) -> None:
    comm.active_channel.send("registered")
    threading.Event().wait(timeout)
