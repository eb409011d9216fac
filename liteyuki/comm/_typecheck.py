"""A small runtime check of a value against a type hint, for typed channels."""

from __future__ import annotations

import collections.abc
import sys
import types

from .._lean_typing import TypeVar

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["matches"]


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits ``hint`` (classes, unions, Optional, Literal, list/tuple/dict/set)."""
    import typing  # on the first typed send: a plain child does not load typing (see _lean_typing)

    return _matches(value, hint, typing)


def _matches(value: Any, hint: Any, typing: types.ModuleType) -> bool:
    # ``typing`` is passed down, not imported per call: a list of n items recurses n times.
    if hint is typing.Any or hint is object or is_type_var(hint):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is None:
        return isinstance(value, hint) if isinstance(hint, type) else True
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, a, typing) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is typing.Annotated:
        return _matches(value, args[0], typing)
    if not isinstance(origin, type) or not isinstance(value, origin):
        return False
    if not args:
        return True
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0], typing) for v in value)
        return len(value) == len(args) and all(_matches(v, a, typing) for v, a in zip(value, args, strict=True))
    if issubclass(origin, collections.abc.Mapping):
        key_hint, value_hint = args if len(args) == 2 else (typing.Any, typing.Any)
        return all(_matches(k, key_hint, typing) and _matches(v, value_hint, typing) for k, v in value.items())
    if issubclass(origin, collections.abc.Iterable) and len(args) == 1:
        return all(_matches(v, args[0], typing) for v in value)
    return True


def is_type_var(hint: Any) -> bool:
    """Whether ``hint`` is a type variable (``Channel[T]`` in generic code), ours or typing's."""
    typing = sys.modules.get("typing")  # not loaded: no typing.TypeVar exists to compare with
    return isinstance(hint, TypeVar) or (typing is not None and isinstance(hint, typing.TypeVar))
