"""`python bot.py` in a user's NoneBot project, with a real protocol and every kind of driver.

Each test copies this repository's ``bot.py`` alone into a fresh project folder
under ``tmp_path`` (its own ``pyproject.toml``, ``.env`` and plugins) and runs it
there as a user would, in its own session; the stop checks are those of
tests/test_bot_e2e.py (exit code 0, no traceback, no process left).

The centrepiece acts as a OneBot V11 implementation: a websocket client on
loopback connects to the bot's ``/onebot/v11/ws`` (reverse websocket, served by
uvicorn through ``DRIVER=~fastapi+~websockets`` from ``.env``), sends private
messages and answers the bot's ``send_msg`` calls.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_bot_e2e import REPO, HeadlessBot, alive, nonebot_child, wait_until

ONEBOT = '{ name = "OneBot V11", module_name = "nonebot.adapters.onebot.v11" }'
SELF_ID = 10000
SUPERUSER = 10001

COUNTER = """\
from nonebot import get_driver, on_command, require

require("nonebot_plugin_liteyuki_comm")
from liteyuki.comm.storage import shared_memory  # noqa: E402
from liteyuki.log import logger  # noqa: E402

count = on_command("count")


@count.handle()
async def _():
    value = await shared_memory.async_incr("count")  # the host's store: survives the child
    await count.finish(f"count: {value}")


@get_driver().on_startup
async def _started():
    logger.info("TEST PLUGIN STARTED")


@get_driver().on_shutdown
async def _stopped():
    logger.info("TEST SHUTDOWN HOOK RAN")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, env: dict[str, str], adapters: str | None = None, bot_py: str | None = None) -> Path:
    """A NoneBot project as `nb create` makes one, plus this repository's bot.py, copied alone."""
    project = root / "mybot"
    (project / "plugins").mkdir(parents=True)
    (project / "plugins" / "counter.py").write_text(COUNTER)
    if bot_py is None:
        shutil.copy(REPO / "bot.py", project / "bot.py")
    else:
        (project / "bot.py").write_text(bot_py)
    adapter_table = f"nonebot-adapter-onebot = [{adapters}]" if adapters else ""
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "mybot"
            version = "0.1.0"

            [tool.nonebot]
            plugin_dirs = ["plugins"]
            builtin_plugins = []

            [tool.nonebot.adapters]
            {adapter_table}

            [tool.nonebot.plugins]
            "@local" = []
            """
        )
    )
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return project


@pytest.fixture
def project_bot(tmp_path: Path) -> Iterator[Any]:
    bots: list[HeadlessBot] = []

    def start(project: Path, command: list[str] | None = None) -> HeadlessBot:
        # Started from another folder: bot.py finds its project by its own location.
        cwd = project if command else tmp_path
        bot = HeadlessBot(args=(str(project / "bot.py"),), cwd=cwd, command=command)
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        bot.close()


# -- a real protocol: OneBot V11 over a loopback websocket ------------------------------------------


class OneBotImplementation:
    """The protocol side (what go-cqhttp / NapCat / Lagrange do), as a reverse-websocket client."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        url = f"ws://127.0.0.1:{port}/onebot/v11/ws"
        headers = {"X-Self-ID": str(SELF_ID), "X-Client-Role": "Universal"}
        self.ws = wait_until(lambda: self._try(connect, url, headers), timeout, f"a websocket connection to {url}")
        self.message_id = 0

    @staticmethod
    def _try(connect: Any, url: str, headers: dict[str, str]) -> Any:
        try:
            # Entered as a context manager (websockets' own rule); close() leaves it.
            return connect(url, additional_headers=headers, open_timeout=5, close_timeout=2).__enter__()
        except OSError:
            return None  # the server is not listening yet
        except Exception as exc:  # a handshake the server refused: the adapter is not there yet
            if "HTTP 404" in str(exc) or "HTTP 403" in str(exc):
                return None
            raise

    def private_message(self, text: str, user_id: int = SUPERUSER) -> str:
        """Send a private message event; answer the bot's send_msg call; return the text it sent."""
        self.message_id += 1
        self.ws.send(
            json.dumps(
                {
                    "time": int(time.time()),
                    "self_id": SELF_ID,
                    "post_type": "message",
                    "message_type": "private",
                    "sub_type": "friend",
                    "message_id": self.message_id,
                    "user_id": user_id,
                    "message": [{"type": "text", "data": {"text": text}}],
                    "raw_message": text,
                    "font": 0,
                    "sender": {"user_id": user_id, "nickname": "tester"},
                }
            )
        )
        deadline = time.monotonic() + 30
        while True:
            call = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if call.get("action") not in ("send_msg", "send_private_msg"):
                self.ws.send(json.dumps({"status": "ok", "retcode": 0, "data": None, "echo": call.get("echo")}))
                continue
            params = call["params"]
            assert params.get("user_id") == user_id, call
            self.ws.send(json.dumps({"status": "ok", "retcode": 0, "data": {"message_id": 1}, "echo": call["echo"]}))
            return _text(params["message"])

    def close(self) -> None:
        self.ws.close()


