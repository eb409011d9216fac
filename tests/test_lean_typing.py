"""The run-time stand-ins of ``liteyuki._lean_typing`` behave as ``typing``'s do for our classes."""

from __future__ import annotations

import pickle
import typing

import pytest

from liteyuki import _lean_typing
from liteyuki.comm import Channel, ChannelTypeError
from liteyuki.comm._ops import Set
from liteyuki.comm._typecheck import is_type_var
from liteyuki.comm._wire import Frame, Kind


class Real(typing.NamedTuple):
    """A docstring."""

    method = "demo"

    key: typing.Any
    value: bytes
    ttl: float | None = None

    @property
    def doubled(self) -> bytes:
        return self.value * 2


class Lean(_lean_typing.NamedTuple):  # type: ignore[misc]  # the stand-in, as our modules use it at run time
    """A docstring."""

    method = "demo"

    key: typing.Any
    value: bytes
    ttl: float | None = None

    @property
    def doubled(self) -> bytes:
        return self.value * 2


def test_a_lean_named_tuple_matches_typings() -> None:
    real, lean = Real("k", b"v"), Lean("k", b"v")
    assert Lean._fields == Real._fields == ("key", "value", "ttl")
    assert Lean._field_defaults == Real._field_defaults == {"ttl": None}
    assert tuple(lean) == tuple(real) == ("k", b"v", None)
    assert repr(lean) == repr(real).replace("Real", "Lean")
    assert lean.method == real.method == "demo" and lean.doubled == real.doubled == b"vv"
    assert Lean.__doc__ == Real.__doc__ == "A docstring."
    assert Lean.__module__ == Real.__module__ == __name__
    assert list(Lean.__annotations__) == list(Real.__annotations__)  # typing wraps the strings in ForwardRef
    assert issubclass(Lean, tuple) and lean._replace(ttl=1.0) == ("k", b"v", 1.0)
    with pytest.raises(AttributeError):
        lean.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Lean("only the key")  # type: ignore[call-arg]


def test_our_named_tuples_pickle_by_reference() -> None:
    # Operations and frames cross process boundaries (ops pickled to the host).
    op = Set("k", b"v", 2.0)
    assert pickle.loads(pickle.dumps(op)) == op and type(pickle.loads(pickle.dumps(op))) is Set
    frame = Frame(Kind.MESSAGE, 1, "name", b"payload")
    assert pickle.loads(pickle.dumps(frame)) == frame and frame.kind is Kind.MESSAGE


def test_a_channel_alias_is_generic_for_typing_tools() -> None:
    alias = Channel[int]
    assert typing.get_origin(alias) is Channel and typing.get_args(alias) == (int,)
    assert alias == Channel[int] and alias != Channel[str]
    assert repr(alias).endswith("Channel[int]")


def test_the_alias_lets_an_error_of_the_orig_class_setter_reach_the_caller() -> None:
    # typing 3.12+ and types.GenericAlias swallow it; a second element type must be refused.
    class Strict(_lean_typing.Generic):
        @property
        def __orig_class__(self) -> typing.Any:
            return None

        @__orig_class__.setter
        def __orig_class__(self, alias: typing.Any) -> None:
            raise ChannelTypeError(f"refused {alias!r}")

    with pytest.raises(ChannelTypeError, match=r"refused .*Strict\[int\]"):
        Strict[int]()  # type: ignore[type-arg]


def test_type_variables_of_both_kinds_are_recognised() -> None:
    assert is_type_var(_lean_typing.TypeVar("T")) and is_type_var(typing.TypeVar("U"))
    assert not is_type_var(int) and not is_type_var(None)
    assert repr(_lean_typing.TypeVar("T")) == "~T"
    name = f"generic-{id(object())}"
    end = Channel[typing.TypeVar("V")](name)  # type: ignore[misc]  # Channel[T] in generic code: no element type
    assert end._element_type() is None


def test_a_channel_alias_refuses_what_typing_refuses_and_takes_what_it_takes() -> None:
    with pytest.raises(TypeError, match=r"^Channel\[\.\.\.\] takes a type, got 1$"):
        Channel[1]  # type: ignore[valid-type]
    with pytest.raises(TypeError, match=r"^Channel\[\.\.\.\] takes one type argument, got 2$"):
        Channel[int, str]  # type: ignore[type-arg]
    hints = [int, None, "Later", int | None, list[int], typing.Literal[1], typing.Union[int, str], typing.Any]  # noqa: UP007
    for hint in hints:
        assert typing.get_args(Channel[hint]) == (hint,)  # type: ignore[valid-type]
