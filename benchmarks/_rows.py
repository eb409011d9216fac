"""The rows of the table: what each figure compares and what it has to reach.

Standard library only, so the smoke test can import ``ROW_NAMES`` cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

# How a row's verdict is computed from the medians (ours, base):
#   "le"      ours / base <= limit   (times: lower is better)
#   "ge"      ours / base >= limit   (rates: higher is better)
#   "speedup" base / ours >= limit   (ours is the faster way to do the baseline's work)
#   "extra"   ours - base <= limit   (memory beyond the baseline)
#   "max"     ours <= limit          (no baseline)
#   "info"    ratio shown, no target (a reference point)


@dataclass(frozen=True)
class Spec:
    key: str
    name: str
    unit: str
    kind: str
    limit: float | None
    ours: str  # what "ours" measures
    base: str  # what "baseline" measures
    limiter: str = ""  # what limits it, printed when the target is missed (from profiling)


ROWS: tuple[Spec, ...] = (
    Spec(
        key="get",
        name="1 child get() round trip",
        unit="us",
        kind="le",
        limit=1.3,
        ours="shared_memory.get, sync, in a child",
        base="raw Pipe ping-pong ('get', key, None)",
        limiter=(
            "one more thread hop (child reader -> caller, + GIL hand-off) and ~2x the CPU per call (sockets "
            "with timeouts poll before each I/O)"
        ),
    ),
    Spec(
        key="get_mgr",
        name="1b child get() vs Manager().dict()",
        unit="us",
        kind="info",
        limit=None,
        ours="shared_memory.get",
        base="Manager().dict().get from the same child",
    ),
    Spec(
        key="get_redis",
        name="1c child get() vs redis-py GET",
        unit="us",
        kind="info",
        limit=None,
        ours="shared_memory.get",
        base="redis-py GET, loopback redis-server",
    ),
    Spec(
        key="set",
        name="2 child set() acknowledged",
        unit="us",
        kind="le",
        limit=1.3,
        ours="shared_memory.set, sync, in a child",
        base="raw Pipe ping-pong ('set', key, value)",
        limiter="as for get (an extra thread hop, ~2x CPU per call), plus pickling the value",
    ),
    Spec(
        key="set_mgr",
        name="2b child set() vs Manager().dict()",
        unit="us",
        kind="info",
        limit=None,
        ours="shared_memory.set",
        base="Manager().dict()[key] = value from the same child",
    ),
    Spec(
        key="set_redis",
        name="2c child set() vs redis-py SET",
        unit="us",
        kind="info",
        limit=None,
        ours="shared_memory.set",
        base="redis-py SET, loopback redis-server",
    ),
    Spec(
        key="gather",
        name="2d 100 async_get gathered vs 100 sync get",
        unit="ms",
        kind="speedup",
        limit=3.0,
        ours="asyncio.gather of 100 async_get",
        base="100 sequential sync get (same child)",
        limiter=(
            "no batching: one send() per request and per reply, one call_soon_threadsafe wake-up per "
            "reply, a Task per call"
        ),
    ),
    Spec(
        key="h2c_cb",
        name="3 host->child on_receive throughput",
        unit="msg/s",
        kind="ge",
        limit=1.5,
        ours="host send -> child passive callback",
        base="raw Pipe send -> blocking recv loop",
        limiter="per-message Python work on both sides (route, encode, decode, drain, callback dispatch)",
    ),
    Spec(
        key="h2c_async",
        name="3b host->child on_receive vs asyncio reader",
        unit="msg/s",
        kind="info",
        limit=None,
        ours="host send -> child passive callback",
        base="raw Pipe -> loop.add_reader on the child's loop",
    ),
    Spec(
        key="c2h_cb",
        name="3c child->host on_receive throughput",
        unit="msg/s",
        kind="ge",
        limit=1.5,
        ours="child send -> host passive callback (host loop)",
        base="raw Pipe send -> host blocking recv loop",
        limiter=(
            "the child's send path (~5.5 us/msg: pickle, frame encode, outbox lock); the host reader "
            "wakes its loop once per small batch"
        ),
    ),
    Spec(
        key="h2c_active",
        name="3d host->child active receive() throughput",
        unit="msg/s",
        kind="ge",
        limit=1.0,
        ours="host send -> child receive() loop",
        base="raw Pipe send -> blocking recv loop",
        limiter="receive() takes the channel's condition and unpickles per message",
    ),
    Spec(
        key="lat_p50",
        name="4 send->callback latency p50 @50% load",
        unit="us",
        kind="info",
        limit=None,
        ours="host send -> child callback, paced",
        base="raw Pipe ping-pong / 2, p50",
    ),
    Spec(
        key="lat_p99",
        name="4b send->callback latency p99 @50% load",
        unit="us",
        kind="info",
        limit=None,
        ours="host send -> child callback, paced",
        base="raw Pipe ping-pong / 2, p99",
    ),
    Spec(
        key="big",
        name="5 64 KiB payloads host->child",
        unit="MB/s",
        kind="ge",
        limit=0.8,
        ours="64 KiB bytes via channel -> child callback",
        base="raw Pipe send() of the same bytes",
        limiter=(
            "allocation churn: FrameDecoder.feed re-grows its buffer per read (~500 page faults per MiB) and"
            " copies each frame twice"
        ),
    ),
    Spec(
        key="fanin",
        name="6 fan-in: 4 children -> host",
        unit="msg/s",
        kind="ge",
        limit=1.0,
        ours="aggregate at one host callback",
        base="single-pair raw Pipe one-way",
        limiter="the host routes every message under one lock with 4 reader threads and the loop on one GIL",
    ),
    Spec(
        key="rss",
        name="7 idle plain child RSS",
        unit="MB",
        kind="extra",
        limit=10.0,
        ours="liteyuki plain child",
        base="bare multiprocessing spawn child",
        limiter="imports: loguru + asyncio ~9 MB, liteyuki modules ~3.5 MB; threads and the dispatch loop ~2 MB",
    ),
    Spec(
        key="channels",
        name="7b 1,000 named channels, host memory",
        unit="MB",
        kind="max",
        limit=5.0,
        ours="host RSS growth for 1,000 set_channel()",
        base="-",
        limiter="per-channel Condition, deque, route and registry entries",
    ),
    Spec(
        key="startup",
        name="8 start-up: host start -> child ready",
        unit="ms",
        kind="le",
        limit=1.5,
        ours="LiteyukiBot start -> plain child runs",
        base="bare spawn -> child runs",
        limiter=(
            "the child imports liteyuki (~150 ms: asyncio, loguru, host-only _bot/_plugins) before it "
            "connects; host side < 5 ms"
        ),
    ),
)

ROW_NAMES: tuple[str, ...] = tuple(spec.name for spec in ROWS)
