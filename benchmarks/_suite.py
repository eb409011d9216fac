"""The benchmark run: N full runs of three phases, A/B alternation, and the table.

Phase 1 (start-up and idle memory) starts a fresh host per repeat: a
LiteyukiBot with one plain child, and a bare ``multiprocessing`` spawn of the
same interpreter, in alternating order. Phase 1b does the same with NoneBot:
our ``run_nonebot`` child of a LiteyukiBot vs NoneBot alone in a spawn child.

Phase 2 runs one LiteyukiBot with four benchmark children. Every figure is an
A/B pair measured in the same run and, where a child takes part, in the same
pair of processes: the child has its liteyuki connection and raw pipes to the
same host. Variants alternate per repeat (forward order on even repeats,
reversed on odd ones) so drift on this shared machine hits both sides alike.
ZeroMQ (pyzmq, ``ipc://``) is a reference peer measured in the same
alternation, between the same host and child processes.

``--runs N`` repeats all phases N times (fresh processes each time) and
records the load average and the CPU time stolen by a hypervisor around each
run; the table shows every run's figure and judges the worst (``_report``).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import gc
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from liteyuki import LiteyukiBot
from liteyuki.comm import Channel, get_channel, lowlevel, set_channel
from liteyuki.comm.storage import shared_memory
from liteyuki.process import run_nonebot

from . import _bare, _idle, _nb_alone, _targets
from ._common import BIG, FANIN, HUGE, KEY, SMALL, VALUE
from ._host import ChildLink, RedisServer, leftover_children, log, rss_mb
from ._report import (
    QUIET_STEAL_PERCENT,
    Result,
    Run,
    cpu_times,
    is_quiet,
    render,
    steal_percent,
    to_json,
    write_json,
)
from ._zmq import ZmqPeer

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
    huge: int  # 1 MiB payloads per run
    fan_total: int  # messages per fan-in run (all children together)
    lat_seconds: float  # duration of a paced latency run
    gather_rounds: int  # gathers of 100 per timed run
    nonebot_repeats: int  # NoneBot child pairs (row 7c)
    channels: int = 1000

    @classmethod
    def full(cls) -> Config:
        return cls(False, 9, 5, 3000, 1500, 20000, 1500, 150, 40000, 0.4, 10, 3)

    @classmethod
    def quick_mode(cls) -> Config:
        return cls(True, 3, 2, 1000, 300, 3000, 200, 20, 4000, 0.1, 2, 1)


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
        bot.process_manager.add_target(name, _idle.idle_child, (WAIT,))
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


# -- phase 1b: idle NoneBot children -----------------------------------------------------
NB_PYPROJECT = """\
# Written by `python -m benchmarks` for row 7c: our NoneBot child loads one plugin that says "up".
[tool.nonebot]
plugin_dirs = []

