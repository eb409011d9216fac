"""``publish`` / ``on_subscriber_receive`` on Redis pub/sub: every subscriber in every process of every host.

Each process that subscribes holds one pub/sub connection, read by one
listener thread, subscribed to ``{ns}:pub:{topic}`` for each topic it has a
subscriber for. A publish is one ``PUBLISH``; Redis delivers it to every
subscribed process, the publisher's own included (so nothing is delivered
twice locally).

Live: ``subscribe`` waits (off the event loop, at most ``LIVE_WAIT`` s) until
Redis confirms the subscription, so a publish made after
``on_subscriber_receive`` returned reaches it. On an event-loop thread it does
not wait: the subscription is live one round trip later.

Redis pub/sub keeps no backlog: a publish made while a subscriber's connection
is down does not reach that subscriber (the listener reconnects with backoff
and subscribes again). Work that must not be lost belongs on a cluster channel.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._redis_conn import BACKOFF_FIRST, BACKOFF_MAX, Health, RedisSettings, import_redis, translate

__all__ = ["RedisPubSub"]

LIVE_WAIT = 1.0
_POLL = 0.5  # how often the listener looks at its stop flag while idle


class RedisPubSub:
    """Publishes to and listens on Redis for this process; ``deliver(topic, payload)`` runs subscribers."""

    def __init__(self, settings: RedisSettings, deliver: Callable[[str, bytes], None], label: str = "publish") -> None:
        self.settings = settings
        self._deliver = deliver
        self._redis = import_redis()
        self._client = settings.client()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._prefix = settings.key("pub")
        self.health = Health(settings, label)
        self.listen_health = Health(settings, "subscriptions")
        self._lock = threading.Lock()
        self._topics: dict[str, threading.Event] = {}  # topic → set once Redis confirmed it
        self._pubsub: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- publishing -----------------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> None:
        self.health.check("publish")
        try:
            self._client.execute_command("PUBLISH", self._prefix + topic, payload)
        except (self._redis.RedisError, OSError) as exc:
            if not isinstance(exc, self._redis.ResponseError):
                self.health.failed(exc)
            raise translate(exc, self.settings, f"publish on {topic!r}") from exc
        self.health.ok()

    async def async_publish(self, topic: str, payload: bytes) -> None:
        self.health.check("publish")
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = self.settings.async_client()
        try:
            await asyncio.wait_for(
                client.execute_command("PUBLISH", self._prefix + topic, payload), self.settings.call_timeout
            )
        except (self._redis.RedisError, OSError, asyncio.TimeoutError) as exc:
            if not isinstance(exc, self._redis.ResponseError):
                self.health.failed(exc)
            raise translate(exc, self.settings, f"publish on {topic!r}") from exc
        self.health.ok()

    # -- subscribing ----------------------------------------------------------------
    def subscribe(self, topic: str, wait: bool = True) -> None:
        """Listen on ``topic`` from now on (idempotent); see the module docstring for when it is live.

        ``wait=False``: return at once (a transport thread subscribing for a child must not wait)."""
        with self._lock:
            live = self._topics.get(topic)
            if live is None:
                live = self._topics[topic] = threading.Event()
                if self._pubsub is not None:
                    try:
                        self._pubsub.subscribe(self._prefix + topic)
                    except (self._redis.RedisError, OSError):
                        pass  # the listener notices the broken connection and subscribes again
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="liteyuki-redis-pubsub", daemon=True)
                self._thread.start()
        if wait and asyncio._get_running_loop() is None:
            live.wait(LIVE_WAIT)

    def topics(self) -> list[str]:
        with self._lock:
            return list(self._topics)

    def is_live(self, topic: str) -> bool:
        live = self._topics.get(topic)
        return live is not None and live.is_set()

    def _connect(self) -> None:
        pubsub = self._client.pubsub()
        with self._lock:
            for live in self._topics.values():
                live.clear()
            channels = [self._prefix + topic for topic in self._topics]
            if channels:
                pubsub.subscribe(*channels)
            self._pubsub = pubsub

    def _drop(self) -> None:
        with self._lock:
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                pass

    def _listen(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            try:
                if self._pubsub is None:
                    self._connect()
                message = self._pubsub.get_message(timeout=_POLL)
            except Exception as exc:  # a lost server, a closed connection: reconnect with backoff
                if self._stop.is_set():
                    break
                self.listen_health.failed(exc)
                self._drop()
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                self._stop.wait(delay)
                continue
            if delay:
                delay = 0.0
                self.listen_health.ok()
            if message is None:
                continue
            kind = message["type"]
            topic = message["channel"].decode("utf-8", "replace")[len(self._prefix) :]
            if kind == "message":
                try:
                    self._deliver(topic, message["data"])
                except Exception:
                    from ..log import logger

                    logger.exception(f"delivering a publish on {topic!r} failed")
            elif kind == "subscribe":
                live = self._topics.get(topic)
                if live is not None:
                    live.set()
        self._drop()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2 * _POLL + 1)
        self._client.close()