def _text(message: Any) -> str:
    if isinstance(message, str):
        return message
    return "".join(seg["data"].get("text", "") for seg in message if seg.get("type") == "text")


def test_onebot_v11_over_fastapi_counts_in_host_shared_memory(tmp_path: Path, project_bot: Any) -> None:
    port = free_port()
    env = {
        "DRIVER": "~fastapi+~websockets",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SUPERUSERS": f'["{SUPERUSER}"]',
        "COMMAND_START": '["/"]',
    }
    project = make_project(tmp_path, env, adapters=ONEBOT)
    bot = project_bot(project)
    bot.wait_for("TEST PLUGIN STARTED", 60)
    out = bot.output
    assert "Loaded adapters: OneBot V11" in out, out
    assert "Console" not in out.split("Loaded adapters:")[1].splitlines()[0], out

    onebot = OneBotImplementation(port)
    try:
        assert onebot.private_message("/count") == "count: 1"
        assert onebot.private_message("/count") == "count: 2"
        status = onebot.private_message("/liteyuki status")
        assert "nonebot: running" in status and "store: 1 keys" in status, status
    finally:
        onebot.close()

    # The count lives in the host: a new child (after a crash) goes on from it.
    child = wait_until(lambda: nonebot_child(bot.pid), 10, "the NoneBot child")
    assert " ".join(child.cmdline()).strip() == "liteyuki: nonebot"  # setproctitle
    since = len(bot.lines)
    child.kill()
    bot.wait_for("TEST PLUGIN STARTED", 60, start=since)
    bot.track()
    onebot = OneBotImplementation(port)
    try:
        assert onebot.private_message("/count") == "count: 3"
    finally:
        onebot.close()
    since = len(bot.lines)
    bot.stop_and_check("group", since=since)
    assert "TEST SHUTDOWN HOOK RAN" in "\n".join(bot.lines[since:]), bot.output


@pytest.mark.parametrize(
    ("driver", "how"),
    [
        ("~none", "group"),
        ("~fastapi", "group"),
        ("~fastapi", "term"),
        ("~httpx+~websockets", "group"),
        ("~httpx+~websockets", "term"),
    ],
)
def test_every_driver_stops_cleanly(tmp_path: Path, project_bot: Any, driver: str, how: str) -> None:
    """Ctrl+C (SIGINT to the whole group: the child sees it *and* the host's stop request) or
    SIGTERM to the host: shutdown hooks run, exit 0, no traceback, nothing left."""
    env = {"DRIVER": driver, "HOST": "127.0.0.1", "PORT": str(free_port())}
    bot = project_bot(make_project(tmp_path, env))
    bot.wait_for("TEST PLUGIN STARTED", 60)
    assert "no adapter in [tool.nonebot.adapters]" in bot.output, bot.output  # the console default, said
    bot.track()
    since = len(bot.lines)
    bot.stop_and_check(how)
    tail = "\n".join(bot.lines[since:])
    assert "TEST SHUTDOWN HOOK RAN" in tail, bot.output
    assert "CancelledError" not in tail and "force quit" not in tail.lower().replace("(ctrl+c to force quit)", "")


