"""Reaching a Redis (or Valkey) server: validated settings, clients, typed errors, reconnect backoff.

Shared by the Redis store, the Redis pub/sub and cluster channels. redis-py is
imported only here and only when a ``redis://`` storage is configured: the
memory backend needs nothing installed.

redis-py's own retries are switched off (``Retry(NoBackoff(), 0)``): redis-py
re-sends a command whose connection broke *after* it was written, which would
apply an ``incr`` twice. A failed call raises ``StorageUnavailableError``
instead and the caller decides; reconnection happens on the next call, with a
backoff (``Health``) so a dead server is not hammered.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ._errors import RemoteError, StorageUnavailableError

__all__ = ["ACL_COMMANDS", "Health", "RedisSettings", "TimedClients", "import_redis", "settings_from", "translate"]

# Every command this package sends: a Redis ACL user allowed these, on ``~{ns}:*`` keys and
# ``&{ns}:*`` channels, can do everything (README, "Scaling out"; a test checks it).
ACL_COMMANDS = (
    "get",
    "set",
    "del",
    "getdel",
    "incrby",
    "pexpire",
    "pttl",
    "persist",
    "exists",
    "scan",
    "mget",
    "unlink",
    "eval",
    "evalsha",
    "multi",
    "exec",
    "publish",
    "subscribe",
    "unsubscribe",
    "xadd",
    "xreadgroup",
    "xack",
    "xdel",
    "xgroup",
    "xautoclaim",
    "xclaim",
    "ping",
    "hello",
    "select",
)

INSTALL_HINT = "pip install 'nonebot-plugin-liteyuki-comm[redis]'"
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_SCHEMES = ("redis", "rediss", "unix")
# A connection attempt to an unreachable host gives up after this long (or the call timeout if shorter).
CONNECT_TIMEOUT = 2.0
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
# The longest socket timeout used. CPython hands a socket's timeout to poll() as a C int of
# milliseconds: above INT_MAX ms (~24.8 days) it wraps, and 2**32 ms became 0, a timeout of
# 5e6 s failed in 2 ms ("Timeout reading from socket") and marked Redis down. A longer call
# timeout (up to MAX_SECONDS) gets this one: waiting ~23 days is as good as waiting forever.
SOCKET_TIMEOUT_MAX = 2_000_000.0


def import_redis() -> Any:
    """The ``redis`` module, or an ImportError that says how to install it."""
    try:
        import redis
        import redis.asyncio  # the async client lives in a submodule
    except ImportError as exc:
        raise ImportError(f"storage on Redis needs redis-py, which is not installed: {INSTALL_HINT}") from exc
    return redis


@dataclass(frozen=True)
class RedisSettings:
    """Where the shared state lives and how long a call may take."""

    url: str
    namespace: str = "liteyuki"
    call_timeout: float = 10.0
    claim_idle: float = 30.0

    @property
    def where(self) -> str:
        """The URL without its password (for logs and errors)."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return parts._replace(netloc=user + netloc).geturl()

    def key(self, kind: str, name: str = "") -> str:
        """A key (or pub/sub channel) of this namespace: ``{namespace}:{kind}:{name}``."""
        return f"{self.namespace}:{kind}:{name}"

    def client(self) -> Any:
        return _client(import_redis(), self)

    def async_client(self, read_timeout: bool = True) -> Any:
        """``read_timeout=False``: no socket timeout, for a caller that bounds each call itself
        by cancelling it (see ``_client``)."""
        return _client(import_redis().asyncio, self, read_timeout)


ASYNC_CONNECTIONS = 100  # per event loop and process: more concurrent async calls wait for one


def _client(module: Any, settings: RedisSettings, read_timeout: bool = True) -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    retry_class = Retry
    if module.__name__ == "redis.asyncio":
        from redis.asyncio.retry import Retry as retry_class  # type: ignore[no-redef]
    options = {
        "socket_timeout": min(settings.call_timeout, SOCKET_TIMEOUT_MAX),
        "socket_connect_timeout": min(CONNECT_TIMEOUT, settings.call_timeout),
        "retry": retry_class(NoBackoff(), 0),
        # A socket that broke while idle is noticed before a command is sent on it.
        "health_check_interval": 30,
    }
    if not read_timeout:
        # With a socket timeout, redis.asyncio sends each command inside asyncio.wait_for, which
        # on Python < 3.12 loses a cancellation that lands just as the send completes
        # (CPython gh-86296): task.cancel() / wait_for() around a loop of async_incr were
        # ignored. The caller's own timeout cancels a call instead; redis.asyncio drops a
        # connection whose read was cancelled.
        options["socket_timeout"] = None
    if module.__name__ == "redis.asyncio":
        # redis.asyncio's pool holds at most 100 connections and refuses the 101st at once
        # ("Too many connections"): a gather of 200 async calls on a healthy Redis failed half
        # of them. This pool makes a call wait for a free connection, within call_timeout.
        pool = module.BlockingConnectionPool.from_url(
            settings.url, max_connections=ASYNC_CONNECTIONS, timeout=settings.call_timeout, **options
        )
        return module.Redis(connection_pool=pool)
    return module.Redis.from_url(settings.url, **options)


