"""The table and the JSON: per-run figures, the worst of N runs, targets and verdicts.

Standard library only. A row's figure in one run is computed from that run's
medians: ``ours / base`` for ratio rows, ``base / ours`` for "speedup" rows,
``ours - base`` for "extra" rows, ``ours`` for "max" rows. The worst run is the
one least favourable to us (for a reference peer's row: the peer's best run),
and the verdict is taken on it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._rows import ROWS, Spec


@dataclass
class Result:
    ours: list[float] = field(default_factory=list)
    base: list[float] | None = None
    note: str = ""
    skipped: str | None = None


@dataclass
class Run:
    """One full run: every row's samples, the load average around it, and its duration."""

    index: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    steal: float | None = None  # % of all CPU time the hypervisor took during the run (None: unknown)
    results: dict[str, Result] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """A row's figure in one run (None: skipped or not measured)."""

    value: float | None
    ours: float | None = None
    base: float | None = None


def figure(spec: Spec, res: Result | None) -> Figure:
    if res is None or res.skipped is not None or not res.ours:
        return Figure(None)
    ours = statistics.median(res.ours)
    base = statistics.median(res.base) if res.base else None
    if spec.kind == "max":
        return Figure(ours, ours, base)
    assert base is not None, spec.key
    if spec.kind == "extra":
        return Figure(ours - base, ours, base)
    if spec.kind == "speedup":
        return Figure(base / ours, ours, base)
    return Figure(ours / base, ours, base)


def worst_index(spec: Spec, figures: list[Figure]) -> int | None:
    """Index of the run least favourable to us (a peer row: the peer's best run)."""
    measured = [(f.value, i) for i, f in enumerate(figures) if f.value is not None]
    if not measured:
        return None
    high_is_bad = spec.lower_is_better != spec.peer
    return (max if high_is_bad else min)(measured)[1]


def met(spec: Spec, value: float | None) -> str:
    if value is None:
        return "skip"
    limit = spec.limit
    if limit is None:
        return "-"
    ok = value <= limit if spec.lower_is_better else value >= limit
    return "yes" if ok else "no"


def target_text(spec: Spec) -> str:
    if spec.limit is None:
        return "(reference)"
    if spec.kind == "max":
        return f"<= {spec.limit:g} {spec.unit}"
    if spec.kind == "extra":
        return f"+<= {spec.limit:g} {spec.unit}"
    if spec.kind == "speedup":
        return f">= {spec.limit:g}x faster"
    return f"{'<=' if spec.lower_is_better else '>='} {spec.limit:g}x"


def value_text(spec: Spec, value: float | None) -> str:
    if value is None:
        return "-"
    if spec.kind == "max":
        return f"{_num(value)} {spec.unit}"
    if spec.kind == "extra":
        return f"{value:+.1f} {spec.unit}"
    if spec.kind == "speedup":
        return f"{value:.2f}x faster"
    return f"{value:.2f}x"


def _num(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _spread(values: list[float] | None) -> str:
    return f"{_num(min(values))}..{_num(max(values))}" if values else "-"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def render(
    runs: list[Run], mode: str, repeats: int, startup_repeats: int, elapsed: float, left_out: list[Run] | None = None
) -> str:
    n = len(runs)
    header = ["figure", "unit", "ours", "ours min..max", "baseline", "base min..max"]
    header += [f"run {r.index}" for r in runs] if n > 1 else ["ratio"]
    header += ["worst"] if n > 1 else []
    header += ["target", "met", "note"]
    lines: list[list[str]] = []
    for spec in ROWS:
        results = [run.results.get(spec.key) for run in runs]
        figures = [figure(spec, res) for res in results]
        w = worst_index(spec, figures)
        per_run = [value_text(spec, f.value) for f in figures]
        if w is None:
            reasons = {res.skipped if res is not None else "not measured" for res in results}
            reason = "; ".join(sorted(r for r in reasons if r))
            row = [spec.name, spec.unit, "-", "-", "-", "-", *per_run]
            row += ["-"] if n > 1 else []
            lines.append([*row, target_text(spec), "skip", f"skipped: {reason}"])
            continue
        res, fig = results[w], figures[w]
        assert res is not None
        verdict = met(spec, fig.value)
        notes = [res.note] if res.note else []
        if n > 1:
            notes.insert(0, f"ours/base: run {runs[w].index}")
        if verdict == "no" and spec.limiter:
            notes.append(f"limited by: {spec.limiter}")
        row = [
            spec.name,
            spec.unit,
            "-" if fig.ours is None else _num(fig.ours),
            _spread(res.ours),
            "-" if fig.base is None else _num(fig.base),
            _spread(res.base),
            *per_run,
        ]
        row += [value_text(spec, fig.value)] if n > 1 else []
        lines.append([*row, target_text(spec), verdict, "; ".join(notes)])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header) - 1)]
    left = {0, 1, len(header) - 3, len(header) - 2}

    def fmt(row: list[str]) -> str:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        return " | ".join([*cells, row[-1]]).rstrip()

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 4
    worst_words = f", verdict on the worst of {n} runs" if n > 1 else ""
    out = [
        f"liteyuki-comm benchmarks ({mode} mode, {n} run{'s' if n > 1 else ''}), "
        f"{datetime.date.today().isoformat()}, Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; medians of {repeats} repeats (start-up/RSS: "
        f"{startup_repeats}), A/B alternating{worst_words}; {elapsed:.0f} s",
        *(
            f"run {r.index}: load average {_load(r.load_before)} before, {_load(r.load_after)} after, "
            f"{_steal(r.steal)}{r.seconds:.0f} s"
            for r in runs
        ),
        *_left_out(left_out or []),
        *_quiet_warning(runs),
        fmt(header),
        rule,
        *(fmt(row) for row in lines),
        "",
        "ratio = ours / baseline (for 'faster' rows: baseline / ours; MB rows: ours - baseline). "
        "ours/baseline columns: the medians of the worst run. Worst = least favourable to us "
        "(ZeroMQ rows: ZeroMQ's best run). Compared:",
        *(f"  {spec.name}: {spec.ours}  vs  {spec.base}" for spec in ROWS),
    ]
    return "\n".join(out)


