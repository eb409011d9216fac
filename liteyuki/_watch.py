"""What `--reload` watches, and what a changed path restarts.

A *plan* is a list of rules, each naming the paths it covers and what a change
there restarts: one NoneBot child (``process='nonebot'``) or the whole host
(``process=None``: host plugins, ``pyproject.toml``, ``.env*``, the main script).
The most specific rule wins, so a NoneBot plugin folder inside a host plugin
folder restarts only the child. Only ``*.py`` files count under a plugin folder
(a plugin writing its own data files there never triggers a restart);
``__pycache__``, ``*.pyc``, editor swap/backup files and ``.git`` never count.

The watcher runs watchfiles (the watcher uvicorn uses: native inotify/FSEvents/
ReadDirectoryChangesW through one Rust crate, debounced in Rust) on daemon threads.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._threads import QuietThread
from .log import logger

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "HOST",
    "Rule",
    "Watcher",
    "classify",
    "config_rules",
    "nonebot_rules",
    "plugin_rules",
    "require_watchfiles",
    "tool_table",
]

HOST: str | None = None  # the `process` of rules whose changes restart the whole host

INSTALL_HINT = (
    "--reload needs the watchfiles package: "
    "pip install 'nonebot-plugin-liteyuki-comm[reload]' (or pip install watchfiles)"
)

# Never a reason to restart (names anywhere below a watched folder).
IGNORED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", ".idea", ".vscode", "node_modules", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", ".hypothesis"}
)  # fmt: skip
# Editor swap/backup/lock files and compiled files (watchfiles' DefaultFilter patterns, plus vim's 4913 probe).
IGNORED_NAMES = re.compile(r"\.py[cod]$|\.___jb_...___$|\.sw.$|~$|^\.#|^\.DS_Store$|^flycheck_|^4913$")
CONFIG_NAMES = ("pyproject.toml", ".env", ".env.*")

# A burst of saves (editor temp file + rename, format-on-save, git checkout) is one change:
# reported once nothing moved for QUIET s, or QUIET_MAX s after its first change at most.
# watchfiles alone ends a batch when its *set* of paths stops growing, so the same file saved
# every 0.1 s came out as a batch every ~0.6 s (five restarts for one burst): it yields small
# batches here (STEP_MS), and the watcher merges them.
QUIET = 0.3
QUIET_MAX = 3.0
STEP_MS = 50
DEBOUNCE_MS = 3_000
# How often a watcher thread wakes up without changes (to notice stop, to end a quiet period,
# and to report it is live).
TICK_MS = 100


def require_watchfiles() -> Any:
    """The watchfiles module; ``SystemExit`` with what to install when it is missing."""
    try:
        import watchfiles
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    return watchfiles


@dataclass(frozen=True)
class Rule:
    """``folder`` watched recursively for ``*.py`` (``names`` None), or flat for file names matching ``names``."""

    folder: Path
    process: str | None  # the child to restart, or HOST
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Symlinks resolved, as the notification backends report them (macOS: /var -> /private/var).
        object.__setattr__(self, "folder", Path(os.path.realpath(self.folder)))

    def covers(self, path: Path) -> int:
        """How specific this rule is for ``path`` (0: not at all); an exact file beats any folder."""
        if self.names is not None:
            matched = path.parent == self.folder and any(fnmatch.fnmatchcase(path.name, n) for n in self.names)
            return 1_000_000 if matched and not IGNORED_NAMES.search(path.name) else 0
        try:
            below = path.relative_to(self.folder).parts
        except ValueError:
            return 0
        # Only what lies below the watched folder is judged: a project under ~/.venv/... still reloads.
        if not below or path.suffix != ".py" or IGNORED_DIRS.intersection(below[:-1]):
            return 0
        if IGNORED_NAMES.search(below[-1]) or below[-1].startswith("."):
            return 0
        return len(self.folder.parts)


def classify(rules: Iterable[Rule], path: str | Path) -> Rule | None:
    """The most specific rule covering ``path``, or None if the change does not matter."""
    path = Path(path)
    # The folder resolved like the rules' folders; the name kept (a symlinked plugin file still counts).
    path = Path(os.path.realpath(path.parent)) / path.name
    best, score = None, 0
    for rule in rules:
        s = rule.covers(path)
        if s > score:
            best, score = rule, s
    return best


# -- building the plan -----------------------------------------------------------------


def tool_table(pyproject: Path, tool: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(pyproject.read_text("utf-8"))
    except (OSError, ValueError):  # (TOMLDecodeError and UnicodeDecodeError: the host says what is wrong)
        return {}
    tools = data.get("tool", {})
    table = tools.get(tool, {}) if isinstance(tools, dict) else {}
    return table if isinstance(table, dict) else {}


def _module_location(name: str) -> list[tuple[Path, bool]]:
    """Where module ``name`` lives, as (path, is_folder) pairs, found without importing anything.

    Only the top-level package is looked up (``find_spec`` of a dotted name would import
    its parents); the rest of the dotted path is followed on disk.
    """
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations is None:
        origin = spec.origin
        return [(Path(origin), False)] if origin and not rest and origin.endswith(".py") else []
    found: list[tuple[Path, bool]] = []
    for location in spec.submodule_search_locations:
        folder = Path(location)
        for part in rest:
            if (folder / part).is_dir():
                folder = folder / part
            elif (folder / f"{part}.py").is_file():
                folder = folder / f"{part}.py"
                break
            else:
                folder = Path()
                break
        if folder != Path():
            found.append((folder, folder.is_dir()))
    return found


def plugin_rules(process: str | None, modules: Iterable[str], dirs: Iterable[str | Path], base: Path) -> list[Rule]:
    """Rules for plugin folders (relative to ``base``) and plugin modules (found on ``sys.path``)."""
    rules = [Rule(base / d, process) for d in dirs]
    for module in modules:
        for path, is_folder in _module_location(str(module)):
            path = Path(os.path.realpath(path))
            rules.append(Rule(path, process) if is_folder else Rule(path.parent, process, (path.name,)))
    return rules


def nonebot_rules(process: str, pyproject: str | Path) -> list[Rule]:
    """The plugins ``nonebot.load_from_toml(pyproject)`` loads in child ``process``.

    NoneBot resolves ``plugin_dirs`` against the working directory, which ``run_nonebot``
    makes the project's folder: so do we (resolving against our own working directory left
    every NoneBot plugin unwatched when bot.py was started from another folder).
    """
    table = tool_table(Path(pyproject), "nonebot")
    plugins = table.get("plugins", [])
    if isinstance(plugins, dict):  # nb-cli's form: [tool.nonebot.plugins] "project" = ["module", ...]
        modules = [str(m) for group in plugins.values() if isinstance(group, list) for m in group]
    else:  # the older form: plugins = ["module", ...]
        modules = [str(m) for m in plugins] if isinstance(plugins, list) else []
    plugin_dirs = table.get("plugin_dirs", [])
    dirs = [str(d) for d in plugin_dirs] if isinstance(plugin_dirs, list) else []  # (the child says what is wrong)
    return plugin_rules(process, modules, dirs, Path(os.path.realpath(pyproject)).parent)


def config_rules(pyprojects: Iterable[str | Path], script: str | Path | None) -> list[Rule]:
    """``pyproject.toml`` and ``.env*`` beside each project file and in the working directory, and the script."""
    folders = {Path(os.path.realpath(Path(p).parent)) for p in pyprojects} | {Path(os.path.realpath(Path.cwd()))}
    rules = [Rule(folder, HOST, CONFIG_NAMES) for folder in sorted(folders)]
    rules += [Rule(Path(p).parent, HOST, (Path(p).name,)) for p in pyprojects]
    # A configuration file that is a symlink changes where it points: watch the target too
    # (saving it used to restart nothing).
    for folder in sorted(folders):
        for pattern in CONFIG_NAMES:
            for link in sorted(folder.glob(pattern)):
                if link.is_symlink():
                    target = Path(os.path.realpath(link))
                    rules.append(Rule(target.parent, HOST, (target.name,)))
    if script:
        path = Path(os.path.realpath(script))
        rules.append(Rule(path.parent, HOST, (path.name,)))
    return list(dict.fromkeys(rules))  # without duplicates, in order


# -- watching ----------------------------------------------------------------------------


def display(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe(paths: Iterable[str | Path], limit: int = 3) -> str:
    shown = sorted({display(p) for p in paths})
    more = f" (+{len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


class Watcher:
    """Watches the folders of ``rules`` on daemon threads and reports debounced changes.

    ``on_change(rule_process, paths)`` gets every batch of changed paths whose most
    specific rule (among ``all_rules``) is one of ``rules``; ``on_live()`` runs once every
    watch is in place. ``stop()`` ends the threads within about TICK_MS.
    """

    def __init__(
        self,
        rules: list[Rule],
        on_change: Callable[[str | None, list[str]], None],
        on_live: Callable[[], None] = lambda: None,
        all_rules: list[Rule] | None = None,
    ) -> None:
        self._watchfiles = require_watchfiles()
        self.rules = [r for r in rules if r.folder.is_dir()]
        self._all = all_rules if all_rules is not None else rules
        self._mine = set(self.rules)
        self._on_change = on_change
        self._on_live = on_live
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending_live = 0
        self._lock = threading.Lock()
        for rule in rules:
            if not rule.folder.is_dir():
                logger.warning(f"reload: {display(rule.folder)} does not exist; not watched")

    def start(self) -> None:
        recursive = sorted({str(r.folder) for r in self.rules if r.names is None})
        flat = sorted({str(r.folder) for r in self.rules if r.names is not None})
        groups = [(paths, flag) for paths, flag in ((recursive, True), (flat, False)) if paths]
        self._pending_live = len(groups)
        if not groups:
            self._on_live()
        for paths, flag in groups:
            name = f"liteyuki-reload-watch-{'tree' if flag else 'files'}"
            thread = QuietThread(target=self._watch, args=(paths, flag), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _live(self) -> None:
        with self._lock:
            self._pending_live -= 1
            done = self._pending_live == 0
        if done:
            self._on_live()

    def _watch(self, paths: list[str], recursive: bool) -> None:
        live = False
        burst: list[str] = []
        first = last = 0.0
        try:
            for changes in self._watchfiles.watch(
                *paths,
                watch_filter=None,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._stop,
                rust_timeout=TICK_MS,
                yield_on_timeout=True,  # the first (empty) yield says the watch is in place
                raise_interrupt=False,
                recursive=recursive,
                ignore_permission_denied=True,
            ):
                if not live:
                    live = True
                    self._live()
                if self._stop.is_set():
                    continue
                now = time.monotonic()
                if changes:
                    burst.extend(path for _, path in changes)
                    last = now
                    first = first or now
                if burst and (now - last >= QUIET or now - first >= QUIET_MAX):
                    self._dispatch(burst)
                    burst, first = [], 0.0
        except Exception:
            logger.exception(f"reload: watching {', '.join(map(display, paths))} failed; those changes are not seen")
            if not live:
                self._live()

    def _dispatch(self, paths: Iterable[str]) -> None:
        by_process: dict[str | None, list[str]] = {}
        for path in paths:
            rule = classify(self._all, path)
            if rule is not None and rule in self._mine:
                by_process.setdefault(rule.process, []).append(path)
        for process, changed in by_process.items():
            try:
                self._on_change(process, sorted(set(changed)))
            except Exception:
                logger.exception("reload: handling a change failed")