def settings_from(storage: Any, namespace: Any, call_timeout: float = 10.0, claim_idle: float = 30.0) -> RedisSettings:
    """Check ``storage`` (a Redis URL) and ``storage_namespace``; raise ValueError naming the rule."""
    if not isinstance(storage, str):
        raise ValueError(f"storage must be 'memory' or a redis:// URL, got {storage!r}")
    parts = urlsplit(storage)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"storage must be 'memory' or a redis://, rediss:// or unix:// URL, got {storage!r} "
            f"(unknown scheme {parts.scheme!r})"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"storage URL {storage!r} has a port that is not a number") from None
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError(f"storage URL {storage!r} names no host (redis://HOST:PORT/DB)")
        if port == 0:
            raise ValueError(f"storage URL {storage!r} has port 0")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"storage URL {storage!r}: the database after the host must be a number, got {db!r}")
    elif not parts.path:
        raise ValueError(f"storage URL {storage!r} names no socket path (unix:///path/to/redis.sock)")
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            "storage_namespace must be 1-100 letters, digits, '_', '.' or '-' "
            f"(no wildcard such as * ? [ ], no ':'), got {namespace!r}"
        )
    if isinstance(claim_idle, bool) or not isinstance(claim_idle, (int, float)) or claim_idle <= 0:
        raise ValueError(f"cluster_claim_idle must be a positive number of seconds, got {claim_idle!r}")
    import_redis()
    return RedisSettings(storage, namespace, float(call_timeout), float(claim_idle))


def translate(exc: BaseException, settings: RedisSettings, what: str) -> BaseException:
    """A redis-py error as ours: unreachable/timeouts → StorageUnavailableError, refusals → RemoteError."""
    redis = import_redis()
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, TimeoutError, OSError)):
        error: BaseException = StorageUnavailableError(f"redis at {settings.where} is unavailable ({what}): {exc}")
    elif isinstance(exc, redis.RedisError):
        error = RemoteError(f"redis at {settings.where} refused {what}: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


class Health:
    """Remembers that the server failed, so calls fail fast for a while instead of hammering it.

    After a failure, calls within the backoff window raise at once; the first
    call after it tries again. The window doubles per failed attempt (50 ms up
    to 1 s) and resets on the first success.
    """

    def __init__(self, settings: RedisSettings, label: str) -> None:
        self.settings = settings
        self.label = label
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._delay = 0.0
        self._next_try = 0.0
        self._last_error = ""

    def check(self, what: str) -> None:
        if self.down_since is not None and time.monotonic() < self._next_try:
            raise StorageUnavailableError(
                f"redis at {self.settings.where} is unavailable ({what}): {self._last_error}; "
                f"next attempt in {self._next_try - time.monotonic():.2f} s"
            )

    def failed(self, exc: BaseException, timeout: float | None = None) -> None:
        """Redis failed a call (``timeout``: the call's own, if it had one). A call's own timeout,
        shorter than ``call_timeout``, running out says nothing about the server: it must not
        mark Redis down for every caller of this process (``timeout=0.001`` did that)."""
        if (
            timeout is not None
            and timeout < self.settings.call_timeout
            and isinstance(exc, (import_redis().TimeoutError, TimeoutError))
        ):
            return
        from ..log import logger

        now = time.monotonic()
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = now
            self._delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._delay * 2))
            self._next_try = now + self._delay
            self._last_error = str(exc) or type(exc).__name__
        if first:
            logger.error(f"{self.label}: redis at {self.settings.where} is unavailable: {self._last_error}")

    def ok(self) -> None:
        if self.down_since is None:
            return
        from ..log import logger

        with self._lock:
            down = time.monotonic() - self.down_since if self.down_since is not None else 0.0
            self.down_since = None
            self._delay = 0.0
        logger.info(f"{self.label}: redis at {self.settings.where} is reachable again (after {down:.1f} s)")

    @property
    def delay(self) -> float:
        return self._delay


# A call's own timeout is rounded down to a step of this series (1 ms x 2**(k/4)): a timeout
# computed from a deadline is a new float every call, and a client per float made a pool and
# a connection per call. The step is at most ~16 % below what the caller asked for.
_STEP = 2**0.25
_SHORTEST = 0.001  # a socket timeout of 0 would make the socket non-blocking
_TIMED_CLIENTS = 4  # distinct per-call timeouts with a client of their own


class TimedClients:
    """Sync clients whose socket timeout is a call's own (sync redis-py has no per-command
    timeout): the few most recently used, one per step of the series above."""

    def __init__(self, settings: RedisSettings, default: Any) -> None:
        self._settings = settings
        self._default = default  # the client with call_timeout
        self._clients: dict[float, Any] = {}
        self._lock = threading.Lock()

    def get(self, timeout: float) -> Any:
        if timeout == self._settings.call_timeout:
            return self._default
        if timeout <= _SHORTEST:
            timeout = _SHORTEST
        elif timeout >= SOCKET_TIMEOUT_MAX:
            timeout = SOCKET_TIMEOUT_MAX  # see SOCKET_TIMEOUT_MAX: longer is unbounded in practice
        else:
            timeout = _SHORTEST * _STEP ** math.floor(math.log(timeout / _SHORTEST, _STEP) + 1e-9)
        with self._lock:
            client = self._clients.pop(timeout, None)
            if client is None:
                client = replace(self._settings, call_timeout=timeout).client()
            self._clients[timeout] = client  # most recently used last
            if len(self._clients) > _TIMED_CLIENTS:
                # Not closed here: another thread may be in a call on it. Its pool closes its
                # connections when the last reference goes.
                del self._clients[next(iter(self._clients))]
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
