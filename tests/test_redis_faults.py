"""Redis storage when things go wrong: bad settings, no redis-py, no server, a server killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import liteyuki
from liteyuki import LiteyukiBot
from liteyuki.comm import Channel, CommTimeoutError, StorageUnavailableError, get_channel
from liteyuki.comm.storage import shared_memory

from . import targets
from .conftest import unique
from .redis_server import RedisServer, free_port
from .test_channels import ask


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"storage": "http://127.0.0.1:6379"}, r"^storage must be 'memory' or a redis://, rediss:// or unix:// URL"),
        ({"storage": "memcached"}, r"^storage must be 'memory' or a redis://, rediss:// or unix:// URL"),
        ({"storage": 6379}, r"^storage must be 'memory' or a redis:// URL, got 6379$"),
        ({"storage": "redis://127.0.0.1:notaport/0"}, r"has a port that is not a number$"),
        ({"storage": "redis:///0"}, r"names no host \(redis://HOST:PORT/DB\)$"),
        ({"storage": "redis://127.0.0.1:6379/first"}, r"the database after the host must be a number, got 'first'$"),
        ({"storage": "redis://127.0.0.1", "storage_namespace": "bots*"}, r"^storage_namespace must be 1-100 letters"),
        ({"storage": "redis://127.0.0.1", "storage_namespace": "a[b]"}, r"no wildcard such as \* \? \[ \]"),
        ({"storage": "redis://127.0.0.1", "storage_namespace": ""}, r"^storage_namespace must be"),
        ({"storage": "redis://127.0.0.1", "storage_namespace": "a:b"}, r"no ':'\), got 'a:b'$"),
        ({"storage": "redis://127.0.0.1", "cluster_claim_idle": 0}, r"^cluster_claim_idle must be a positive number"),
    ],
)
def test_bad_storage_settings_fail_at_construction(config: dict[str, Any], message: str):
    from liteyuki import get_config

    before = get_config("storage_namespace"), get_config("pyproject")
    with pytest.raises(ValueError, match=message):
        LiteyukiBot(**{"pyproject": "changed.toml", "storage_namespace": "changed", **config})
    assert (get_config("storage_namespace"), get_config("pyproject")) == before  # nothing changed


def test_storage_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LITEYUKI_STORAGE", "ftp://nowhere")
    with pytest.raises(ValueError, match=r"unknown scheme 'ftp'"):
        LiteyukiBot(pyproject=None)
    bot = LiteyukiBot(pyproject=None, storage="memory")  # the keyword wins over the variable
    assert bot.hub.store_backend is None
    bot.hub.close()


def test_missing_redis_py_names_the_extra_to_install():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from liteyuki import LiteyukiBot\n"
        "try:\n"
        "    LiteyukiBot(pyproject=None, storage='redis://127.0.0.1:1/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == (
        "storage on Redis needs redis-py, which is not installed: pip install 'nonebot-plugin-liteyuki-comm[redis]'"
    ), out.stderr


def test_unreachable_redis_at_start_the_host_starts_and_storage_calls_fail_clearly(host):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    name = unique()
    started = time.monotonic()
    host({name: targets.agent}, storage=url, call_timeout=2.0)
    assert time.monotonic() - started < 30
    with pytest.raises(StorageUnavailableError, match=r"^redis at redis://127\.0\.0\.1:\d+/0 is unavailable \(get\)"):
        shared_memory.get("k")
    error = ask(name, "call", "incr", "k")
    assert type(error) is StorageUnavailableError and "is unavailable (incr)" in str(error)
    assert isinstance(error, ConnectionError)
    assert ask(name, "echo", "still serving") == "still serving"  # channels do not need Redis
    status = liteyuki.status()  # comes all the same, with what kept the store from being counted
    assert status.store.keys is None and status.store.bytes is None and status.store.backend == url
    assert status.store.error and f"store ({url}): not counted (" in status.format()
    from_child = ask(name, "status")["store"]
    assert from_child["keys"] is None and from_child["backend"] == url and from_child["error"]


def poll(action: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``action`` until it stops raising StorageUnavailableError (a real condition: Redis answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except StorageUnavailableError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not recover within {timeout} s") from None
            time.sleep(0.05)


def ask_until_ok(name: str, *cmd: Any, timeout: float = 20.0) -> Any:
    def attempt() -> Any:
        result = ask(name, *cmd)
        if isinstance(result, StorageUnavailableError):
            raise result
        return result

    return poll(attempt, timeout, f"child {name!r} {cmd[:2]}")


@pytest.mark.timeout(90)
def test_redis_killed_and_restarted_on_the_same_port(own_redis: RedisServer, host):
    name = unique()
    host({name: targets.agent}, storage=own_redis.url(), call_timeout=3.0, cluster_claim_idle=1.0)
    topic, jobs = unique("topic"), unique("jobs")
    shared_memory.set("before", 1)
    assert ask(name, "get", "before") == 1
    assert ask(name, "subscribe", topic) == "subscribed"
    assert ask(name, "cluster_forward", jobs) == "forwarding"

    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        shared_memory.get("before")
    with pytest.raises(StorageUnavailableError):
        shared_memory.publish(topic, "lost")
    with pytest.raises(StorageUnavailableError):
        Channel(jobs, cluster=True).send("lost")
    error = ask(name, "call", "incr", "during")
    assert type(error) is StorageUnavailableError
    assert time.monotonic() - started < 3.0 * 3 + 5  # each call gave up within its timeout

    own_redis.start()  # the same port; the data is gone (no persistence)
    poll(lambda: shared_memory.set("after", 2), 20, "the host's store")
    assert ask_until_ok(name, "call", "incr", "after") == 3
    assert shared_memory.get("after") == 3

    # The child's stream consumer comes back by itself (the stream and its group are made again).
    Channel(jobs, cluster=True).send("job after restart")
    assert get_channel(f"{name}-active").receive(timeout=20) == ("cluster", jobs, "job after restart")

    # So does its subscription: publish until it arrives (a publish while it resubscribes is not kept).
    deadline = time.monotonic() + 20
    arrived: Any = None
    while arrived is None and time.monotonic() < deadline:
        shared_memory.publish(topic, "news after restart")
        try:
            arrived = get_channel(f"{name}-active").receive(timeout=0.2)
        except TimeoutError:
            continue
    assert arrived == ("published", topic, "news after restart")


def test_a_subscription_is_live_when_on_subscriber_receive_returns(redis_server: RedisServer, host):
    host(storage=redis_server.url(4), storage_namespace=unique("live"))
    topic = unique("topic")
    got = threading.Event()
    shared_memory.on_subscriber_receive(topic)(lambda data: got.set())
    shared_memory.publish(topic, "first")  # no waiting in between: the subscription is already live
    assert got.wait(10)


@pytest.mark.timeout(60)
def test_a_hung_redis_is_an_error_within_the_call_timeout(own_redis: RedisServer, host):
    import asyncio
    import os
    import signal

    host(storage=own_redis.url(), call_timeout=10.0)
    shared_memory.set("k", "v")
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # it accepts nothing and answers nothing
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match=r"is unavailable \(get\)"):
            shared_memory.get("k", timeout=0.5)
        with pytest.raises(StorageUnavailableError, match=r"did not answer 'get' within 0\.5 s|is unavailable"):
            asyncio.run(shared_memory.async_get("k", timeout=0.5))
        assert time.monotonic() - started < 10.0  # the call's own timeout, not the 10 s default
        # Cluster channels too: they used call_timeout whatever the call's own timeout was.
        chan = Channel(unique("hung"), cluster=True)
        for attempt, error in (
            (lambda: chan.send("x", timeout=0.5), StorageUnavailableError),
            (lambda: chan.receive(timeout=0.5), CommTimeoutError),
            (lambda: asyncio.run(chan.async_receive(timeout=0.5)), CommTimeoutError),
        ):
            started = time.monotonic()
            with pytest.raises(error):
                attempt()
            assert time.monotonic() - started < 3.0, "a cluster call outlived its own timeout"
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert poll(lambda: shared_memory.get("k"), 20, "the store after SIGCONT") == "v"


def test_an_acl_user_confined_to_the_namespace_can_do_everything(redis_server: RedisServer, host):
    import redis

    from liteyuki.comm._redis_conn import ACL_COMMANDS
    from liteyuki.comm.storage import KeyValueStore

    ns, user = unique("acl"), unique("user")
    raw = redis.Redis.from_url(redis_server.url())
    rules = ["on", ">s3cret", "resetkeys", f"~{ns}:*", "resetchannels", f"&{ns}:*", "-@all"]
    raw.execute_command("ACL", "SETUSER", user, *rules, *(f"+{c}" for c in ACL_COMMANDS))
    try:
        host(storage=f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/5", storage_namespace=ns)
        shared_memory.set("a", 1, ttl=30)
        assert shared_memory.incr("a", 2**70) == 2**70 + 1
        assert shared_memory.setdefault("b", 2) == 2 and shared_memory.compare_and_set("b", 2, 3)
        assert shared_memory.expire("b", 10) and shared_memory.expire("b", None) and shared_memory.ttl("b") is None
        assert shared_memory.get_all() == {"a": 2**70 + 1, "b": 3}
        assert shared_memory.pop("b") == 3
        got = threading.Event()
        shared_memory.on_subscriber_receive("t")(lambda data: got.set())
        shared_memory.publish("t", "x")
        assert got.wait(10)
        jobs = Channel(unique("jobs"), cluster=True)
        jobs.send("job")
        assert jobs.receive(timeout=10) == "job"
        shared_memory.clear()
        assert shared_memory.get_all() == {}
        assert isinstance(shared_memory, KeyValueStore)
    finally:
        raw.execute_command("ACL", "DELUSER", user)
        raw.close()


def test_a_cluster_channel_made_at_import_time_in_a_child_is_on_redis(redis_server: RedisServer, host):
    import importlib

    name = unique()
    host(
        storage=redis_server.url(6),
        storage_namespace=unique("early"),
        cluster_claim_idle=5.0,  # not the default: the child's bootstrap replaces its early connection
        setup=lambda bot: bot.process_manager.add_target(name, importlib.import_module("tests.redis_early").forward),
    )
    Channel("early-jobs", cluster=True).send("made early")
    assert get_channel(f"{name}-active").receive(timeout=20) == ("early", "made early")
    # An import-time subscriber survives that replacement.
    deadline = time.monotonic() + 20
    heard: Any = None
    while heard is None and time.monotonic() < deadline:
        shared_memory.publish("early-topic", "still heard")
        try:
            heard = get_channel(f"{name}-active").receive(timeout=0.2)
        except TimeoutError:
            continue
    assert heard == ("heard", "still heard")


def test_keys_written_by_other_tools_in_the_namespace_do_not_break_get_all(redis_server: RedisServer, host):
    import redis

    from liteyuki.comm import SerializationError

    ns = unique("foreign")
    host(storage=redis_server.url(8), storage_namespace=ns)
    shared_memory.set("ours", 1)
    raw = redis.Redis.from_url(redis_server.url(8))
    raw.set(f"{ns}:kv:sforeign", "hello")  # a str key holding text no pickle starts with
    raw.set(f"{ns}:kv:xodd", "1")  # a tag we never write
    raw.close()
    assert shared_memory.get_all() == {"ours": 1}
    with pytest.raises(SerializationError, match=r"^the value b'hello' in Redis was not stored by shared_memory$"):
        shared_memory.get("foreign")


def test_two_redis_keys_for_one_python_key_give_one_entry_with_its_own_value(redis_server: RedisServer, host):
    """A key stored by its pickle before keys were canonical ((ns, 1.0), a frozenset in one
    order) and the canonical key of today are two Redis keys for one Python key: get_all()
    paired the first key with the other's value; now one entry, key and value from one Redis
    key, and a warning names both."""
    import pickle

    import redis

    from liteyuki.log import logger

    ns = unique("legacy")
    host(storage=redis_server.url(8), storage_namespace=ns)
    shared_memory.set(("k", 1), "new")
    raw = redis.Redis.from_url(redis_server.url(8))
    raw.set(f"{ns}:kv:p".encode() + pickle.dumps(("k", 1.0), protocol=5), pickle.dumps("old", protocol=5))
    # A tuple key already canonical is stored as before (its plain pickle): still found.
    raw.set(f"{ns}:kv:p".encode() + pickle.dumps(("user", 42, None), protocol=5), pickle.dumps("kept", protocol=5))
    raw.close()
    assert shared_memory.get(("user", 42, None)) == "kept"
    shared_memory.delete(("user", 42, None))
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(str(message)), level="WARNING")
    try:
        snapshot = shared_memory.get_all()
    finally:
        logger.remove(sink)
    assert len(snapshot) == 1
    ((key, value),) = snapshot.items()
    assert (type(key[1]), value) in ((int, "new"), (float, "old")), snapshot
    assert any("hold keys equal in Python" in line for line in warnings), warnings
    assert shared_memory.get(("k", 1.0)) == "new"  # get() reaches the canonical key


def test_rediss_with_a_ca_in_the_url_works_and_without_it_is_a_clear_error(tmp_path, host):
    from .redis_server import make_tls_files

    server = RedisServer(tls=make_tls_files(str(tmp_path))).start()
    try:
        name = unique()
        host({name: targets.agent}, storage=server.url(), storage_namespace=unique("tls"))
        shared_memory.set("k", "over TLS")
        assert ask(name, "get", "k") == "over TLS"
        assert ask(name, "async_call", "get", "k") == "over TLS"
        from liteyuki.comm.lowlevel import redis_store

        without_ca = redis_store(f"rediss://127.0.0.1:{server.port}/0", "tls")
        from liteyuki.comm._ops import Get

        with pytest.raises(StorageUnavailableError, match=r"CERTIFICATE_VERIFY_FAILED"):
            without_ca.execute(Get("k"))
        without_ca.close()
    finally:
        server.close()


def _two_cluster_consumers(
    redis_server: RedisServer, host: Any, db: int, setups: tuple[tuple[Any, ...], tuple[Any, ...]], n: int
) -> dict[int, Any]:
    """Two children consume cluster channel ``name`` (``setups``: the command each runs, with
    its arguments after the name); ``n`` numbered messages are sent. Returns how many times
    each was handled, once every one was handled and none is pending in the stream."""
    import redis

    name, a, b = unique("jobs"), unique("a"), unique("b")
    namespace = unique("ns")
    host(
        {a: targets.agent, b: targets.agent},
        storage=redis_server.url(db),
        storage_namespace=namespace,
        cluster_claim_idle=1.0,
    )
    for child, (command, *args) in zip((a, b), setups, strict=True):
        assert ask(child, command, name, *args) == "consuming"
    chan = Channel(name, cluster=True)
    for i in range(n):
        chan.send(i)
    raw = redis.Redis.from_url(redis_server.url(db))
    stream = f"{namespace}:chan:{name}"

    def settled() -> bool:  # every message handled, and nothing left pending in the stream
        counts = [shared_memory.get(f"{name}:{i}") for i in range(n)]
        return all(counts) and raw.xpending(stream, "receivers")["pending"] == 0

    deadline = time.monotonic() + 60
    while not settled():
        assert time.monotonic() < deadline, "not every message was handled and acknowledged within 60 s"
        time.sleep(0.1)  # polling a real condition (the store's counts, the stream's pending list)
    counts: dict[Any, Any] = {i: shared_memory.get(f"{name}:{i}") for i in range(n)}
    counts["after-close"] = shared_memory.get(f"{name}:after-close")
    return counts


@pytest.mark.timeout(90)
def test_live_cluster_consumers_with_steady_callbacks_handle_each_message_once(redis_server: RedisServer, host):
    """The consumer renewed its batch only when a wait for a finished callback timed out:
    callbacks finishing one by one more often than that left the rest of the batch idle, and
    the other live consumer reclaimed and handled them again (26 of 40 twice)."""
    counts = _two_cluster_consumers(redis_server, host, 5, (("cluster_slow", 0.3), ("cluster_slow", 0.3)), 40)
    assert {i: c for i, c in counts.items() if c != 1} == {"after-close": None}


@pytest.mark.timeout(90)
def test_a_cluster_end_closed_by_its_callback_runs_nothing_more_and_hands_nothing_twice(
    redis_server: RedisServer, host
):
    """The rest of the batch still ran after close(), and close() closed the connection before
    the consumer acknowledged what had run: those were reclaimed and handled again elsewhere."""
    counts = _two_cluster_consumers(redis_server, host, 6, (("cluster_close_after", 5), ("cluster_slow", 0.0)), 200)
    assert {i: c for i, c in counts.items() if c != 1} == {"after-close": None}


def _in_socket_read(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked reading a reply from Redis (its stack, not a guess of time)."""
    frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
    while frame is not None:
        if frame.f_code.co_name == "read_response":
            return True
        frame = frame.f_back
    return False


