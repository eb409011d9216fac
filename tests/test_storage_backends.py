"""The semantics both storage backends share, run against each: the host's memory and a real Redis.

One host with one child per backend (module-scoped, to keep the suite quick); each test uses keys of its own.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections import namedtuple
from collections.abc import Iterator
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction
from typing import Any

import pytest

from liteyuki import LiteyukiBot
from liteyuki.comm import Channel, get_channel
from liteyuki.comm.storage import shared_memory

from . import targets
from .conftest import leftover_children, unique
from .test_channels import ask

CHILD = "backend-agent"


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    config: dict[str, Any] = {"pyproject": None, "stop_grace": 3.0}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        config.update(storage=server.url(3), storage_namespace=unique("suite"))
    bot = LiteyukiBot(**config)
    bot.process_manager.add_target(CHILD, targets.agent)
    with bot.running():
        yield request.param
    leftover = leftover_children()
    assert not leftover, f"processes left behind: {leftover}"


def test_set_get_and_snapshot_in_host_and_child(backend):
    key = unique("k")
    shared_memory.set(key, {"from": "host"})
    assert ask(CHILD, "get", key) == {"from": "host"}
    assert ask(CHILD, "set", key, [1, 2, 3]) is None
    assert shared_memory.get(key) == [1, 2, 3]
    assert ask(CHILD, "get", unique("missing"), "dflt") == "dflt"
    snapshot = shared_memory.get_all()
    assert snapshot[key] == [1, 2, 3]
    snapshot[key] = "changed locally"
    assert shared_memory.get(key) == [1, 2, 3]


def test_the_status_counts_the_store_in_the_host_and_a_child(backend):
    """On Redis the status failed: bot.status() raised AttributeError (it read the memory
    store's lock), SIGUSR1 logged a traceback, and a child's status() timed out after 10 s."""
    import liteyuki
    from liteyuki import Status

    shared_memory.set(unique("status"), "v" * 100)
    store = liteyuki.status().store
    assert store.keys is not None and store.keys >= 1 and store.bytes is not None and store.bytes >= 100
    assert store.error is None
    if backend == "redis":
        assert store.backend.startswith("redis://127.0.0.1:") and store.backend.endswith("/3")
        assert f"store ({store.backend}): {store.keys} keys" in liteyuki.status().format()
    else:
        assert store.backend == "memory" and f"store: {store.keys} keys" in liteyuki.status().format()
    from_child = Status.from_dict(ask(CHILD, "status")).store
    assert from_child.backend == store.backend and from_child.keys is not None and from_child.keys >= 1


def test_incr_by_an_int_too_large_for_a_float_is_exact(backend):
    """It was refused as "amount must be a finite number" (a float conversion overflowed),
    though every int is finite and the README says the add is exact for any int."""
    key = unique("huge")
    assert shared_memory.incr(key, 10**400) == 10**400
    assert ask(CHILD, "call", "incr", key, -(10**400) + 5) == 5
    assert shared_memory.get(key) == 5
    with pytest.raises(ValueError, match="amount must be a finite number"):
        shared_memory.incr(key, float("inf"))
    assert shared_memory.get(key) == 5


class Color(IntEnum):
    RED = 1


class Label(str):
    pass


Point = namedtuple("Point", "x y")


def test_keys_a_dict_takes_for_one_are_one_entry(backend):
    """On Redis each of these was a key of its own (its pickle): get() of an equal key missed
    the entry, and get_all() collapsed them, pairing a key with another key's value."""
    tag = unique("eq")
    s = "ab" * 3 + tag
    groups = [
        ((tag, 1), (tag, 1.0), (tag, True), (tag, 1 + 0j), (tag, Fraction(1)), (tag, Color.RED)),
        (frozenset([tag, 1, 9]), frozenset([9, 1, tag]), frozenset([9.0, True, tag])),
        (Label(tag + "-label"), tag + "-label"),
        (Point(tag, "nt"), (tag, "nt")),
        ((tag, "dec", Decimal("0.5")), (tag, "dec", 0.5), (tag, "dec", Fraction(1, 2))),
        ((tag, "zero", -0.0), (tag, "zero", 0)),
        ((s, s), (s[:1] + s[1:], s)),  # one string object twice, then two equal ones
        ((tag, (frozenset([2, 10]), 3.0)), (tag, (frozenset([10.0, 2]), 3))),
    ]
    for i, group in enumerate(groups):
        for j, key in enumerate(group):
            shared_memory.set(key, (i, j))
        for key in group:
            assert shared_memory.get(key) == (i, len(group) - 1), (i, key)
    assert ask(CHILD, "get", frozenset([1, 9, tag])) == (1, 2)  # built in another process
    assert ask(CHILD, "get", (tag, 1.0)) == (0, 5)
    mine = {key: value for key, value in shared_memory.get_all().items() if tag in repr(key)}
    assert sorted(mine.values()) == [(i, len(group) - 1) for i, group in enumerate(groups)]
    for key, (i, _) in mine.items():
        assert key == groups[i][0], (key, i)  # each key with its own value


def test_keys_of_every_common_type_come_back_with_their_type(backend):
    tag = unique("t")
    keys = [f"{tag}-ключ", 10**30 + len(tag), -7 - len(tag), tag.encode(), (tag, 1, None), f"{tag}\udcff"]
    for i, key in enumerate(keys):
        shared_memory.set(key, i)
    snapshot = shared_memory.get_all()
    for i, key in enumerate(keys):
        assert snapshot[key] == i and shared_memory.get(key) == i
        assert ask(CHILD, "get", key) == i
    with pytest.raises(TypeError, match=r"^shared_memory keys must be hashable, got list$"):
        shared_memory.set([tag], 1)


def test_a_key_that_cannot_travel_is_refused_and_changes_nothing(backend):
    """The host used to store an unpicklable or oversized key as it was; get_all() then failed
    with a raw PicklingError in every process."""
    from liteyuki.comm import MessageTooLargeError, SerializationError
    from liteyuki.comm.lowlevel import current

    key = unique("k")
    shared_memory.set(key, "kept")
    before = shared_memory.get_all()
    with pytest.raises(SerializationError, match=r"^shared_memory key of type function cannot be pickled: "):
        shared_memory.set(lambda: None, 1)
    with pytest.raises(SerializationError, match=r"^shared_memory key of type tuple cannot be pickled: "):
        shared_memory.setdefault(("ok", threading.Lock()), 1)
    limit = current().max_message_size
    for big in ("k" * (limit + 1), 1 << (8 * limit)):
        with pytest.raises(MessageTooLargeError, match=r"^shared_memory key is \d+ bytes pickled, above the maximum"):
            shared_memory.set(big, 1)
    assert shared_memory.get_all() == before
    assert ask(CHILD, "call", "get_all")[key] == "kept"


def test_atomic_helpers_in_a_child(backend):
    key = unique("k")
    assert ask(CHILD, "call", "setdefault", key, 1) == 1
    assert ask(CHILD, "call", "setdefault", key, 2) == 1
    assert ask(CHILD, "call", "compare_and_set", key, 1, 10) is True
    assert ask(CHILD, "call", "compare_and_set", key, 1, 20) is False
    assert ask(CHILD, "call", "compare_and_set", key, 10.0, 11) is True  # equal values, not equal pickles
    assert shared_memory.get(key) == 11
    assert ask(CHILD, "call", "pop", key) == 11
    assert ask(CHILD, "call", "pop", key, "gone") == "gone"
    error = ask(CHILD, "call", "pop", key)
    assert type(error) is KeyError and error.args == (key,)
    error = ask(CHILD, "call", "delete", key, False)
    assert type(error) is KeyError and error.args == (key,)
    assert ask(CHILD, "call", "compare_and_set", key, None, "created") is True
    assert ask(CHILD, "call", "compare_and_set", key, None, "again") is False
    assert shared_memory.get(key) == "created"
    shared_memory.set(key, {"a": 1, "b": 2})
    assert shared_memory.compare_and_set(key, {"b": 2, "a": 1}, "dict matched") is True


def test_incr_is_exact_for_ints_big_ints_and_floats(backend):
    key, text = unique("n"), unique("text")
    assert ask(CHILD, "call", "incr", key) == 1
    assert shared_memory.incr(key, 2**63 - 2) == 2**63 - 1  # the top of 64 bits
    assert shared_memory.incr(key, 1) == 2**63  # and past it, exactly
    assert ask(CHILD, "call", "incr", key, -(2**63)) == 0
    assert shared_memory.incr(key, 10**40) == 10**40
    assert shared_memory.incr(key, 0.5) == 10**40 + 0.5
    assert type(shared_memory.incr(unique("f"), 1.25)) is float
    shared_memory.set(text, "not a number")
    error = ask(CHILD, "call", "incr", text)
    assert type(error) is TypeError and "holds str, not a number" in str(error)
    shared_memory.set(text, True)
    with pytest.raises(TypeError, match=r"holds bool, not a number"):
        shared_memory.incr(text)
    shared_memory.set(text, signal.Signals.SIGINT)  # an int subclass: refused, its class never imported
    with pytest.raises(TypeError, match=r"holds signal\.(Signals|SIGINT), not a number$"):
        shared_memory.incr(text)
    shared_memory.set(text, 1)
    assert shared_memory.compare_and_set(text, True, 2) is True  # plain data compares by value (1 == True)
    with pytest.raises(TypeError, match=r"^amount must be an int or float, got str$"):
        shared_memory.incr(key, "1")


def test_incr_from_child_threads_and_host_threads_loses_no_update(backend):
    key = unique("counter")
    get_channel(f"{CHILD}-passive").send(("incr_many", key, 300, 3))

    def local() -> None:
        for _ in range(300):
            shared_memory.incr(key)

    workers = [threading.Thread(target=local) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert get_channel(f"{CHILD}-active").receive(timeout=60) == "done"
    assert shared_memory.get(key) == 300 * 5


def test_expiry_ttl_and_persist(backend):
    key, forever = unique("ttl"), unique("forever")
    shared_memory.set(key, "v", ttl=0.3)
    assert 0 < shared_memory.ttl(key) <= 0.3
    assert ask(CHILD, "get", key) == "v"
    shared_memory.set(forever, "v", ttl=100)
    assert ask(CHILD, "call", "expire", forever, None) is True
    assert shared_memory.ttl(forever) is None
    assert shared_memory.expire(unique("missing"), 5) is False
    assert ask(CHILD, "call", "expire", unique("missing"), None) is False
    error = ask(CHILD, "call", "ttl", unique("missing"))
    assert type(error) is KeyError
    threading.Event().wait(0.4)  # waiting out a wall-clock expiry is the point of this test
    assert ask(CHILD, "get", key, "expired") == "expired"
    assert shared_memory.get(key) is None


def test_async_twins_in_a_child(backend):
    key = unique("async")
    assert ask(CHILD, "async_call", "set", key, 41) is None
    assert ask(CHILD, "async_call", "incr", key) == 42
    assert ask(CHILD, "async_call", "get", key) == 42
    assert ask(CHILD, "async_call", "compare_and_set", key, 42, 43) is True
    assert ask(CHILD, "async_call", "setdefault", key, 0) == 43
    assert ask(CHILD, "async_call", "get_all")[key] == 43
    assert ask(CHILD, "async_call", "pop", key) == 43
    error = ask(CHILD, "async_call", "pop", key)
    assert type(error) is KeyError


def test_publish_reaches_subscribers_in_host_and_child(backend):
    topic = unique("topic")
    assert ask(CHILD, "subscribe", topic) == "subscribed"
    seen = threading.Event()
    shared_memory.on_subscriber_receive(topic)(lambda data: seen.set() if data == "news" else None)
    shared_memory.publish(topic, "news")
    assert get_channel(f"{CHILD}-active").receive(timeout=10) == ("published", topic, "news")
    assert seen.wait(10)


def test_cluster_channel_between_host_and_child(backend):
    name = unique("jobs")
    chan = Channel(name, cluster=True)
    assert Channel(name, cluster=True) is chan
    for i in range(5):
        chan.send(i)
    assert sorted(ask(CHILD, "cluster_recv", name, 5, 10)) == [0, 1, 2, 3, 4]
    assert ask(CHILD, "cluster_send", name, ["back"]) == "sent"
    assert chan.receive(timeout=10) == "back"


def test_a_cluster_callback_that_calls_sys_exit_is_logged_and_the_next_message_runs(backend, capfd):
    name = unique("exiting")
    chan = Channel(name, cluster=True)
    got: list[Any] = []
    arrived, exited_later = threading.Event(), threading.Event()

    @chan.on_receive()
    def take(message: Any) -> None:
        if message == "exit":
            sys.exit(3)
        got.append(message)
        if message == "after":
            arrived.set()

    @chan.on_receive()
    async def later(message: Any) -> None:
        if message == "exit after an await":
            await asyncio.sleep(0)
            # Runs after this step, whose SystemExit is logged in the same step.
            asyncio.get_running_loop().call_soon(exited_later.set)
            sys.exit(4)

    # From the child: a process is never a receiver of its own messages.
    assert ask(CHILD, "cluster_send", name, ["exit", "exit after an await", "after"]) == "sent"
    assert arrived.wait(10), "the cluster channel's callbacks stopped after one called sys.exit()"
    assert exited_later.wait(10), "the loop stopped after an async callback called sys.exit()"
    assert got == ["exit after an await", "after"]
    out = capfd.readouterr()
    assert "SystemExit: 3" in out.out + out.err and "SystemExit: 4" in out.out + out.err


def test_clear_empties_the_store(backend):
    key = unique("k")
    shared_memory.set(key, 1)
    ask(CHILD, "call", "clear")
    assert shared_memory.get_all() == {}
    assert shared_memory.get(key) is None


def test_a_cluster_channel_is_typed_has_one_receive_mode_and_closes(backend):
    from liteyuki.comm import ChannelClosedError, ChannelTypeError, CommTimeoutError, ReceiveModeError

    name = unique("typed")
    chan = Channel[int](name, cluster=True)
    assert isinstance(chan, Channel)
    with pytest.raises(ChannelTypeError, match=rf"^channel '{name}' carries int, got str: 'x'$"):
        chan.send("x")
    with pytest.raises(CommTimeoutError, match=rf"^no message on channel '{name}' within 0.1 s$"):
        chan.receive(timeout=0.1)
    with pytest.raises(ReceiveModeError, match=rf"^channel '{name}' is already in active mode"):
        chan.on_receive()(print)
    chan.close()
    chan.close()
    with pytest.raises(ChannelClosedError, match=rf"^channel '{name}' is closed$"):
        chan.send(1)


# -- found by hostile scripts (issue 12, sixth stop) ------------------------------------
def test_the_store_keeps_a_copy_of_a_key_object_not_the_callers_own(backend):
    """The memory store kept the caller's key object: changing it after set() renamed the key
    for every process, and an unpicklable attribute then broke get_all() everywhere."""
    name = unique("k")
    key = targets.MutableKey(name)
    shared_memory.set(key, "value")
    key.name = "renamed by the caller after set()"
    key.lock = threading.Lock()  # unpicklable, were it the stored key
    assert shared_memory.get(targets.MutableKey(name)) == "value"
    assert shared_memory.get_all()[targets.MutableKey(name)] == "value"
    assert ask(CHILD, "get_all")[targets.MutableKey(name)] == "value"


def test_a_key_that_never_equals_its_copy_is_refused_and_changes_nothing(backend):
    """A key compared by identity (a class without __eq__), nan, or a tuple holding nan was
    written on the memory backend and never found again: get() gave None, incr() 1 each time,
    and entries piled up (Redis matched them by their pickle). Both now refuse them."""
    before = shared_memory.get_all()
    with pytest.raises(ValueError, match=r"^shared_memory keys must equal themselves, got nan"):
        shared_memory.incr(float("nan"))
    for key in (targets.IdentityKey(), (1, float("nan"))):
        with pytest.raises(TypeError, match=r"^shared_memory keys must equal a copy of themselves, got "):
            shared_memory.set(key, 1)
        with pytest.raises(TypeError, match=r"^shared_memory keys must equal a copy of themselves, got "):
            shared_memory.incr(key)
    assert shared_memory.get_all() == before


def test_a_pop_of_a_value_the_caller_cannot_unpickle_puts_it_back(backend):
    """pop() removed the value, then failed to unpickle it: the caller got SerializationError
    and the value was gone for everyone."""
    from liteyuki.comm import SerializationError

    key = unique("k")
    shared_memory.set(key, targets.ExitOnLoad())
    for attempt in (shared_memory.pop, lambda k: asyncio.run(shared_memory.async_pop(k))):
        with pytest.raises(SerializationError, match=r"cannot be unpickled here: SystemExit\(3\)"):
            attempt(key)
        with pytest.raises(SerializationError):  # still there: a missing key would give the default
            shared_memory.get(key, "gone")
    shared_memory.delete(key)
    assert shared_memory.get(key, "gone") == "gone"


def test_async_publish_checks_its_topic_like_publish(backend):
    for topic, error, message in (
        (3, TypeError, r"^channel must be a str, got int$"),
        ("", ValueError, r"^channel must not be empty$"),
        ("a\ud800", ValueError, r"^channel must encode as UTF-8"),
    ):
        with pytest.raises(error, match=message):
            shared_memory.publish(topic, 1)
        with pytest.raises(error, match=message):
            asyncio.run(shared_memory.async_publish(topic, 1))


def test_a_calls_own_short_timeout_is_its_alone(backend):
    """Memory, child: a timeout of 0 set SO_RCVTIMEO to 0, which the kernel takes for "never":
    the call waited for the host however long it took. Redis: a call's own short timeout
    marked the server down for every caller of the process, and timeouts computed from a
    deadline (a new float each call) made a client per call and closed ones in use."""
    from liteyuki.comm import CommTimeoutError, StorageUnavailableError
    from liteyuki.comm.lowlevel import current

    key = unique("k")
    shared_memory.set(key, "v")
    if backend == "memory":
        store = current().store
        for timeout in (0, 1e-7):
            with store._lock:  # the host cannot answer until the test lets go
                result, took = ask(CHILD, "timed_call", "get", (key,), timeout)
            assert isinstance(result, CommTimeoutError) and took < 1.0, (result, took)
            assert str(result) == f"the host did not answer 'get' within {timeout} s"
        assert ask(CHILD, "get", key) == "v"
        return
    for timeout in (0, 1e-6, 0.0004):
        try:
            assert shared_memory.get(key, timeout=timeout) == "v"
        except StorageUnavailableError:
            pass  # a real bound: it may run out; what matters is the next call
        assert shared_memory.get(key) == "v"  # not marked down
    deadline_errors: list[BaseException] = []

    def count(n: int) -> None:
        import time

        deadline = time.monotonic() + 30
        for _ in range(n):
            try:
                shared_memory.incr(f"{key}-n", timeout=deadline - time.monotonic())
            except BaseException as exc:
                deadline_errors.append(exc)

    workers = [threading.Thread(target=count, args=(300,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not deadline_errors, deadline_errors[:3]
    assert shared_memory.get(f"{key}-n") == 1_200


@pytest.mark.timeout(30)
def test_a_calls_own_long_timeout_works(backend):
    """Redis: a timeout of 5e6 s (allowed: up to 9223372036 s) failed in 2 ms with "Timeout
    reading from socket" and marked Redis down: CPython passes a socket's timeout to poll() as
    a C int of ms, and the rounded 2**32 ms wrapped to 0."""
    key = unique("k")
    shared_memory.set(key, "v")
    for timeout in (5e6, 2e7, 5e9, 9e9, 9223372036):
        assert shared_memory.get(key, timeout=timeout) == "v"
        assert shared_memory.get(key) == "v"  # not marked down
        assert asyncio.run(shared_memory.async_get(key, timeout=timeout)) == "v"


def test_equal_number_keys_are_one_key(backend):
    """Redis: 1, 1.0 and True (0.0 and -0.0) were distinct keys, so set(1.0) did not overwrite
    set(1), and get_all() collapsed them into {1: 'float', -0.0: '+0'}: a key with another
    key's value. Both backends now hold one entry per class of equal numbers, as a dict does."""
    base = 10**12 + abs(hash(unique("n"))) % 10**9  # this test's own keys (and 0, 1)
    one = base + 1
    for key, value in ((one, "int"), (float(one), "float"), (complex(one, 0), "complex")):
        shared_memory.set(key, value)
    assert shared_memory.get(one) == shared_memory.get(float(one)) == "complex"
    shared_memory.set(True, "bool")
    assert shared_memory.get(1) == shared_memory.get(1.0) == "bool"
    shared_memory.set(0.0, "+0")
    shared_memory.set(-0.0, "-0")
    assert shared_memory.get(0) == ask(CHILD, "get", 0.0) == "-0"
    snapshot = shared_memory.get_all()
    assert snapshot[one] == "complex" and snapshot[1] == "bool" and snapshot[0] == "-0"
    assert shared_memory.incr(float(one + 1)) == 1 and shared_memory.get(one + 1) == 1
    shared_memory.delete(one + 1.0)
    assert shared_memory.get(one + 1) is None and one + 1 not in shared_memory.get_all()
    assert shared_memory.pop(complex(0.5, 0), "absent") == "absent"
    shared_memory.set(0.5, "half")
    assert shared_memory.pop(complex(0.5, 0)) == "half"
    for key in (one, 1, 0):
        shared_memory.delete(key)


@pytest.mark.timeout(60)
def test_cancelling_a_task_in_a_loop_of_async_calls_cancels_it(backend):
    """Redis: task.cancel() and wait_for() around a loop of async_incr were ignored (the loop
    ran to its end): redis.asyncio sends inside asyncio.wait_for when it has a socket timeout,
    and wait_for before 3.12 loses a cancellation arriving as the send completes."""
    if backend != "redis":
        pytest.skip("the host's memory store answers an async call without suspending: nothing to cancel in")
    key = unique("n")
    rounds = 2_000

    async def worker(started: asyncio.Event) -> str:
        for i in range(rounds):
            await shared_memory.async_incr(key)
            if i == 20:
                started.set()
        return "ran to the end"

    async def main() -> None:
        for trial in range(40):
            started = asyncio.Event()
            task = asyncio.ensure_future(worker(started))
            await started.wait()
            for _ in range(trial % 8):  # at each step of a call in turn
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(worker(asyncio.Event()), 0.05)

    asyncio.run(main())
    assert shared_memory.get(key) < 41 * rounds


def test_get_all_names_a_key_this_process_cannot_unpickle(backend):
    """Redis: a key of a class the reader cannot import vanished from get_all() with a warning,
    where a value it cannot unpickle raises. Both raise now, naming what failed."""
    from liteyuki.comm import SerializationError

    key = (unique("k"), targets.MutableKey("x"))
    shared_memory.set(key, 1)
    assert ask(CHILD, "get_all")[key] == 1
    if backend == "redis":  # the memory host unpickles nothing: every key it holds is its own object
        import tests.targets

        saved = tests.targets.MutableKey
        del tests.targets.MutableKey  # as if this process could not import the class
        try:
            with pytest.raises(SerializationError, match=r"^shared_memory key b'.*' cannot be unpickled here"):
                shared_memory.get_all()
        finally:
            tests.targets.MutableKey = saved
    shared_memory.delete(key)


def test_an_int_key_too_long_for_text_and_a_ttl_past_redis_limit(backend):
    """Redis wrote int keys as text (Python converts at most 4,300 digits) and ttls in ms
    (it refuses ~2**63); the memory store took both."""
    key = 7**6000  # ~5,000 digits
    shared_memory.set(key, "big")
    assert shared_memory.get(key) == "big" and shared_memory.get_all()[key] == "big"
    shared_memory.delete(key)
    name = unique("k")
    shared_memory.set(name, 1, ttl=1e300)
    assert shared_memory.ttl(name) > 1e12
    assert shared_memory.expire(name, 1e18) and shared_memory.get(name) == 1


def test_a_ttl_whose_milliseconds_overflow_a_float_is_taken(backend):
    """Redis: ttl=1e306 (finite, > 0: allowed) raised a raw OverflowError from set, async_set
    and expire (1e306 * 1000 is inf); the memory store took it. The key never expires."""
    name = unique("k")
    for ttl in (1e306, 1.7e308, 10**300):
        shared_memory.set(name, 1, ttl=ttl)
        assert shared_memory.ttl(name) > 1e12
        asyncio.run(shared_memory.async_set(name, 2, ttl=ttl))
        assert shared_memory.expire(name, ttl) and shared_memory.get(name) == 2
        assert shared_memory.ttl(name) > 1e12


def test_a_cluster_receive_with_no_time_to_wait_still_takes_a_waiting_message(backend):
    """receive(timeout=0) (or below 1 ms) gave up before reading: a message already waiting in
    the stream was never taken, unlike a local channel's."""
    if backend != "redis":
        pytest.skip("cluster channels live on Redis; on memory they are the local channel")
    from liteyuki.comm import CommTimeoutError

    chan = Channel(unique("poll"), cluster=True)
    for timeout in (0, 0.0009):
        chan.send(("sync", timeout))
        assert chan.receive(timeout=timeout) == ("sync", timeout)
        chan.send(("async", timeout))
        assert asyncio.run(chan.async_receive(timeout=timeout)) == ("async", timeout)
    with pytest.raises(CommTimeoutError, match=r"within 0 s$"):
        chan.receive(timeout=0)
    chan.close()


@pytest.mark.timeout(120)
def test_a_cancelled_cluster_async_receive_loses_nothing_and_ends(backend):
    """A cancel landing after the read (XACK/XDEL awaited) lost that message; one that redis-py's
    own wait_for swallowed left async_receive looping for ever."""
    if backend != "redis":
        pytest.skip("cluster channels live on Redis; on memory they are the local channel")
    chan = Channel(unique("cancel"), cluster=True)
    n = 300

    async def receive_with_cancels() -> tuple[list[Any], int]:
        got: list[Any] = []
        cancelled = 0
        for i in range(n):
            chan.send(i)
            timeout = (0.0002, 0.0005, 0.001, 0.003)[i % 4]
            try:
                got.append(await asyncio.wait_for(chan.async_receive(), timeout))
            except asyncio.TimeoutError:
                cancelled += 1
        while len(got) < n:  # what the cancelled calls left: held here, or still in the stream
            got.append(await asyncio.wait_for(chan.async_receive(timeout=5), 10))
        return got, cancelled

    got, cancelled = asyncio.run(asyncio.wait_for(receive_with_cancels(), 100))
    assert sorted(got) == list(range(n)), f"{cancelled} cancelled; missing {sorted(set(range(n)) - set(got))[:10]}"
    chan.close()


def test_two_hundred_gathered_async_calls_all_succeed(backend):
    """redis.asyncio's pool refused the 101st concurrent connection at once ("Too many
    connections"): half of a gather of 200 async calls failed on a healthy Redis, and Redis
    was marked down for the process."""
    key = unique("k")

    async def gathered() -> list[Any]:
        return await asyncio.gather(*(shared_memory.async_incr(key) for _ in range(200)), return_exceptions=True)

    outcomes = asyncio.run(gathered())
    assert [o for o in outcomes if isinstance(o, BaseException)][:3] == []
    assert shared_memory.get(key) == 200
