"""shared_memory: identical calls in the host and in real children."""

from __future__ import annotations

import threading
import time

import pytest

from liteyuki.comm import SerializationError, get_channel
from liteyuki.comm.storage import shared_memory

from . import targets
from .conftest import unique
from .test_channels import ask


def test_set_get_in_host_and_child_see_the_same_store(host):
    name = unique()
    host({name: targets.agent})
    key = unique("k")
    shared_memory.set(key, {"from": "host"})
    assert ask(name, "get", key) == {"from": "host"}
    assert ask(name, "set", key, [1, 2, 3]) is None
    assert shared_memory.get(key) == [1, 2, 3]
    assert ask(name, "get", unique("missing"), "dflt") == "dflt"
    snapshot = shared_memory.get_all()
    snapshot[key] = "changed locally"
    assert shared_memory.get(key) == [1, 2, 3]


def test_incr_from_two_children_and_host_threads_loses_no_update(host):
    a, b = unique(), unique()
    host({a: targets.agent, b: targets.agent})
    key = unique("counter")
    get_channel(f"{a}-passive").send(("incr_many", key, 500, 3))
    get_channel(f"{b}-passive").send(("incr_many", key, 500, 3))

    def local() -> None:
        for _ in range(500):
            shared_memory.incr(key)

    workers = [threading.Thread(target=local) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert get_channel(f"{a}-active").receive(timeout=60) == "done"
    assert get_channel(f"{b}-active").receive(timeout=60) == "done"
    assert shared_memory.get(key) == 500 * 3 * 2 + 500 * 2


def test_unpicklable_value_is_rejected_at_the_caller_and_nothing_stored(host):
    name = unique()
    host({name: targets.agent})
    key = unique("bad")
    shared_memory.set(key, "before")
    with pytest.raises(SerializationError, match=r"^shared_memory value of type lock cannot be pickled"):
        shared_memory.set(key, threading.Lock())
    assert shared_memory.get(key) == "before"
    # In a child the same call fails the same way, before anything is sent.
    error = ask(name, "set_lock", key)
    assert isinstance(error, SerializationError) and "cannot be pickled" in str(error)
    assert shared_memory.get(key) == "before"


def test_host_errors_keep_their_type_in_the_child(host):
    name = unique()
    host({name: targets.agent})
    missing = unique("missing")
    error = ask(name, "call", "delete", missing, False)
    assert type(error) is KeyError and error.args == (missing,)
    error = ask(name, "call", "pop", missing)
    assert type(error) is KeyError
    text = unique("text")
    shared_memory.set(text, "not a number")
    error = ask(name, "call", "incr", text)
    assert type(error) is TypeError and "holds str, not a number" in str(error)


def test_atomic_helpers_in_a_child(host):
    name = unique()
    host({name: targets.agent})
    key = unique("k")
    assert ask(name, "call", "setdefault", key, 1) == 1
    assert ask(name, "call", "setdefault", key, 2) == 1
    assert ask(name, "call", "compare_and_set", key, 1, 10) is True
    assert ask(name, "call", "compare_and_set", key, 1, 20) is False
    assert shared_memory.get(key) == 10
    assert ask(name, "call", "pop", key) == 10
    assert ask(name, "call", "pop", key, "gone") == "gone"
    assert ask(name, "call", "compare_and_set", key, None, "created") is True


def test_expiry_in_host_and_child(host):
    name = unique()
    host({name: targets.agent})
    key = unique("ttl")
    # 1 s, not less: the child's get must come back before the key expires, also on a
    # loaded machine (0.2 s failed there once).
    expires = time.monotonic() + 1.0
    shared_memory.set(key, "v", ttl=1.0)
    assert 0 < shared_memory.ttl(key) <= 1.0
    assert ask(name, "get", key) == "v"
    done = threading.Event()
    done.wait(max(0.0, expires - time.monotonic()) + 0.05)  # waiting out a wall-clock expiry is the point
    assert ask(name, "get", key, "expired") == "expired"
    assert shared_memory.get(key) is None
    with pytest.raises(ValueError, match=r"ttl must be a positive number"):
        shared_memory.set(key, "v", ttl=-1)


def test_async_variants_and_pipelined_gets_from_a_child(host):
    name = unique()
    host({name: targets.async_agent})
    shared_memory.set("async-key", "async value")
    get_channel(f"{name}-passive").send("async_get")
    assert get_channel(f"{name}-active").receive(timeout=10) == "async value"
    get_channel(f"{name}-passive").send("gather")
    assert get_channel(f"{name}-active").receive(timeout=20) == list(range(1, 101))


def test_publish_reaches_subscribers_in_every_process(host):
    a, b = unique(), unique()
    host({a: targets.agent, b: targets.agent})
    topic = unique("topic")
    assert ask(a, "subscribe", topic) == "subscribed"
    assert ask(b, "subscribe", topic) == "subscribed"
    seen = threading.Event()
    shared_memory.on_subscriber_receive(topic)(lambda data: seen.set() if data == "news" else None)
    get_channel(f"{a}-passive").send(("publish", topic, "news"))
    replies = [get_channel(f"{a}-active").receive(timeout=10) for _ in range(2)]
    assert sorted(map(repr, replies)) == sorted([repr(None), repr(("published", topic, "news"))])
    assert get_channel(f"{b}-active").receive(timeout=10) == ("published", topic, "news")
    assert seen.wait(10)


def test_a_host_that_is_gone_is_a_clear_error_in_the_child():
    from liteyuki.comm import BrokenPeerError
    from liteyuki.comm._ops import Get
    from liteyuki.comm.lowlevel import ChildRuntime, new_socketpair

    ours, theirs = new_socketpair()
    runtime = ChildRuntime(unique("orphan"), {"call_timeout": 5})
    runtime.connect(theirs)
    ours.close()  # the host goes away
    with pytest.raises(BrokenPeerError, match=r"host connection was lost"):
        for _ in range(100):  # the reader notices the EOF within one read
            runtime.execute(Get("k"), timeout=5)
    runtime.close()


def test_every_storage_operation_has_an_async_twin_with_the_same_signature():
    import inspect

    from liteyuki.comm.storage import KeyValueStore

    public = {n for n in dir(KeyValueStore) if not n.startswith("_")}
    sync = {n for n in public if not n.startswith("async_") and n != "on_subscriber_receive"}
    asynchronous = {n.removeprefix("async_") for n in public if n.startswith("async_")}
    assert sync == asynchronous
    for name in sync:
        twin = getattr(KeyValueStore, f"async_{name}")
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(KeyValueStore, name)), name
