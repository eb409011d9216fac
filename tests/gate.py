"""A spawn target whose module, while a child imports it, can be held at a gate.

If ``LITEYUKI_TEST_GATE`` (environment) names a listening Unix socket, the
importing child connects to it and waits until the test closes the connection:
the test knows the child is spawned and not yet connected ("starting") for as
long as it holds the connection. Without a listener the import goes on at once.
"""

from __future__ import annotations

import os
import socket

_path = os.environ.get("LITEYUKI_TEST_GATE")
if _path:
    with socket.socket(socket.AF_UNIX) as _sock:
        try:
            _sock.connect(_path)
            _sock.settimeout(60)
            _sock.recv(1)  # b"" when the test lets it through
        except OSError:
            pass


def agent() -> None:
    from tests.targets import agent as serve

    serve()
