"""A NoneBot child and what stops it: stops before its startup is over, and a callback's
KeyboardInterrupt, which must not (found by a hostile round)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from liteyuki.comm import Channel, get_channel, set_channel

from .conftest import unique
from .nonebot_project import nonebot_child

# What every plugin below starts with, and a shutdown hook that logs its process id.
_HEAD = """\
import asyncio
import os

from nonebot import get_driver, require

require("nonebot_plugin_liteyuki_comm")
from liteyuki.comm import Channel  # noqa: E402

_report = Channel(os.environ["NB_REPORT"])
driver = get_driver()


def log_shutdown():
    with open(os.environ["NB_SHUTDOWN_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
"""

_SLOW_STARTUP = (
    _HEAD
    + """
@driver.on_startup
async def _slow():  # a later startup hook: a database that takes its time to connect
    _report.send("startup hook running")
    await asyncio.sleep(1.5)


@driver.on_shutdown
async def _shutdown():
    log_shutdown()
"""
)

_SLOW_SHUTDOWN = (
    _HEAD
    + """
@driver.on_startup
async def _started():
    _report.send(("started", os.getpid()))


@driver.on_shutdown
async def _slow_shutdown():  # runs before the plugin's own (NoneBot runs them in reverse)
    _report.send("shutdown hook running")
    await asyncio.sleep(0.5)
    log_shutdown()
"""
)

_LATE_READY_HOOK = (
    _HEAD
    + """
async def _slow_ready():
    _report.send("ready hook running")
    await asyncio.sleep(1.5)


@driver.on_startup
async def _adds_a_ready_hook():  # what Adapter.on_ready does for an adapter started late
    driver._lifespan.on_ready(_slow_ready)


@driver.on_shutdown
async def _shutdown():
    log_shutdown()
"""
)

_HUNG_STARTUP = (
    _HEAD
    + """
@driver.on_startup
async def _never_ends():
    _report.send("startup hook running")
    await asyncio.Event().wait()
"""
)

_INTERRUPTING_CALLBACK = (
    _HEAD
    + """
@Channel(os.environ["NB_INBOX"]).on_receive()
def answer(message):
    if message == "interrupt":
        raise KeyboardInterrupt  # on NoneBot's loop, on the main thread
    _report.send(("served", message, os.getpid()))
"""
)

_CARELESS_IMPORT = """\
import os
import time

from liteyuki.comm import Channel

Channel(os.environ["NB_REPORT"]).send("importing")
for _ in range(15):  # retries something, and catches everything: a Ctrl+C as well
    try:
        time.sleep(0.1)
    except BaseException:  # noqa: BLE001
        pass
"""


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Channel:
    name = unique("report")
    monkeypatch.setenv("NB_REPORT", name)
    monkeypatch.setenv("NB_SHUTDOWN_LOG", str(tmp_path / "shutdowns"))
    set_channel(name, Channel(name))
    return get_channel(name)


@pytest.mark.timeout(90)
def test_a_restart_during_a_startup_hook_waits_for_the_startup_and_runs_the_shutdown_hooks(
    host, tmp_path, monkeypatch, reports, capfd
):
    """NoneBot's none driver told to exit while its startup hooks ran skipped its shutdown and
    failed the child ("Attempted to exit a cancel scope ...", exit code 1): 7 restarts in 10."""
    name = unique("nb")
    bot = nonebot_child(host, tmp_path / "project", monkeypatch, name, {"slow": _SLOW_STARTUP})
    assert reports.receive(timeout=30) == "startup hook running"
    old = bot.process_manager.pid(name)
    bot.restart_process(name)  # while the hook sleeps
    assert bot.process_manager.status()[0].last_exit_code == 0
    assert (tmp_path / "shutdowns").read_text().split() == [str(old)]  # NoneBot's shutdown ran
    assert reports.receive(timeout=30) == "startup hook running"  # the successor starts
    out = capfd.readouterr().out
    assert "crashed" not in out and "cancel scope" not in out and "did not stop in time" not in out


@pytest.mark.timeout(90)
def test_a_ready_hook_added_during_the_startup_is_waited_for_too(host, tmp_path, monkeypatch, reports, capfd):
    """Our hook that ends the startup is added first thing at startup, so it runs after every
    ready hook known then; one added later (Adapter.on_ready) ran after it, and a stop then
    failed the child as in the startup (3 of 3 in a hostile script)."""
    name = unique("nb")
    bot = nonebot_child(host, tmp_path / "project", monkeypatch, name, {"late": _LATE_READY_HOOK})
    assert reports.receive(timeout=30) == "ready hook running"
    old = bot.process_manager.pid(name)
    bot.restart_process(name)
    assert bot.process_manager.status()[0].last_exit_code == 0
    assert (tmp_path / "shutdowns").read_text().split() == [str(old)]
    out = capfd.readouterr().out
    assert "crashed" not in out and "cancel scope" not in out, out[-2000:]


@pytest.mark.timeout(90)
def test_a_ctrl_c_that_reaches_a_stopping_nonebot_child_is_the_same_stop(host, tmp_path, monkeypatch, reports, capfd):
    """Ctrl+C reaches a child twice, as the terminal's SIGINT and as the host's request; when
    the request came first (a busy loop handles the signal later), NoneBot took the SIGINT for
    a second Ctrl+C and force-quit: shutdown hooks cut, exit code 1 (3 of 4 runs)."""
    name = unique("nb")
    bot = nonebot_child(host, tmp_path / "project", monkeypatch, name, {"slow": _SLOW_SHUTDOWN})
    _, old = reports.receive(timeout=30)
    restart = threading.Thread(target=bot.restart_process, args=(name,))
    restart.start()
    assert reports.receive(timeout=30) == "shutdown hook running"  # the host's request came first
    os.kill(old, signal.SIGINT)  # the terminal's, late
    restart.join(30)
    assert bot.process_manager.status()[0].last_exit_code == 0
    assert (tmp_path / "shutdowns").read_text().split() == [str(old)]  # the hook was not cut
    out = capfd.readouterr().out
    assert "crashed" not in out and "cancel scope" not in out, out[-2000:]


@pytest.mark.timeout(90)
def test_a_stop_during_a_startup_hook_that_never_ends_ends_at_stop_grace(host, tmp_path, monkeypatch, reports, capfd):
    """The stop waits for the startup, but not for ever: the child's own stop deadline (the
    host's stop_grace) ends it with exit code 0, with the host's SIGTERM; no SIGKILL. A bound on
    the wait, not a fix: it passes on the code before the wait too."""
    name = unique("nb")
    bot = nonebot_child(host, tmp_path / "project", monkeypatch, name, {"hung": _HUNG_STARTUP}, stop_grace=2)
    assert reports.receive(timeout=30) == "startup hook running"
    bot.restart_process(name)
    out = capfd.readouterr().out
    assert "sending SIGTERM" in out and "sending SIGKILL" not in out, out[-2000:]
    assert bot.process_manager.status()[0].last_exit_code != -9
    assert reports.receive(timeout=30) == "startup hook running"  # the successor starts


@pytest.mark.timeout(90)
def test_a_stop_whose_interrupt_a_plugin_swallowed_is_carried_out_once_nonebot_runs(
    host, tmp_path, monkeypatch, reports, capfd
):
    """A stop that comes before NoneBot runs is a KeyboardInterrupt; a plugin that catches
    everything while it is imported swallowed it (pydantic-core building a model's validator
    drops one now and then: 2 restarts in 400), and the child ran on until the host's SIGTERM
    after stop_grace."""
    name = unique("nb")
    bot = nonebot_child(host, tmp_path / "project", monkeypatch, name, {"careless": _CARELESS_IMPORT}, stop_grace=20)
    assert reports.receive(timeout=30) == "importing"
    bot.restart_process(name)  # lands in the plugin's loop, which swallows it
    assert bot.process_manager.status()[0].last_exit_code == 0
    assert "did not stop in time" not in capfd.readouterr().out
    assert reports.receive(timeout=30) == "importing"  # the successor starts


@pytest.mark.timeout(90)
def test_a_callback_that_raises_keyboard_interrupt_is_logged_and_nonebot_goes_on(
    host, tmp_path, monkeypatch, reports, capfd
):
    """NoneBot's loop takes the stop signals: a KeyboardInterrupt there is the callback's own.
    It ended the child (exit code 0: never restarted), and what was sent waited for good."""
    name, inbox = unique("nb"), unique("inbox")
    monkeypatch.setenv("NB_INBOX", inbox)
    set_channel(inbox, Channel(inbox))
    nonebot_child(host, tmp_path / "project", monkeypatch, name, {"answers": _INTERRUPTING_CALLBACK})
    to_child = get_channel(inbox)
    to_child.send("before")
    _, _, pid = reports.receive(timeout=30)
    to_child.send("interrupt")
    to_child.send("after")
    assert reports.receive(timeout=30) == ("served", "after", pid)  # the same process
    assert "raised" in capfd.readouterr().out
