"""Development mode: ``python bot.py --reload`` restarts exactly what changed.

The end-to-end test runs the repository's ``bot.py``, copied into a temporary
project, headless, the way a user runs it; the others check what a changed path
restarts, what is never a reason to restart, and the watcher on a real folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from liteyuki import LiteyukiBot
from liteyuki._reload import requested
from liteyuki._watch import HOST, INSTALL_HINT, Rule, Watcher, classify, config_rules, nonebot_rules, plugin_rules

from .test_bot_e2e import REPO, HeadlessBot, alive, nonebot_child, wait_gone

# -- what a changed path restarts ---------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for folder in ("src/host", "src/host/nb", "nb_plugins/pkg", ".venv/lib"):
        (tmp_path / folder).mkdir(parents=True)
    return tmp_path


def test_a_nonebot_folder_inside_a_host_folder_restarts_only_the_child(project: Path) -> None:
    rules = [Rule(project / "src/host", HOST), Rule(project / "src/host/nb", "nonebot")]
    assert classify(rules, project / "src/host/a.py") == rules[0]
    assert classify(rules, project / "src/host/nb/b.py") == rules[1]
    assert classify(rules, project / "src/host/nb/deeper/c.py") == rules[1]
    assert classify(rules, project / "elsewhere.py") is None


@pytest.mark.parametrize(
    "name",
    [
        "nb_plugins/pkg/__pycache__/mod.cpython-311.pyc",
        "nb_plugins/pkg/__pycache__/mod.py",
        "nb_plugins/pkg/mod.pyc",
        "nb_plugins/pkg/.mod.py.swp",
        "nb_plugins/pkg/mod.py~",
        "nb_plugins/pkg/.#mod.py",
        "nb_plugins/pkg/4913",
        "nb_plugins/pkg/mod.py.___jb_tmp___",
        "nb_plugins/.git/hooks/x.py",
        "nb_plugins/pkg/data.json",
        "nb_plugins/pkg/.hidden.py",
    ],
)
def test_caches_swap_files_git_and_data_files_never_restart(project: Path, name: str) -> None:
    assert classify([Rule(project / "nb_plugins", "nonebot")], project / name) is None


def test_only_what_lies_below_the_watched_folder_is_judged(project: Path) -> None:
    """A project kept under a folder named like an ignored one (.venv) still reloads."""
    rule = Rule(project / ".venv/lib", "nonebot")
    assert classify([rule], project / ".venv/lib/plugin.py") == rule


def test_configuration_files_restart_the_host(project: Path) -> None:
    rules = [*config_rules([project / "pyproject.toml"], project / "bot.py"), Rule(project, "nonebot")]
    for name in ("pyproject.toml", ".env", ".env.prod", "bot.py"):
        rule = classify(rules, project / name)
        assert rule is not None and rule.process is HOST, name
    assert classify(rules, project / "other.toml") is None
    assert classify(rules, project / "other.py").process == "nonebot"


def test_symlinked_configuration_files_are_watched_where_they_point(project: Path, tmp_path: Path) -> None:
    """Saving the target of a symlinked pyproject.toml or .env restarted nothing."""
    shared = tmp_path / "shared-config"
    shared.mkdir()
    for name in ("pyproject.toml", ".env"):
        (shared / name).write_text("")
        (project / name).unlink(missing_ok=True)
        (project / name).symlink_to(shared / name)
    rules = config_rules([project / "pyproject.toml"], None)
    for name in ("pyproject.toml", ".env"):
        rule = classify(rules, shared / name)
        assert rule is not None and rule.process is HOST, name


def test_nonebot_plugins_are_read_from_both_pyproject_forms(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "nb_plugins/pkg/__init__.py").write_text("")
    (project / "single.py").write_text("")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(project / "nb_plugins"))
    new = project / "new.toml"
    new.write_text(
        '[tool.nonebot]\nplugin_dirs = ["src/host/nb"]\n[tool.nonebot.plugins]\n"@local" = ["pkg", "single"]\n'
    )
    old = project / "old.toml"
    old.write_text('[tool.nonebot]\nplugins = ["pkg", "single", "not_installed_anywhere"]\n')
    for file in (new, old):
        rules = nonebot_rules("nonebot", file)
        assert Rule(project / "nb_plugins/pkg", "nonebot") in rules
        assert Rule(project, "nonebot", ("single.py",)) in rules
    assert Rule(project / "src/host/nb", "nonebot") in nonebot_rules("nonebot", new)
    # a dotted module is followed on disk, without importing its package
    (project / "nb_plugins/pkg/sub.py").write_text("raise RuntimeError('imported')")
    assert plugin_rules(HOST, ["pkg.sub"], [], project) == [Rule(project / "nb_plugins/pkg", HOST, ("sub.py",))]


def test_reload_is_switched_on_and_off_with_the_configuration_precedence(tmp_path: Path) -> None:
    """kwargs > environment > .env > pyproject, as for every setting: LITEYUKI_RELOAD=false and
    reload=False used not to turn a pyproject's reload = true off (requested() re-read them)."""
    from liteyuki._config import build_config

    def on(kwargs: dict[str, object], environ: dict[str, str]) -> bool:
        return requested(build_config({"pyproject": str(pyproject), **kwargs}, environ=environ).model_dump())

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.liteyuki]\nplugins = []\n")
    assert not on({}, {})
    assert on({"reload": True}, {})
    assert on({}, {"LITEYUKI_RELOAD": "true"})
    pyproject.write_text("[tool.liteyuki]\nreload = true\n")
    assert on({}, {})
    assert not on({}, {"LITEYUKI_RELOAD": "false"})
    assert not on({"reload": False}, {"LITEYUKI_RELOAD": "true"})
    with pytest.raises(TypeError, match=r"^reload must be a bool, got str 'yes'$"):
        requested({"reload": "yes"})


