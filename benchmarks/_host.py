"""Host-side helpers: the raw-pipe server, the link to a benchmark child, redis-server."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from ._common import IO_TIMEOUT, KEY, VALUE, set_io_timeout

# How often an idle raw-pipe server thread looks at its stop flag.
_SERVER_POLL = 1.0


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries the table only."""
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


class RpcServer:
    """The raw baseline's host side: a thread answering ("get"|"set", key, value) on a Pipe.

    The same shape as the host's own storage service (a reader thread that
    answers each request on the connection it came from), without liteyuki.
    """

    def __init__(self, conn: Connection, name: str) -> None:
        self.conn = conn
        self.store: dict[str, Any] = {KEY: VALUE}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"bench-rpc-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self._thread.join(timeout)

    def _run(self) -> None:
        recv, send, store = self.conn.recv, self.conn.send, self.store
        while not self._stop:
            try:
                op, key, value = recv()  # SO_RCVTIMEO: BlockingIOError after _SERVER_POLL s
            except BlockingIOError:
                continue
            except (EOFError, OSError):
                return
            if op == "get":
                send(store.get(key))
            else:
                store[key] = value
                send(None)


class ChildLink:
    """The host's three raw pipes to one benchmark child, and its raw-pipe server."""

    def __init__(self, name: str, ctx: multiprocessing.context.BaseContext) -> None:
        self.name = name
        self.ctrl, child_ctrl = ctx.Pipe()
        self.rpc, child_rpc = ctx.Pipe()
        self.data, child_data = ctx.Pipe()
        set_io_timeout(self.rpc, _SERVER_POLL)
        for conn in (self.ctrl, self.data, child_ctrl, child_rpc, child_data):
            set_io_timeout(conn, IO_TIMEOUT)
        self.child_ends: tuple[Connection, Connection, Connection] = (child_ctrl, child_rpc, child_data)
        self.server = RpcServer(self.rpc, name)
        self.server.start()

    def started(self) -> None:
        """The child has its copies of the pipe ends: drop ours so EOF works."""
        for conn in self.child_ends:
            conn.close()

    def send(self, *cmd: Any) -> None:
        self.ctrl.send(cmd)

    def reply(self, timeout: float = 120.0) -> Any:
        if not self.ctrl.poll(timeout):
            raise TimeoutError(f"child {self.name!r} did not answer within {timeout} s")
        answer = self.ctrl.recv()
        if isinstance(answer, tuple) and answer and answer[0] == "error":
            raise RuntimeError(answer[1])
        return answer

    def ask(self, *cmd: Any, timeout: float = 120.0) -> Any:
        self.send(*cmd)
        return self.reply(timeout)

    def expect(self, what: str, timeout: float = 60.0) -> None:
        answer = self.reply(timeout)
        if answer != what:
            raise RuntimeError(f"child {self.name!r} answered {answer!r}, expected {what!r}")

    def close(self) -> None:
        self.server.stop()
        for conn in (self.ctrl, self.rpc, self.data, *self.child_ends):
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on loopback (no persistence), stopped by PID."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.skipped: str | None = None
        self._drain: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if exe is None:
            self.skipped = "redis-server is not installed"
            return
        try:
            import redis  # noqa: F401
        except ImportError:
            self.skipped = "redis-py is not installed"
            return
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"Ready to accept" not in seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.stop()
                    self.skipped = f"redis-server did not start within {timeout} s"
                    return
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.stop()
                    self.skipped = f"redis-server exited at start: {seen.decode(errors='replace')[-200:]}"
                    return
                seen += chunk
        self.port = port
        # Keep reading its log so it never blocks on a full pipe; ends with the process.
        self._drain = threading.Thread(target=self._drain_log, args=(fd,), name="bench-redis-log", daemon=True)
        self._drain.start()

    def _drain_log(self, fd: int) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while self.proc is not None and self.proc.poll() is None:
                if sel.select(1.0):
                    try:
                        if not os.read(fd, 65536):
                            return
                    except OSError:
                        return

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._drain is not None:
            self._drain.join(2)
        with contextlib.suppress(OSError):
            if proc.stdout is not None:
                proc.stdout.close()


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10**6 bytes)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 1e6
    except ImportError:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def leftover_children() -> list[int]:
    """PIDs of live children of this process (multiprocessing's resource tracker excepted)."""
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if (
                p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE
                and "resource_tracker" not in " ".join(p.cmdline())
            ):
                out.append(p.pid)
    return out
