"""The surface of ``liteyuki.comm`` for code that extends it.

The host (``LiteyukiBot``), the process manager, the child bootstrap and the
NoneBot plugin use these names, and only these, the way ``trio.lowlevel``
serves code built on trio. User code should not need them; they may change
between minor versions.

``Hub``, ``ChildRuntime``, ``check_storage`` and ``storage_env`` are loaded on
first access (PEP 562): the child bootstrap imports this module, and a child
must not load the host's hub, nor a host the child's client, to get the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .._lazy import lazy_names
from ._channel import _park, forget_local_ends, local_end, local_ends
from ._context import current, install, installed
from ._default import CHILD_ENV, CHILD_PID_ENV, new_hub
from ._dispatch import dispatcher
from ._link import Writer, new_socketpair
from ._loopcall import call_in_loop
from ._runtime_base import RuntimeBase
from ._validate import MAX_NAME_LENGTH, check_name, check_timeout

TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ loads these
    from typing import Any

    from ._backends import check_storage as check_storage
    from ._backends import storage_env as storage_env
    from ._client import ChildRuntime as ChildRuntime
    from ._hub import Hub as Hub

__all__ = [
    "CALLBACKS_END",
    "CHILD_ENV",
    "CHILD_PID_ENV",
    "MAX_NAME_LENGTH",
    "ChildRuntime",
    "Hub",
    "RuntimeBase",
    "Writer",
    "call_in_loop",
    "callbacks_done",
    "channel_status",
    "check_name",
    "check_storage",
    "check_timeout",
    "close_receiving_ends",
    "close_runtime",
    "current",
    "dispatcher",
    "end_callbacks",
    "install",
    "installed",
    "local_end",
    "new_hub",
    "new_socketpair",
    "outbox_bytes",
    "redis_store",
    "release_receivers",
    "set_park_hook",
    "storage_env",
    "store_status",
]


_LAZY = {
    "Hub": "._hub",
    "ChildRuntime": "._client",
    "check_storage": "._backends",
    "storage_env": "._backends",
}


__getattr__, __dir__ = lazy_names(globals(), _LAZY)


def _hub_of(runtime: Any) -> Any:
    """``runtime`` if it is a Hub, else None (without loading the hub: if it is not
    imported, nothing in this process is one)."""
    hub = sys.modules.get(f"{__package__}._hub")
    return runtime if hub is not None and isinstance(runtime, hub.Hub) else None


def redis_store(url: str, namespace: str = "liteyuki") -> Any:
    """A Redis store backend, as ``storage=url`` gives each process (``runtime.store_backend``)."""
    from ._redis_conn import settings_from
    from ._redis_store import RedisStore

    return RedisStore(settings_from(url, namespace))


def release_receivers() -> None:
    """Wake every thread blocked in ``receive()`` on this process's ends with ``ChannelClosedError``
    (shutdown); the ends stay usable."""
    from ._cluster_channel import cluster_ends

    for chan in [*local_ends().values(), *cluster_ends().values()]:
        chan._release()


def close_receiving_ends() -> None:
    """Close every end this process receives on, at its clean stop: what they held and did
    not run goes back (to the other ends, or the successor). Ends it only sends on stay
    open, so a callback that is finishing can still send."""
    from ..log import logger

    for chan in list(local_ends().values()):
        if not chan._state.declared:
            continue
        try:
            chan.close()
        except Exception:  # one end's trouble must not keep the others open
            logger.exception(f"closing channel {chan.name!r} at exit failed")


CALLBACKS_END = 2.0  # at a clean stop, how long the callbacks in flight may take to end


async def end_callbacks(wait: float = CALLBACKS_END) -> None:
    """A clean stop, on the loop that runs the passive callbacks: close the receiving ends
    (``close_receiving_ends``), then let the callbacks in flight finish (``callbacks_done``)."""
    close_receiving_ends()
    await callbacks_done(wait)


async def callbacks_done(wait: float = CALLBACKS_END) -> None:
    """On the loop that runs the passive callbacks: wait, up to ``wait`` s, for the tasks async
    callbacks left (the sync callback running now has returned once this runs)."""
    import asyncio

    tasks = [task for task in dispatcher.tasks if not task.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=wait)


def set_park_hook(hook: Callable[[], None] | None) -> None:
    """Call ``hook()`` (in the calling thread) whenever a ``receive()`` of this thread is about to block."""
    if hook is None:
        _park.__dict__.pop("notify", None)
    else:
        _park.notify = hook


def close_runtime(runtime: RuntimeBase) -> None:
    """The host is done: drop every child link and this process's channel ends (their
    receivers wake), and forget ``runtime`` if it is the installed one."""
    runtime.close()  # type: ignore[attr-defined]
    forget_local_ends()
    if installed() is runtime:
        install(None)


def channel_status() -> list[dict[str, Any]]:
    """One plain dict per channel this process knows, sorted by name (the status view).

    ``buffered``: unread messages per end in *this* process (``{process name: n}``);
    ``waiting``: messages the host holds until a receiving end has room (host only);
    ``receivers``: the processes that receive on it (host only); ``credit``: per
    receiving end, how many more messages it may be handed now (host only);
    ``outbox_bytes``: bytes the host has queued for the child whose
    ``{child}-active`` / ``-passive`` this is (the two share that child's outbox), else 0.
    """
    runtime = current()
    me = runtime.process_name
    rows: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        return rows.setdefault(
            name, {"name": name, "buffered": {}, "waiting": 0, "receivers": [], "credit": None, "outbox_bytes": 0}
        )

    for name, end in local_ends().items():
        row(name)["buffered"][me] = len(end._state.buffer)
    if _hub_of(runtime) is not None:
        for stats in runtime.channel_stats():
            entry = row(stats["name"])
            entry["waiting"] = stats["waiting"]
            entry["receivers"] = [r["process"] for r in stats["receivers"]]
            entry["credit"] = {r["process"]: r["credit"] for r in stats["receivers"]}
        for name, entry in rows.items():
            owner, _, side = name.rpartition("-")
            if side in ("active", "passive") and owner and owner != me:
                try:
                    entry["outbox_bytes"] = runtime.peer_stats(owner)["outbox_bytes"]
                except KeyError:
                    pass
    return [rows[name] for name in sorted(rows)]


def store_status() -> dict[str, Any]:
    """``{"keys": n, "bytes": pickled size of the values}`` of the store this process owns
    (the host's, or a standalone process's); ``{}`` in a child (the store lives in the host).
    On Redis, the host's namespace there, counted within a second (see ``StoreStatus``)."""
    runtime = current()
    if _hub_of(runtime) is None:
        return {}
    return dict(runtime.store.usage())


def outbox_bytes(peer: str) -> int:
    """Bytes the host has queued for child ``peer`` (0 when unknown or not the host)."""
    runtime = current()
    if _hub_of(runtime) is not None:
        try:
            return int(runtime.peer_stats(peer)["outbox_bytes"])
        except KeyError:
            return 0
    return 0
