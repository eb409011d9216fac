"""A child target whose module makes a cluster channel at import time (before the child's bootstrap ran)."""

from __future__ import annotations

import threading

from liteyuki.comm import Channel, active_channel
from liteyuki.comm.storage import shared_memory

EARLY: Channel[str] = Channel("early-jobs", cluster=True)


@shared_memory.on_subscriber_receive("early-topic")
def heard(data: str) -> None:
    if active_channel is not None:  # (the test's host imports this module too, to name the target)
        active_channel.send(("heard", data))


def forward() -> None:
    EARLY.on_receive()(lambda message: active_channel.send(("early", message)))
    threading.Event().wait()
