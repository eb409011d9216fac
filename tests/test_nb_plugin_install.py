"""`nb plugin install nonebot-plugin-liteyuki-comm` in a fresh NoneBot project, as a user runs it.

Everything happens under ``tmp_path``:

1. build this repository's wheel into a local wheel directory;
2. create a fresh virtualenv inside a NoneBot project rendered by nb-cli's own
   "bootstrap" template (``nb create``: console adapter, ``~none`` driver) and
   install nb-cli and the project's dependencies into it, as ``nb create`` does;
3. download the wheel's dependencies into the wheel directory and write a store
   list naming this project into nb-cli's cache (a temporary ``XDG_CACHE_HOME``);
4. run ``nb plugin install nonebot-plugin-liteyuki-comm --no-index --find-links
   WHEELDIR`` in the project, without a terminal;
5. check the project's ``pyproject.toml``, load it with ``nonebot.load_from_toml``
   (no driver runs, so no startup hook may run), and run the plugin store's
   loading check (noneflow: ``DRIVER=fake``, ``init()``, ``load_plugin``, read
   ``__plugin_meta__``).

It needs the package index (PyPI or a mirror pip is configured for); it skips
only when nb-cli cannot be downloaded at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DIST = "nonebot-plugin-liteyuki-comm"
MODULE = "nonebot_plugin_liteyuki_comm"
PROJECT_NAME = "AwesomeBot"
BIN = "Scripts" if os.name == "nt" else "bin"
EXE = ".exe" if os.name == "nt" else ""

# The store's limits on a plugin (noneflow's validation of a publish request).
STORE_TYPES = {"application", "library"}
STORE_MAX_NAME = 50
STORE_MAX_TAGS = 3
STORE_MAX_TAG_LABEL = 10

# A driver that is never run, like the one the plugin store's check registers as
# `DRIVER=fake`: it offers the usual mixins so a plugin that asks for them loads.
FAKE_DRIVER = '''\
"""Never run: exists so that `init()` succeeds and plugins can be loaded."""

from nonebot import logger
from nonebot.drivers import ASGIMixin, HTTPClientMixin, WebSocketClientMixin
from nonebot.drivers import Driver as BaseDriver


def _unavailable(*args, **kwargs):
    raise NotImplementedError("the fake driver does no I/O")


class Driver(BaseDriver, ASGIMixin, HTTPClientMixin, WebSocketClientMixin):
    @property
    def type(self) -> str:
        return "fake"

    @property
    def logger(self):
        return logger

    def run(self, *args, **kwargs):
        raise RuntimeError("the store check never runs the driver")

    @property
    def server_app(self):
        return None

    @property
    def asgi(self):
        _unavailable()

    setup_http_server = setup_websocket_server = get_session = _unavailable

    async def request(self, setup):
        _unavailable()

    async def stream_request(self, setup, *, chunk_size=1024):
        _unavailable()
        yield

    async def websocket(self, setup):
        _unavailable()
        yield
'''

# What the plugin store's check does with a plugin, plus what we want to know on top.
STORE_CHECK = f"""\
import json
import threading

from nonebot import get_driver, init, load_plugin
from pydantic import BaseModel

init()
plugin = load_plugin({MODULE!r})
assert plugin is not None, "load_plugin returned None"
meta = plugin.metadata
print(json.dumps({{
    "driver": get_driver().type,
    "has_meta": meta is not None,
    "name": meta and meta.name,
    "description": meta and meta.description,
    "usage": meta and meta.usage,
    "type": meta and meta.type,
    "homepage": meta and meta.homepage,
    "config_is_model": bool(meta and isinstance(meta.config, type) and issubclass(meta.config, BaseModel)),
    "supported_adapters": sorted(meta.supported_adapters) if meta and meta.supported_adapters else None,
    "threads": [t.name for t in threading.enumerate()],
}}))
"""

# `nb run` without a bot.py loads the project this way (it also registers adapters, skipped here).
LOAD_FROM_TOML = f"""\
import json
import multiprocessing
import threading

import nonebot

