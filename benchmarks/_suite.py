"""The benchmark run: two phases, A/B alternation, and the table.

Phase 1 (start-up and idle memory) starts a fresh host per repeat: a
LiteyukiBot with one plain child, and a bare ``multiprocessing`` spawn of the
same interpreter, in alternating order.

Phase 2 runs one LiteyukiBot with four benchmark children. Every figure is an
A/B pair measured in the same run and, where a child takes part, in the same
pair of processes: the child has its liteyuki connection and raw pipes to the
same host. Variants alternate per repeat (forward order on even repeats,
reversed on odd ones) so drift on this shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from liteyuki import LiteyukiBot
from liteyuki.comm import Channel, get_channel, set_channel
from liteyuki.comm.storage import shared_memory

from . import _bare, _targets
from ._common import BIG, FANIN, KEY, SMALL, VALUE
from ._host import ChildLink, RedisServer, leftover_children, log, rss_mb
from ._rows import ROWS, Spec

LOG_LEVEL = "WARNING"
WAIT = 120.0  # upper bound of any single wait of the host (a stuck run fails, it never hangs)


@dataclass(frozen=True)
class Config:
    quick: bool
    repeats: int
    startup_repeats: int
    rtt_n: int  # round trips per timed run (raw pipe, liteyuki)
    slow_rtt_n: int  # round trips per timed run against Manager / redis
    msgs: int  # small messages per one-way run
    big: int  # 64 KiB payloads per run
    fan_total: int  # messages per fan-in run (all children together)
    lat_seconds: float  # duration of a paced latency run
    gather_rounds: int  # gathers of 100 per timed run
    channels: int = 1000

    @classmethod
    def full(cls) -> Config:
        return cls(False, 9, 5, 3000, 1500, 20000, 1500, 40000, 0.4, 10)

    @classmethod
    def quick_mode(cls) -> Config:
        return cls(True, 3, 2, 1000, 300, 3000, 200, 4000, 0.1, 2)


@dataclass
class Result:
    ours: list[float] = field(default_factory=list)
    base: list[float] | None = None
    note: str = ""
    skipped: str | None = None


def alternate(repeats: int, variants: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Run every variant once per repeat, forward order on even repeats and reversed on odd ones."""
    names = list(variants)
    out: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(variants[name]())
    return out


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


