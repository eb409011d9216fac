from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def start_host(host: Callable[..., Any]) -> Callable[..., Any]:
    """The ``host`` fixture of tests/conftest.py (children, ``setup=``, config)."""
    return host
