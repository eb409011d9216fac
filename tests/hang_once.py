"""A spawn target whose module hangs while the child imports it, the first time only.

``HANG_ONCE_FLAG`` (environment) names a file: the first child that imports this
module creates it and then blocks forever (before it can connect to the host);
later children import it normally.
"""

from __future__ import annotations

import os
import threading

_flag = os.environ.get("HANG_ONCE_FLAG")
if _flag and not os.path.exists(_flag):
    open(_flag, "w").close()
    threading.Event().wait()  # stuck in start-up: the host must kill it


def agent() -> None:
    from tests.targets import agent as serve

    serve()