[tool.nonebot.plugins]
"@local" = ["benchmarks.nb_ready"]
"""


@contextlib.contextmanager
def children_print_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr while children are spawned, so stdout carries the table only.

    NoneBot's default log sink is stdout, and its "initializing" line comes before
    any log level applies; spawned children inherit fd 1.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def phase_nonebot(cfg: Config, results: dict[str, Result]) -> None:
    """Row 7c: idle RSS of our NoneBot child vs NoneBot alone, fresh processes per repeat."""
    ctx = multiprocessing.get_context("spawn")
    m_ours: list[float] = []
    m_base: list[float] = []
    # Never draw the console adapter's UI on the terminal the benchmark runs in.
    os.environ.setdefault("LITEYUKI_CONSOLE", "headless")
    folder = tempfile.mkdtemp(prefix="liteyuki-bench-nb-")
    pyproject = Path(folder, "pyproject.toml")
    pyproject.write_text(NB_PYPROJECT, encoding="utf-8")

    def ours() -> None:
        bot = LiteyukiBot(pyproject=None, log_level=LOG_LEVEL, stop_grace=10.0)
        kwargs = {"pyproject": str(pyproject), "log_level": "WARNING"}
        bot.process_manager.add_target("nonebot", run_nonebot, kwargs=kwargs)
        with bot.running(timeout=WAIT):
            up = get_channel("nonebot-active").receive(timeout=WAIT)
            assert up == "up", up
            pid = bot.process_manager.pid("nonebot")
            assert pid is not None
            m_ours.append(rss_mb(pid))

    def alone() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_nb_alone.nonebot_alone, args=(child, WAIT), name="bench-nonebot-alone")
        try:
            proc.start()
            child.close()
            if not parent.poll(WAIT):
                raise TimeoutError(f"NoneBot alone did not start within {WAIT} s")
            up = parent.recv()
            assert up == "up", up
            m_base.append(rss_mb(proc.pid))  # type: ignore[arg-type]
            parent.send("stop")
            proc.join(30)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            parent.close()

    try:
        with children_print_to_stderr():
            for r in range(cfg.nonebot_repeats):
                for step in (ours, alone) if r % 2 == 0 else (alone, ours):
                    step()
                log(f"NoneBot {r + 1}/{cfg.nonebot_repeats}: ours {m_ours[-1]:.1f} MB, alone {m_base[-1]:.1f} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["rss_nonebot"] = Result(m_ours, m_base)


# -- phase 2: one host, four benchmark children -----------------------------------------
class MainPhase:
    def __init__(
        self, cfg: Config, results: dict[str, Result], links: list[ChildLink], redis: RedisServer, zmq: ZmqPeer
    ) -> None:
        self.cfg = cfg
        self.results = results
        self.links = links
        self.main = links[0]
        self.redis = redis
        self._relay_store: Any = None  # the host's store on Redis, for row 1e
        self.zmq = zmq
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
            ("64 KiB and 1 MiB payloads", self.big_payloads),
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
            # The figure is what tracemalloc sees the channels allocate. RSS growth (in the
            # note) depends on what the process freed before: in the second and third run of
            # one `--runs 3` the allocator reused pages the first run's host had let go of,
            # and it read 0.00 MB.
            tracemalloc.start()
            for i in range(n):
                name = f"bench-traced-{r}-{i}"
                set_channel(name, Channel(name))
            traced.append(tracemalloc.get_traced_memory()[0] / 1e6)
            tracemalloc.stop()
            gc.collect()
            before = rss_mb(os.getpid())
            for i in range(n):
                name = f"bench-named-{r}-{i}"
                set_channel(name, Channel(name))
            gc.collect()
            grown.append(max(0.0, rss_mb(os.getpid()) - before))
        note = f"RSS growth: {statistics.median(grown):.2f} MB per {n:,}"
        self.results["channels"] = Result(traced, None, note)

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
                if op == "get":  # the Redis backend: the child's own connection, or relayed by the host
                    variants["redis_kv"] = lambda: main.ask("rtt", "redis_kv_get", cfg.slow_rtt_n)
                    variants["redis_relay"] = lambda: self._host_on_redis(
                        lambda: main.ask("rtt", "kv_get", cfg.slow_rtt_n)
                    )
            if op == "get":
                variants["async"] = lambda: main.ask("async_rtt", cfg.rtt_n)
                variants["async_raw"] = lambda: main.ask("async_raw_rtt", cfg.rtt_n)
                if self.zmq.endpoints is not None:
                    variants["zmq"] = lambda: main.ask("rtt", "zmq_get", cfg.rtt_n)
            for variant in variants.values():  # warm-up: connections, first-call paths
                variant()
            out = {k: scaled(v, 1e6) for k, v in alternate(cfg.repeats, variants).items()}
            self.results[op] = Result(out["ours"], out["raw"])
            if op == "get":
                self.results["async_get"] = Result(out["async"], out["raw"])
                self.results["async_floor"] = Result(out["async_raw"], out["raw"])
                if "zmq" in out:
                    self.results["get_zmq"] = Result(out["zmq"], out["raw"])
                else:
                    self.results["get_zmq"] = Result(skipped=self.zmq.skipped or "no ZeroMQ")
            self.results[f"{op}_mgr"] = Result(out["ours"], out["mgr"])
            if "redis" in out:
                self.results[f"{op}_redis"] = Result(out["ours"], out["redis"])
            else:
                self.results[f"{op}_redis"] = Result(skipped=self.redis.skipped or "no redis")
            if op == "get":
                for key, variant in (("get_redis_store", "redis_kv"), ("get_redis_relay", "redis_relay")):
                    if variant in out:
                        self.results[key] = Result(out[variant], out["redis"])
                    else:
                        self.results[key] = Result(skipped=self.redis.skipped or "no redis")

    def _host_on_redis(self, ask: Callable[[], Any]) -> Any:
        """Run ``ask`` while the host's store is on Redis (a child without its own connection asks the host)."""
        hub = lowlevel.current()
        if self._relay_store is None:
            self._relay_store = lowlevel.redis_store(f"redis://127.0.0.1:{self.redis.port}/0", "bench")
        hub.store_backend = self._relay_store
        try:
            shared_memory.set(KEY, VALUE)
            return ask()
        finally:
            hub.store_backend = None

    def gather(self) -> None:
        cfg, main = self.cfg, self.main
        variants = {
            "gather": lambda: main.ask("gather", 100, cfg.gather_rounds),
            "sequential": lambda: main.ask("sequential", 100, cfg.gather_rounds),
            "floor": lambda: main.ask("gather_floor", 100, cfg.gather_rounds),
        }
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        sequential = scaled(out["sequential"], 1e3)
        self.results["gather"] = Result(scaled(out["gather"], 1e3), sequential)
        self.results["gather_floor"] = Result(scaled(out["floor"], 1e3), sequential)

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
        push = self.zmq.push
        if self.zmq.endpoints is not None:
            variants["zmq"] = lambda: n / self._host_sends(("expect_zmq", n), push.send_pyobj, n, SMALL)
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        self.results["h2c_cb"] = Result(out["cb"], out["raw"])
        if "zmq" in out:
            self.results["h2c_zmq"] = Result(out["zmq"], out["raw"])
            self.results["h2c_vs_zmq"] = Result(out["cb"], out["zmq"])
        else:
            skipped = self.zmq.skipped or "no ZeroMQ"
            self.results["h2c_zmq"] = Result(skipped=skipped)
            self.results["h2c_vs_zmq"] = Result(skipped=skipped)
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
        """Row 4: the same paced, timestamped one-way load through a channel and through a raw pipe."""
        cfg, main = self.cfg, self.main
        rate = statistics.median(self.results["h2c_cb"].ours) / 2
        n = max(500, int(rate * cfg.lat_seconds))

        def paced_run(cmd: tuple[Any, ...], send: Callable[[float], None]) -> tuple[float, float, float]:
            main.send(*cmd)
            main.expect("ready")
            achieved = paced(send, n, rate)
            answer = main.reply(WAIT)
            assert answer[0] == "done", answer
            return answer[1], answer[2], achieved

        variants = {
            "ours": lambda: paced_run(("expect_cb", n, True), self.to_passive.send),
            "raw": lambda: paced_run(("expect_raw_lat", n), main.data.send),
        }
        for variant in variants.values():
            variant()
        out = alternate(cfg.repeats, variants)
        ours_rate = statistics.median(a for _, _, a in out["ours"])
        raw_rate = statistics.median(a for _, _, a in out["raw"])
        note = f"paced at {ours_rate:,.0f} msg/s, raw at {raw_rate:,.0f} (target: half the median of row 3)"
        for key, i in (("lat_p50", 0), ("lat_p99", 1)):
            self.results[key] = Result([s[i] * 1e6 for s in out["ours"]], [s[i] * 1e6 for s in out["raw"]], note)

    # -- 5 ---------------------------------------------------------------------------
    def big_payloads(self) -> None:
        """Rows 5 and 5b (and ZeroMQ's 5z, 5y): one payload size at a time, variants alternated."""
        for size, n, key in ((BIG, self.cfg.big, "big"), (HUGE, self.cfg.huge, "huge")):
            self._payload_rows(size, n, key)

    def _payload_rows(self, size: int, n: int, key: str) -> None:
        payload = os.urandom(size)
        mb = n * size / 1e6
        data_send = self.main.data.send
        variants = {
            "cb": lambda: mb / self._host_sends(("expect_cb", n), self.to_passive.send, n, payload),
            "raw": lambda: mb / self._host_sends(("expect_raw", n), data_send, n, payload),
        }
        push = self.zmq.push
        if self.zmq.endpoints is not None:
            variants["zmq"] = lambda: mb / self._host_sends(("expect_zmq", n), push.send_pyobj, n, payload)
        for variant in variants.values():
            variant()
        out = alternate(self.cfg.repeats, variants)
        self.results[key] = Result(out["cb"], out["raw"])
        if "zmq" in out:
            self.results[f"{key}_zmq"] = Result(out["zmq"], out["raw"])
        else:
            self.results[f"{key}_zmq"] = Result(skipped=self.zmq.skipped or "no ZeroMQ")

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
    zmq = ZmqPeer()
    manager = None
    links: list[ChildLink] = []
    try:
        redis.start()
        if redis.skipped:
            log(f"redis rows skipped: {redis.skipped}")
        zmq.start()
        if zmq.skipped:
            log(f"ZeroMQ rows skipped: {zmq.skipped}")
        manager = ctx.Manager()
        mdict = manager.dict({KEY: VALUE})
        bot = LiteyukiBot(pyproject=None, log_level=LOG_LEVEL, stop_grace=3.0)
        shared_memory.set(KEY, VALUE)
        links = [ChildLink(f"bench{i}", ctx) for i in range(4)]
        for i, link in enumerate(links):
            extra = (mdict, redis.port, zmq.endpoints) if i == 0 else (None, None, None)
            bot.process_manager.add_target(link.name, _targets.bench_child, (link.name, *link.child_ends, *extra))
        with bot.running(timeout=WAIT):
            for link in links:
                link.started()
                assert link.ask("ping") == "pong"
                Channel(f"{link.name}-loop").send("hello", timeout=WAIT)
                assert link.ask("loop") == "bound"
            MainPhase(cfg, results, links, redis, zmq).run()
    finally:
        for link in links:
            link.close()
        if manager is not None:
            manager.shutdown()
        redis.stop()
        zmq.stop()


