"""Public surface, import hygiene and the log format."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import liteyuki
import liteyuki.comm
import liteyuki.comm.storage

ROOT = Path(__file__).resolve().parent.parent


def test_public_surface():
    assert set(liteyuki.__all__) >= {
        "LiteyukiBot",
        "get_bot",
        "get_config",
        "load_plugin",
        "load_plugins",
        "logger",
        "on_before_start",
        "on_after_start",
        "on_before_process_shutdown",
        "on_before_process_restart",
        "on_after_shutdown",
        "on_after_restart",
    }
    assert {"Channel", "get_channel", "set_channel", "set_channels", "get_channels"} <= set(liteyuki.comm.__all__)
    assert {"active_channel", "passive_channel"} <= set(liteyuki.comm.__all__)
    assert liteyuki.comm.storage.__all__ == ["KeyValueStore", "shared_memory"]
    for name in liteyuki.__all__ + liteyuki.comm.__all__:
        module = liteyuki if name in liteyuki.__all__ else liteyuki.comm
        assert getattr(module, name, None) is not None or name in ("active_channel", "passive_channel")


def test_importing_liteyuki_changes_no_global_state():
    code = """
import multiprocessing, loguru
before = dict(loguru.logger._core.handlers)
import liteyuki, liteyuki.comm, liteyuki.comm.storage, liteyuki.process, liteyuki.log
assert multiprocessing.get_start_method(allow_none=True) is None, "start method was set"
assert dict(loguru.logger._core.handlers) == before, "loguru handlers changed"
import threading
assert threading.active_count() == 1, "a thread was started"
print("clean")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "clean", out.stderr


def test_log_format_zh_cn_and_en_us():
    code = """
from liteyuki import LiteyukiBot, logger
LiteyukiBot(pyproject=None, language={lang!r})
logger.info("hello")
logger.warning("careful")
"""
    zh = subprocess.run(
        [sys.executable, "-c", code.format(lang="zh-CN")], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[ℹ️信息\] hello\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[⚠️警告\] careful\n", zh.stdout
    ), zh.stdout + zh.stderr
    en = subprocess.run(
        [sys.executable, "-c", code.format(lang="en-US")], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "[ℹ️INFO] hello" in en.stdout, en.stdout + en.stderr


def test_liteyuki_log_lines_of_plugins_imported_before_startup_show_in_plain_nonebot():
    """Without a host (nb run), the plugin set liteyuki's handler up in its startup hook: what a
    plugin logged through liteyuki.log while NoneBot imported it, errors too, was dropped."""
    code = """
import nonebot
nonebot.init(driver="~none")
nonebot.load_plugin("nonebot_plugin_liteyuki_comm")
from liteyuki.log import logger
logger.error("MARK logged while plugins are imported")
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("LITEYUKI", "NONEBOT"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert "MARK logged while plugins are imported" in out.stdout + out.stderr, out.stdout + out.stderr


def test_get_config_in_host_and_defaults():
    bot = liteyuki.LiteyukiBot(pyproject=None, pending_limit=123)
    assert liteyuki.get_config("pending_limit") == 123
    assert liteyuki.get_config("missing", 42) == 42
    assert liteyuki.get_bot() is bot
    bot.hub.close()


def test_host_plugins_load_from_a_directory(tmp_path):
    (tmp_path / "good_plugin.py").write_text("LOADED = True\n")
    (tmp_path / "_private.py").write_text("raise SystemExit('must not load')\n")
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    modules = liteyuki.load_plugins(tmp_path)
    assert [m.__name__ for m in modules] == ["liteyuki_plugins.good_plugin"]
    assert modules[0].LOADED is True
