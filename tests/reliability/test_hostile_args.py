"""Every public parameter with hostile values: a typed error at the call naming the
parameter and the rule, and nothing changed. Values whose ``__repr__``, ``__eq__``,
``__hash__`` or ``__reduce__`` raise never change which error the caller gets."""

from __future__ import annotations

import asyncio
import enum
import re
from typing import Any, Literal

import pytest

from liteyuki.comm import (
    Channel,
    ChannelTypeError,
    CommTimeoutError,
    SerializationError,
    get_channel,
    set_channel,
    set_channels,
)
from liteyuki.comm._channel import local_ends
from liteyuki.comm.storage import shared_memory

from ..conftest import unique
from . import ltargets
from .ltargets import ask

NAN, INF = float("nan"), float("inf")


class Level(enum.IntEnum):
    ONE = 1


class Name(str):
    """A str subclass with a hostile hash and equality: names are used as plain str."""

    def __hash__(self) -> int:
        raise RuntimeError("hostile __hash__")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("hostile __eq__")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("hostile __str__")


class Hostile:
    """Everything a value can do to an error path."""

    def __repr__(self) -> str:
        raise RuntimeError("hostile __repr__")

    def __reduce__(self) -> Any:
        raise BadStr()

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("hostile __eq__")

    def __hash__(self) -> int:
        raise RuntimeError("hostile __hash__")


BAD_NAMES = [
    ("", ValueError, r"^name must not be empty$"),
    (3, TypeError, r"^name must be a str, got int$"),
    (None, TypeError, r"^name must be a str, got NoneType$"),
    (b"x", TypeError, r"^name must be a str, got bytes$"),
    ("x" * 201, ValueError, r"^name must be at most 200 characters, got 201"),
    ("a\ud800", ValueError, r"^name must encode as UTF-8 \(no lone surrogates\)"),
]
BAD_TIMEOUTS = [
    (NAN, ValueError, r"^timeout must be a finite number, got nan$"),
    (INF, ValueError, r"^timeout must be a finite number, got inf$"),
    (-1, ValueError, r"^timeout must be >= 0, got -1$"),
    (True, TypeError, r"^timeout must be an int or float, got bool$"),
    ("1", TypeError, r"^timeout must be an int or float, got str$"),
    (1e300, ValueError, r"^timeout must be at most \d+ s"),
    (10**400, ValueError, r"^timeout must be a finite number"),
]
BAD_TTLS = [
    (NAN, ValueError, r"^ttl must be a positive number of seconds or None \(finite\), got nan$"),
    (INF, ValueError, r"^ttl must be a positive number of seconds or None \(finite\), got inf$"),
    (0, ValueError, r"^ttl must be a positive number of seconds or None, got 0$"),
    (-0.5, ValueError, r"^ttl must be a positive number of seconds or None, got -0.5$"),
    (True, TypeError, r"^ttl must be a positive number of seconds or None, got bool$"),
    ("1", TypeError, r"^ttl must be a positive number of seconds or None, got str$"),
]


@pytest.mark.parametrize(("name", "error", "message"), BAD_NAMES)
def test_bad_channel_names_are_refused_at_every_entry(name, error, message):
    before = set(local_ends())
    with pytest.raises(error, match=message):
        Channel(name)
    with pytest.raises(error, match=message):
        get_channel(name)
    with pytest.raises(error, match=message):
        set_channel(name, Channel(unique("ok")))
    with pytest.raises(error, match=message.replace("name", "channel", 1)):
        shared_memory.publish(name, 1)
    with pytest.raises(error, match=message.replace("name", "channel", 1)):
        shared_memory.on_subscriber_receive(name)
    assert all(n.startswith("ok") for n in set(local_ends()) - before)  # only the valid channel was made


def test_a_str_subclass_name_is_used_as_a_plain_str():
    plain = unique("sub")
    chan = Channel(Name(plain))
    assert type(chan.name) is str and chan is Channel(plain)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"buffer_size": 0}, ValueError, r"^buffer_size must be >= 1 and <= 1000000000, got 0$"),
        ({"buffer_size": -5}, ValueError, r"^buffer_size must be >= 1"),
        ({"buffer_size": 10**10}, ValueError, r"^buffer_size must be >= 1 and <= 1000000000, got 10000000000$"),
        ({"buffer_size": True}, TypeError, r"^buffer_size must be an int, got bool$"),
        ({"buffer_size": 2.0}, TypeError, r"^buffer_size must be an int, got float$"),
        ({"buffer_size": "10"}, TypeError, r"^buffer_size must be an int, got str$"),
        ({"type_check": "no"}, TypeError, r"^type_check must be True or False, got str$"),
        ({"type_check": 0}, TypeError, r"^type_check must be True or False, got int$"),
    ],
)
def test_bad_channel_options_change_nothing(kwargs, error, message):
    fresh = unique("fresh")
    with pytest.raises(error, match=message):
        Channel(fresh, **kwargs)
    assert fresh not in local_ends()  # no end was created
    existing = Channel(unique("existing"), buffer_size=7)
    with pytest.raises(error, match=message):
        Channel(existing.name, **kwargs)
    assert existing._state.capacity == 7 and existing._state.type_check is True


