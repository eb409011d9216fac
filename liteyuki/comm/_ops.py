"""Requests a process makes of the store and the channel registry, as typed operations.

Each operation is a small immutable ``NamedTuple`` named after the call it
serves (``method``); the host (or any other store backend) dispatches on it
with ``match`` (class patterns: ``case Get(key)``). On the wire an operation
travels as its class name in the frame's name field and its fields, in order,
as one pickled tuple (the operation itself is that tuple), and the host
rebuilds the same object with ``OPERATIONS[name](*fields)``.

NamedTuples rather than frozen dataclasses: every child loads this module, and
``dataclasses`` (with the ``inspect`` it imports) plus fourteen dataclass
definitions cost a plain child ~6 ms of start-up, a quarter of what a bare
spawned interpreter takes. Being tuples, two operations of different classes
with the same fields compare equal: dispatch on the class (``match``,
``type(op)``), never on equality.

Values inside operations are already pickled (``bytes``): the store keeps
them as they are and never needs the user's classes to hold them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from .._lean_typing import NamedTuple


__all__ = [
    "OPERATIONS",
    "STORE_OPERATIONS",
    "ChannelExists",
    "ChannelNames",
    "Clear",
    "CompareAndSet",
    "Delete",
    "Expire",
    "Get",
    "GetAll",
    "Incr",
    "Operation",
    "Pop",
    "RegisterChannel",
    "RegistryOp",
    "Set",
    "SetDefault",
    "StoreOp",
    "Ttl",
    "fields_of",
]


class Get(NamedTuple):
    method = "get"

    key: Any


class Set(NamedTuple):
    method = "set"

    key: Any
    value: bytes
    ttl: float | None = None


class Delete(NamedTuple):
    method = "delete"

    key: Any
    missing_ok: bool = True


class Pop(NamedTuple):
    method = "pop"

    key: Any
    default: bytes | None = None  # None: no default, a missing key is KeyError


class SetDefault(NamedTuple):
    method = "setdefault"

    key: Any
    default: bytes


class Incr(NamedTuple):
    method = "incr"

    key: Any
    amount: int | float = 1


class CompareAndSet(NamedTuple):
    method = "compare_and_set"

    key: Any
    expected: bytes | None  # None: the key must be absent
    new: bytes


class Expire(NamedTuple):
    method = "expire"

    key: Any
    ttl: float | None


class Ttl(NamedTuple):
    method = "ttl"

    key: Any


class GetAll(NamedTuple):
    method = "get_all"


class Clear(NamedTuple):
    method = "clear"


class ChannelExists(NamedTuple):
    method = "channel_exists"

    name: str


class RegisterChannel(NamedTuple):
    method = "register_channel"

    name: str


class ChannelNames(NamedTuple):
    method = "channel_names"


StoreOp = Get | Set | Delete | Pop | SetDefault | Incr | CompareAndSet | Expire | Ttl | GetAll | Clear
RegistryOp = ChannelExists | RegisterChannel | ChannelNames
Operation = StoreOp | RegistryOp

# For a fast ``type(op) in STORE_OPERATIONS`` (a store backend takes these; the host keeps the registry ones).
STORE_OPERATIONS: frozenset[type[Any]] = frozenset(
    (Get, Set, Delete, Pop, SetDefault, Incr, CompareAndSet, Expire, Ttl, GetAll, Clear)
)

OPERATIONS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Get,
        Set,
        Delete,
        Pop,
        SetDefault,
        Incr,
        CompareAndSet,
        Expire,
        Ttl,
        GetAll,
        Clear,
        ChannelExists,
        RegisterChannel,
        ChannelNames,
    )
}


def fields_of(op: Operation) -> tuple[Any, ...]:
    """The operation's fields in declaration order (what travels on the wire)."""
    return tuple(op)
