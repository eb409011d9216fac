"""The rows of the table: what each figure compares and what it has to reach.

Standard library only, so the smoke test can import ``ROW_NAMES`` cheaply.

Adding a row: append a ``Spec`` to ``ROWS`` (its place in the tuple is its
place in the table) and store a ``Result`` under its ``key`` in the phase that
measures it (``_suite.MainPhase`` for anything that needs the four benchmark
children); the table, the worst-of-N and the JSON follow from the ``Spec``.
The targets are issue #12's.
"""

from __future__ import annotations

from dataclasses import dataclass

# How a row's verdict is computed from the medians (ours, base) of one run:
#   "le"      ours / base <= limit   (times: lower is better)
#   "ge"      ours / base >= limit   (rates: higher is better)
#   "speedup" base / ours >= limit   (ours is the faster way to do the baseline's work)
#   "extra"   ours - base <= limit   (memory beyond the baseline)
#   "max"     ours <= limit          (no baseline)
#   "info"    ratio shown, no target (a reference point); ``better`` says which way is good
#             for the row's subject ("lower" for times, "higher" for rates)
# ``peer`` marks a reference peer's row (ZeroMQ): its subject is the peer, not us, so the
# worst run for us is the peer's best one.


@dataclass(frozen=True)
class Spec:
    key: str
    name: str
    unit: str
    kind: str
    limit: float | None
    ours: str  # what "ours" measures (for a peer row: what the peer measures)
    base: str  # what "baseline" measures
    limiter: str = ""  # what limits it, printed when the target is missed (from profiling)
    better: str = ""  # "lower" | "higher": derived from ``kind`` unless it is "info"
    peer: bool = False

    @property
    def lower_is_better(self) -> bool:
        """Which way the row's figure (ratio, or extra MB, or value) is good for its subject."""
        if self.kind in ("le", "extra", "max"):
            return True
        if self.kind in ("ge", "speedup"):
            return False
        if self.better not in ("lower", "higher"):
            raise ValueError(f"row {self.key!r}: an 'info' row needs better='lower' or 'higher'")
        return self.better == "lower"


_ZMQ = "pyzmq over ipc:// (temp dir), pickled like Pipe.send"