nonebot.init(driver="~none")
nonebot.load_from_toml("pyproject.toml")
plugin = nonebot.get_plugin({MODULE!r})
assert plugin is not None, "the plugin was not loaded from pyproject.toml"
lifespan = nonebot.get_driver()._lifespan
print(json.dumps({{
    "file": plugin.module.__file__,
    "startup_hooks": [f.__name__ for f in lifespan._startup_funcs],
    "bridge_started": plugin.module.bridge.loop is not None,
    "threads": [t.name for t in threading.enumerate()],
    "children": len(multiprocessing.active_children()),
}}))
"""


def _pyproject(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _min_version(requirements: list[str], name: str) -> str:
    """The lower bound of the repository's requirement on ``name`` (``>=X`` → ``X``)."""
    for line in requirements:
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(name):
            for spec in req.specifier:
                if spec.operator in (">=", "==", "~="):
                    return spec.version
    raise AssertionError(f"{name} has no lower bound in the repository's requirements")


def _env(tmp_path: Path, venv: Path) -> dict[str, str]:
    """A clean environment: the fresh venv first on PATH, nb-cli's cache in tmp_path,
    nothing of the test run's own interpreter or NoneBot settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NONEBOT"))}
    for key in ("VIRTUAL_ENV", "CONDA_PREFIX", "DRIVER", "ENVIRONMENT", "PIP_REQUIRE_VIRTUALENV", "PIP_USER"):
        env.pop(key, None)
    env["PATH"] = os.pathsep.join([str(venv / BIN), env.get("PATH", os.defpath)])
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    if sys.platform == "darwin":  # nonestorage ignores XDG_CACHE_HOME there
        env["HOME"] = str(tmp_path / "home")
    env["PYTHONIOENCODING"] = "utf-8"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["NO_COLOR"] = "1"
    return env


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed with exit code {proc.returncode}: {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def _last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(420)
def test_nb_plugin_install(tmp_path: Path) -> None:
    meta = _pyproject(REPO / "pyproject.toml")["project"]
    version = meta["version"]
    nb_cli_req = next(r for r in meta["optional-dependencies"]["test"] if Requirement(r).name == "nb-cli")

    wheels = tmp_path / "wheels"
    project = tmp_path / PROJECT_NAME
    venv = project / ".venv"  # where `nb create` puts it, and where nb-cli looks for it
    python = venv / BIN / f"python{EXE}"
    project.mkdir()
    env = _env(tmp_path, venv)

    # 1. The fresh environment with nb-cli in it.
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env, timeout=120)
    pip = [python, "-m", "pip", "--no-input"]
    try:
        _run([*pip, "install", nb_cli_req], cwd=tmp_path, env=env, timeout=240)
    except AssertionError as install_error:
        try:
            _run([*pip, "download", "--no-deps", "-d", tmp_path / "probe", nb_cli_req], cwd=tmp_path, env=env)
        except AssertionError:
            pytest.skip(f"nb-cli cannot be downloaded (no package index reachable?):\n{install_error}")
        raise

    # 2. The project, rendered by nb-cli's own template as `nb create` does (bootstrap,
    #    console adapter, None driver), then its dependencies installed into its venv.
    console = _min_version(meta["dependencies"], "nonebot-adapter-console")
    nonebot2 = _min_version(meta["dependencies"], "nonebot2")
    adapters = {
        "nonebot-adapter-console": [
            {
                "name": "Console",
                "module_name": "nonebot.adapters.console",
                "project_link": "nonebot-adapter-console",
                "version": console,
                "desc": "基于终端的交互式适配器",
                "author": "nonebot",
                "homepage": "https://github.com/nonebot/adapter-console",
                "tags": [],
                "is_official": True,
                "time": "2024-01-01T00:00:00Z",
            }
        ]
    }
    drivers = {"": {"name": "None", "module_name": "~none", "project_link": "", "version": nonebot2}}
    template_vars = {
        "project_name": PROJECT_NAME,
        "inplace": False,
        "adapters": json.dumps(adapters),
        "drivers": json.dumps(drivers),
        "driver_package": json.dumps(f"nonebot2>={nonebot2}"),
        "environment": {},
    }
    render = (
        "import json, sys\n"
        "from nb_cli.handlers import create_project\n"
        "create_project('bootstrap', {'nonebot': json.loads(sys.argv[1])}, output_dir=sys.argv[2])\n"
    )
    _run([python, "-c", render, json.dumps(template_vars), tmp_path], cwd=tmp_path, env=env, timeout=60)
    config = project / "pyproject.toml"
    created = _pyproject(config)
    assert created["tool"]["nonebot"]["plugins"] == {"@local": []}
    assert (project / ".env.prod").read_text(encoding="utf-8").strip() == "DRIVER=~none"
    _run([*pip, "install", *created["project"]["dependencies"]], cwd=project, env=env, timeout=240)

    # 3. This repository's wheel, and what it needs, in a local wheel directory.
    if importlib.util.find_spec("build") is not None:
        build = [sys.executable, "-m", "build", "--wheel", "--outdir", wheels, REPO]
    else:
        build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, REPO]
    _run(build, cwd=tmp_path, env=env, timeout=180)
    (wheel,) = wheels.glob(f"{MODULE}-{version}-*.whl")
    _run([*pip, "download", "--dest", wheels, wheel], cwd=tmp_path, env=env, timeout=240)

    # 4. The store list nb-cli reads (fresh, so it does not try to download the real one).
    tags = [{"label": "IPC", "color": "#ea5252"}, {"label": "channel", "color": "#52eacf"}]
    store_entry = {
        "module_name": MODULE,
        "project_link": DIST,
        "name": "Liteyuki Comm",
        "desc": meta["description"],
        "author": meta["authors"][0]["name"],
        "homepage": meta["urls"]["Homepage"],
        "tags": tags,
        "is_official": False,
        "type": "library",
        "supported_adapters": None,
        "valid": True,
        "time": datetime.now(timezone.utc).isoformat(),
        "version": version,
        "skip_test": False,
    }
    cache_dir = Path(
        _run([python, "-c", "import nonestorage; print(nonestorage.user_cache_dir('nb-cli'))"], cwd=tmp_path, env=env)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert tmp_path in cache_dir.parents, f"nb-cli's cache would not be the test's own: {cache_dir}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "plugins.json").write_text(json.dumps([store_entry], ensure_ascii=False), encoding="utf-8")

    nb = _run(
        [venv / BIN / f"nb{EXE}", "plugin", "install", DIST, "--no-index", "--find-links", wheels],
        cwd=project,
        env=env,
        timeout=240,
    )
    output = nb.stdout + nb.stderr
    assert "ERROR" not in output and "Failed" not in output, output

    # 5a. nb-cli recorded the plugin and the dependency.
    installed = _pyproject(config)
    assert installed["tool"]["nonebot"]["plugins"] == {"@local": [], DIST: [MODULE]}
    deps = [Requirement(d) for d in installed["project"]["dependencies"]]
    assert [str(d) for d in deps if canonicalize_name(d.name) == DIST] == [f"{DIST}>={version}"], deps
    assert installed["tool"]["nonebot"]["adapters"] == created["tool"]["nonebot"]["adapters"]

    # 5b. NoneBot loads it from pyproject.toml; without a running driver no startup hook
    #     runs, and importing the plugin starts no thread and no process.
    loaded = _last_json(_run([python, "-c", LOAD_FROM_TOML], cwd=project, env=env, timeout=60))
    assert Path(loaded["file"]).resolve().is_relative_to(venv.resolve()), loaded["file"]
    assert "_start_liteyuki_comm" in loaded["startup_hooks"]
    assert loaded["bridge_started"] is False
    assert loaded["threads"] == ["MainThread"]
    assert loaded["children"] == 0

    # 5c. The plugin store's check, in the same fresh environment (its own directory,
    #     `.env` with DRIVER=fake, the fake driver importable as `fake`).
    check_dir = tmp_path / "store-check"
    check_dir.mkdir()
    (check_dir / ".env").write_text("DRIVER=fake\n", encoding="utf-8")
    (check_dir / "fake.py").write_text(FAKE_DRIVER, encoding="utf-8")
    (check_dir / "runner.py").write_text(textwrap.dedent(STORE_CHECK), encoding="utf-8")
    store = _last_json(_run([python, "runner.py"], cwd=check_dir, env=env, timeout=60))
    assert store["driver"] == "fake"
    assert store["has_meta"] is True
    assert store["name"] and len(store["name"]) <= STORE_MAX_NAME, store["name"]
    assert store["description"] and store["usage"]
    assert store["type"] in STORE_TYPES
    assert store["homepage"].startswith(("https://", "http://")), store["homepage"]
    assert store["config_is_model"] is True
    adapters_ok = store["supported_adapters"] is None or all(
        a.startswith("nonebot.adapters.") for a in store["supported_adapters"]
    )
    assert adapters_ok, store["supported_adapters"]
    assert store["threads"] == ["MainThread"]
    # The store entry we published satisfies the store's own limits too.
    assert len(tags) <= STORE_MAX_TAGS and all(len(t["label"]) <= STORE_MAX_TAG_LABEL for t in tags)
