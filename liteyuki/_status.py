"""A snapshot of the whole bot: processes, channels, store.

``LiteyukiBot.status()`` builds it in the host; ``liteyuki.status()`` returns it in
any process (a child asks its host over the control lane). ``to_dict()`` is plain
JSON-able data; ``format()`` is what the SIGUSR1 log dump and ``/liteyuki status``
print.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ChannelStatus", "ProcessStatus", "Status", "StoreStatus"]


@dataclass(frozen=True)
class ProcessStatus:
    """One child: ``state`` is not started, starting, running, stopping, stopped, exited, crashed."""

    name: str
    pid: int | None
    state: str
    restarts: int
    uptime: float | None  # seconds since it was spawned, while it runs
    last_exit_code: int | None
    outbox_bytes: int = 0  # what the host has queued for it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChannelStatus:
    """One channel: unread messages per process end, held in the host, receivers, queued bytes."""

    name: str
    buffered: dict[str, int]
    waiting: int
    receivers: tuple[str, ...]
    outbox_bytes: int
    credit: dict[str, int] | None = None  # flow-control credit per end, where the transport has it

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ChannelStatus:
        return cls(
            name=str(row["name"]),
            buffered={str(k): int(v) for k, v in dict(row.get("buffered", {})).items()},
            waiting=int(row.get("waiting", 0)),
            receivers=tuple(row.get("receivers", ())),
            outbox_bytes=int(row.get("outbox_bytes", 0)),
            credit=dict(row["credit"]) if row.get("credit") is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["receivers"] = list(self.receivers)
        return data


@dataclass(frozen=True)
class StoreStatus:
    """Keys and bytes of the shared memory. On Redis: counted in the host's namespace
    (``backend`` names the server, password hidden); ``None`` and ``error`` when the
    server did not answer, a lower bound and ``error`` when counting took too long."""

    keys: int | None
    bytes: int | None
    backend: str = "memory"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        where = "store" if self.backend == "memory" else f"store ({self.backend})"
        if self.keys is None or self.bytes is None:
            return f"{where}: not counted ({self.error})"
        line = f"{where}: {self.keys} keys, {_size(self.bytes)}"
        return line if self.error is None else f"{line} ({self.error})"


@dataclass(frozen=True)
class Status:
    """The snapshot. ``role`` is host, child or standalone (who built it: see ``host_pid``)."""

    role: str
    host_pid: int
    taken_at: float  # time.time()
    processes: tuple[ProcessStatus, ...] = ()
    channels: tuple[ChannelStatus, ...] = ()
    store: StoreStatus = field(default_factory=lambda: StoreStatus(0, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "host_pid": self.host_pid,
            "taken_at": self.taken_at,
            "processes": [p.to_dict() for p in self.processes],
            "channels": [c.to_dict() for c in self.channels],
            "store": self.store.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        return cls(
            role=str(data["role"]),
            host_pid=int(data["host_pid"]),
            taken_at=float(data["taken_at"]),
            processes=tuple(ProcessStatus(**p) for p in data.get("processes", ())),
            channels=tuple(ChannelStatus.from_dict(c) for c in data.get("channels", ())),
            store=StoreStatus(**data.get("store", {"keys": 0, "bytes": 0})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def format(self) -> str:
        """Human-readable, a few lines; channels with nothing queued are summed up in one line."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.taken_at))
        lines = [f"liteyuki status ({self.role}, host pid {self.host_pid}, {when})"]
        if self.processes:
            lines.append("processes:")
            for p in self.processes:
                uptime = _duration(p.uptime) if p.uptime is not None else "-"
                code = "-" if p.last_exit_code is None else str(p.last_exit_code)
                lines.append(
                    f"  {p.name}: {p.state}, pid {p.pid or '-'}, up {uptime}, restarts {p.restarts}, "
                    f"last exit code {code}, outbox {_size(p.outbox_bytes)}"
                )
        busy = [c for c in self.channels if c.waiting or c.outbox_bytes or any(c.buffered.values())]
        lines.append(f"channels: {len(self.channels)} ({len(self.channels) - len(busy)} with nothing queued)")
        for c in busy:
            ends = ", ".join(f"{k} {v}" for k, v in sorted(c.buffered.items())) or "-"
            receivers = ", ".join(c.receivers) or "none yet"
            credit = "; credit " + ", ".join(f"{k or '?'} {v}" for k, v in sorted(c.credit.items())) if c.credit else ""
            lines.append(
                f"  {c.name}: buffered {ends}; waiting in host {c.waiting}; receivers {receivers}; "
                f"outbox {_size(c.outbox_bytes)}{credit}"
            )
        lines.append(self.store.format())
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