def to_json(runs: list[Run], meta: dict[str, Any], left_out: list[Run] | None = None) -> dict[str, Any]:
    """Every row of every run (samples, medians, figure) plus the worst-of-N verdict per row."""
    rows = []
    for spec in ROWS:
        results = [run.results.get(spec.key) for run in runs]
        figures = [figure(spec, res) for res in results]
        w = worst_index(spec, figures)
        worst = None if w is None else figures[w].value
        rows.append(
            {
                "key": spec.key,
                "name": spec.name,
                "unit": spec.unit,
                "kind": spec.kind,
                "lower_is_better": spec.lower_is_better,
                "peer": spec.peer,
                "limit": spec.limit,
                "target": target_text(spec),
                "ours": spec.ours,
                "baseline": spec.base,
                "per_run": [
                    {
                        "run": run.index,
                        "figure": f.value,
                        "figure_text": value_text(spec, f.value),
                        "ours_median": f.ours,
                        "base_median": f.base,
                        "ours_samples": None if res is None else res.ours,
                        "base_samples": None if res is None else res.base,
                        "note": None if res is None else res.note,
                        "skipped": "not measured" if res is None else res.skipped,
                    }
                    for run, res, f in zip(runs, results, figures, strict=True)
                ],
                "worst_run": None if w is None else runs[w].index,
                "worst": worst,
                "worst_text": value_text(spec, worst),
                "met": met(spec, worst),
            }
        )
    return {
        "meta": meta,
        "runs": [_run_json(r) for r in runs],
        "left_out": [_run_json(r) for r in left_out or []],
        "rows": rows,
    }


# Issue #12 judges a target on three consecutive runs "on a quiet machine". What the
# hypervisor steals is the one outside load the run can see apart from its own (the load
# average counts the benchmark's processes too): above this share, a run is not quiet.
QUIET_STEAL_PERCENT = 5.0


def is_quiet(run: Run) -> bool | None:
    """Whether the hypervisor left the run alone (None: no steal figure on this system)."""
    return None if run.steal is None else run.steal <= QUIET_STEAL_PERCENT


def _steal_text(percent: float | None) -> str:
    if percent is None:
        return ""
    loud = " (not quiet)" if percent > QUIET_STEAL_PERCENT else ""
    return f"steal {percent:.1f} % of CPU time{loud}"


def _steal(percent: float | None) -> str:
    text = _steal_text(percent)
    return f"{text}, " if text else ""


def _left_out(runs: list[Run]) -> list[str]:
    if not runs:
        return []
    listed = ", ".join(f"run {r.index} ({_steal_text(r.steal) or 'no steal figure'})" for r in runs)
    return [f"left out (--max-runs), made before the runs above: {listed}"]


def _run_json(r: Run) -> dict[str, Any]:
    return {
        "run": r.index,
        "load_before": r.load_before,
        "load_after": r.load_after,
        "steal_percent": r.steal,
        "quiet": is_quiet(r),
        "seconds": r.seconds,
    }


def _quiet_warning(runs: list[Run]) -> list[str]:
    loud = [str(r.index) for r in runs if is_quiet(r) is False]
    if not loud:
        return []
    which, its = (f"run {loud[0]} was", "its") if len(loud) == 1 else (f"runs {', '.join(loud)} were", "their")
    return [
        f"{which} not on a quiet machine (more than {QUIET_STEAL_PERCENT:g} % of CPU time stolen by the "
        f"hypervisor): {its} figures show this machine's noise as much as the code, and a target counts as met "
        "only in three quiet runs (--max-runs makes runs until the last --runs are quiet)"
    ]


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU time since boot in clock ticks, from /proc/stat; None where there is none.

    On a virtual machine "steal" is time the hypervisor gave another guest while this one
    had work: a run on a busy host is slower for reasons no row measures (seen here: 96 s
    stolen within a few minutes, while round trips took 2-4 times their quiet figures).
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def write_json(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    if target.parent != Path():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