# -- runs and output ------------------------------------------------------------------------
PHASES = {"startup": "phase_startup", "nonebot": "phase_nonebot", "main": "phase_main"}


def byte_compile() -> None:
    """Write the .pyc files of our packages before anything is measured.

    A child imports the package from source; without this the first start-up
    (after an edit, or a fresh checkout) would time the compilation, not the
    start-up (row 8). Only stale files are compiled; the children then load
    the cached bytecode, as an installed package does.
    """
    import importlib.util

    for name in ("liteyuki", "nonebot_plugin_liteyuki_comm", __package__):
        spec = importlib.util.find_spec(name)  # found, not imported (the plugin needs NoneBot set up)
        for folder in (spec and spec.submodule_search_locations) or ():
            compileall.compile_dir(folder, quiet=1)


def one_run(cfg: Config, index: int, total: int, phases: tuple[str, ...] = tuple(PHASES)) -> Run:
    run = Run(index, os.getloadavg())
    log(f"run {index}/{total} ({'quick' if cfg.quick else 'full'}, {cfg.repeats} repeats), load {run.load_before}")
    cpu_before = cpu_times()
    t0 = perf_counter()
    for phase in phases:
        globals()[PHASES[phase]](cfg, run.results)
    run.seconds = perf_counter() - t0
    run.load_after = os.getloadavg()
    run.steal = steal_percent(cpu_before, cpu_times())
    log(f"run {index}/{total} done in {run.seconds:.0f} s, load {run.load_after}, steal {run.steal}")
    return run


