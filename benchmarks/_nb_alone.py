"""The "NoneBot alone" child of row 7c: NoneBot without liteyuki, idle.

A spawn target that imports nonebot (never liteyuki), inits it with the
``~none`` driver and the console adapter (headless) as ``run_nonebot`` does,
says "up" from a startup hook and idles in ``nonebot.run()``. It stops itself
(SIGTERM to its own PID, which NoneBot's driver turns into a clean shutdown)
when the host says anything or closes the pipe.
"""

from __future__ import annotations

import os
import signal
import threading
from multiprocessing.connection import Connection


def nonebot_alone(conn: Connection, timeout: float) -> None:
    os.environ["CONSOLE_HEADLESS_MODE"] = "true"
    import nonebot
    from nonebot.adapters.console import Adapter as ConsoleAdapter

    nonebot.init(driver="~none", log_level="WARNING")
    driver = nonebot.get_driver()
    driver.register_adapter(ConsoleAdapter)

    @driver.on_startup
    async def _say_up() -> None:
        conn.send("up")

    def stop_when_told() -> None:
        try:
            conn.poll(timeout)  # a message, EOF (the host went away) or the deadline
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_told, name="bench-nb-stop", daemon=True).start()
    nonebot.run()