class Counter:
    """A host-side passive callback that counts messages and sets an event at the expected count."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = -1
        self.done = threading.Event()

    def arm(self, n: int) -> None:
        self.count = 0
        self.expected = n
        self.done.clear()

    def __call__(self, _msg: Any) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()

    def wait(self, what: str) -> None:
        if not self.done.wait(WAIT):
            raise TimeoutError(f"{what}: the host got {self.count} of {self.expected} messages within {WAIT} s")


# -- phase 1: start-up and idle memory ------------------------------------------------
def phase_startup(cfg: Config, results: dict[str, Result]) -> None:
    ctx = multiprocessing.get_context("spawn")
    t_ours: list[float] = []
    t_base: list[float] = []
    m_ours: list[float] = []
    m_base: list[float] = []

    def ours(r: int) -> None:
        name = f"idle{r}"
        t0 = perf_counter()
        bot = LiteyukiBot(pyproject=None, log_level=LOG_LEVEL, stop_grace=3.0)
        bot.process_manager.add_target(name, _targets.idle_child, (WAIT,))
        with bot.running(timeout=WAIT):
            up = get_channel(f"{name}-active").receive(timeout=WAIT)
            t_ours.append(perf_counter() - t0)
            assert up == "up", up
            pid = bot.process_manager.pid(name)
            assert pid is not None
            m_ours.append(rss_mb(pid))

    def bare(r: int) -> None:
        t0 = perf_counter()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_bare.idle, args=(child, WAIT), name=f"bench-bare{r}")
        try:
            proc.start()
            child.close()
            if not parent.poll(WAIT):
                raise TimeoutError(f"the bare child did not start within {WAIT} s")
            up = parent.recv()
            t_base.append(perf_counter() - t0)
            assert up == "up", up
            m_base.append(rss_mb(proc.pid))  # type: ignore[arg-type]
            parent.send("stop")
            proc.join(10)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            parent.close()

    for r in range(cfg.startup_repeats):
        for step in (ours, bare) if r % 2 == 0 else (bare, ours):
            step(r)
        ours_ms, base_ms = t_ours[-1] * 1e3, t_base[-1] * 1e3
        log(f"start-up {r + 1}/{cfg.startup_repeats}: liteyuki {ours_ms:.0f} ms, bare {base_ms:.0f} ms")
    results["startup"] = Result(scaled(t_ours, 1e3), scaled(t_base, 1e3))
    results["rss"] = Result(m_ours, m_base)


# -- phase 2: one host, four benchmark children -----------------------------------------
class MainPhase:
    def __init__(self, cfg: Config, results: dict[str, Result], links: list[ChildLink], redis: RedisServer) -> None:
        self.cfg = cfg
        self.results = results
        self.links = links
        self.main = links[0]
        self.redis = redis
        name = self.main.name
        self.to_passive = Channel(f"{name}-passive")
        self.to_rx = Channel(f"{name}-rx")
        self.from_active = Counter()
        get_channel(f"{name}-active").on_receive()(self.from_active)
        self.fanin = Counter()
        fanin = Channel(FANIN)
        set_channel(FANIN, fanin)
        fanin.on_receive()(self.fanin)

    def run(self) -> None:
        steps = [
            ("1,000 named channels", self.channels),
            ("round trips", self.round_trips),
            ("gather", self.gather),
            ("host->child streams", self.host_to_child),
            ("child->host streams", self.child_to_host),
            ("latency", self.latency),
            ("64 KiB payloads", self.big_payloads),
            ("fan-in", self.fan_in),
        ]
        for what, step in steps:
            t0 = perf_counter()
            step()
            log(f"{what}: {perf_counter() - t0:.1f} s")

    # -- 7b ----------------------------------------------------------------------
    def channels(self) -> None:
        n = self.cfg.channels
        grown: list[float] = []
        traced: list[float] = []
        for r in range(self.cfg.repeats):
            gc.collect()
            before = rss_mb(os.getpid())
            for i in range(n):
                name = f"bench-named-{r}-{i}"
                set_channel(name, Channel(name))
            gc.collect()
            grown.append(max(0.0, rss_mb(os.getpid()) - before))
            # The same again under tracemalloc, for the Python-heap figure behind the RSS one.
            tracemalloc.start()
            for i in range(n):
                name = f"bench-traced-{r}-{i}"
                set_channel(name, Channel(name))
            traced.append(tracemalloc.get_traced_memory()[0] / 1e6)
            tracemalloc.stop()
        note = f"tracemalloc: {statistics.median(traced):.2f} MB per {n:,}"
        self.results["channels"] = Result(grown, None, note)

    # -- 1, 2 ----------------------------------------------------------------------
    def round_trips(self) -> None:
        cfg, main = self.cfg, self.main
        for op in ("get", "set"):
            variants: dict[str, Callable[[], Any]] = {
                "ours": lambda op=op: main.ask("rtt", f"kv_{op}", cfg.rtt_n),
                "raw": lambda op=op: main.ask("rtt", f"raw_{op}", cfg.rtt_n),
                "mgr": lambda op=op: main.ask("rtt", f"mgr_{op}", cfg.slow_rtt_n),
            }
            if self.redis.port is not None:
                variants["redis"] = lambda op=op: main.ask("rtt", f"redis_{op}", cfg.slow_rtt_n)
            for variant in variants.values():  # warm-up: connections, first-call paths
                variant()
            out = {k: scaled(v, 1e6) for k, v in alternate(cfg.repeats, variants).items()}
            self.results[op] = Result(out["ours"], out["raw"])
            self.results[f"{op}_mgr"] = Result(out["ours"], out["mgr"])
            if "redis" in out:
                self.results[f"{op}_redis"] = Result(out["ours"], out["redis"])
            else:
                self.results[f"{op}_redis"] = Result(skipped=self.redis.skipped or "no redis")

    def gather(self) -> None:
        cfg, main = self.cfg, self.main
        variants = {
            "gather": lambda: main.ask("gather", 100, cfg.gather_rounds),
            "sequential": lambda: main.ask("sequential", 100, cfg.gather_rounds),
        }
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        self.results["gather"] = Result(scaled(out["gather"], 1e3), scaled(out["sequential"], 1e3))

    # -- 3 ---------------------------------------------------------------------------
    def _host_sends(self, cmd: tuple[Any, ...], send: Callable[[Any], None], n: int, payload: Any) -> float:
        """Seconds from the first send until the child reports all ``n`` received."""
        self.main.send(*cmd)
        self.main.expect("ready")
        t0 = perf_counter()
        for _ in range(n):
            send(payload)
        answer = self.main.reply(WAIT)
        elapsed = perf_counter() - t0
        assert answer == ("done",), answer
        return elapsed

    def host_to_child(self) -> None:
        cfg, n = self.cfg, self.cfg.msgs
        data_send = self.main.data.send
        variants = {
            "cb": lambda: n / self._host_sends(("expect_cb", n), self.to_passive.send, n, SMALL),
            "active": lambda: n / self._host_sends(("expect_active", n), self.to_rx.send, n, SMALL),
            "raw": lambda: n / self._host_sends(("expect_raw", n), data_send, n, SMALL),
            "raw_async": lambda: n / self._host_sends(("expect_raw_async", n), data_send, n, SMALL),
        }
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        self.results["h2c_cb"] = Result(out["cb"], out["raw"])
        self.results["h2c_async"] = Result(out["cb"], out["raw_async"])
        self.results["h2c_active"] = Result(out["active"], out["raw"])

    def child_to_host(self) -> None:
        cfg, n, main = self.cfg, self.cfg.msgs, self.main

        def ours() -> float:
            self.from_active.arm(n)
            t0 = perf_counter()
            main.send("send_active", n, SMALL)
            self.from_active.wait("child->host callback")
            elapsed = perf_counter() - t0
            assert main.reply(WAIT) == ("sent",)
            return n / elapsed

        def raw() -> float:
            recv = main.data.recv  # blocking reader (kernel receive timeout on the pipe)
            t0 = perf_counter()
            main.send("send_raw", n, SMALL)
            for _ in range(n):
                recv()
            elapsed = perf_counter() - t0
            assert main.reply(WAIT) == ("sent",)
            return n / elapsed

        ours()
        raw()
        out = alternate(cfg.repeats, {"cb": ours, "raw": raw})
        self.results["c2h_cb"] = Result(out["cb"], out["raw"])

    # -- 4 ---------------------------------------------------------------------------
    def latency(self) -> None:
        cfg, main = self.cfg, self.main
        rate = statistics.median(self.results["h2c_cb"].ours) / 2
        n = max(500, int(rate * cfg.lat_seconds))
        send = self.to_passive.send

        def ours() -> tuple[float, float, float]:
            main.send("expect_cb", n, True)
            main.expect("ready")
            achieved = paced(send, n, rate)
            answer = main.reply(WAIT)
            assert answer[0] == "done", answer
            return answer[1], answer[2], achieved

        def raw() -> tuple[float, float]:
            return main.ask("rtt_pct", "raw_get", cfg.rtt_n)

        ours()
        out = alternate(cfg.repeats, {"ours": ours, "raw": raw})
        achieved = statistics.median(a for _, _, a in out["ours"])
        note = f"paced at {achieved:,.0f} msg/s (half the median of row 3)"
        self.results["lat_p50"] = Result(
            [p50 * 1e6 for p50, _, _ in out["ours"]], [p50 * 1e6 for p50, _ in out["raw"]], note
        )
        self.results["lat_p99"] = Result(
            [p99 * 1e6 for _, p99, _ in out["ours"]], [p99 * 1e6 for _, p99 in out["raw"]], note
        )

    # -- 5 ---------------------------------------------------------------------------
    def big_payloads(self) -> None:
        cfg, n = self.cfg, self.cfg.big
        payload = os.urandom(BIG)
        mb = n * BIG / 1e6
        data_send = self.main.data.send
        variants = {
            "cb": lambda: mb / self._host_sends(("expect_cb", n), self.to_passive.send, n, payload),
            "raw": lambda: mb / self._host_sends(("expect_raw", n), data_send, n, payload),
        }
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        self.results["big"] = Result(out["cb"], out["raw"])

    # -- 6 ---------------------------------------------------------------------------
    def fan_in(self) -> None:
        cfg, links = self.cfg, self.links
        per = cfg.fan_total // len(links)
        total = per * len(links)
        main = self.main

        def ours() -> float:
            self.fanin.arm(total)
            t0 = perf_counter()
            for link in links:
                link.send("send_fanin", per, SMALL)
            self.fanin.wait("fan-in")
            elapsed = perf_counter() - t0
            for link in links:
                assert link.reply(WAIT) == ("sent",)
            return total / elapsed

        def raw() -> float:
            recv = main.data.recv
            t0 = perf_counter()
            main.send("send_raw", total, SMALL)
            for _ in range(total):
                recv()
            elapsed = perf_counter() - t0
            assert main.reply(WAIT) == ("sent",)
            return total / elapsed

        ours()
        raw()
        out = alternate(cfg.repeats, {"ours": ours, "raw": raw})
        self.results["fanin"] = Result(out["ours"], out["raw"], f"{len(links)} x {per:,} msgs vs 1 x {total:,}")


def paced(send: Callable[[float], None], n: int, rate: float) -> float:
    """Open-loop load: message ``i`` leaves at ``start + i / rate``, carrying its send time.

    The sleep paces the load generator (it waits for a point in time, not for
    any event); returns the rate achieved.
    """
    interval = 1.0 / rate
    start = perf_counter()
    for i in range(n):
        ahead = start + i * interval - perf_counter()
        if ahead > 1e-4:
            time.sleep(ahead)
        send(perf_counter())
    return n / (perf_counter() - start)


def phase_main(cfg: Config, results: dict[str, Result]) -> None:
    ctx = multiprocessing.get_context("spawn")
    redis = RedisServer()
    manager = None
    links: list[ChildLink] = []
    try:
        redis.start()
        if redis.skipped:
            log(f"redis rows skipped: {redis.skipped}")
        manager = ctx.Manager()
        mdict = manager.dict({KEY: VALUE})
        bot = LiteyukiBot(pyproject=None, log_level=LOG_LEVEL, stop_grace=3.0)
        shared_memory.set(KEY, VALUE)
        links = [ChildLink(f"bench{i}", ctx) for i in range(4)]
        for i, link in enumerate(links):
            extra = (mdict, redis.port) if i == 0 else (None, None)
            bot.process_manager.add_target(link.name, _targets.bench_child, (link.name, *link.child_ends, *extra))
        with bot.running(timeout=WAIT):
            for link in links:
                link.started()
                assert link.ask("ping") == "pong"
            MainPhase(cfg, results, links, redis).run()
    finally:
        for link in links:
            link.close()
        if manager is not None:
            manager.shutdown()
        redis.stop()


# -- the table ------------------------------------------------------------------------------
def _num(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _spread(values: list[float]) -> str:
    return f"{_num(min(values))}..{_num(max(values))}"


def _verdict(spec: Spec, ours: float, base: float | None) -> tuple[str, str, str]:
    """(ratio text, target text, met) of one row."""
    limit = spec.limit
    if spec.kind == "max":
        assert limit is not None
        return "-", f"<= {limit:g} {spec.unit}", "yes" if ours <= limit else "no"
    assert base is not None
    if spec.kind == "extra":
        assert limit is not None
        extra = ours - base
        return f"+{extra:.1f} {spec.unit}", f"+<= {limit:g} {spec.unit}", "yes" if extra <= limit else "no"
    if spec.kind == "speedup":
        assert limit is not None
        ratio = base / ours
        return f"{ratio:.2f}x faster", f">= {limit:g}x faster", "yes" if ratio >= limit else "no"
    ratio = ours / base
    if spec.kind == "le":
        assert limit is not None
        return f"{ratio:.2f}x", f"<= {limit:g}x", "yes" if ratio <= limit else "no"
    if spec.kind == "ge":
        assert limit is not None
        return f"{ratio:.2f}x", f">= {limit:g}x", "yes" if ratio >= limit else "no"
    return f"{ratio:.2f}x", "(reference)", "-"


def render(results: dict[str, Result], cfg: Config, elapsed: float) -> str:
    header = ["figure", "unit", "ours", "ours min..max", "baseline", "base min..max", "ratio", "target", "met", "note"]
    lines: list[list[str]] = []
    for spec in ROWS:
        res = results.get(spec.key)
        if res is None or res.skipped is not None:
            reason = "not measured" if res is None else res.skipped
            lines.append([spec.name, spec.unit, "-", "-", "-", "-", "-", "-", "skip", f"skipped: {reason}"])
            continue
        ours = statistics.median(res.ours)
        base = statistics.median(res.base) if res.base else None
        ratio, target, met = _verdict(spec, ours, base)
        notes = [res.note] if res.note else []
        if met == "no" and spec.limiter:
            notes.append(f"limited by: {spec.limiter}")
        lines.append(
            [
                spec.name,
                spec.unit,
                _num(ours),
                _spread(res.ours),
                "-" if base is None else _num(base),
                "-" if not res.base else _spread(res.base),
                ratio,
                target,
                met,
                "; ".join(notes),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header) - 1)]
    right = {2, 3, 4, 5, 6}

    def fmt(row: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        return " | ".join([*cells, row[-1]]).rstrip()

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 4
    mode = "quick" if cfg.quick else "full"
    out = [
        f"liteyuki-comm benchmarks ({mode} mode), {datetime.date.today().isoformat()}, "
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; medians of {cfg.repeats} repeats (start-up/RSS: {cfg.startup_repeats}), "
        f"A/B alternating; {elapsed:.0f} s",
        fmt(header),
        rule,
        *(fmt(row) for row in lines),
        "",
        "ratio = ours / baseline (for 'faster' rows: baseline / ours). Compared:",
        *(f"  {spec.name}: {spec.ours}  vs  {spec.base}" for spec in ROWS),
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few iterations, 3 repeats")
    parser.add_argument("--repeats", type=int, help="repeats per figure (default 9, start-up 5; 3 and 2 with --quick)")
    args = parser.parse_args(argv)
    cfg = Config.quick_mode() if args.quick else Config.full()
    if args.repeats:
        cfg = Config(**{**cfg.__dict__, "repeats": args.repeats, "startup_repeats": args.repeats})
    results: dict[str, Result] = {}
    t0 = perf_counter()
    log(f"{'quick' if cfg.quick else 'full'} run, {cfg.repeats} repeats")
    phase_startup(cfg, results)
    phase_main(cfg, results)
    elapsed = perf_counter() - t0
    print(render(results, cfg, elapsed), flush=True)
    left = leftover_children()
    if left:
        log(f"processes left behind: {left}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
