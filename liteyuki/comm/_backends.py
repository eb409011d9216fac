"""Which backend holds ``shared_memory`` and carries ``publish`` in this process.

``storage="memory"`` (the default): the host's in-memory store; children ask
the host over their link. ``storage="redis://..."``: every process — the host
and each of its children — talks to Redis directly with its own connection
pool (the ``store_backend`` and ``pubsub_backend`` of its runtime). Direct,
not through the host: measured, a child's ``get`` through the host costs a
host round trip *and* a Redis round trip, directly only the Redis one (see
the README, "Scaling out", for the figures).

The host checks at start-up that Redis answers. If it does not, the host
starts anyway and logs an error: the bot keeps answering what does not need
storage, storage calls raise ``StorageUnavailableError`` until Redis is back,
and nothing hangs (the check gives up after the connect timeout).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "STORAGE_ENV",
    "check_storage",
    "close_all",
    "close_backends",
    "configure_backends",
    "storage_env",
    "storage_url",
]

STORAGE_ENV = "LITEYUKI_STORAGE"
NAMESPACE_ENV = "LITEYUKI_STORAGE_NAMESPACE"


def storage_url(config: dict[str, Any]) -> str:
    """The configured storage: the ``storage`` key, else ``LITEYUKI_STORAGE``, else ``"memory"``."""
    value = config.get("storage")
    if value is None:
        value = os.environ.get(STORAGE_ENV) or "memory"
    return value


def storage_env(config: dict[str, Any]) -> dict[str, str]:
    """Environment for a child, so its runtime has the host's storage before its bootstrap runs."""
    url = storage_url(config)
    if url == "memory":
        return {STORAGE_ENV: "memory"}
    return {STORAGE_ENV: url, NAMESPACE_ENV: str(config.get("storage_namespace") or "liteyuki")}


def check_storage(config: dict[str, Any]) -> None:
    """Raise the ValueError / ImportError ``configure_backends`` would, before anything changed."""
    url = storage_url(config)
    if url != "memory":
        from ._redis_conn import settings_from  # only for Redis: a process on memory never loads it

        namespace = config.get("storage_namespace")
        settings_from(url, "liteyuki" if namespace is None else namespace, 10.0, config.get("cluster_claim_idle", 30.0))


def configure_backends(runtime: Any, config: dict[str, Any]) -> None:
    """Give ``runtime`` the store and pub/sub backends ``config`` asks for (idempotent).

    A bad URL, an unknown scheme or a namespace with a wildcard raises
    ValueError here, at construction; a missing redis-py raises ImportError
    naming the extra to install.
    """
    url = storage_url(config)
    if url == "memory":
        close_backends(runtime)
        return
    namespace = config.get("storage_namespace")
    if namespace is None:
        namespace = os.environ.get(NAMESPACE_ENV) or "liteyuki"
    from ._redis_conn import settings_from  # only for Redis: a process on memory never loads it

    settings = settings_from(url, namespace, runtime.call_timeout, config.get("cluster_claim_idle", 30.0))
    current = runtime.store_backend
    if current is not None and current.settings == settings:
        return
    # Topics subscribed before (a child's import-time subscribers, with the settings from its
    # environment) carry over to the new connection.
    topics = runtime.pubsub_backend.topics() if runtime.pubsub_backend is not None else []
    close_backends(runtime)

    from ._redis_pubsub import RedisPubSub
    from ._redis_store import RedisStore

    runtime.store_backend = RedisStore(settings)
    runtime.pubsub_backend = RedisPubSub(settings, runtime.deliver_publish)
    for topic in topics:
        runtime.pubsub_backend.subscribe(topic, wait=False)
    if runtime.role == "host":
        _announce(runtime.store_backend)


def _announce(store: Any) -> None:
    from ..log import logger
    from ._errors import CommError

    where = f"redis at {store.settings.where}, namespace {store.settings.namespace!r}"
    try:
        store.ping()
    except CommError as exc:  # unreachable, or refused (a wrong password, an ACL)
        logger.error(
            f"shared_memory: {where} is unavailable ({exc.__cause__ or exc}); starting anyway — "
            "storage calls raise StorageUnavailableError until it answers"
        )
    else:
        logger.info(f"shared_memory: {where}")


def close_all(runtime: Any) -> None:
    """The runtime is done: close this process's cluster-channel ends and its backends."""
    cluster = sys.modules.get(f"{__package__}._cluster_channel")
    if cluster is not None:  # not imported: there are no cluster ends to close
        cluster.forget_cluster_ends()
    close_backends(runtime)


def close_backends(runtime: Any) -> None:
    store, pubsub = runtime.store_backend, runtime.pubsub_backend
    runtime.store_backend = runtime.pubsub_backend = None
    if pubsub is not None:
        pubsub.close()
    if store is not None:
        store.close()
