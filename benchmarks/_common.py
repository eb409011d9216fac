"""Constants and helpers shared by the host, the liteyuki children and the bare children.

Standard library only: ``_bare`` imports this module in a bare spawned child.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence
from multiprocessing.connection import Connection

KEY = "bench-key"
SET_KEY = "bench-set-key"
VALUE = "value-0123456789"  # a small str value: what a bot typically keeps in the store
SMALL = "liteyuki-msg-0123"  # the "small string" message of the one-way figures
BIG = 64 * 1024  # bytes of the large-payload figure (row 5)
HUGE = 1024 * 1024  # bytes of the 1 MiB figure (row 5b)
FANIN = "bench-fanin"  # the channel four children send on concurrently
# Kernel-level timeouts on the raw pipes: every blocking send/recv gives up after this
# long (BlockingIOError) without adding a poll() syscall to the baseline's hot path.
IO_TIMEOUT = 60.0


def set_io_timeout(conn: Connection, seconds: float) -> None:
    """Give a ``multiprocessing`` Pipe end (a socket) SO_RCVTIMEO / SO_SNDTIMEO of ``seconds``."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    finally:
        sock.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
