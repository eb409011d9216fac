"""Runs the nonebug suite in tests/nonebot_plugin in its own pytest process.

NoneBot and the plugin are process-global (one init, one plugin load, one
standalone runtime); the host tests in this process start and stop
LiteyukiBot many times, which would tear the plugin's state down under it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_nonebug_plugin_suite():
    env = {**os.environ, "LITEYUKI_PLUGIN_TESTS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/nonebot_plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "liteyuki.testing",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    print(result.stdout[-5000:], result.stderr[-3000:])
    assert result.returncode == 0, result.stdout[-5000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