class Spiteful(int):
    """An int subclass whose comparisons raise: once accepted, its plain value is used."""

    def __ne__(self, other: object) -> bool:
        raise RuntimeError("hostile __ne__")

    __eq__ = __lt__ = __le__ = __gt__ = __ge__ = __ne__  # type: ignore[assignment]
    __hash__ = int.__hash__


class SpitefulFloat(float):
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("hostile __lt__")

    __le__ = __gt__ = __ge__ = __lt__  # type: ignore[assignment]


def test_number_subclasses_are_used_as_their_plain_value():
    """A buffer_size whose __ne__ raised used to fail in Channel.__init__, after __new__ had
    made the end."""
    chan = Channel(unique("spite"), buffer_size=Spiteful(5))
    assert chan._state.capacity == 5 and type(chan._state.capacity) is int
    assert Channel(chan.name, buffer_size=Spiteful(6)) is chan and chan._state.capacity == 6
    with pytest.raises(CommTimeoutError):
        chan.receive(timeout=SpitefulFloat(0.01))
    key = unique("k")
    shared_memory.set(key, 1, ttl=SpitefulFloat(60.0))
    assert 0 < shared_memory.ttl(key) <= 60
    with pytest.raises(TypeError, match=r"^amount must be an int or float, got Spiteful$"):
        shared_memory.incr(key, Spiteful(2))  # the host unpickles amounts: exactly int or float
    assert shared_memory.get(key) == 1


@pytest.mark.parametrize(("timeout", "error", "message"), BAD_TIMEOUTS)
def test_bad_timeouts_are_refused_before_anything_happens(timeout, error, message):
    chan = Channel(unique("t"))
    with pytest.raises(error, match=message):
        chan.send("never sent", timeout=timeout)
    with pytest.raises(error, match=message):
        chan.receive(timeout=timeout)
    with pytest.raises(error, match=message):
        asyncio.run(chan.async_send("never sent", timeout=timeout))
    with pytest.raises(error, match=message):
        asyncio.run(chan.async_receive(timeout=timeout))
    assert chan._state.mode is None  # receive did not claim a mode
    key = unique("k")
    for call in (
        lambda: shared_memory.set(key, 1, timeout=timeout),
        lambda: shared_memory.get(key, timeout=timeout),
        lambda: shared_memory.incr(key, timeout=timeout),
        lambda: shared_memory.setdefault(key, 1, timeout=timeout),
        lambda: shared_memory.compare_and_set(key, None, 1, timeout=timeout),
        lambda: shared_memory.delete(key, timeout=timeout),
        lambda: shared_memory.pop(key, None, timeout=timeout),
        lambda: shared_memory.expire(key, 5, timeout=timeout),
        lambda: shared_memory.ttl(key, timeout=timeout),
        lambda: shared_memory.get_all(timeout=timeout),
        lambda: shared_memory.clear(timeout=timeout),
        lambda: asyncio.run(shared_memory.async_set(key, 1, timeout=timeout)),
        lambda: asyncio.run(shared_memory.async_clear(timeout=timeout)),
    ):
        with pytest.raises(error, match=message):
            call()
    assert shared_memory.get(key) is None


@pytest.mark.parametrize(("ttl", "error", "message"), BAD_TTLS)
def test_bad_ttls_are_refused_and_nothing_is_stored(ttl, error, message):
    key = unique("ttl")
    with pytest.raises(error, match=message):
        shared_memory.set(key, "v", ttl=ttl)
    assert shared_memory.get(key, "absent") == "absent"
    shared_memory.set(key, "v")
    with pytest.raises(error, match=message):
        shared_memory.expire(key, ttl)
    with pytest.raises(error, match=message):
        asyncio.run(shared_memory.async_expire(key, ttl))
    assert shared_memory.ttl(key) is None  # still no expiry


@pytest.mark.parametrize(
    ("amount", "error", "message"),
    [
        (NAN, ValueError, r"^amount must be a finite number, got nan$"),
        (INF, ValueError, r"^amount must be a finite number, got inf$"),
        (True, TypeError, r"^amount must be an int or float, got bool$"),
        ("1", TypeError, r"^amount must be an int or float, got str$"),
        (Level.ONE, TypeError, r"^amount must be an int or float, got Level$"),
        (None, TypeError, r"^amount must be an int or float, got NoneType$"),
    ],
)
def test_bad_incr_amounts_change_nothing(amount, error, message):
    key = unique("n")
    shared_memory.set(key, 5)
    with pytest.raises(error, match=message):
        shared_memory.incr(key, amount)
    assert shared_memory.get(key) == 5


