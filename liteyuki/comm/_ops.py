"""Requests a process makes of the store and the channel registry, as typed operations.

Each operation is a small frozen dataclass named after the call it serves (``method``); the host (or any other store
backend) dispatches on it with ``match``. On the wire an operation travels as
its class name in the frame's name field and its fields, in order, as one
pickled tuple — cheaper than pickling the dataclass, and the host rebuilds
the same object with ``OPERATIONS[name](*fields)``.

Values inside operations are already pickled (``bytes``): the store keeps
them as they are and never needs the user's classes to hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class Get:
    method: ClassVar[str] = "get"

    key: Any


@dataclass(frozen=True)
class Set:
    method: ClassVar[str] = "set"

    key: Any
    value: bytes
    ttl: float | None = None


@dataclass(frozen=True)
class Delete:
    method: ClassVar[str] = "delete"

    key: Any
    missing_ok: bool = True


@dataclass(frozen=True)
class Pop:
    method: ClassVar[str] = "pop"

    key: Any
    default: bytes | None = None  # None: no default, a missing key is KeyError


@dataclass(frozen=True)
class SetDefault:
    method: ClassVar[str] = "setdefault"

    key: Any
    default: bytes


@dataclass(frozen=True)
class Incr:
    method: ClassVar[str] = "incr"

    key: Any
    amount: int | float = 1


@dataclass(frozen=True)
class CompareAndSet:
    method: ClassVar[str] = "compare_and_set"

    key: Any
    expected: bytes | None  # None: the key must be absent
    new: bytes


@dataclass(frozen=True)
class Expire:
    method: ClassVar[str] = "expire"

    key: Any
    ttl: float | None


@dataclass(frozen=True)
class Ttl:
    method: ClassVar[str] = "ttl"

    key: Any


@dataclass(frozen=True)
class GetAll:
    method: ClassVar[str] = "get_all"


@dataclass(frozen=True)
class Clear:
    method: ClassVar[str] = "clear"


@dataclass(frozen=True)
class ChannelExists:
    method: ClassVar[str] = "channel_exists"

    name: str


@dataclass(frozen=True)
class RegisterChannel:
    method: ClassVar[str] = "register_channel"

    name: str


@dataclass(frozen=True)
class ChannelNames:
    method: ClassVar[str] = "channel_names"


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
    return tuple(op.__dict__.values())
