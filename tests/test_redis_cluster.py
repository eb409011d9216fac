"""Several hosts on one real Redis: shared state, pub/sub and cluster channels across machines' worth of processes.

Each host here is its own OS process (``tests/redis_host.py``) with its own children; the
test process is one more host on the same Redis, reading what they did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from liteyuki.comm import Channel
from liteyuki.comm.storage import shared_memory

from . import redis_targets
from .conftest import gone, handles, unique
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


class HostProcess:
    def __init__(self, *args: str) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.redis_host", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.pids: list[int] = []
        self.lines: list[str] = []  # what it printed
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.startswith("READY"):
                    self.pids = [int(p) for p in line.split()[1:]]
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise AssertionError(f"host {args} did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        _, alive = psutil.wait_procs(handles(self.pids), timeout=10)
        self.log.close()
        assert not [p for p in alive if not gone(p.pid)], f"children left behind: {alive}"


@pytest.fixture
def hosts() -> Iterator[Callable[..., HostProcess]]:
    started: list[HostProcess] = []

    def start(*args: str) -> HostProcess:
        host = HostProcess(*args)
        started.append(host)
        return host

    yield start
    for host in reversed(started):
        host.stop()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # polls a real condition in the shared store
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.timeout(120)
def test_two_hosts_with_children_share_counters_keys_and_topics(redis_server: RedisServer, host, hosts):
    url, ns = redis_server.url(1), unique("mesh")
    host(storage=url, storage_namespace=ns)
    shared_memory.set("prize", "the only one")
    a = hosts(url, ns, "A", "mesh", "2", "B")
    b = hosts(url, ns, "B", "mesh", "2", "A")
    children = ["A-0", "A-1", "B-0", "B-1"]
    wait_until(lambda: all(shared_memory.get(f"subscribed:{c}") for c in children), 60, "every subscriber")
    shared_memory.set("publish-now", True)
    wait_until(lambda: all(shared_memory.get(f"done:{c}") for c in children), 60, "every child to finish")
    wait_until(
        lambda: all(shared_memory.get(f"got:{who}") for who in [*children, "A", "B"]), 30, "the publish everywhere"
    )

    # incr from every child and both hosts adds up exactly; big ints and floats too.
    assert shared_memory.get("counter") == redis_targets.INCRS * (len(children) + 2)
    assert shared_memory.get("big") == redis_targets.BIG * len(children)
    assert shared_memory.get("float") == 0.5 * len(children)
    # compare_and_set raced by four processes on two hosts: no lost update.
    assert shared_memory.get("cas") == redis_targets.CAS_WINS * len(children)
    # setdefault: one winner seen by all; pop: exactly one process got the prize.
    assert len({shared_memory.get(f"first:{c}") for c in children}) == 1
    winners = [c for c in children if shared_memory.get(f"prize:{c}") is not None]
    assert len(winners) == 1 and shared_memory.get(f"prize:{winners[0]}") == "the only one"
    # A key set in one host is read in the other host's children.
    assert shared_memory.get("read:B-0") == shared_memory.get("read:B-1") == a.proc.pid
    assert shared_memory.get("read:A-0") == shared_memory.get("read:A-1") == b.proc.pid
    # A publish from a child of host A reached each subscriber in every process of both hosts once.
    assert all(shared_memory.get(f"got:{who}") == 1 for who in [*children, "A", "B"])
    assert all(shared_memory.get(f"news:{c}") == "from A-0" for c in children)

    # The namespace holds everything this cluster wrote; nothing outside it (database 1 is this test's).
    import redis

    raw = redis.Redis.from_url(url)
    names = list(raw.scan_iter(count=1000))
    raw.close()
    assert names and all(n.startswith(f"{ns}:".encode()) for n in names), names[:10]


@pytest.mark.timeout(120)
def test_cluster_channel_delivers_each_message_once_across_hosts_despite_a_kill_9(
    redis_server: RedisServer, host, hosts
):
    import redis

    url, ns = redis_server.url(2), unique("work")
    host(storage=url, storage_namespace=ns, cluster_claim_idle=1.0)
    hosts(url, ns, "A", "cluster", "2")
    hosts(url, ns, "B", "cluster", "2")
    receivers = ["A-0", "A-1", "B-0", "B-1"]
    wait_until(lambda: all(shared_memory.get(f"ready:{r}") for r in receivers), 60, "every receiver")
    chan = Channel("work", cluster=True)
    total = 1000
    for i in range(total):
        chan.send(i)

    stalled = wait_until(lambda: shared_memory.get("stalled-pid"), 60, "a receiver to stall mid-message")
    # Kill it once everything it finished is acknowledged: what it still holds is exactly what it never handled.
    raw = redis.Redis.from_url(url)
    stream = f"{ns}:chan:work"

    def only_unhandled_pending() -> bool:
        mark = f":{stalled}:".encode()
        consumers = [c["name"] for c in raw.xinfo_consumers(stream, "receivers") if mark in c["name"]]
        entries = raw.xpending_range(stream, "receivers", "-", "+", 10_000, consumername=consumers[0])
        ids = [e["message_id"] for e in entries]
        values = [shared_memory.get(f"got:{_payload(raw, stream, i)}") for i in ids]
        return bool(ids) and all(v is None for v in values)

    wait_until(only_unhandled_pending, 30, "the stalled receiver's acknowledgements")
    os.kill(stalled, signal.SIGKILL)

    def all_handled() -> bool:
        return all(v is not None for v in raw.mget([f"{ns}:kv:sgot:{i}" for i in range(total)]))

    wait_until(all_handled, 60, "every message to be handled")
    counts = [shared_memory.get(f"got:{i}") for i in range(total)]
    assert counts == [1] * total, [i for i, c in enumerate(counts) if c != 1]
    by = {r: shared_memory.get(f"by:{r}", 0) for r in receivers}
    assert sum(by.values()) == total and sum(1 for n in by.values() if n) >= 2, by
    assert shared_memory.get(f"got:{shared_memory.get('stalled-on')}") == 1  # the stalled one went to another
    assert raw.xlen(stream) == 0  # acknowledged messages are deleted from the stream
    raw.close()


def _payload(raw: Any, stream: str, entry_id: bytes) -> Any:
    import pickle

    entries = raw.xrange(stream, entry_id, entry_id)
    return pickle.loads(entries[0][1][b"d"]) if entries else None


@pytest.mark.timeout(120)
def test_the_readme_two_machine_example_runs_as_written(redis_server: RedisServer, tmp_path: Path):
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = dict(re.findall(r"```python\n# machine ([AB]): bot\.py\n(.*?)```", readme, re.S))
    assert set(blocks) == {"A", "B"}
    url, ns = "rediss://mybot:LONG-RANDOM-PASSWORD@redis.internal:6380/0", unique("readme")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: dict[str, subprocess.Popen[str]] = {}
    lines: dict[str, list[str]] = {"A": [], "B": []}
    try:
        for machine in ("B", "A"):  # the worker first: it is listening when the jobs come
            folder = tmp_path / machine
            folder.mkdir()
            code = blocks[machine].replace(url, redis_server.url(7)).replace('"mybot"', repr(ns))
            (folder / "bot.py").write_text(code, encoding="utf-8")
            procs[machine] = subprocess.Popen(
                [sys.executable, "bot.py"],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            out = procs[machine].stdout
            threading.Thread(target=lambda out=out, m=machine: lines[m].extend(out), daemon=True).start()
            wait_until(lambda m=machine: any("shared_memory: redis at" in x for x in lines[m]), 60, f"{machine} up")
        wait_until(lambda: sum("rendered" in x for x in lines["B"]) == 100, 60, "100 jobs done on machine B")
        wait_until(lambda: "announcement: 100 jobs queued\n" in lines["B"], 30, "the announcement on machine B")
        assert any("(100 done in the whole cluster)" in x for x in lines["B"])
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                assert proc.wait(30) == 0
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise


@pytest.mark.timeout(120)
def test_two_hosts_ride_out_a_kill_9_of_redis_and_its_restart(own_redis: RedisServer, host, hosts):
    from liteyuki.comm import StorageUnavailableError

    def store(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except StorageUnavailableError:
            return None

    url, ns = own_redis.url(), unique("phoenix")
    host(storage=url, storage_namespace=ns, call_timeout=3.0)
    a = hosts(url, ns, "A", "resilient", "2")
    b = hosts(url, ns, "B", "resilient", "2")
    children = ["A-0", "A-1", "B-0", "B-1"]
    wait_until(lambda: all(shared_memory.get(f"beat:{c}") for c in children), 60, "every child's beat")

    own_redis.kill()
    said = lambda: "".join(a.lines + b.lines)  # noqa: E731
    try:
        wait_until(lambda: all(f"SAID down {c}\n" in said() for c in children), 30, "every child to see Redis gone")
    except AssertionError as exc:  # keep what each host said and logged (a log line inside a SAID was one cause)
        raise AssertionError(f"{exc}\nsaid:\n{said()}\nhost A log:\n{a.output()}\nhost B log:\n{b.output()}") from None
    own_redis.start()  # the same port, empty (no persistence)

    # Every child's calls work again by themselves: the beats come back.
    wait_until(lambda: all(store(lambda c=c: shared_memory.get(f"beat:{c}")) for c in children), 30, "beats")
    # Subscriptions came back: a publish reaches every child (publish until it did: none is kept meanwhile).
    n = 0

    def ponged() -> bool:
        nonlocal n
        n += 1
        store(lambda: shared_memory.publish("ping", n))
        return all(store(lambda c=c: shared_memory.get(f"pong:{c}")) for c in children)

    wait_until(ponged, 30, "a publish to reach every child after the restart")
    # Stream consumers came back: 100 jobs, each handled once.
    jobs = Channel("jobs-after-restart", cluster=True)
    for i in range(100):
        jobs.send(i)
    wait_until(lambda: all(shared_memory.get(f"job:{i}") for i in range(100)), 60, "the jobs after the restart")
    assert [shared_memory.get(f"job:{i}") for i in range(100)] == [1] * 100
