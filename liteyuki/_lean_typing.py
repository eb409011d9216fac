"""Run-time stand-ins for ``typing.NamedTuple``, ``Generic`` and ``TypeVar``.

``import typing`` costs a cold process ~1.8 ms, 7 % of what a bare spawned child
takes to start (benchmark row 8). The modules a plain child loads therefore never
import it at run time: type checkers read the real names, imported under
``if TYPE_CHECKING:`` (``TYPE_CHECKING = False`` defined in the module, an idiom
mypy, pyright and ruff recognise), and these stand-ins build the same classes
when the code runs. ``tests/test_lean_child.py`` checks that a plain child does
not load ``typing``; ``tests/test_lean_typing.py`` that these behave as
``typing``'s do for our classes.
"""

from __future__ import annotations

import collections
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Generic", "NamedTuple", "TypeVar"]

# Class-body names that describe the class itself, not fields or methods to copy.
_OWN = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__"})


class _NamedTupleMeta(type):
    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        fields = tuple(namespace.get("__annotations__", {}))
        defaults = [namespace[field] for field in fields if field in namespace]
        made = collections.namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])  # type: ignore[misc]
        for key, value in namespace.items():
            if key not in _OWN and key not in fields:
                setattr(made, key, value)  # the docstring, methods and properties of the class body
        made.__annotations__ = dict(namespace.get("__annotations__", {}))
        return made


# ``class Frame(NamedTuple): kind: int`` makes a ``collections.namedtuple``, as typing's does.
NamedTuple = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})


class TypeVar:
    """A type parameter's name, for ``Generic[T]`` at run time."""

    __slots__ = ("__name__",)

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"~{self.__name__}"


class _Alias(types.GenericAlias):
    """``Channel[int]``: calling it makes the object, then sets its ``__orig_class__``.

    ``types.GenericAlias`` and Python 3.12+'s typing swallow an error raised by that
    setter; here it reaches the caller on every version (a channel refuses a second
    element type there).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        made = self.__origin__(*args, **kwargs)
        made.__orig_class__ = self
        return made


class Generic:
    """Makes ``Cls[X]`` an alias of ``Cls`` with its one type argument ``X`` (see ``_Alias``)."""

    __slots__ = ()

    def __class_getitem__(cls, params: Any) -> _Alias:
        # As typing refuses them: a wrong number of arguments, or one that is no type.
        if isinstance(params, tuple) and len(params) != 1:
            raise TypeError(f"{cls.__name__}[...] takes one type argument, got {len(params)}")
        param = params[0] if isinstance(params, tuple) else params
        if not _is_type_like(param):
            raise TypeError(f"{cls.__name__}[...] takes a type, got {param!r}")
        return _Alias(cls, params)


def _is_type_like(param: Any) -> bool:
    """A class, None, a forward reference (a string), a type variable, an alias
    (``list[int]``, ``int | None``, ``Channel[int]``) or one of typing's forms."""
    return (
        param is None
        or isinstance(param, (type, str, TypeVar, types.GenericAlias, types.UnionType))
        or type(param).__module__ == "typing"
    )