def collect_runs(wanted: int, max_runs: int, run_once: Callable[[int], Run]) -> tuple[list[Run], list[Run]]:
    """Make runs until the last ``wanted`` are all quiet, or ``max_runs`` were made.

    Returns (the last ``wanted`` runs, the runs before them). Quiet is judged on what the
    hypervisor stole (``is_quiet``), never on the figures, so keeping the last quiet
    stretch picks no result; a system with no steal figure counts as quiet. If no such
    stretch came within ``max_runs``, the last ``wanted`` runs are returned anyway and
    the table marks those that were not quiet.
    """
    made: list[Run] = []
    while len(made) < max_runs:
        made.append(run_once(len(made) + 1))
        tail = made[-wanted:]
        if len(tail) == wanted and all(is_quiet(run) is not False for run in tail):
            break
    return made[-wanted:], made[:-wanted]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few iterations, 3 repeats")
    parser.add_argument(
        "--repeats", type=_positive, help="repeats per figure (default 9, start-up 5; 3 and 2 with --quick)"
    )
    parser.add_argument(
        "--runs", type=_positive, default=1, help="full runs in a row; the table judges the worst (default 1)"
    )
    parser.add_argument(
        "--only",
        choices=tuple(PHASES),
        action="append",
        help="run only this phase (repeatable): startup = rows 7, 8; nonebot = 7c; main = the rest",
    )
    parser.add_argument(
        "--max-runs",
        type=_positive,
        help=(
            "keep making runs until the last --runs of them were all on a quiet machine (at most "
            f"{QUIET_STEAL_PERCENT:g} %% of CPU time stolen by the hypervisor), up to this many in all; "
            "the runs left out are listed (default: exactly --runs runs)"
        ),
    )
    parser.add_argument("--json", metavar="PATH", help="also write every row of every run as JSON to PATH")
    args = parser.parse_args(argv)
    max_runs = args.runs if args.max_runs is None else args.max_runs
    if max_runs < args.runs:
        parser.error(f"--max-runs ({max_runs}) must be at least --runs ({args.runs})")
    cfg = Config.quick_mode() if args.quick else Config.full()
    if args.repeats:
        cfg = Config(**{**cfg.__dict__, "repeats": args.repeats, "startup_repeats": args.repeats})
    mode = "quick" if cfg.quick else "full"
    t0 = perf_counter()
    phases = tuple(args.only) if args.only else tuple(PHASES)
    byte_compile()
    runs, left_out = collect_runs(args.runs, max_runs, lambda index: one_run(cfg, index, max_runs, phases))
    elapsed = perf_counter() - t0
    print(render(runs, mode, cfg.repeats, cfg.startup_repeats, elapsed, left_out), flush=True)
    if args.json:
        meta = {
            "mode": mode,
            "runs": args.runs,
            "repeats": cfg.repeats,
            "startup_repeats": cfg.startup_repeats,
            "nonebot_repeats": cfg.nonebot_repeats,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "seconds": elapsed,
            "max_runs": max_runs,
        }
        write_json(args.json, to_json(runs, meta, left_out))
        log(f"wrote {args.json}")
    left = leftover_children()
    if left:
        log(f"processes left behind: {left}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