def test_nonebot_plugin_dirs_are_watched_from_the_project_wherever_bot_py_starts(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They were resolved against the working directory: started from another folder, no NoneBot
    plugin was watched ("src/nonebot_plugins does not exist; not watched")."""
    (project / "src/nb").mkdir(parents=True)
    toml = project / "nb.toml"
    toml.write_text('[tool.nonebot]\nplugin_dirs = ["src/nb"]\n')
    monkeypatch.chdir(project.parent)
    assert Rule(project / "src/nb", "nonebot") in nonebot_rules("nonebot", toml)
    toml.write_text("[tool.nonebot]\nplugin_dirs = 5\n")  # the child says what is wrong; no crash here
    assert nonebot_rules("nonebot", toml) == []


def test_without_watchfiles_reload_says_what_to_install(tmp_path: Path) -> None:
    shutil.copy(REPO / "bot.py", tmp_path / "bot.py")
    (tmp_path / "pyproject.toml").write_text("[tool.nonebot]\nplugin_dirs = []\n")
    code = "import runpy, sys; sys.modules['watchfiles'] = None; runpy.run_path('bot.py', run_name='__main__')"
    run = subprocess.run(
        [sys.executable, "-c", code, "--reload"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1, run
    assert run.stderr.strip() == INSTALL_HINT and "Traceback" not in run.stderr, run.stderr


def test_without_reload_nothing_is_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LITEYUKI_RELOAD", raising=False)
    bot = LiteyukiBot(pyproject=None)
    try:
        assert bot._reload is None
    finally:
        bot.hub.close()


# -- the watcher on a real folder --------------------------------------------------------------


def test_watcher_reports_a_burst_once_and_ignores_caches(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    (folder / "__pycache__").mkdir(parents=True)
    batches: list[tuple[str | None, list[str]]] = []
    got, live = threading.Event(), threading.Event()

    def on_change(process: str | None, paths: list[str]) -> None:
        batches.append((process, paths))
        got.set()

    watcher = Watcher([Rule(folder, "nonebot")], on_change, live.set)
    watcher.start()
    try:
        assert live.wait(10), "the watcher did not come up"
        (folder / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
        (folder / ".a.py.swp").write_text("x")
        for text in ("one", "two", "three"):  # a burst of saves
            (folder / "a.py").write_text(text)
        assert got.wait(10), "no change reported"
    finally:
        watcher.stop()
        watcher.join(5)
    assert batches == [("nonebot", [str(folder / "a.py")])]


def test_the_same_file_saved_over_and_over_is_one_change(tmp_path: Path) -> None:
    """watchfiles ends a batch once its set of paths stops growing: one file saved every 0.1 s
    for 1.5 s came out as two or three batches (a restart each). The watcher merges them: the
    report comes after the last save, once nothing moved for QUIET s."""
    import time

    folder = tmp_path / "plugins"
    folder.mkdir()
    reports: list[tuple[float, list[str]]] = []
    got, live = threading.Event(), threading.Event()

    def on_change(process: str | None, paths: list[str]) -> None:
        reports.append((time.monotonic(), paths))
        got.set()

    watcher = Watcher([Rule(folder, "nonebot")], on_change, live.set)
    watcher.start()
    try:
        assert live.wait(10), "the watcher did not come up"
        for i in range(15):  # a user saving as they type: the pacing is the stimulus, not a wait
            (folder / "a.py").write_text(f"# save {i}\n")
            last_save = time.monotonic()
            time.sleep(0.1)
        assert got.wait(10), "no change reported"
    finally:
        watcher.stop()
        watcher.join(5)
    when, paths = reports[0]
    assert when > last_save and paths == [str(folder / "a.py")], reports


# -- end to end: python bot.py --reload in a temporary project ----------------------------------

PYPROJECT = """\
[project]
name = "reload-demo"
version = "0"

[tool.liteyuki]
plugin_dirs = ["host_plugins"]

[tool.nonebot]
plugin_dirs = ["nb_plugins"]
"""

HOST_PLUGIN = """\
import os
import uuid

from liteyuki import get_bot
from liteyuki.comm.storage import shared_memory
from liteyuki.log import logger

TOKEN = uuid.uuid4().hex
shared_memory.set("reload-test:token", TOKEN)
logger.info(f"host plugin generation={GENERATION} pid={os.getpid()} token={TOKEN}")


@get_bot().on_before_process_restart
def _before(name):
    logger.info(f"hook: before restart of {name}")


@get_bot().on_after_restart
def _after(name):
    logger.info(f"hook: after restart of {name}")
"""

NB_PLUGIN = """\
import os

from nonebot import get_driver

from liteyuki.comm.storage import shared_memory
from liteyuki.log import logger


@get_driver().on_startup
async def _report() -> None:
    token = await shared_memory.async_get("reload-test:token")
    logger.info(f"nonebot plugin version={VERSION} pid={os.getpid()} token={token}")
"""

HOST_WATCHING = r"reload: watching host plugins and the configuration"
CHILD_WATCHING = r"reload: watching the NoneBot plugins of 'nonebot'"
NB_RESTART = r"reload: nb_plugins/echo\.py changed; restarting process 'nonebot'$"
HOST_RESTART = r"reload: host_plugins/keeper\.py changed; restarting the host \(host state .* is not kept\)$"
STARTUP = 30.0


def nb_line(version: object) -> str:
    return rf"nonebot plugin version={version} pid=(\d+) token=(\w+)$"


def host_line(generation: object) -> str:
    return rf"host plugin generation={generation} pid=(\d+) token=(\w+)$"


def count(lines: list[str], pattern: str) -> int:
    return sum(1 for line in lines if re.search(pattern, line))


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@pytest.mark.timeout(120)
def test_reload_end_to_end(tmp_path: Path) -> None:
    bot, keeper, echo = start_project(tmp_path)
    project = keeper.parent.parent
    try:
        # Start-up: both watchers live, host plugin and NoneBot plugin ran.
        bot.wait_for(HOST_WATCHING, STARTUP)
        bot.wait_for(CHILD_WATCHING, STARTUP)
        match = re.search(host_line(1), bot.lines[bot.wait_for(host_line(1), STARTUP)])
        assert match is not None
        host_pid, token = int(match[1]), match[2]
        match = re.search(nb_line(1), bot.lines[bot.wait_for(nb_line(1), STARTUP)])
        assert match is not None and match[2] == token
        child_pid = int(match[1])
        assert [p.pid for p in psutil.Process(bot.pid).children()] == [host_pid]
        host = psutil.Process(host_pid)
        assert os.getsid(host_pid) == host_pid, "the host runs in a session of its own"
        old_child = psutil.Process(child_pid)
        bot.track()

        # 1. A NoneBot plugin edit (a burst of saves): only the child restarts; the store kept its key.
        mark = len(bot.lines)
        for version in ("2a", "2b", 2):
            write(echo, f"VERSION = {version!r}\n" + NB_PLUGIN)
        match = re.search(nb_line(2), bot.lines[bot.wait_for(nb_line(2), STARTUP, start=mark)])
        assert match is not None
        assert match[2] == token, "the host's shared memory lost its key across a NoneBot restart"
        assert int(match[1]) != child_pid
        assert not wait_gone([old_child], time.monotonic() + 10), "the old NoneBot child is still running"
        assert alive(host) and nonebot_child(host_pid) is not None
        assert nonebot_child(host_pid).pid == int(match[1])
        assert count(bot.lines[mark:], NB_RESTART) == 1, bot.output
        bot.wait_for(r"hook: after restart of nonebot$", 10, start=mark)
        assert count(bot.lines[mark:], r"hook: before restart of nonebot$") == 1, bot.output
        assert count(bot.lines[mark:], r"hook: after restart of nonebot$") == 1, bot.output
        assert count(bot.lines, host_line(r"\S+")) == 1, "host plugins were imported again"
        old_child = nonebot_child(host_pid)
        bot.track()

        # 2. A host plugin edit: a new host (new pid), its plugins imported afresh, a new NoneBot child.
        mark = len(bot.lines)
        write(keeper, "GENERATION = 2\n" + HOST_PLUGIN)
        match = re.search(host_line(2), bot.lines[bot.wait_for(host_line(2), STARTUP, start=mark)])
        assert match is not None
        new_host_pid, new_token = int(match[1]), match[2]
        assert new_host_pid != host_pid and new_token != token
        match = re.search(nb_line(2), bot.lines[bot.wait_for(nb_line(2), STARTUP, start=mark)])
        assert match is not None and match[2] == new_token
        bot.wait_for(CHILD_WATCHING, STARTUP, start=mark)
        assert count(bot.lines[mark:], HOST_RESTART) == 1, bot.output
        assert not wait_gone([host, old_child], time.monotonic() + 10), "the old host or child is still running"
        host, host_pid = psutil.Process(new_host_pid), new_host_pid
        old_child = nonebot_child(host_pid)
        assert old_child is not None
        bot.track()

        # 3. A syntax error: logged with its traceback naming the module; nothing else exits.
        mark = len(bot.lines)
        write(echo, "VERSION = 3\ndef broken(:\n")
        failed = bot.wait_for(r'Failed to import "echo"', STARTUP, start=mark)
        bot.wait_for(r"SyntaxError", 10, start=failed)
        assert any("echo.py" in line for line in bot.lines[failed:]), bot.output
        broken_child = nonebot_child(host_pid)
        assert broken_child is not None and broken_child.pid != old_child.pid
        assert alive(host) and alive(psutil.Process(bot.pid))
        bot.track()

        # 4. The next valid save brings it back.
        mark = len(bot.lines)
        write(echo, "VERSION = 4\n" + NB_PLUGIN)
        match = re.search(nb_line(4), bot.lines[bot.wait_for(nb_line(4), STARTUP, start=mark)])
        assert match is not None and match[2] == new_token
        assert alive(host)
        bot.track()

        # 5. A broken host plugin: a new host that logs the error and keeps running (with its child).
        mark = len(bot.lines)
        write(keeper, "GENERATION = 3\nclass Broken(:\n")
        failed = bot.wait_for(r"host plugin .*keeper\.py failed to load", STARTUP, start=mark)
        bot.wait_for(r"SyntaxError", 10, start=failed)
        match = re.search(nb_line(4), bot.lines[bot.wait_for(nb_line(4), STARTUP, start=mark)])
        assert match is not None and match[2] == "None", "the store should be empty in a new host"
        started = [int(m[1]) for m in (re.search(r"host process started \(pid (\d+)\)", x) for x in bot.lines) if m]
        assert started[-1] != host_pid and alive(psutil.Process(started[-1]))
        assert not wait_gone([host], time.monotonic() + 10), "the old host is still running"
        host, host_pid = psutil.Process(started[-1]), started[-1]
        bot.track()

        # 6. Fixing it, then a configuration file (.env, watched flat in the project folder): a new host each.
        for step, edit in (("fixed", lambda: write(keeper, "GENERATION = 5\n" + HOST_PLUGIN)),
                           (".env", lambda: write(project / ".env", "# edited\n"))):  # fmt: skip
            mark = len(bot.lines)
            edit()
            match = re.search(host_line(5), bot.lines[bot.wait_for(host_line(5), STARTUP, start=mark)])
            assert match is not None and int(match[1]) != host_pid, step
            bot.wait_for(nb_line(4), STARTUP, start=mark)
            assert not wait_gone([host], time.monotonic() + 10), f"{step}: the old host is still running"
            host, host_pid = psutil.Process(int(match[1])), int(match[1])
            bot.track()
        assert re.search(r"reload: \.env changed; restarting the host", bot.output), bot.output

        # One restart per save all along (the children's own writes never triggered one).
        assert count(bot.lines, NB_RESTART) == 3, bot.output
        assert count(bot.lines, r"changed; restarting the host") == 4, bot.output
        assert count(bot.lines, r"reload: host process started") == 5, bot.output

        # 5. Ctrl+C: everything stops, exit status 0, no traceback from here on.
        bot.stop_and_check("group", since=len(bot.lines))
    finally:
        bot.close()


def start_project(tmp_path: Path) -> tuple[HeadlessBot, Path, Path]:
    project = tmp_path / "project"
    (project / "host_plugins").mkdir(parents=True)
    (project / "nb_plugins").mkdir()
    shutil.copy(REPO / "bot.py", project / "bot.py")
    write(project / "pyproject.toml", PYPROJECT)
    keeper, echo = project / "host_plugins" / "keeper.py", project / "nb_plugins" / "echo.py"
    write(keeper, "GENERATION = 1\n" + HOST_PLUGIN)
    write(echo, "VERSION = 1\n" + NB_PLUGIN)
    return HeadlessBot(("bot.py", "--reload"), cwd=project), keeper, echo


@pytest.mark.timeout(90)
@pytest.mark.parametrize("moment", ["host starting", "nonebot restarting", "host restarting", "two edits at once"])
def test_ctrl_c_at_any_moment_stops_everything(tmp_path: Path, moment: str) -> None:
    bot, keeper, echo = start_project(tmp_path)
    try:
        if moment == "host starting":
            bot.wait_for(r"reload: host process started", STARTUP)
        else:
            bot.wait_for(HOST_WATCHING, STARTUP)
            bot.wait_for(CHILD_WATCHING, STARTUP)
            bot.wait_for(nb_line(1), STARTUP)
            bot.track()
            mark = len(bot.lines)
            if moment in ("nonebot restarting", "two edits at once"):
                write(echo, "VERSION = 2\n" + NB_PLUGIN)
            if moment in ("host restarting", "two edits at once"):
                write(keeper, "GENERATION = 2\n" + HOST_PLUGIN)
            bot.wait_for(NB_RESTART if moment == "nonebot restarting" else HOST_RESTART, STARTUP, start=mark)
        bot.track()
        bot.stop_and_check("group", since=len(bot.lines))
    finally:
        bot.close()


@pytest.mark.timeout(90)
def test_sigterm_to_the_supervisor_stops_everything(tmp_path: Path) -> None:
    bot, _, _ = start_project(tmp_path)
    try:
        bot.wait_for(CHILD_WATCHING, STARTUP)
        bot.track()
        bot.stop_and_check("term")
    finally:
        bot.close()


@pytest.mark.timeout(90)
def test_a_host_whose_supervisor_was_killed_stops_by_itself(tmp_path: Path) -> None:
    bot, _, _ = start_project(tmp_path)
    try:
        bot.wait_for(CHILD_WATCHING, STARTUP)
        procs = bot.track()
        assert len(procs) >= 3, procs  # supervisor, host, NoneBot child
        os.kill(bot.pid, signal.SIGKILL)
        left = wait_gone(procs, time.monotonic() + 10)
        assert not left, f"still running 10 s after the supervisor was killed: {left}\n{bot.output}"
        bot.drain(5)
        assert "Traceback" not in bot.output, bot.output
        assert "reload: the supervisor is gone; stopping" in bot.output, bot.output
    finally:
        bot.close()


@pytest.mark.timeout(90)
def test_sigusr1_to_the_process_the_user_started_logs_the_status(tmp_path: Path) -> None:
    """Under --reload that process is the supervisor, which did not handle SIGUSR1: its default
    action ended it, and the host stopped with it ("User defined signal 1", rc 138)."""
    bot, _, _ = start_project(tmp_path)
    try:
        bot.wait_for(CHILD_WATCHING, STARTUP)
        bot.track()
        mark = len(bot.lines)
        os.kill(bot.pid, signal.SIGUSR1)
        bot.wait_for(r"liteyuki status \(host, host pid \d+", 15, start=mark)
        assert bot.proc.poll() is None
        bot.stop_and_check("group", since=len(bot.lines))
    finally:
        bot.close()
