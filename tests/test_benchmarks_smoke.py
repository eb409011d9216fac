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

from benchmarks._report import QUIET_STEAL_PERCENT, Result, Run, render
from benchmarks._rows import ROW_NAMES, ROWS
from benchmarks._suite import collect_runs

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
        assert run["quiet"] is (run["steal_percent"] <= QUIET_STEAL_PERCENT), run
        assert "% of CPU time" in proc.stdout
    rows = {row["key"]: row for row in data["rows"]}
    assert set(rows) == {spec.key for spec in ROWS}
    assert all(len(row["per_run"]) == 1 for row in rows.values())
    if importlib.util.find_spec("zmq") is not None:
        skipped = [key for key, row in rows.items() if "zmq" in key and row["met"] == "skip"]
        assert not skipped, f"ZeroMQ rows skipped although pyzmq is installed: {skipped}\n{output}"


def test_a_run_with_more_stolen_time_than_a_quiet_machine_allows_is_flagged():
    """The table says which runs a hypervisor disturbed, and why their verdict does not count alone."""
    spec = ROWS[0]
    runs = [
        Run(index=i, load_before=(0.1, 0.1, 0.1), steal=steal, results={spec.key: Result([50.0], [48.0])})
        for i, steal in ((1, 9.7), (2, 1.9), (3, QUIET_STEAL_PERCENT))
    ]
    text = render(runs, "full", 9, 5, 1.0)
    lines = text.splitlines()
    assert "steal 9.7 % of CPU time (not quiet)" in lines[1]
    assert "(not quiet)" not in lines[2] and "(not quiet)" not in lines[3]
    assert lines[4].startswith("run 1 was not on a quiet machine"), lines[4]

    quiet = render(runs[1:], "full", 9, 5, 1.0)
    assert "not quiet" not in quiet and "quiet machine" not in quiet


def _scripted_runs(steals: list[float | None]):
    """A stand-in for one benchmark run: run i reports the i-th steal figure, and is counted."""
    made: list[int] = []

    def run_once(index: int) -> Run:
        made.append(index)
        return Run(index=index, load_before=(0.1, 0.1, 0.1), steal=steals[index - 1])

    return run_once, made


def test_max_runs_keeps_the_first_stretch_of_quiet_runs_and_lists_the_runs_before_it():
    run_once, made = _scripted_runs([9.7, 1.0, 8.0, 1.0, None, 2.0, 1.0, 1.0])
    kept, left_out = collect_runs(3, 10, run_once)
    assert [r.index for r in kept] == [4, 5, 6]  # no steal figure (None) counts as quiet
    assert [r.index for r in left_out] == [1, 2, 3]
    assert made == [1, 2, 3, 4, 5, 6]  # stops at once: no run beyond the stretch

    spec = ROWS[0]
    for run in kept:
        run.results[spec.key] = Result([50.0], [48.0])
    lines = render(kept, "full", 9, 5, 1.0, left_out).splitlines()
    assert lines[4] == (
        "left out (--max-runs), made before the runs above: run 1 (steal 9.7 % of CPU time (not quiet)), "
        "run 2 (steal 1.0 % of CPU time), run 3 (steal 8.0 % of CPU time (not quiet))"
    ), lines[4]
    assert "not on a quiet machine" not in "\n".join(lines)  # the runs judged were all quiet


def test_max_runs_stops_at_its_limit_and_the_table_marks_the_loud_runs():
    run_once, made = _scripted_runs([9.0, 1.0, 9.0, 9.0])
    kept, left_out = collect_runs(3, 4, run_once)
    assert made == [1, 2, 3, 4]
    assert [r.index for r in kept] == [2, 3, 4] and [r.index for r in left_out] == [1]
    text = render(kept, "full", 9, 5, 1.0, left_out)
    assert "runs 3, 4 were not on a quiet machine" in text


def test_without_max_runs_exactly_the_runs_asked_are_made():
    run_once, made = _scripted_runs([9.0, 9.0])
    kept, left_out = collect_runs(2, 2, run_once)
    assert made == [1, 2] and [r.index for r in kept] == [1, 2] and left_out == []


def test_max_runs_below_runs_is_refused_before_anything_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--runs", "3", "--max-runs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc
    assert "--max-runs (2) must be at least --runs (3)" in proc.stderr
    assert "run 1/" not in proc.stderr + proc.stdout


def test_dispatch_cost_runs_and_prints_both_kinds(monkeypatch, capsys):
    from benchmarks import dispatch_cost

    monkeypatch.setattr(dispatch_cost, "BATCHES", 3)
    monkeypatch.setattr(dispatch_cost, "ROUNDS", 1)
    assert dispatch_cost.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dispatch cost per callback, Python ")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["sync", "async"]


@pytest.mark.timeout(120)
def test_latency_stages_runs_and_prints_each_stage():
    # A subprocess: the script runs a host of its own, and its child patches its own
    # runtime for the timing (nothing of this process's).
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency_stages", "300", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines[:2]] == ["ours", "raw"], lines
    assert "to the end p50" in lines[0] and "to the callback p50" in lines[0] and "to recv()" in lines[1]
    assert lines[-1].startswith("load average ")
