"""ZeroMQ as a reference peer: the host's PUSH socket and REP server over ``ipc://``.

The child side (PULL and REQ) lives in ``_targets``. Both sides pickle like
``Connection.send`` does (``send_pyobj``), so the payloads and the work per
message match the raw-pipe baseline's. Every socket has kernel-side ZeroMQ
timeouts (``RCVTIMEO``/``SNDTIMEO``, raising ``zmq.Again``) and ``LINGER 0``.
pyzmq is optional: without it ``skipped`` says how to get the rows.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from typing import Any

from ._common import IO_TIMEOUT, KEY, VALUE

SKIPPED = "pip install pyzmq"
# How often the idle REP thread looks at its stop flag (ms).
_SERVER_POLL_MS = 1000


def zmq_module() -> Any:
    """The ``zmq`` module, or None when pyzmq is not installed."""
    try:
        import zmq
    except ImportError:
        return None
    return zmq


class ZmqPeer:
    """One context with a bound PUSH socket (host -> child streams) and a REP thread (round trips)."""

    def __init__(self) -> None:
        self.zmq = zmq_module()
        self.skipped: str | None = None if self.zmq is not None else SKIPPED
        self.push: Any = None
        self.endpoints: tuple[str, str] | None = None
        self._ctx: Any = None
        self._dir: str | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        zmq = self.zmq
        if zmq is None:
            return
        self._dir = tempfile.mkdtemp(prefix="liteyuki-bench-zmq-")
        push_ep, rep_ep = f"ipc://{self._dir}/push", f"ipc://{self._dir}/rep"
        self._ctx = zmq.Context()
        self.push = self._socket(zmq.PUSH)
        self.push.bind(push_ep)
        self._thread = threading.Thread(target=self._serve, args=(rep_ep,), name="bench-zmq-rep", daemon=True)
        self._thread.start()
        if not self._bound.wait(IO_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the ZeroMQ REP thread did not bind {rep_ep}: {self._error!r}")
        self.endpoints = (push_ep, rep_ep)

    def _socket(self, kind: int, timeout_ms: int = int(IO_TIMEOUT * 1000)) -> Any:
        zmq = self.zmq
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        return sock

    def _serve(self, endpoint: str) -> None:
        """The raw RpcServer's twin: answer ("get"|"set", key, value) on a REP socket."""
        zmq = self.zmq
        try:
            rep = self._socket(zmq.REP, _SERVER_POLL_MS)
            rep.bind(endpoint)
        except BaseException as exc:
            self._error = exc
            self._bound.set()
            return
        self._bound.set()
        store: dict[str, Any] = {KEY: VALUE}
        recv, send = rep.recv_pyobj, rep.send_pyobj
        try:
            while not self._stop:
                try:
                    op, key, value = recv()
                except zmq.Again:
                    continue
                if op == "get":
                    send(store.get(key))
                else:
                    store[key] = value
                    send(None)
        except zmq.ZMQError:
            return
        finally:
            rep.close(0)

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(_SERVER_POLL_MS / 1000 * 5)
        if self.push is not None:
            self.push.close(0)
        if self._ctx is not None:
            self._ctx.term()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
