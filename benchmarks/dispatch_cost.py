"""``python -m benchmarks.dispatch_cost``: what a passive callback costs the dispatcher, sync
against async (one that never suspends), in one process on one event loop.

Batches of 100 calls, as a drain runs them; after each batch the loop runs until the
callbacks' tasks are done. The two kinds alternate, 6 rounds each; medians, min and max
of the per-call time are printed. No I/O, no pickling: only what ``Dispatcher.call``
adds (an async callback runs as a task, see liteyuki/comm/_dispatch.py).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from liteyuki.comm._dispatch import Dispatcher

BATCHES = 500
ROUNDS = 6


def sync_callback(x: Any) -> None:
    return None


async def async_callback(x: Any) -> None:
    return None


async def per_call_us(callback: Any) -> float:
    dispatcher = Dispatcher()
    dispatcher.bind(asyncio.get_running_loop())
    started = time.perf_counter()
    for _ in range(BATCHES):
        for i in range(100):
            dispatcher.call(callback, i, "callback")
        while dispatcher.tasks:  # the tasks of this batch: the loop runs them
            await asyncio.sleep(0)
    return (time.perf_counter() - started) / (BATCHES * 100) * 1e6


def main() -> int:
    times: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(ROUNDS):
        for kind, callback in (("sync", sync_callback), ("async", async_callback)):
            times[kind].append(asyncio.run(per_call_us(callback)))
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"dispatch cost per callback, Python {version}, {ROUNDS} alternating rounds of {BATCHES} x 100 calls")
    for kind, values in times.items():
        print(f"  {kind:5}: median {statistics.median(values):.2f} us (min {min(values):.2f}, max {max(values):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
