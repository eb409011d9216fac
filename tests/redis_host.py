"""A host on a shared Redis, run as its own program: ``python -m tests.redis_host URL NS NAME SCENARIO N [OTHER]``.

Starts N children running the scenario's target, prints ``READY <pids>`` and serves until SIGTERM.
"""

from __future__ import annotations

import os
import sys
import threading

from liteyuki import LiteyukiBot, get_bot
from liteyuki.comm import get_channel
from liteyuki.comm.storage import shared_memory
from tests import redis_targets
from tests.reliability.rtargets import say  # one line in one write: the log shares the pipe

if __name__ == "__main__":
    url, namespace, name, scenario, count = sys.argv[1:6]
    other = sys.argv[6] if len(sys.argv) > 6 else ""
    bot = LiteyukiBot(pyproject=None, stop_grace=3.0, storage=url, storage_namespace=namespace, cluster_claim_idle=1.0)
    names = [f"{name}-{i}" for i in range(int(count))]
    for child in names:
        if scenario == "mesh":
            bot.process_manager.add_target(child, redis_targets.mesh_worker, (child, other))
        elif scenario == "resilient":
            bot.process_manager.add_target(child, redis_targets.resilient_worker, (child,))
            get_channel(f"{child}-active").on_receive()(lambda said: say("SAID", *said))
        else:
            bot.process_manager.add_target(child, redis_targets.cluster_receiver, (child, 40))

    if scenario == "mesh":

        @shared_memory.on_subscriber_receive("news")
        def got(data: object) -> None:
            shared_memory.incr(f"got:{name}")

        def count_in_host() -> None:
            for _ in range(redis_targets.INCRS):
                shared_memory.incr("counter")
            shared_memory.set(f"hello-from:{name}", os.getpid())

        @bot.on_after_start
        async def start_counting() -> None:
            threading.Thread(target=count_in_host, daemon=True).start()

    @bot.on_after_start
    async def announce() -> None:
        pids = [get_bot().process_manager.pid(n) for n in names]
        say("READY", *pids)

    bot.run()
