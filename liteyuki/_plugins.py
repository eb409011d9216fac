"""Host plugins: modules imported by the host after its children were added.

Listed in ``pyproject.toml``::

    [tool.liteyuki]
    plugins = ["my_package.liteyuki_plugin"]   # importable modules
    plugin_dirs = ["src/liteyuki_plugins"]      # every module / package inside

or passed as ``LiteyukiBot(plugins=[...], plugin_dirs=[...])``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .log import logger

__all__ = ["load_plugin", "load_plugins", "plugins_from_pyproject"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_plugin(module_or_path: str | Path) -> ModuleType | None:
    """Import one host plugin by dotted name or file/folder path; log and return None if it fails.

    A file or folder is imported under a module name of its own,
    ``liteyuki_plugins.<name>`` (``liteyuki_plugins.<name>_2`` for a second file
    of the same name), so a plugin named like an imported module (``random.py``)
    still runs; loading the same path again returns the module already loaded.
    """
    try:
        path = Path(module_or_path)
        if isinstance(module_or_path, Path) or module_or_path.endswith(".py") or path.exists():
            module = _import_path(path)
        else:
            module = importlib.import_module(str(module_or_path))
    except Exception:
        logger.exception(f"host plugin {module_or_path!s} failed to load")
        return None
    where = getattr(module, "__file__", None)
    logger.info(f"loaded host plugin {module.__name__}" + (f" ({where})" if where else ""))
    return module


def load_plugins(directory: str | Path) -> list[ModuleType]:
    """Load every module (``*.py``) and package in ``directory``, skipping names starting with ``_``."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"plugin directory {str(folder)!r} does not exist")
    loaded = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()):
            module = load_plugin(entry)
            if module is not None:
                loaded.append(module)
    return loaded


# The namespace host plugins loaded by path live in, and which file each name belongs to.
NAMESPACE = "liteyuki_plugins"
_by_path: dict[Path, str] = {}


def _namespace() -> ModuleType:
    package = sys.modules.get(NAMESPACE)
    if package is None:
        package = ModuleType(NAMESPACE, "Host plugins loaded by file path (liteyuki._plugins).")
        package.__path__ = []  # a package, so `liteyuki_plugins.x` is a valid submodule name
        sys.modules[NAMESPACE] = package
    return package


def _import_path(path: Path) -> ModuleType:
    path = path.resolve()
    known = _by_path.get(path)
    if known is not None and known in sys.modules:
        return sys.modules[known]
    package_dir = path if path.is_dir() else None
    stem = path.stem if package_dir is None else path.name
    if not stem.isidentifier():
        raise ImportError(f"host plugin {str(path)!r}: {stem!r} is not a valid module name")
    namespace = _namespace()
    name, n = f"{NAMESPACE}.{stem}", 1
    while name in sys.modules:  # another file of the same name, loaded from elsewhere
        n += 1
        name = f"{NAMESPACE}.{stem}_{n}"
    location = package_dir / "__init__.py" if package_dir else path
    spec = importlib.util.spec_from_file_location(
        name, location, submodule_search_locations=[str(package_dir)] if package_dir else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    setattr(namespace, name.rpartition(".")[2], module)
    _by_path[path] = name
    return module


def plugins_from_pyproject(pyproject: str | Path = "pyproject.toml") -> tuple[list[str], list[str]]:
    """``[tool.liteyuki] plugins`` and ``plugin_dirs`` (paths relative to the file)."""
    file = Path(pyproject)
    if not file.is_file():
        return [], []
    table: dict[str, Any] = tomllib.loads(file.read_text("utf-8")).get("tool", {}).get("liteyuki", {})
    base = file.parent
    return list(table.get("plugins", [])), [str(base / d) for d in table.get("plugin_dirs", [])]
