"""A NoneBot project of the test's own, run as a child of a test host (``run_nonebot``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liteyuki import LiteyukiBot

PYPROJECT = '[project]\nname = "project"\nversion = "0"\n\n[tool.nonebot]\nplugin_dirs = ["plugins"]\n'


def nonebot_child(
    host: Callable[..., LiteyukiBot],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    plugins: dict[str, str],
    **config: Any,
) -> LiteyukiBot:
    """Write a project with ``plugins`` (module name -> source) under ``project`` and start a
    host whose child ``name`` runs NoneBot there (headless console, the ``~none`` driver)."""
    from liteyuki.process import run_nonebot

    (project / "plugins").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    for module, source in plugins.items():
        (project / "plugins" / f"{module}.py").write_text(source)
    monkeypatch.setenv("LITEYUKI_CONSOLE", "headless")
    monkeypatch.chdir(project)  # a project's bot.py runs in its folder, which is on sys.path
    monkeypatch.syspath_prepend(str(project))  # (the child gets the host's sys.path)
    kwargs = {"pyproject": project / "pyproject.toml"}
    return host(setup=lambda bot: bot.process_manager.add_target(name, run_nonebot, kwargs=kwargs), **config)