ROWS: tuple[Spec, ...] = (
    Spec(
        key="get",
        name="1 child get() round trip",
        unit="us",
        kind="le",
        limit=1.0,
        ours="shared_memory.get, sync, in a child",
        base="raw Pipe ping-pong ('get', key, None)",
        limiter=(
            "the same two wake-ups as the raw ping-pong (the call runs on its thread's lane, no hop); on top, "
            "each side's Python per call (building the op, two pickles, the frame header; the host's lookup), "
            "which costs several times its warm figure right after a wake-up"
        ),
    ),
    Spec(
        key="get_zmq",
        name="1z ZeroMQ REQ/REP round trip",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        peer=True,
        ours=f"REQ in the child -> REP thread in the host, ('get', key, None); {_ZMQ}",
        base="raw Pipe ping-pong ('get', key, None)",
    ),
    Spec(
        key="get_mgr",
        name="1b child get() vs Manager().dict()",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        ours="shared_memory.get",
        base="Manager().dict().get from the same child",
    ),
    Spec(
        key="get_redis",
        name="1c child get() vs redis-py GET",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        ours="shared_memory.get",
        base="redis-py GET, loopback redis-server",
    ),
    Spec(
        key="get_redis_store",
        name="1d child get() on the Redis backend vs redis-py GET",
        unit="us",
        kind="le",
        limit=1.2,
        ours='shared_memory.get with storage="redis://..." (the child\'s own connection)',
        base="redis-py GET from the same child, loopback redis-server",
        limiter="the facade and the store's bookkeeping around one GET: key encoding, unpickling the value",
    ),
    Spec(
        key="get_redis_relay",
        name="1e child get() on Redis relayed by the host vs redis-py GET",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        ours="shared_memory.get in a child without its own connection: the host asks Redis",
        base="redis-py GET from the same child, loopback redis-server",
    ),
    Spec(
        key="set",
        name="2 child set() acknowledged",
        unit="us",
        kind="le",
        limit=1.0,
        ours="shared_memory.set, sync, in a child",
        base="raw Pipe ping-pong ('set', key, value)",
        limiter="as for get, plus the value pickled twice (as the value, then inside the request's fields)",
    ),
    Spec(
        key="set_mgr",
        name="2b child set() vs Manager().dict()",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        ours="shared_memory.set",
        base="Manager().dict()[key] = value from the same child",
    ),
    Spec(
        key="set_redis",
        name="2c child set() vs redis-py SET",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        ours="shared_memory.set",
        base="redis-py SET, loopback redis-server",
    ),
    Spec(
        key="gather",
        name="2d 100 async_get gathered vs 100 sync get",
        unit="ms",
        kind="speedup",
        limit=5.0,
        ours="asyncio.gather of 100 async_get",
        base="100 sequential sync get (same child)",
        limiter=(
            "a Task (made by gather) and a future per call, and two loop iterations per answer batch: asyncio "
            "alone (row 2f) takes about a third of our time; the baseline got ~3x faster when sync calls "
            "moved to their own lanes"
        ),
    ),
    Spec(
        key="async_get",
        name="2e one async_get on a loop round trip",
        unit="us",
        kind="le",
        limit=1.3,
        ours="await shared_memory.async_get, sequential, on the child's callback loop",
        base="raw Pipe ping-pong ('get', key, None)",
        limiter=(
            "asyncio: five system calls per call (epoll_wait twice, send, recv, getpid) where raw makes two; "
            "the raw ping-pong itself, awaited on a loop (row 2g), costs most of it"
        ),
    ),
    Spec(
        key="gather_floor",
        name="2f asyncio alone: 100 bare futures gathered vs 100 sync get",
        unit="ms",
        kind="speedup",
        limit=None,
        peer=True,
        ours=(
            "asyncio.gather of 100 calls that each await a future, all settled by one loop callback: "
            "no I/O, no pickling (the most 2d can reach here)"
        ),
        base="100 sequential sync get (same child, same runs as 2d)",
    ),
    Spec(
        key="async_floor",
        name="2g asyncio alone: raw ping-pong awaited on a loop",
        unit="us",
        kind="info",
        limit=None,
        better="lower",
        peer=True,
        ours=(
            "the raw Pipe ping-pong with its answer awaited (loop.add_reader settles a future) on the child's "
            "callback loop: the least 2e can be here"
        ),
        base="raw Pipe ping-pong ('get', key, None)",
    ),
    Spec(
        key="h2c_cb",
        name="3 host->child on_receive throughput",
        unit="msg/s",
        kind="ge",
        limit=2.0,
        ours="host send -> child passive callback",
        base="raw Pipe send -> blocking recv loop",
        limiter=(
            "the host's sending thread: ~1.6-1.8 us CPU per message (Channel.send, Hub.send, Writer.put), and it "
            "gets ~80% of a core, sharing 2 cores with the child's reader and loop; the child keeps up"
        ),
    ),
    Spec(
        key="h2c_zmq",
        name="3z ZeroMQ PUSH/PULL host->child throughput",
        unit="msg/s",
        kind="info",
        limit=None,
        better="higher",
        peer=True,
        ours=f"host PUSH -> child PULL blocking recv loop; {_ZMQ}",
        base="raw Pipe send -> blocking recv loop",
    ),
    Spec(
        key="h2c_vs_zmq",
        name="3s host->child on_receive vs ZeroMQ PUSH/PULL",
        unit="msg/s",
        kind="ge",
        limit=1.0,
        ours="host send -> child passive callback",
        base="ZeroMQ PUSH -> PULL (row 3z), same run",
        limiter="stretch target of issue #12: ZeroMQ's I/O thread batches small messages",
    ),
    Spec(
        key="h2c_async",
        name="3b host->child on_receive vs asyncio reader",
        unit="msg/s",
        kind="info",
        limit=None,
        better="higher",
        ours="host send -> child passive callback",
        base="raw Pipe -> loop.add_reader on the child's loop",
    ),
    Spec(
        key="c2h_cb",
        name="3c child->host on_receive throughput",
        unit="msg/s",
        kind="ge",
        limit=2.0,
        ours="child send -> host passive callback (host loop)",
        base="raw Pipe send -> host blocking recv loop",
        limiter=(
            "the child's sending thread, at ~93% of a core: ~1.3 us CPU per message (pickle, credit, frame, "
            "Writer.put, a write per ~400 us); the host needs ~1 us per message on its reader and loop"
        ),
    ),
    Spec(
        key="h2c_active",
        name="3d host->child active receive() throughput",
        unit="msg/s",
        kind="ge",
        limit=1.5,
        ours="host send -> child receive() loop",
        base="raw Pipe send -> blocking recv loop",
        limiter="the host's sending thread as in row 3; the child's receive() costs ~0.8 us CPU per message",
    ),
    Spec(
        key="lat_p50",
        name="4 send->callback latency p50 @50% load",
        unit="us",
        kind="le",
        limit=2.0,
        ours="host send -> child callback, paced",
        base="raw Pipe one-way, paced at the same rate, host send -> child blocking recv",
        limiter=(
            "the paced sender sends back to back until it is 100 us ahead, holding the GIL, so the backstop "
            "rarely runs: frames queued in a burst wait for the sender to sleep or to find the oldest 400 us "
            "old, then the child's reader thread wakes its loop"
        ),
    ),
    Spec(
        key="lat_p99",
        name="4b send->callback latency p99 @50% load",
        unit="us",
        kind="le",
        limit=5.0,
        ours="host send -> child callback, paced",
        base="raw Pipe one-way, paced at the same rate, host send -> child blocking recv",
        limiter="as p50; a frame left to the backstop waits for the GIL, up to the 5 ms switch interval",
    ),
    Spec(
        key="big",
        name="5 64 KiB payloads host->child",
        unit="MB/s",
        kind="ge",
        limit=1.0,
        ours="64 KiB bytes via channel -> child callback",
        base="raw Pipe send() of the same bytes",
        limiter=(
            "the child's receive side (reader thread and dispatch loop on one GIL; three copies per frame): the "
            "host, bounded at 4 MiB ahead, waits on it ~70% of the time"
        ),
    ),
    Spec(
        key="big_zmq",
        name="5z ZeroMQ PUSH/PULL 64 KiB payloads",
        unit="MB/s",
        kind="info",
        limit=None,
        better="higher",
        peer=True,
        ours=f"64 KiB bytes, host PUSH -> child PULL; {_ZMQ}",
        base="raw Pipe send() of the same bytes",
    ),
    Spec(
        key="huge",
        name="5b 1 MiB payloads host->child",
        unit="MB/s",
        kind="ge",
        limit=1.0,
        ours="1 MiB bytes via channel -> child callback",
        base="raw Pipe send() of the same bytes",
        limiter=(
            "as for 64 KiB, and ~200 us per pickle of 1 MiB (page faults of a fresh buffer); the raw baseline "
            "itself swings 0.8-2.9 GB/s with glibc malloc's state"
        ),
    ),
    Spec(
        key="huge_zmq",
        name="5y ZeroMQ PUSH/PULL 1 MiB payloads",
        unit="MB/s",
        kind="info",
        limit=None,
        better="higher",
        peer=True,
        ours=f"1 MiB bytes, host PUSH -> child PULL; {_ZMQ}",
        base="raw Pipe send() of the same bytes",
    ),
    Spec(
        key="fanin",
        name="6 fan-in: 4 children -> host",
        unit="msg/s",
        kind="ge",
        limit=1.5,
        ours="aggregate at one host callback",
        base="single-pair raw Pipe one-way",
        limiter=(
            "the host's 4 reader threads and its loop on one GIL, ~1 us per message (decoding a run of "
            "messages ~0.34 us per frame), on 2 cores shared with the four senders"
        ),
    ),
    Spec(
        key="rss",
        name="7 idle plain child RSS",
        unit="MB",
        kind="extra",
        limit=5.0,
        ours="liteyuki plain child",
        base="bare multiprocessing spawn child",
        limiter="~25 liteyuki modules; the reader and parent-watch threads (no asyncio, loguru, pydantic, typing)",
    ),
    Spec(
        key="rss_nonebot",
        name="7c idle NoneBot child RSS",
        unit="MB",
        kind="extra",
        limit=5.0,
        ours="run_nonebot child of a LiteyukiBot (~none driver, console adapter, our plugin), idle",
        base="NoneBot alone: spawn child, nonebot.init(driver='~none') + console adapter, run(), idle",
    ),
    Spec(
        key="channels",
        name="7b 1,000 named channels, host memory",
        unit="MB",
        kind="max",
        limit=5.0,
        ours="Python heap the host allocates for 1,000 set_channel() (tracemalloc; RSS growth in the note)",
        base="-",
        limiter="per-channel Condition, deque, route and registry entries",
    ),
    Spec(
        key="startup",
        name="8 start-up: host start -> child ready",
        unit="ms",
        kind="le",
        limit=1.3,
        ours="LiteyukiBot start -> plain child runs",
        base="bare spawn -> child runs",
        limiter=(
            "~25 small liteyuki modules (~3 ms, cold process) before the target runs; the bootstrap (connect, "
            "ready, two threads, the title) ~2.5 ms; the host ~1 ms before the spawn"
        ),
    ),
)

ROW_NAMES: tuple[str, ...] = tuple(spec.name for spec in ROWS)