@pytest.mark.timeout(30)
def test_a_store_call_in_flight_when_the_store_closes_raises_broken_peer(own_redis: RedisServer):
    """A child's store calls while it stopped raised a raw ``ValueError: I/O operation on closed
    file`` (redis-py reading a reply on the connection close() had just closed); the memory
    backend raises BrokenPeerError there. Now Redis does too, and so does a call made after."""
    from liteyuki.comm import BrokenPeerError
    from liteyuki.comm._ops import Get
    from liteyuki.comm._redis_conn import settings_from
    from liteyuki.comm._redis_store import RedisStore

    store = RedisStore(settings_from(own_redis.url(), unique("closing")))
    assert store.execute(Get("k")) is None  # connected
    outcome: list[BaseException | bytes | None] = []

    def call() -> None:
        try:
            outcome.append(store.execute(Get("k")))
        except BaseException as exc:
            outcome.append(exc)

    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # the call waits for its reply
    try:
        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while not _in_socket_read(caller):
            assert time.monotonic() < deadline, "the call never started reading its reply"
            threading.Event().wait(0.001)
        store.close()
        caller.join(10)
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert len(outcome) == 1 and isinstance(outcome[0], BrokenPeerError), outcome
    with pytest.raises(BrokenPeerError, match=r"storage was closed"):
        store.execute(Get("k"))
