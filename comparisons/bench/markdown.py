r"""The benchmark's markdown (``bench.md``, ``topk.md``), from its typed results:
the targets table, one table per cell and ``k``, the winners, the throughput
and scale tables."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..text import plural
from .figures import plot_precision
from .rows import BASE_ROWS
from .summary import BenchReport, CellResult, TargetRow, TopkResults, Wins
from .topk import COST_POINTS, fmt

__all__ = ["header", "render_topk", "throughput_lines", "scale_lines"]


def header(report: BenchReport) -> str:
    r"""The command, processes and environment of a run."""
    wall = report.topk.wall_s if report.topk is not None else math.nan
    part = ""
    if not math.isnan(wall):
        took = f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.0f} min"
        part = f"; top-k part {took} wall-clock"
    return (
        f"`{report.command}`: {plural(report.jobs, 'process', 'processes')} of "
        f"1 thread{part}. Environment: {report.environment.line()}."
    )


def _ratio(value: float, base: float, budget: Optional[float] = None) -> str:
    r"""``base / value`` (how many times less ``value`` costs), a lower bound
    ``>= budget / value`` when ``base`` never got there within ``budget``, or
    "-"."""
    if value == float("inf") or value <= 0:
        return "-"
    if base == float("inf"):
        return "-" if budget is None else f">= {budget / value:.1f}x"
    return f"{base / value:.1f}x"


def _batch(b: Optional[int]) -> str:
    return "all" if b is None else str(b)


def _targets(rows: List[TargetRow]) -> List[str]:
    out = [
        "### Cost to a top-k that stays at precision 0.9, against plain truncated "
        "MC on all examples",
        "",
        "Medians over seeds of the cost until the running top-k is at precision "
        "0.9 from then on to the end of the run, counted in examples pushed "
        "through the model (in full-set evaluations: one coalition on all the "
        "game's examples) and in time (CPU and wall time of the run, setup "
        "included, in units of one plain forward pass on all examples timed "
        "just before the run in the same process). *ratio*: plain truncated "
        "MC's cost over the default's (the target is 10x). *at 200 forwards*: "
        "the default's precision at the CPU time of 200 plain forward passes on "
        "all examples, per seed (and the median time of those 200 passes).",
        "",
        "| game | k | default's batch | examples: default | plain MC | ratio "
        "| CPU time: default | plain MC | ratio | wall time: ratio "
        "| Captum SVS (examples) | ratio | best row by examples "
        "| default at 200 forwards (per seed) | 200 forwards (CPU s / wall s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        d, p, c = t.default, t.plain, t.captum
        budget = t.budget
        per_seed = ", ".join(f"{v:.1f}" for v in t.default_at_200_forwards)
        med = statistics.median(t.default_at_200_forwards)
        out.append(
            f"| {t.game} | {t.k} | {_batch(t.default_batch)} "
            f"| {fmt(d['full_set'], budget)} | {fmt(p['full_set'], budget)} "
            f"| {_ratio(d['full_set'], p['full_set'], budget)} "
            f"| {fmt(d['fwd_cpu'])} | {fmt(p['fwd_cpu'])} "
            f"| {_ratio(d['fwd_cpu'], p['fwd_cpu'])} "
            f"| {_ratio(d['fwd_wall'], p['fwd_wall'])} "
            f"| {fmt(c['full_set'], budget)} "
            f"| {_ratio(d['full_set'], c['full_set'], budget)} "
            f"| {t.best_row}: {fmt(t.best, budget)} "
            f"| {med:.1f} ({per_seed}) "
            f"| {t.forward_200_cpu_s:.2f} / {t.forward_200_wall_s:.2f} |"
        )
    out.append("")
    return out


def _cell_k(cell: CellResult, k: int) -> List[str]:
    budget, rows = cell.budget, cell.rows
    refs = cell.reference
    correct = ", ".join(
        f"{refs[key][str(k)]['acceptable']} ({key})" for key in sorted(refs)
    )
    gaps = ""
    if cell.target_gaps:
        gaps = (
            " Largest difference between a batched truncated target and the "
            "truncated target on all examples: "
            + ", ".join(f"{v:.4f} ({key})" for key, v in cell.target_gaps.items())
            + "."
        )
    points = [
        f"{c} {'ex.' if axis == 'full_set' else 'fwd'}"
        + (" wall" if axis == "fwd_wall" else "")
        for axis, cs in COST_POINTS.items()
        for c in cs
    ]
    out = [
        f"### {cell.game}, top-{k} ({cell.n_units} units, {cell.n_examples} "
        f"examples, epsilon {cell.eps:g}, {budget} full-set evaluations per run)",
        "",
        f"Correct units (reference value >= k-th - epsilon), per target: "
        f"{correct}.{gaps}",
        "",
        "Costs until the top-k stays at the precision: *coal.* coalitions "
        "evaluated, *ex.* examples pushed through the model, in full-set "
        "evaluations, *fwd* CPU time in full-set forward passes; "
        "precision at a cost: *ex.*: examples, *fwd*: CPU time, *fwd wall*: "
        "wall time, both in full-set forward passes (medians over seeds; 0 "
        "before a row's first estimate).",
        "",
        "| estimator | target | batch | stays 0.9 (coal.) | stays 0.9 (ex.) "
        "| stays 0.9 (fwd) | stays 1.0 (ex.) | stays 1.0 (fwd) | "
        + " | ".join(f"precision at {p}" for p in points)
        + " | stopped by its rule |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(points) + "---|",
    ]
    for name, row in rows.items():
        if str(k) not in row.summary:
            continue
        sm = row.summary[str(k)]
        runs = row.runs_at(k)
        conv = sum(bool(r["converged"]) for r in runs)
        rule = (
            f"{conv}/{len(runs)}"
            if row.per_k and row.target.startswith("truncated")
            else "-"
        )
        cells = [
            fmt(sm["stays0.9@evaluations"]),
            fmt(sm["stays0.9@full_set"], budget),
            fmt(sm["stays0.9@fwd_cpu"]),
            fmt(sm["stays1.0@full_set"], budget),
            fmt(sm["stays1.0@fwd_cpu"]),
        ] + [
            f"{sm[f'prec@{axis}={c}']:.2f}"
            for axis, cs in COST_POINTS.items()
            for c in cs
        ]
        out.append(
            f"| {name} | {row.target} | {_batch(row.batch)} | "
            + " | ".join(cells)
            + f" | {rule} |"
        )
    stays = "; ".join(
        f"{n}: "
        + ", ".join(
            fmt(v, budget) for v in rows[n].per_seed[str(k)]["stays0.9@full_set"]
        )
        for n in BASE_ROWS
        if n in rows
    )
    d_runs = rows["default"].runs_at(k)
    return out + [
        "",
        f"Per seed, stays 0.9 (full-set evaluations of examples): {stays}. The "
        "default stopped after a median of "
        f"{statistics.median(r['examples'] for r in d_runs) / cell.n_examples:.0f}"
        " full-set evaluations of examples "
        f"({statistics.median(r['chains'] for r in d_runs):.0f} chains).",
        "",
    ]


def _wins(w: Wins) -> List[str]:
    out = [
        "### Winners (smallest median cost to a top-k that stays right)",
        "",
        "*full_set*: examples, in full-set evaluations; *fwd_cpu*: CPU time, in "
        "full-set forward passes.",
        "",
        "| game | k | precision | cost axis | winner(s) | cost |",
        "|---|---|---|---|---|---|",
    ]
    for c in w.cells:
        out.append(
            f"| {c.game} | {c.k} | {c.level} | {c.axis} | "
            f"{', '.join(c.winners) or 'none reached it'} | {fmt(c.cost)} |"
        )
    out += ["", "Cells won, by estimator:", ""]
    for n, cs in sorted(w.by_row.items(), key=lambda kv: -len(kv[1])):
        out.append(f"- {n}: {len(cs)} ({'; '.join(cs)})")
    out.append("")
    return out


def render_topk(results: TopkResults, out: Path) -> List[str]:
    r"""The markdown of the top-k part (and its figure, drawn into ``out``)."""
    assert results.wins is not None
    lines = _targets(results.targets)
    for cell in results.cells:
        for k in cell.ks:
            lines += _cell_k(cell, k)
    lines += _wins(results.wins)
    fig = plot_precision(results, out / "precision.png")
    return lines + ["", f"![precision against cost]({fig.name})", ""]


def throughput_lines(rows: List[Dict[str, Any]]) -> List[str]:
    r"""The throughput table."""
    lines = [
        "## Throughput (digits CNN, 397 examples per evaluation)",
        "",
        "Median over 9 interleaved blocks of 24 evaluations and 24 plain "
        "forwards (random coalitions, half the units removed).",
        "",
        "| ablated | units | perturbations_per_eval | coalition evals/s "
        "| plain forwards/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ablated']} | {r['n_units']} | {r['perturbations_per_eval']} | "
            f"{r['evals_per_s']:.1f} | {r['forwards_per_s']:.1f} | {r['ratio']:.2f}x |"
        )
    return lines + [""]


def scale_lines(rows: List[Dict[str, Any]]) -> List[str]:
    r"""The scale table."""
    lines = [
        "## Scale (random weights)",
        "",
        "| model | units | device | batch | image | evals/s (incl. setup) "
        "| plain forwards/s | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['n_units']} | {r['device']} | "
            f"{r['batch']} | {r['image_size']} | "
            f"{r['evals_per_s_incl_setup']:.2f} | "
            f"{r['plain_forwards_per_s']:.2f} | {r['peak_rss_gib']:.2f} |"
        )
    return lines + [""]
