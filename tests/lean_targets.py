"""Spawn targets of tests/test_lean_child.py: plain children that report what they imported.

This module imports only ``liteyuki.comm`` (what a plain child's own module would),
so what the child reports is what liteyuki made it import.
"""

from __future__ import annotations

import sys
import threading

from liteyuki import comm

# Must not be imported by a plain child that makes only sync calls.
HEAVY = (
    "asyncio",
    "loguru",
    "pydantic",
    "nonebot",
    "inspect",
    "dataclasses",
    "logging",
    "typing",  # ~1.8 ms of start-up: see liteyuki/_lean_typing.py
    "liteyuki._bot",
    "liteyuki._config",
    "liteyuki._plugins",
    "liteyuki._lifespan",
    "liteyuki._reload",
    "liteyuki._supervisor",
    "liteyuki.process._manager",
    "liteyuki.process._nonebot",
    "liteyuki.comm._hub",
    "liteyuki.comm._store",
    "liteyuki.comm._redis_conn",
    "liteyuki.comm._cluster_channel",
)


def loaded() -> list[str]:
    return [name for name in HEAVY if name in sys.modules]


def sync_only(timeout: float) -> None:
    """A sync send and a storage get, then report what is loaded; idle until stopped."""
    from liteyuki.comm.storage import shared_memory

    comm.active_channel.send("hello")
    value = shared_memory.get("lean-key")
    comm.active_channel.send({"value": value, "loaded": loaded()})
    threading.Event().wait(timeout)


def passive(timeout: float) -> None:
    """Report, register a passive callback (sync, and an async one that awaits a storage call)
    and log: each reports what it found loaded."""
    from liteyuki.comm.storage import shared_memory
    from liteyuki.log import logger

    comm.active_channel.send({"before": loaded()})

    @comm.passive_channel.on_receive(filter_func=lambda msg: msg == "sync")
    def on_sync(msg: str) -> None:
        comm.active_channel.send({"sync": msg, "loaded": loaded()})

    @comm.passive_channel.on_receive(filter_func=lambda msg: msg == "async")
    async def on_async(msg: str) -> None:
        value = await shared_memory.async_get("lean-key")
        comm.active_channel.send({"async": msg, "value": value, "loaded": loaded()})

    @comm.passive_channel.on_receive(filter_func=lambda msg: msg == "log")
    def on_log(msg: str) -> None:
        logger.info("lean child logs")
        comm.active_channel.send({"log": "loguru" in sys.modules})

    comm.active_channel.send("registered")
    threading.Event().wait(timeout)


def stops_itself(timeout: float) -> None:
    """Ask for its own stop (as a lost host or a stop request does), then report what is loaded."""
    from liteyuki.process._child import request_stop

    try:
        request_stop("asked by the test")
        threading.Event().wait(timeout)
    except KeyboardInterrupt:
        comm.active_channel.send({"stopped": True, "loaded": loaded()})
        raise