# -- this process's snapshot (host or standalone) and the child's request --------------
def local_status(processes: tuple[ProcessStatus, ...] = (), role: str | None = None) -> Status:
    """The snapshot of this process's runtime (the host adds its processes)."""
    import os

    from .comm import lowlevel

    runtime = lowlevel.current()
    store = lowlevel.store_status() or {"keys": 0, "bytes": 0}
    return Status(
        role=role or getattr(runtime, "role", "host"),
        host_pid=os.getpid(),
        taken_at=time.time(),
        processes=processes,
        channels=tuple(ChannelStatus.from_dict(row) for row in lowlevel.channel_status()),
        store=StoreStatus(**store),
    )


class StatusRequests:
    """A child's pending status requests to the host: ``ask()`` sends, the control handler answers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, list[bytes]]] = {}

    def ask(self, send: Any, timeout: float) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ref = self._next
            slot: tuple[threading.Event, list[bytes]] = (threading.Event(), [])
            self._waiting[ref] = slot
        try:
            send(str(ref).encode())
            if not slot[0].wait(timeout):
                from .comm import CommTimeoutError

                raise CommTimeoutError(f"the host did not answer a status request within {timeout} s")
            return json.loads(slot[1][0])
        finally:
            with self._lock:
                self._waiting.pop(ref, None)

    def answer(self, payload: bytes) -> None:
        head, _, body = payload.partition(b"\n")
        with self._lock:
            slot = self._waiting.get(int(head or b"0"))
        if slot is not None:
            slot[1].append(body)
            slot[0].set()


requests = StatusRequests()


def status(timeout: float | None = None) -> Status:
    """The snapshot, in any process: the host builds it; a child asks its host (waiting up to
    ``timeout`` s, default ``call_timeout``) and adds what its own channel ends hold; a
    standalone process (a plugin without a host) describes itself."""
    import math

    from . import _settings
    from .comm import lowlevel

    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ValueError(f"timeout must be a finite number of seconds > 0 or None, got {timeout!r}")

    runtime = lowlevel.current()
    if isinstance(runtime, lowlevel.ChildRuntime):
        limit = float(_settings.get_config("call_timeout", 10.0)) if timeout is None else timeout
        snapshot = Status.from_dict(requests.ask(lambda ref: runtime.control("status", ref), limit))
        mine = {row["name"]: row["buffered"] for row in lowlevel.channel_status()}
        channels = tuple(
            ChannelStatus(
                c.name, {**c.buffered, **mine.get(c.name, {})}, c.waiting, c.receivers, c.outbox_bytes, c.credit
            )
            for c in snapshot.channels
        )
        return Status(snapshot.role, snapshot.host_pid, snapshot.taken_at, snapshot.processes, channels, snapshot.store)
    from . import _bot  # host side only: a child never loads the host's modules for this

    bot = _bot._bot
    if bot is not None and runtime is bot.hub:
        return bot.status()
    return local_status()


async def async_status(timeout: float | None = None) -> Status:
    """``status()`` without blocking the event loop (a child waits for its host in a thread)."""
    import asyncio

    return await asyncio.to_thread(status, timeout)
