"""``python -m benchmarks.payload_cpu [SIZE] [N] [ROUNDS]``: where row 5's CPU goes.

The host sends ``N`` payloads of ``SIZE`` bytes (default 64 KiB x 20,000) to a child's
passive callback, then the same over a raw ``multiprocessing.Pipe`` to a blocking
``recv`` loop in the same child; the two alternate for ``ROUNDS`` rounds after a
warm-up. Each round prints the rate, every thread's user and system CPU time per
message (``/proc/PID/task/*/stat``) and the minor page faults per message of host and
child (``/proc/PID/stat``). Run from the repository root.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

WAIT = 120.0  # every blocking call has a bound


def child_target(n: int, raw: Connection) -> None:
    """Counts ``n`` callbacks, then says so on ``payload-cpu-done``; serves the raw pipe in a thread."""
    from liteyuki.comm import Channel, passive_channel

    done = Channel("payload-cpu-done")
    count = 0

    @passive_channel.on_receive()
    def counted(_: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            count = 0
            done.send(thread_names())  # "done", and what to call this process's threads

    def serve_raw() -> None:
        while True:
            for _ in range(raw.recv()):
                raw.recv()
            raw.send("done")

    threading.Thread(target=serve_raw, name="raw-pipe", daemon=True).start()
    threading.Event().wait()


def thread_names() -> dict[int, str]:
    """This process's Python threads, by their kernel thread id."""
    return {thread.native_id: thread.name for thread in threading.enumerate() if thread.native_id is not None}


def thread_times(pid: int, names: dict[int, str]) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of every thread of ``pid``, by Python thread name (or tid)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat, open(f"/proc/{pid}/task/{tid}/comm") as comm:
                fields, name = stat.read().rsplit(")", 1)[1].split(), comm.read().strip()
        except OSError:  # the thread ended
            continue
        times[names.get(int(tid), f"{name}/{tid}")] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return times


def minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[7])


Snapshot = tuple[dict[str, tuple[float, float]], int]


def snapshot(pid: int, names: dict[int, str]) -> Snapshot:
    return thread_times(pid, names), minor_faults(pid)


def per_message(before: Snapshot, after: Snapshot, n: int) -> str:
    """What each busy thread took per message (µs of user/system CPU), and the faults."""
    parts = []
    for thread, (user, system) in after[0].items():
        user0, system0 = before[0].get(thread, (0.0, 0.0))
        if user - user0 + system - system0 > 0.005 * n / 1000:
            parts.append(f"{thread} {(user - user0) / n * 1e6:.0f}u/{(system - system0) / n * 1e6:.0f}s")
    return f"{', '.join(parts)}; {(after[1] - before[1]) / n:.1f} faults"


def main() -> int:
    given = [int(arg) for arg in sys.argv[1:4]]
    size, n, rounds = given + [65536, 20000, 4][len(given) :]
    from liteyuki import LiteyukiBot
    from liteyuki.comm import Channel, get_channel

    host_end, child_end = multiprocessing.get_context("spawn").Pipe()
    bot = LiteyukiBot(pyproject=None, log_level="WARNING", stop_grace=3.0)
    bot.process_manager.add_target("payload", child_target, args=(n, child_end))
    payload = os.urandom(size)
    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    with bot.running():
        done, to_child = Channel("payload-cpu-done"), get_channel("payload-passive")
        child = bot.process_manager.pid("payload")
        assert child is not None
        names = {os.getpid(): thread_names(), child: {}}  # the child's: from its first answer
        for round_ in range(rounds + 1):
            for variant in ("ours", "raw") if round_ % 2 == 0 else ("raw", "ours"):
                names[os.getpid()] = thread_names()  # (the writer's backstop thread starts when first needed)
                before = snapshot(os.getpid(), names[os.getpid()]), snapshot(child, names[child])
                started = time.perf_counter()
                if variant == "ours":
                    for _ in range(n):
                        to_child.send(payload)
                    names[child] = done.receive(timeout=WAIT)
                else:
                    host_end.send(n)
                    for _ in range(n):
                        host_end.send(payload)
                    assert host_end.poll(WAIT) and host_end.recv() == "done"
                elapsed = time.perf_counter() - started
                if round_ == 0:
                    continue  # the warm-up
                rates[variant].append(n * size / elapsed / 1e6)
                host = per_message(before[0], snapshot(os.getpid(), names[os.getpid()]), n)
                child_threads = per_message(before[1], snapshot(child, names[child]), n)
                print(f"{variant:4} {rates[variant][-1]:6.0f} MB/s | per message, host: {host}", flush=True)
                print(f"{'':16}| per message, child: {child_threads}", flush=True)
    ours, raw = statistics.median(rates["ours"]), statistics.median(rates["raw"])
    load = os.getloadavg()[0]
    print(f"{size} B x {n}: ours {ours:.0f} MB/s, raw {raw:.0f} MB/s, {ours / raw:.2f}x (load {load:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
