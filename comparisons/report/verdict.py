r"""The verdict that opens ``report.md``: for each question, which method to use
at which ``k``, drawn from the question's own numbers (nothing here names a
method in advance).

At every ``k`` the *candidates* are the competing methods whose aggregate
removal curve (median over seeds) is within the metric's resolution of the
lowest one: one test example's worth for a fraction of examples (accuracy,
recall), exact ties otherwise. Consecutive ``k`` that share a candidate form a
segment (the fewest segments: each is extended while a candidate survives); its
pick is the surviving candidate with the lowest mean value over the segment.
Where random removal is a candidate, no ranking beat it. Then: where a
gradient method is the pick, Shapley's value ranking against its removal set
at the headline ``k``, the full greedy reference, and what makes the Shapley
rows provisional (a run that did not converge; units tied at the top-``k``
boundary) or absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ..methods import COMPETING, GRADIENT, METHODS
from ..methods.shapley import MIN_CHAINS
from ..text import num, plural, ranges, spread
from .summary import QuestionSummary, ReportSummary

__all__ = [
    "Segment",
    "QuestionVerdict",
    "question_verdict",
    "verdict_lines",
    "headline",
]

#: Shown beside a pick that is a removal set rather than a ranking.
KIND = {
    "shapley-greedy": "Shapley's greedy removal set",
    "shapley": "Shapley values, highest first",
    "leave-one-out": "one unit removed at a time",
}


@dataclass
class Segment:
    r"""Consecutive ``k`` with one recommended method.

    Attributes:
        ks (list of int): The ``k`` of the segment (as measured).
        methods (list of str): The candidates at every one of them, the pick
            first; ``["random"]``: no ranking beat random removal.
        values (list of float): The pick's aggregate value at each ``k``.
        runner_up (tuple, optional): ``(method, value)``: the best method that
            is not a candidate at the segment's last ``k``.
    """

    ks: List[int]
    methods: List[str]
    values: List[float] = field(default_factory=list)
    runner_up: Optional[Tuple[str, float]] = None

    @property
    def pick(self) -> str:
        return self.methods[0]


@dataclass
class QuestionVerdict:
    r"""What the verdict of one question says (see the module's docstring)."""

    question: QuestionSummary
    tolerance: float
    segments: List[Segment]
    gradient_ks: Dict[str, List[int]]
    provisional: List[str]
    skipped: List[str]


def _candidates(q: QuestionSummary, k: int, tol: float) -> Set[str]:
    vals = {m: q.at(m, k) for m in COMPETING if m in q.methods}
    vals = {m: v for m, v in vals.items() if not math.isnan(v)}
    if not vals:
        return set()
    best = min(vals.values())
    # the table's per-k winners are exact ties; the verdict also ties values
    # within the metric's resolution
    out = {m for m, v in vals.items() if v <= best + tol + 1e-9}
    return {"random"} if "random" in out else out


def _order(q: QuestionSummary, methods: Set[str], ks: List[int]) -> List[str]:
    def key(m: str) -> Tuple[float, int]:
        mean = sum(q.at(m, k) for k in ks) / len(ks)
        return mean, METHODS.index(m) if m in METHODS else len(METHODS)

    return sorted(methods, key=key)


def _segments(q: QuestionSummary, tol: float) -> List[Segment]:
    groups: List[Tuple[List[int], Set[str]]] = []
    for k in q.ks[1:]:
        cand = _candidates(q, k, tol)
        if not cand:
            continue
        if groups and groups[-1][0][-1] == q.ks[q.ks.index(k) - 1]:
            common = groups[-1][1] & cand
            if common:
                groups[-1][0].append(k)
                groups[-1] = (groups[-1][0], common)
                continue
        groups.append(([k], cand))
    out = []
    for ks, cand in groups:
        methods = _order(q, cand, ks)
        last = ks[-1]
        tied = _candidates(q, last, tol) | cand
        others = [
            (q.at(m, last), m)
            for m in COMPETING
            if m in q.methods and m not in tied and not math.isnan(q.at(m, last))
        ]
        runner = min(others) if others else None
        out.append(
            Segment(
                ks,
                methods,
                [q.at(methods[0], k) for k in ks],
                None if runner is None else (runner[1], runner[0]),
            )
        )
    return out


def _provisional(q: QuestionSummary) -> List[str]:
    notes = []
    runs = q.shapley_runs
    bad = [r for r in runs if not r.converged or r.permutations < MIN_CHAINS]
    if bad:
        notes.append(
            f"the Shapley runs did not {'all ' if len(bad) < len(runs) else ''}"
            f"converge ({len(bad)} of {plural(len(runs), 'seed')}: "
            + "; ".join(
                f"seed {r.seed} stopped by {r.stop_reason} after "
                f"{plural(r.permutations, 'chain')} and {r.evaluations} evaluations"
                for r in bad
            )
            + "), so the rows of shapley and shapley-greedy are provisional: a "
            "larger budget (without --quick, or a larger --max-evaluations) may "
            "change them"
        )
    crowd = [r for r in runs if r.boundary_crowding is not None]
    if crowd and crowd[0].boundary_crowding and crowd[0].boundary_crowding > 1:
        r = crowd[0]
        notes.append(
            f"{plural(r.boundary_crowding or 0, 'unit')} lie within epsilon = "
            f"{num(r.epsilon, 3)} of the top-{q.k} boundary (seed {r.seed}): the "
            "stopping rule treats them as tied, so which of them rank inside the "
            f"top {q.k} is not a distinction at this tolerance"
            + (" (the run converged in this sense)" if r.converged else "")
        )
    return notes


def question_verdict(q: QuestionSummary) -> QuestionVerdict:
    r"""The verdict of one question, from its summary."""
    segments = _segments(q, q.resolution)
    gradient: Dict[str, List[int]] = {}
    for s in segments:
        if s.pick in GRADIENT:
            gradient.setdefault(s.pick, []).extend(s.ks)
    skipped = [
        f"{q.label(m)} ({st.reason})" for m, st in q.status.items() if st.skipped
    ]
    return QuestionVerdict(
        q, q.resolution, segments, gradient, _provisional(q), skipped
    )


# -- words ---------------------------------------------------------------------------


def _value_with_range(q: QuestionSummary, m: str, k: int) -> str:
    c = q.methods[m]
    i = q.ks.index(k)
    if len(c.runs) > 1 and m != "random":
        return f"{spread(c.curve[i], c.min[i], c.max[i])} ({c.aggregate})"
    return num(c.curve[i])


def _segment_line(q: QuestionSummary, s: Segment, tol_words: str) -> str:
    where = f"k = {ranges(s.ks)}"
    if s.pick == "random":
        return (
            f"- {where}: no ranking removes more than random removal does "
            f"({tol_words}); the metric barely moves ({num(s.values[0])} at "
            f"k = {s.ks[0]})."
        )
    kind = KIND.get(s.pick)
    name = f"**{q.label(s.pick)}**" + (f" ({kind})" if kind else "")
    first, last = s.ks[0], s.ks[-1]
    vals = (
        f"{_value_with_range(q, s.pick, first)} at k = {first}"
        if first == last
        else f"{_value_with_range(q, s.pick, first)} at k = {first} to "
        f"{_value_with_range(q, s.pick, last)} at k = {last}"
    )
    text = f"- {where}: use {name}: lowest {q.metric} after removal, {vals}"
    if len(s.methods) > 1:
        text += f"; tied ({tol_words}): " + ", ".join(map(q.label, s.methods[1:]))
    if s.runner_up is not None:
        m, v = s.runner_up
        text += f"; next best at k = {last}: {q.label(m)} {num(v)}"
    c = q.costs.get(s.pick)
    if c is not None:
        ev = f", {c.model_evaluations:.0f} coalitions" if c.model_evaluations else ""
        text += f" (cost {c.wall_s:.2f} s{ev})"
    return text + "."


def _value_vs_set(q: QuestionSummary) -> Optional[str]:
    k = q.k
    if k not in q.ks or "shapley" not in q.methods or "shapley-greedy" not in q.methods:
        return None
    text = (
        f"- At k = {k}, Shapley's removal set leaves "
        f"{_value_with_range(q, 'shapley-greedy', k)} and the value ranking "
        f"{_value_with_range(q, 'shapley', k)}: values rank units by their average "
        "contribution over coalitions, the removal set answers which k units hurt "
        "most when removed together"
    )
    if "full-greedy" in q.methods:
        text += (
            f"; the full greedy search over every unit (the reference, not a "
            f"competitor) reaches {num(q.at('full-greedy', k))}"
        )
    return text + "."


def verdict_lines(v: QuestionVerdict) -> List[str]:
    r"""The verdict of one question as markdown lines."""
    q = v.question
    tol_words = "within one test example" if v.tolerance else "equal"
    ties = (
        f"; values within {num(v.tolerance, 4)} (one test example) of the lowest tie"
        if v.tolerance
        else ""
    )
    lines = [
        f"**{q.title}** (metric {q.metric}; intact {num(q.intact)} on "
        f"{plural(q.n_test, 'test example')}{ties}):",
        "",
    ]
    lines += [_segment_line(q, s, tol_words) for s in v.segments]
    if v.gradient_ks:
        lines.append(
            "- A gradient method is the pick at "
            + "; ".join(f"k = {ranges(ks)} ({m})" for m, ks in v.gradient_ks.items())
            + "."
        )
    else:
        lines.append("- No gradient method is the pick at any k.")
    vs = _value_vs_set(q)
    if vs:
        lines.append(vs)
    lines += [f"- Provisional: {note}." for note in v.provisional]
    if v.skipped:
        lines.append("- No result: " + "; ".join(v.skipped) + ".")
    return lines


def headline(summary: ReportSummary) -> str:
    r"""Every question's verdict, as printed at the end of a run."""
    blocks = [
        "\n".join(verdict_lines(question_verdict(q)))
        for q in summary.questions.values()
    ]
    return "\n\n".join(blocks)
