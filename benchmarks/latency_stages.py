"""``python -m benchmarks.latency_stages [RATE ...] [--rounds N]``: where row 4's latency goes.

At each rate (messages a second, default 1,000, 10,000 and 75,000) the host sends one
second of timestamped messages, paced as row 4 paces them, to a child's passive
callback, then the same over a raw ``multiprocessing.Pipe`` to a blocking ``recv``
loop in a thread of the same child; the two alternate for ``--rounds`` rounds. For
ours it prints p50/p99 of send → the runtime handing the message to the end (the
child's reader thread, after decoding) and of send → the callback (the dispatch loop);
for the raw pipe, send → ``recv``. (Timing at ``deliver`` unpickles each message once
more on the reader thread, ~1 µs: the figures for ours are a little high.) Run from the
repository root.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

WAIT = 60.0  # every blocking call has a bound
DONE = "latency-stages-done"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6


def child_target(raw: Connection) -> None:
    """Times every message at the end's ``deliver`` and in the callback; serves the raw pipe."""
    from liteyuki.comm import Channel, _channel, passive_channel

    done = Channel(DONE)
    expected: list[int] = [0]
    at_deliver: list[float] = []
    at_callback: list[float] = []
    deliver = _channel._EndState.deliver

    def timed_deliver(self: Any, payloads: list[bytes]) -> None:
        now = time.perf_counter()
        if self.name == "stages-passive" and expected[0]:
            at_deliver.extend(now - sent for sent in map(pickle.loads, payloads) if type(sent) is float)
        deliver(self, payloads)

    _channel._EndState.deliver = timed_deliver  # type: ignore[method-assign]  # (a diagnostic)

    @passive_channel.on_receive()
    def timed(message: Any) -> None:
        if type(message) is int:  # a new round of this many
            expected[0] = message
            at_deliver.clear()
            at_callback.clear()
            return
        at_callback.append(time.perf_counter() - message)
        if len(at_callback) == expected[0]:
            done.send((_percentiles(at_deliver), _percentiles(at_callback)))

    def serve_raw() -> None:
        while True:
            n = raw.recv()
            latencies = []
            for _ in range(n):
                sent = raw.recv()
                latencies.append(time.perf_counter() - sent)
            raw.send(_percentiles(latencies))

    threading.Thread(target=serve_raw, name="raw-pipe", daemon=True).start()
    threading.Event().wait()


def paced(send: Any, n: int, rate: float) -> float:
    """Row 4's load: message ``i`` leaves at ``start + i / rate`` carrying its send time
    (the sleep paces the generator: it waits for a point in time, not for an event)."""
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(n):
        ahead = start + i * interval - time.perf_counter()
        if ahead > 1e-4:
            time.sleep(ahead)
        send(time.perf_counter())
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rounds = 2
    if "--rounds" in args:
        at = args.index("--rounds")
        rounds = int(args[at + 1])
        args = args[:at] + args[at + 2 :]
    rates = [float(arg) for arg in args] or [1_000.0, 10_000.0, 75_000.0]
    from liteyuki import LiteyukiBot
    from liteyuki.comm import Channel, get_channel

    host_end, child_end = multiprocessing.get_context("spawn").Pipe()
    bot = LiteyukiBot(pyproject=None, log_level="WARNING", stop_grace=3.0)
    bot.process_manager.add_target("stages", child_target, args=(child_end,))
    with bot.running():
        done, to_child = Channel(DONE), get_channel("stages-passive")
        for round_ in range(rounds):
            for rate in rates:
                n = max(200, int(rate))
                for variant in ("ours", "raw") if round_ % 2 == 0 else ("raw", "ours"):
                    if variant == "ours":
                        to_child.send(n)
                        achieved = paced(to_child.send, n, rate)
                        (d50, d99), (c50, c99) = done.receive(timeout=WAIT)
                        print(
                            f"{rate:>8,.0f}/s ours: to the end p50 {d50:7.1f} p99 {d99:8.1f} us | "
                            f"to the callback p50 {c50:7.1f} p99 {c99:8.1f} us (paced at {achieved:,.0f}/s)",
                            flush=True,
                        )
                    else:
                        host_end.send(n)
                        achieved = paced(host_end.send, n, rate)
                        assert host_end.poll(WAIT)
                        r50, r99 = host_end.recv()
                        print(
                            f"{rate:>8,.0f}/s raw : to recv()      p50 {r50:7.1f} p99 {r99:8.1f} us "
                            f"(paced at {achieved:,.0f}/s)",
                            flush=True,
                        )
    print(f"load average {os.getloadavg()[0]:.2f}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
