"""Smoke test of the benchmark suite: ``python -m benchmarks --quick --runs 1`` runs and prints every row.

No timing is asserted here: the numbers depend on the machine; this only
checks that the suite starts, finishes, stops its processes, prints its table
with every row, and writes every row to ``--json``. pyzmq is in the test
extra, so the ZeroMQ rows must be measured here, not skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._rows import ROW_NAMES, ROWS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_quick_benchmarks_run_and_print_every_row(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--runs", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    missing = [name for name in ROW_NAMES if name not in proc.stdout]
    assert not missing, f"rows missing from the table: {missing}\n{proc.stdout}"

    data = json.loads(out.read_text(encoding="utf-8"))
    if sys.platform == "linux":  # /proc/stat: the share of CPU time a hypervisor took during the run
        (run,) = data["runs"]
        assert 0.0 <= run["steal_percent"] <= 100.0, run
        assert "% of CPU time" in proc.stdout
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == {spec.key for spec in ROWS}
    assert all(len(row["per_run"]) == 1 for row in rows.values())
    if importlib.util.find_spec("zmq") is not None:
        skipped = [key for key, row in rows.items() if "zmq" in key and row["met"] == "skip"]
        assert not skipped, f"ZeroMQ rows skipped although pyzmq is installed: {skipped}\n{output}"
