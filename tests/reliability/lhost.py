"""A host run as its own program by the lifecycle tests: ``python -m tests.reliability.lhost MODE``.

It prints marker lines (``HOOK ...``, ``IMPORT <pid>`` from children) so the test knows
when to signal it. Modes:

- ``sync_after_start``: a sync ``on_after_start`` hook that loops forever;
- ``async_after_start``: an async one that swallows every cancellation;
- ``sync_before_start``: a sync ``on_before_start`` hook that never returns (one child added);
- ``slow_start``: three children whose module takes 60 s to import;
- ``stubborn_child``: a child that ignores SIGINT and SIGTERM, with ``stop_grace`` 30 s.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from liteyuki import LiteyukiBot
from tests.reliability import rtargets


def main(mode: str) -> None:
    grace = 30.0 if mode == "stubborn_child" else 1.0
    bot = LiteyukiBot(pyproject=None, stop_grace=grace, log_level="DEBUG")

    @bot.on_after_shutdown
    def bye() -> None:
        rtargets.say("SHUTDOWN HOOK RAN")

    if mode == "sync_after_start":
        bot.process_manager.add_target("worker", rtargets.idle)

        @bot.on_after_start
        def forever() -> None:
            rtargets.say("HOOK RUNNING")
            while True:
                time.sleep(1)

    elif mode == "async_after_start":

        @bot.on_after_start
        async def stubborn() -> None:
            rtargets.say("HOOK RUNNING")
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass

    elif mode == "sync_before_start":
        bot.process_manager.add_target("never", rtargets.idle)

        @bot.on_before_start
        def blocks() -> None:
            rtargets.say("HOOK RUNNING")
            threading.Event().wait()

    elif mode == "slow_start":
        from tests.reliability import slow_import

        for name in ("first", "second", "third"):
            bot.process_manager.add_target(name, slow_import.target)

    elif mode == "stubborn_child":
        from tests import targets

        bot.process_manager.add_target("stubborn", targets.stubborn)

        @bot.on_after_start
        def announce() -> None:
            rtargets.say("CHILD", bot.process_manager.pid("stubborn"))

    bot.run()
    rtargets.say("RUN RETURNED")


if __name__ == "__main__":
    main(sys.argv[1])
