"""A plain child imports only what it uses (issue 12: idle RSS, start-up time).

The children run under a host started as its own program (``python -c``): a
spawned child imports its parent's main module again, and under pytest that
would be pytest, whose imports are not the child's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

HOST = textwrap.dedent(
    """
    import json, sys
    from liteyuki import LiteyukiBot
    from liteyuki.comm import get_channel
    from liteyuki.comm.storage import shared_memory
    from tests import lean_early, lean_targets

    lean_targets.target = lean_early.target
    script = json.loads(sys.argv[1])
    bot = LiteyukiBot(pyproject=None, stop_grace=3.0, log_level="WARNING")
    bot.process_manager.add_target("lean", getattr(lean_targets, script["target"]), (60.0,))
    bot.on_before_start(lambda: shared_memory.set("lean-key", 42))  # before the child starts
    with bot.running(timeout=30):
        active = get_channel("lean-active")
        replies = []
        for step in script["steps"]:
            if step != "recv":
                get_channel("lean-passive").send(step)
            replies.append(active.receive(timeout=20))
        print("REPLIES", json.dumps(replies), flush=True)
    """
)

# A bot.py as the README writes it: the host imported at the top. A file, not ``-c``: spawn
# runs a main script again in the child (as ``__mp_main__``), top-level imports and all.
BOT_SCRIPT = textwrap.dedent(
    """
    import json
    from liteyuki import LiteyukiBot
    from liteyuki.comm import get_channel
    from liteyuki.comm.storage import shared_memory
    from tests import lean_targets

    if __name__ == "__main__":
        bot = LiteyukiBot(pyproject=None, stop_grace=3.0, log_level="WARNING")
        bot.process_manager.add_target("lean", lean_targets.sync_only, (60.0,))
        bot.on_before_start(lambda: shared_memory.set("lean-key", 42))
        with bot.running(timeout=30):
            active = get_channel("lean-active")
            assert active.receive(timeout=20) == "hello"
            print("REPORT", json.dumps(active.receive(timeout=20)), flush=True)
    """
)


def run_host(target: str, steps: list[str]) -> list[Any]:
    proc = subprocess.run(
        [sys.executable, "-c", HOST, json.dumps({"target": target, "steps": steps})],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPLIES ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1].removeprefix("REPLIES "))


@pytest.mark.timeout(90)
def test_a_plain_child_that_sends_and_gets_imports_no_asyncio_loguru_pydantic_or_host_modules() -> None:
    hello, report = run_host("sync_only", ["recv", "recv"])
    assert hello == "hello"
    assert report == {"value": 42, "loaded": []}


@pytest.mark.timeout(90)
def test_a_bot_script_that_imports_the_host_at_its_top_does_not_load_it_into_a_plain_child(tmp_path: Path) -> None:
    # The child runs the script's top again: `from liteyuki import LiteyukiBot` loads the
    # small module that defines the class, none of the host's machinery.
    script = tmp_path / "bot.py"
    script.write_text(BOT_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, proc.stdout
    report = json.loads(lines[-1].removeprefix("REPORT "))
    # typing, on Python 3.11+: multiprocessing runs a main script again through runpy, which
    # imports pkgutil, which imports typing. Not ours to avoid; a `-m` main does not do it.
    assert report == {"value": 42, "loaded": [*(["typing"] if sys.version_info >= (3, 11) else []), "liteyuki._bot"]}


@pytest.mark.timeout(90)
def test_a_plain_child_loads_what_it_uses_passive_callbacks_async_calls_and_the_logger() -> None:
    before, registered, sync, async_, log = run_host("passive", ["recv", "recv", "sync", "async", "log"])
    assert before == {"before": []}
    assert registered == "registered"
    # A passive callback started the dispatch loop: asyncio now (which imports inspect,
    # logging and typing itself), still no loguru, pydantic or host modules.
    with_loop = ["asyncio", "inspect", "logging", "typing"]
    assert sync == {"sync": "sync", "loaded": with_loop}
    assert async_ == {"async": "async", "value": 42, "loaded": with_loop}
    assert log == {"log": True}


@pytest.mark.timeout(90)
def test_a_plain_child_that_stops_does_not_load_loguru_for_a_debug_line() -> None:
    assert run_host("stops_itself", ["recv"]) == [{"stopped": True, "loaded": []}]


@pytest.mark.timeout(90)
def test_a_callback_registered_at_import_time_runs_once_the_bootstrap_can_start_the_loop() -> None:
    assert run_host("target", ["recv", "ping"]) == ["registered", "echo ping"]


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(90)
def test_import_liteyuki_loads_no_host_module_and_names_resolve_on_access() -> None:
    out = run_python(
        """
        import sys
        import liteyuki, liteyuki.comm, liteyuki.process, liteyuki.comm.lowlevel
        heavy = ("asyncio", "loguru", "pydantic", "liteyuki._bot", "liteyuki._config",
                 "liteyuki.process._manager", "liteyuki.comm._hub", "liteyuki.comm._client")
        print([m for m in heavy if m in sys.modules])
        missing = set(liteyuki.__all__) - set(dir(liteyuki))
        print(sorted(missing), sorted(set(liteyuki.process.__all__) - set(dir(liteyuki.process))))
        from liteyuki import LiteyukiBot, get_config, logger
        from liteyuki._bot import LiteyukiBot as real
        from liteyuki.process import ProcessManager, ChildSpec
        print(LiteyukiBot is real, get_config("pending_limit"), type(liteyuki.ConfigError).__name__)
        print(liteyuki.comm.lowlevel.Hub.__name__, liteyuki.comm.lowlevel.ChildRuntime.__name__)
        try:
            liteyuki.nothing
        except AttributeError as exc:
            print(exc)
        """
    )
    assert out.splitlines() == [
        "[]",
        "[] []",
        "True 100000 type",
        "Hub ChildRuntime",
        "module 'liteyuki' has no attribute 'nothing'",
    ]


@pytest.mark.timeout(60)
def test_the_logger_imports_loguru_on_first_use_and_keeps_our_format() -> None:
    out = run_python(
        """
        import sys
        from liteyuki import log
        from liteyuki.log import logger
        log.install("INFO", "en-US", colorize=False)
        print("loguru" in sys.modules, log.installed())
        logger.info("first line")
        logger.debug("not shown")
        print("loguru" in sys.modules)
        """
    )
    lines = out.splitlines()
    assert lines[0] == "False True"
    assert lines[1].endswith(" [ℹ️INFO] first line"), lines
    assert lines[2:] == ["True"]


@pytest.mark.timeout(60)
def test_a_line_below_our_level_is_skipped_without_loading_loguru() -> None:
    out = run_python(
        """
        import sys
        from liteyuki import log
        log.install("INFO", "en-US", colorize=False)
        print(log.reaches("DEBUG"), log.reaches("WARNING"), "loguru" in sys.modules)
        log.install("DEBUG", "en-US")
        print(log.reaches("DEBUG"), log.reaches("TRACE"))
        log.install("INFO", "en-US")
        import loguru  # loaded: a handler of anyone's may want every level
        print(log.reaches("TRACE"))
        """
    )
    assert out.splitlines() == ["False True False", "True False", "True"]


def test_child_settings_defaults_match_the_host_model() -> None:
    from liteyuki import _config, _settings

    assert _settings.DEFAULTS == _config.DEFAULTS