def test_other_store_arguments():
    key = unique("k")
    shared_memory.set(key, 1)
    with pytest.raises(TypeError, match=r"^ignore_key_error must be True or False, got str$"):
        shared_memory.delete(key, "yes")
    assert shared_memory.get(key) == 1
    for bad_key in ([1], {"a": 1}, Hostile()):
        with pytest.raises(TypeError, match=r"^shared_memory keys must be hashable, got (list|dict|Hostile)$"):
            shared_memory.set(bad_key, 1)
        with pytest.raises(TypeError, match=r"^shared_memory keys must be hashable"):
            shared_memory.get(bad_key)
    with pytest.raises(TypeError, match=r"^channels must be a dict of name -> Channel, got list$"):
        set_channels([])  # type: ignore[arg-type]


def test_hostile_values_get_the_error_the_caller_expects():
    chan = Channel(unique("hv"))
    # __reduce__ raises an exception whose __str__ raises too: still SerializationError
    with pytest.raises(SerializationError, match=r"of type Hostile cannot be pickled: <BadStr \(its str failed\)>$"):
        chan.send(Hostile())
    with pytest.raises(SerializationError):
        shared_memory.set(unique("k"), Hostile())
    with pytest.raises(SerializationError):
        shared_memory.publish("topic", Hostile())
    # wrong type with a failing __repr__: ChannelTypeError, not RuntimeError
    typed = Channel[int](unique("typed"))
    with pytest.raises(ChannelTypeError, match=r"carries int, got Hostile: <Hostile object \(its repr failed\)>$"):
        typed.send(Hostile())
    # a check that runs the value's __eq__ (Literal) or __iter__ (list[int]): still ChannelTypeError
    literal = Channel[Literal[1, 2]](unique("lit"))
    with pytest.raises(ChannelTypeError, match=r"checking a Hostile against it raised RuntimeError: hostile __eq__$"):
        literal.send(Hostile())

    class BadList(list):
        def __iter__(self) -> Any:
            raise RuntimeError("hostile __iter__")

    listed = Channel[list[int]](unique("list"))
    with pytest.raises(ChannelTypeError, match=r"checking a \S*BadList against it raised RuntimeError"):
        listed.send(BadList([1]))


class HostileKey:
    """Hashable and picklable, but its repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("hostile __repr__")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostileKey)

    def __hash__(self) -> int:
        return 7


def test_a_key_whose_repr_raises_still_gets_the_documented_errors():
    key = HostileKey()
    shared_memory.set(key, "text")
    with pytest.raises(TypeError, match=r"^shared_memory key <HostileKey object \(its repr failed\)> holds str, not"):
        shared_memory.incr(key)
    shared_memory.set(key, Level.ONE)
    with pytest.raises(TypeError, match=r"holds .*Level, not a number$"):
        shared_memory.incr(key)
    shared_memory.delete(key)


def test_one_element_type_per_channel_name_per_process():
    name = unique("typed")
    first = Channel[int](name)
    with pytest.raises(ChannelTypeError, match=re.escape(f"channel {name!r} was created in this process as "
                                                         "Channel[int] and again as Channel[str]")):  # fmt: skip
        Channel[str](name)
    assert Channel[int](name) is first and Channel(name) is first  # the same type, or none: fine
    with pytest.raises(ChannelTypeError, match=r"carries int, got str"):
        first.send("still int")


@pytest.mark.timeout(60)
def test_the_same_checks_hold_in_a_child(host):
    name = unique("kid")
    host({name: ltargets.agent})
    error = ask(name, "channel", "a\ud800")
    assert type(error) is ValueError and str(error).startswith("name must encode as UTF-8 (no lone surrogates)")
    error = ask(name, "get_channel", "")
    assert type(error) is ValueError and str(error) == "name must not be empty"
    error = ask(name, "store", "set", "k", 1, ttl=NAN)
    assert type(error) is ValueError and "finite" in str(error)
    assert shared_memory.get("k") is None
    error = ask(name, "store", "get", "k", timeout=-1)
    assert type(error) is ValueError and str(error) == "timeout must be >= 0, got -1"
    error = ask(name, "store", "incr", "n", INF)
    assert type(error) is ValueError and str(error) == "amount must be a finite number, got inf"
    typed = unique("typed")
    assert ask(name, "typed", "int", typed) == "created"
    error = ask(name, "typed", "str", typed)
    assert isinstance(error, ChannelTypeError) and "Channel[int] and again as Channel[str]" in str(error)
    assert ask(name, "pid") is not None  # still connected, still answering
