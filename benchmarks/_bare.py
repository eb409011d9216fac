"""The bare baseline child: ``multiprocessing`` spawn, no liteyuki imported.

Used for the start-up and memory figures; it must stay standard-library only
so it measures what a plain spawned interpreter costs.
"""

from __future__ import annotations

from multiprocessing.connection import Connection


def idle(conn: Connection, timeout: float) -> None:
    """Say "up", then idle until the host says anything (or ``timeout`` s pass)."""
    conn.send("up")
    if conn.poll(timeout):
        conn.recv()
