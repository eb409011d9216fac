"""MemoryStore against a reference model (hypothesis stateful), with a clock the test moves.

The model is a dict key -> (pickled value, value, deadline); every rule calls the store,
does the same to the model, and compares. After every store call no expired entry is
left in the store (active expiry), so its size equals the model's live keys.
"""

from __future__ import annotations

import collections
import pickle
import signal
import sys
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liteyuki.comm._ops import Clear, CompareAndSet, Delete, Expire, Get, GetAll, Incr, Pop, Set, SetDefault, Ttl
from liteyuki.comm._store import MemoryStore

KEYS = st.sampled_from(["a", "b", "c"])
TTLS = st.one_of(st.none(), st.sampled_from([0.05, 0.5, 1.0, 2.5]))
NUMBERS = st.one_of(st.integers(-3, 3), st.floats(-2, 2, allow_nan=False, width=32))
# Plain builtin data, and one class the store must never import (an OrderedDict stands in
# for a user's class: it is not on the store's list of plain globals).
VALUES = st.one_of(
    NUMBERS,
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from("xy"), st.integers(0, 1), max_size=2),
    st.builds(collections.OrderedDict, st.dictionaries(st.sampled_from("xy"), st.integers(0, 1), max_size=2)),
)


def raw(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def plain(value: Any) -> bool:
    return not isinstance(value, collections.OrderedDict)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = MemoryStore(clock=self.clock)
        self.model: dict[str, tuple[bytes, Any, float | None]] = {}

    # -- the model's view ---------------------------------------------------------
    def live(self, key: str) -> tuple[bytes, Any, float | None] | None:
        entry = self.model.get(key)
        if entry is not None and entry[2] is not None and entry[2] <= self.clock.now:
            del self.model[key]
            return None
        return entry

    def expire_all(self) -> None:
        for key in list(self.model):
            self.live(key)

    def deadline(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.clock.now + ttl

    def after_call(self) -> None:
        # Active expiry: a call leaves no expired entry behind (a few keys: within budget).
        self.expire_all()
        assert len(self.store) == len(self.model)

    # -- rules ----------------------------------------------------------------------
    @rule(seconds=st.sampled_from([0.0, 0.01, 0.05, 0.3, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        assert self.store.execute(Set(key, raw(value), ttl)) is None
        self.model[key] = (raw(value), value, self.deadline(ttl))
        self.after_call()

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        entry = self.live(key)
        assert self.store.execute(Get(key)) == (None if entry is None else entry[0])
        self.after_call()

    @rule(key=KEYS, missing_ok=st.booleans())
    def delete(self, key: str, missing_ok: bool) -> None:
        entry = self.live(key)
        if entry is None and not missing_ok:
            with pytest.raises(KeyError):
                self.store.execute(Delete(key, missing_ok))
        else:
            assert self.store.execute(Delete(key, missing_ok)) is None
            self.model.pop(key, None)
        self.after_call()

    @rule(key=KEYS, default=st.one_of(st.none(), VALUES.map(raw)))
    def pop(self, key: str, default: bytes | None) -> None:
        entry = self.live(key)
        if entry is None and default is None:
            with pytest.raises(KeyError):
                self.store.execute(Pop(key, default))
        else:
            assert self.store.execute(Pop(key, default)) == (default if entry is None else entry[0])
            self.model.pop(key, None)
        self.after_call()

    @rule(key=KEYS, default=VALUES)
    def setdefault(self, key: str, default: Any) -> None:
        entry = self.live(key)
        if entry is None:
            entry = self.model[key] = (raw(default), default, None)
        assert self.store.execute(SetDefault(key, raw(default))) == entry[0]
        self.after_call()

    @rule(key=KEYS, amount=NUMBERS)
    def incr(self, key: str, amount: float) -> None:
        entry = self.live(key)
        current = 0 if entry is None else entry[1]
        if type(current) not in (int, float):
            with pytest.raises(TypeError, match=rf"^shared_memory key '{key}' holds "):
                self.store.execute(Incr(key, amount))
        else:
            result = current + amount
            assert self.store.execute(Incr(key, amount)) == raw(result)
            self.model[key] = (raw(result), result, None if entry is None else entry[2])
        self.after_call()

    @rule(key=KEYS, expected=st.one_of(st.none(), VALUES), new=VALUES)
    def compare_and_set_guess(self, key: str, expected: Any, new: Any) -> None:
        self.compare_and_set(key, expected, new)

    def compare_and_set(self, key: str, expected: Any, new: Any) -> None:
        entry = self.live(key)
        if expected is None:
            ok = entry is None
        else:
            ok = entry is not None and (
                entry[0] == raw(expected) or (plain(entry[1]) and plain(expected) and entry[1] == expected)
            )
        op = CompareAndSet(key, None if expected is None else raw(expected), raw(new))
        assert pickle.loads(self.store.execute(op)) is ok
        if ok:
            self.model[key] = (raw(new), new, None)
        self.after_call()

    @rule(key=KEYS, new=VALUES)
    def compare_and_set_current(self, key: str, new: Any) -> None:
        # The expected value is the stored one (a random guess rarely is): the swap happens.
        entry = self.live(key)
        if entry is not None:
            self.compare_and_set(key, entry[1], new)

    @rule(key=KEYS, ttl=TTLS)
    def expire(self, key: str, ttl: float | None) -> None:
        entry = self.live(key)
        assert pickle.loads(self.store.execute(Expire(key, ttl))) is (entry is not None)
        if entry is not None:
            self.model[key] = (entry[0], entry[1], self.deadline(ttl))
        self.after_call()

    @rule(key=KEYS)
    def ttl(self, key: str) -> None:
        entry = self.live(key)
        if entry is None:
            with pytest.raises(KeyError):
                self.store.execute(Ttl(key))
        else:
            left = pickle.loads(self.store.execute(Ttl(key)))
            assert left == (None if entry[2] is None else entry[2] - self.clock.now)
        self.after_call()

    @rule()
    def get_all(self) -> None:
        self.expire_all()
        items = pickle.loads(self.store.execute(GetAll()))
        assert dict(items) == {key: entry[0] for key, entry in self.model.items()}
        self.after_call()

    @precondition(lambda self: self.model)
    @rule()
    def clear(self) -> None:
        assert self.store.execute(Clear()) is None
        self.model.clear()
        self.after_call()

    @invariant()
    def heap_is_bounded(self) -> None:
        # Stale deadlines are compacted: the heap never grows past 2x live deadlines + 64.
        assert len(self.store._heap) <= 2 * len(self.store._expiry) + 65


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_stream_of_unique_short_lived_keys_keeps_the_store_flat():
    """100,000 unique keys with ttl=0.2 s, one per simulated millisecond: about 200 are
    alive at any moment, and the store never holds more than those plus one."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    value = raw("v" * 20)
    most = 0
    for i in range(100_000):
        clock.now += 0.001
        store.execute(Set(f"key-{i}", value, 0.2))
        most = max(most, len(store))
    assert most <= 202, most
    assert len(store._heap) <= 2 * len(store._expiry) + 65
    # a key re-set over and over with a long ttl leaves no pile of stale deadlines either
    for _ in range(10_000):
        store.execute(Set("same", value, 3600))
    assert len(store._heap) <= 2 * len(store._expiry) + 65


def foreign_pickle() -> bytes:
    """A pickle naming a module this process cannot import (a class only some child has)."""
    module = types.ModuleType("only_in_kid")

    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = "only_in_kid", "Thing"
    module.Thing = Thing  # type: ignore[attr-defined]
    sys.modules["only_in_kid"] = module
    try:
        return raw(Thing())
    finally:
        del sys.modules["only_in_kid"]


def test_incr_and_compare_and_set_never_import_a_stored_class():
    foreign = foreign_pickle()
    store = MemoryStore()
    store.execute(Set("k", foreign))
    with pytest.raises(TypeError, match=r"^shared_memory key 'k' holds only_in_kid\.Thing, not a number$"):
        store.execute(Incr("k", 1))
    # identical pickles match; anything else does not, and nothing is imported to decide
    assert pickle.loads(store.execute(CompareAndSet("k", foreign, raw(1)))) is True
    store.execute(Set("k", foreign))
    assert pickle.loads(store.execute(CompareAndSet("k", raw(1), raw(2)))) is False
    assert store.execute(Get("k")) == foreign
    # an int subclass (an IntEnum, say) is not taken for a number: its class is not imported
    store.execute(Set("level", raw(signal.SIGINT)))
    with pytest.raises(TypeError, match=r"^shared_memory key 'level' holds signal\.(Signals|SIGINT), not a number$"):
        store.execute(Incr("level", 1))
    # plain data compares by value: a dict's order or a list built another way still matches
    store.execute(Set("d", raw({"x": 1, "y": [1, 2]})))
    assert pickle.loads(store.execute(CompareAndSet("d", raw({"y": [1, 2], "x": 1}), raw("new")))) is True


def test_incr_across_every_int_and_float_encoding():
    store = MemoryStore()
    for value in (0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -(2**31), 2**31, 2**64, -(2**70), 0.5, -1e300):
        store.execute(Set("n", raw(value)))
        for amount in (1, -1, 2.5):
            value += amount
            assert store.execute(Incr("n", amount)) == raw(value), value
    for not_a_number in (True, False, None, "1", b"1", [1], 1j):
        store.execute(Set("x", raw(not_a_number)))
        with pytest.raises(TypeError, match=r"^shared_memory key 'x' holds (bool|NoneType|str|bytes|list|complex), "):
            store.execute(Incr("x", 1))


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), 0, -1, True, "1"])
def test_the_store_refuses_a_bad_ttl_whoever_sends_it(ttl):
    store = MemoryStore()
    store.execute(Set("k", raw(1)))
    with pytest.raises((TypeError, ValueError), match=r"^ttl must be"):
        store.execute(Set("k", raw(2), ttl))
    with pytest.raises((TypeError, ValueError), match=r"^ttl must be"):
        store.execute(Expire("k", ttl))
    assert store.execute(Get("k")) == raw(1) and pickle.loads(store.execute(Ttl("k"))) is None
