"""PEP 562 lazy names: a package's public names load their module on first access.

A child process imports ``liteyuki`` (and ``liteyuki.process``) to run its bootstrap;
loading every public name up front would bring the host's modules into every child.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def lazy_names(
    namespace: dict[str, Any], modules: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the module whose ``globals()`` is ``namespace``:
    ``modules`` maps a name to the module (relative to the package) that defines it."""
    name, package = namespace["__name__"], namespace["__package__"]

    def __getattr__(attr: str) -> Any:
        module = modules.get(attr)
        if module is None:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(module, package), attr)
        namespace[attr] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
