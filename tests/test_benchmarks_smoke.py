"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` runs and prints every row.

No timing is asserted here: the numbers depend on the machine; this only
checks that the suite starts, finishes, stops its processes and prints its table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._rows import ROW_NAMES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_quick_benchmarks_run_and_print_every_row():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    output = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    missing = [name for name in ROW_NAMES if name not in proc.stdout]
    assert not missing, f"rows missing from the table: {missing}\n{proc.stdout}"
