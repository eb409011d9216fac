"""Limits mean what they say, with real processes: ``max_message_size`` bounds the pickled
value the user passed on every path (exactly the limit passes, one byte more is
``MessageTooLargeError``), and the store's memory stays flat under a stream of unique
short-lived keys from a child."""

from __future__ import annotations

import gc
import pickle

import psutil
import pytest

from liteyuki.comm import Channel, MessageTooLargeError, get_channel, set_channel
from liteyuki.comm.storage import shared_memory

from ..conftest import unique
from . import ltargets
from .ltargets import Sized, ask, value_of_pickled_size

LIMIT = 4096


EXACT, ONE_MORE = value_of_pickled_size(LIMIT), value_of_pickled_size(LIMIT + 1)


def test_the_helper_builds_exact_sizes():
    for n in (100, 255, 256, 300, LIMIT, LIMIT + 1, 70_000):
        assert len(pickle.dumps(value_of_pickled_size(n), protocol=pickle.HIGHEST_PROTOCOL)) == n


def too_large(error: object) -> bool:
    return isinstance(error, MessageTooLargeError) and str(error).endswith(
        f"is {LIMIT + 1} bytes pickled, above the maximum message size of {LIMIT}"
    )


@pytest.mark.timeout(120)
def test_max_message_size_is_exact_on_every_path(host):
    name = unique("lim")
    host({name: ltargets.agent}, max_message_size=LIMIT)
    exact, one_more = Sized(LIMIT), Sized(LIMIT + 1)  # built in the child

    # channel send, host -> child: the child receives actively on a channel of its own
    down = unique("down")
    Channel(down).send(EXACT)  # waits in the host until the child receives
    assert ask(name, "recv", down, 10) == EXACT
    with pytest.raises(MessageTooLargeError) as info:
        Channel(down).send(ONE_MORE)
    assert too_large(info.value)

    # channel send, child -> host (its own active channel, and a channel the host receives on)
    active = get_channel(f"{name}-active")
    get_channel(f"{name}-passive").send(("send", (f"{name}-active", exact), {}))
    assert active.receive(timeout=30) == EXACT and active.receive(timeout=30) == "sent"
    assert too_large(ask(name, "send", f"{name}-active", one_more))
    up = Channel(unique("up"))
    set_channel(up.name, up)
    assert ask(name, "send", up.name, exact) == "sent" and up.receive(timeout=30) == EXACT
    assert too_large(ask(name, "send", up.name, one_more))

    # store: set from the host and from a child, and answers of exactly the limit
    shared_memory.set("host-exact", EXACT)
    with pytest.raises(MessageTooLargeError) as info:
        shared_memory.set("host-more", ONE_MORE)
    assert too_large(info.value) and shared_memory.get("host-more") is None
    assert ask(name, "store", "set", "child-exact", exact) is None  # the bug: the whole tuple was measured
    assert ask(name, "store", "set", "child-exact-ttl", exact, ttl=60.0) is None
    assert shared_memory.get("child-exact") == EXACT
    assert too_large(ask(name, "store", "set", "child-more", one_more))
    assert shared_memory.get("child-more") is None
    assert ask(name, "store", "get", "host-exact") == EXACT  # an answer of exactly the limit
    assert ask(name, "store", "setdefault", "child-default", exact) == EXACT
    assert ask(name, "store", "compare_and_set", "child-exact", exact, exact) is True  # two values at the limit
    assert ask(name, "store", "pop", "child-exact") == EXACT
    assert too_large(ask(name, "store", "compare_and_set", "child-exact-ttl", exact, one_more))

    # publish, from the host and from a child
    shared_memory.publish(unique("topic"), EXACT)
    with pytest.raises(MessageTooLargeError) as info:
        shared_memory.publish(unique("topic"), ONE_MORE)
    assert too_large(info.value)
    assert ask(name, "store", "publish", unique("topic"), exact) is None
    assert too_large(ask(name, "store", "publish", unique("topic"), one_more))

    # a child that goes around its facade still meets the host's limit (and stays connected)
    assert ask(name, "raw_set", "raw", LIMIT) == "stored"
    error = ask(name, "raw_set", "raw-more", LIMIT + 1)
    assert isinstance(error, MessageTooLargeError), error
    assert str(error) == f"a value in 'set' is {LIMIT + 1} bytes pickled, above the maximum message size of {LIMIT}"
    assert shared_memory.get("raw-more") is None and ask(name, "pid") != 0


@pytest.mark.timeout(120)
def test_store_memory_stays_flat_under_unique_short_lived_keys_from_a_child(host):
    """The issue's scenario: a child sets unique keys with ttl=0.2 s for a few seconds.
    Before, every dead key stayed (107,606 after 8 s, host RSS 27 -> 256 MiB)."""
    name = unique("ttl")
    bot = host({name: ltargets.agent})
    store = bot.hub.store
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    count = ask(name, "ttl_stream", 4.0, 0.2, wait=60)
    held = len(store)
    rss_growth = psutil.Process().memory_info().rss - rss_before
    rate = count / 4.0  # keys per second; about rate * 0.2 are alive at any moment
    assert count > 2000, count  # the stream was real
    # Alive keys plus what the last calls had not yet reaped: a generous bound.
    assert held <= rate * 0.2 * 3 + 200, (held, count)
    assert rss_growth < 64 * 1024 * 1024, rss_growth  # generous: allocator noise, not per-key growth
    shared_memory.get("anything")  # any call reaps: once the keys expire, nothing is held
    print(f"{count} keys in 4 s, {held} entries held at the end, host RSS grew {rss_growth / 2**20:.1f} MiB")
