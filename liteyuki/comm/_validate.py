"""Checks of user-facing arguments, run at the call before anything changes.

Each check returns the value it accepted (normalised where noted) or raises
``TypeError`` (wrong type) / ``ValueError`` (right type, outside the rule),
with a message naming the parameter and the rule. ``bool`` is never taken for
a number. ``safe_repr`` / ``safe_str`` describe a user's object for an error
message without letting its ``__repr__`` / ``__str__`` change which error is raised.
"""

from __future__ import annotations

import math
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SECONDS",
    "check_bool",
    "check_name",
    "check_number",
    "check_size",
    "check_timeout",
    "check_ttl",
    "safe_repr",
    "safe_str",
    "type_name",
]

MAX_NAME_LENGTH = 200  # characters; a frame's name field holds 65535 UTF-8 bytes
# The longest wait the platform's locks accept (threading raises OverflowError above it).
MAX_SECONDS = float(threading.TIMEOUT_MAX)


def type_name(value: Any) -> str:
    """The name of ``value``'s class (never runs the value's own code)."""
    # type's own descriptor: a metaclass cannot override what this returns.
    name = type.__dict__["__qualname__"].__get__(type(value))
    return name if isinstance(name, str) else "object"


def safe_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; a placeholder if ``__repr__`` fails."""
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError
    except Exception:
        return f"<{type_name(value)} object (its repr failed)>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_str(value: Any, limit: int = 200) -> str:
    """``str(value)`` (e.g. of an exception) cut to ``limit``; a placeholder if ``__str__`` fails."""
    try:
        text = str(value)
        if not isinstance(text, str):
            raise TypeError
    except Exception:
        return f"<{type_name(value)} (its str failed)>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: int | float) -> int | float:
    """An int or float subclass's value as a plain int or float, read by the base type's own
    slot: none of the subclass's methods (a hostile ``__lt__``, ``__ne__``) runs after the check."""
    return int.__index__(value) if isinstance(value, int) else float.__float__(value)


def check_number(value: Any, name: str, *, minimum: float | None = None, above: float | None = None) -> float:
    """A finite int or float (not bool), ``>= minimum`` / ``> above`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or float, got {type_name(value)}")
    value = _plain(value)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {safe_repr(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {safe_repr(value)}")
    if above is not None and value <= above:
        raise ValueError(f"{name} must be > {above}, got {safe_repr(value)}")
    return value


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """None (the default wait) or seconds: finite, >= 0, at most ``MAX_SECONDS``."""
    if value is None:
        return None
    if (type(value) is float or type(value) is int) and 0 <= value <= MAX_SECONDS:
        return value  # the common case, checked in one line: every receive() passes a timeout
    value = check_number(value, name, minimum=0)
    if value > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:.0f} s (None waits the default), got {value!r}")
    return value


def check_ttl(value: Any, name: str = "ttl") -> float | None:
    """None (no expiry) or seconds: finite and > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number of seconds or None, got {type_name(value)}")
    value = _plain(value)
    try:
        finite = math.isfinite(value)
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a positive number of seconds or None (finite), got {safe_repr(value)}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {safe_repr(value)}")
    return value


def check_size(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An int (not bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type_name(value)}")
    value = _plain(value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be >= {minimum}{upper}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Exactly True or False (a truthy object's ``__bool__`` is not run)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type_name(value)}")
    return value


def check_name(value: Any, name: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """A non-empty ``str`` of at most ``max_length`` characters that encodes as UTF-8.

    A ``str`` subclass is accepted and returned as a plain ``str`` (its own
    ``__eq__`` / ``__hash__`` never reach the registries).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type_name(value)}")
    text = str.__str__(value)
    if not text:
        raise ValueError(f"{name} must not be empty")
    if len(text) > max_length:
        raise ValueError(f"{name} must be at most {max_length} characters, got {len(text)}: {text[:40]!r}...")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} must encode as UTF-8 (no lone surrogates), got {text!r:.80}: "
            f"character {exc.start} is {text[exc.start]!r}"
        ) from None
    return text