@pytest.mark.parametrize(
    "listed",
    [
        '[tool.nonebot.plugins]\n"@local" = []\n"nonebot-plugin-liteyuki-comm" = ["nonebot_plugin_liteyuki_comm"]\n',
        '[tool.nonebot]\nplugins = ["nonebot_plugin_liteyuki_comm"]\n',
    ],
    ids=["nb-plugin-install", "legacy-list"],
)
def test_bot_py_runs_when_the_project_lists_the_bridge_plugin(tmp_path: Path, project_bot: Any, listed: str) -> None:
    """`nb plugin install nonebot-plugin-liteyuki-comm` lists the bridge in pyproject.toml; bot.py
    loaded it, then the toml's plugins with it again: NoneBot refused ("Plugin already exists")
    and the child crashed and restarted in a loop."""
    project = make_project(tmp_path, {"DRIVER": "~none"})
    config = project / "pyproject.toml"
    text = config.read_text()
    if listed.startswith("[tool.nonebot.plugins]"):
        text = text.replace('[tool.nonebot.plugins]\n"@local" = []\n', listed)
    else:
        text = text.replace("[tool.nonebot]\n", listed).replace('[tool.nonebot.plugins]\n"@local" = []\n', "")
    config.write_text(text)
    bot = project_bot(project)
    bot.wait_for("TEST PLUGIN STARTED", 60)
    out = bot.output
    assert "already exists" not in out and "crashed" not in out, out
    assert out.count('Succeeded to load plugin "nonebot_plugin_liteyuki_comm"') == 1, out
    bot.stop_and_check("group")


def test_bot_py_without_main_guard_fails_at_once_naming_the_fix(tmp_path: Path, project_bot: Any) -> None:
    unguarded = textwrap.dedent(
        """\
        from pathlib import Path

        from liteyuki import LiteyukiBot
        from liteyuki.process import run_nonebot

        HERE = Path(__file__).resolve().parent
        bot = LiteyukiBot(pyproject=HERE / "pyproject.toml")
        bot.process_manager.add_target("nonebot", run_nonebot, kwargs={"pyproject": HERE / "pyproject.toml"})
        bot.run()
        """
    )
    bot = project_bot(make_project(tmp_path, {"DRIVER": "~none"}, bot_py=unguarded))
    code = bot.proc.wait(timeout=45)
    bot.drain(5)
    out = bot.output
    assert code == 1, out
    assert out.count('if __name__ == "__main__":') == 1, out
    assert "Traceback" not in out and "bootstrapping" not in out, out
    assert not [p for p in bot.seen.values() if alive(p)]


def test_nb_run_runs_bot_py_host_and_child(tmp_path: Path, project_bot: Any) -> None:
    """`nb run` in a project with bot.py runs `python bot.py`: host and child both start."""
    nb = Path(sys.executable).with_name("nb")
    if not nb.exists():
        pytest.skip("nb-cli is not installed in this environment")
    project = make_project(tmp_path, {"DRIVER": "~none"})
    bot = project_bot(project, command=[str(nb), "run"])
    bot.wait_for("process 'nonebot' started", 60)
    bot.wait_for("TEST PLUGIN STARTED", 60)
    host = [p for p in bot.track() if any(part.endswith("bot.py") for part in p.cmdline())]
    assert host, "nb run did not start python bot.py"
    bot.stop_and_check("group")


def test_status_is_logged_on_sigusr1(tmp_path: Path, project_bot: Any) -> None:
    bot = project_bot(make_project(tmp_path, {"DRIVER": "~none"}))
    bot.wait_for("TEST PLUGIN STARTED", 60)
    os.kill(bot.pid, signal.SIGUSR1)
    bot.wait_for(r"\[ℹ️信息\] liteyuki status \(host, host pid \d+", 15)
    bot.wait_for(r"^  nonebot: running, pid \d+, up ", 5)
    bot.stop_and_check("group")


SLOW_IMPORT = '''\
"""Imported by bot.py: in the spawned child (while it bootstraps) it says so, then takes a while."""
import os
import pathlib
import threading

if os.environ.get("LITEYUKI_CHILD_NAME"):
    pathlib.Path(os.environ["BOOTSTRAP_FLAG"]).touch()
    threading.Event().wait(3)
'''


def test_ctrl_c_while_the_child_bootstraps_is_a_clean_stop(tmp_path: Path, project_bot: Any, monkeypatch) -> None:
    """The terminal's SIGINT reaches the child while spawn re-imports bot.py: no traceback, exit 0."""
    flag = tmp_path / "child-bootstrapping"
    monkeypatch.setenv("BOOTSTRAP_FLAG", str(flag))
    template = (REPO / "bot.py").read_text()
    bot_py = template.replace("import argparse\n", "import argparse\n\nimport slow_import  # noqa: F401\n", 1)
    project = make_project(tmp_path, {"DRIVER": "~none"}, bot_py=bot_py)
    (project / "slow_import.py").write_text(SLOW_IMPORT)
    bot = project_bot(project)
    wait_until(flag.exists, 60, "the child to start importing bot.py")
    bot.track()
    bot.stop_and_check("group")
    assert "exited unexpectedly" not in bot.output and "TEST PLUGIN STARTED" not in bot.output, bot.output
