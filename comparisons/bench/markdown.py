r"""The benchmark's markdown (``bench.md``, ``topk.md``), from its typed results:
the targets table, one table per cell and ``k``, the winners, the throughput
and scale tables."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List

from ..text import plural
from .figures import plot_precision
from .precision import LEVELS
from .rows import BASE_ROWS
from .summary import BenchReport, CellResult, TargetRow, TopkResults, Wins
from .topk import fmt

__all__ = ["header", "render_topk", "throughput_lines", "scale_lines"]


def _ratio_bound(value: float, base: float, budget: int) -> str:
    r"""``value / base``, or a lower bound ``>= budget / base`` when the other
    estimator never got there."""
    if base == float("inf"):
        return "-"
    if value == float("inf"):
        return f">= {budget / base:.1f}x"
    return f"{value / base:.1f}x"


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


def _targets(rows: List[TargetRow]) -> List[str]:
    out = [
        "### Against the targets (sustained top-k precision 0.9)",
        "",
        "Medians of the seeds' evaluations until the running top-k is at precision "
        "0.9 from then on to the end of the run. Target: the default needs 10x fewer "
        "than plain truncated MC and 30x fewer than Captum's ShapleyValueSampling. "
        "*default's first estimate*: evaluations when the default first reports "
        "anything (its first round, a cycle of 4 truncated chains); *ceiling*: "
        "plain MC's evaluations over it, the largest ratio to plain MC the default "
        "can show on this cell, whatever its bandit does.",
        "",
        "| game | k | default | plain truncated MC | ratio | Captum SVS | ratio | "
        "best row (ratio to plain / to Captum) | default's first estimate | "
        "plain MC evaluations per chain | ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        d, p, c, b = t.default[0.9], t.plain[0.9], t.captum[0.9], t.best
        budget, first = t.budget, t.default_first_estimate
        best = (
            f"{t.best_row}: {fmt(b, budget)} "
            f"({_ratio_bound(p, b, budget)} / {_ratio_bound(c, b, budget)})"
        )
        ceiling = "-" if p == float("inf") else f"{p / first:.1f}x"
        out.append(
            f"| {t.game} | {t.k} | {fmt(d, budget)} | {fmt(p, budget)} | "
            f"{_ratio_bound(p, d, budget)} | {fmt(c, budget)} | "
            f"{_ratio_bound(c, d, budget)} | {best} | {first:.0f} | "
            f"{t.plain_evaluations_per_chain:.0f} | {ceiling} |"
        )
    out.append("")
    return out


def _cell_k(cell: CellResult, k: int) -> List[str]:
    budget, rows = cell.budget, cell.rows
    refs = cell.reference
    base = rows["default"].summary[str(k)]
    out = [
        f"### {cell.game}, top-{k} ({cell.n_units} units, epsilon "
        f"{cell.eps:g}, {budget} evaluations per run)",
        "",
        f"Correct units (reference value >= k-th - epsilon): "
        f"{refs['truncated'][str(k)]['acceptable']} against the truncated "
        f"target, {refs['untruncated'][str(k)]['acceptable']} against the "
        "Shapley values.",
        "",
        "| estimator | target | first 0.9 | stays 0.9 | x default | first 1.0 | "
        "stays 1.0 | x default | stopped by its rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if str(k) not in row.summary:
            continue
        sm = row.summary[str(k)]
        runs = row.runs_at(k)
        conv = sum(bool(r["converged"]) for r in runs)
        rule = f"{conv}/{len(runs)}" if row.per_k and row.target == "truncated" else "-"
        cells = []
        for lv in LEVELS:
            f, st = sm[f"first{lv}"], sm[f"stays{lv}"]
            cells += [
                fmt(f, budget),
                fmt(st, budget),
                _ratio_bound(st, base[f"stays{lv}"], budget),
            ]
        out.append(f"| {name} | {row.target} | " + " | ".join(cells) + f" | {rule} |")
    per_chain = statistics.median(
        r["evaluations"] / max(r["chains"], 1) for r in rows["plain truncated MC"].runs
    )
    d_runs = [r for r in rows["default"].runs if r.get("k") == k]
    stays = "; ".join(
        f"{n}: "
        + ", ".join(fmt(v, budget) for v in rows[n].per_seed[str(k)]["stays0.9"])
        for n in BASE_ROWS
    )
    return out + [
        "",
        f"Per seed, stays 0.9: {stays}. Plain truncated MC spends {per_chain:.0f} "
        "evaluations per chain (median); the default stopped after a median of "
        f"{statistics.median(r['evaluations'] for r in d_runs):.0f} evaluations "
        f"({statistics.median(r['chains'] for r in d_runs):.0f} chains).",
        "",
    ]


def _wins(w: Wins) -> List[str]:
    out = [
        "### Winners (smallest median evaluations to a top-k that stays right)",
        "",
        "| game | k | precision | winner(s) | evaluations |",
        "|---|---|---|---|---|",
    ]
    for c in w.cells:
        out.append(
            f"| {c.game} | {c.k} | {c.level} | "
            f"{', '.join(c.winners) or 'none reached it'} | {fmt(c.evaluations)} |"
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
    return lines + ["", f"![precision against evaluations]({fig.name})", ""]


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
