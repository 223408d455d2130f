r"""``report.md`` from the report's summary (:func:`render`).

The report opens with the verdict of each question
(:mod:`~comparisons.report.verdict`), then says how it was measured (command,
environment, methods), then gives each question's tables: per-k winners, cost
and status of every method, removal curves, agreement. Every table names a
method with ``QuestionSummary.label``, which appends a dagger to any method that
stopped on a budget (Shapley not converged or on fewer than 20 chains, a
gradient method averaged over part of its data, a greedy search not continued
to ``K``) or gave no result (skipped as unaffordable, or a Shapley run that
completed no chain); the footnote under each table, or the cost table's status
column for methods without a result, says why, with the method's budget and
what it used. A value and its range over seeds have the same decimals.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

from ..methods import GRADIENT
from ..text import num, plural, ranges, spread
from .summary import MARK, QuestionSummary, ReportSummary
from .verdict import question_verdict, verdict_lines

__all__ = [
    "render",
    "winners_table",
    "curves_table",
    "cost_table",
    "where_each_wins",
]

#: Methods of the per-k winners table's footnotes.
_WINNER_NOTES = ("shapley", "shapley-greedy", "full-greedy", "random", *GRADIENT)


def _footnotes(q: QuestionSummary, shown: Sequence[str]) -> List[str]:
    notes = [
        f"{MARK} **{m}** did not finish: {q.status[m].reason}. Budget: "
        f"{q.status[m].budget}. Used: {q.status[m].used}."
        for m in shown
        if q.incomplete(m)
    ]
    return notes if not notes else [""] + notes


def _ks_text(q: QuestionSummary) -> str:
    ks = q.ks[1:]
    return f"1..{q.K}" if ks == list(range(1, q.K + 1)) else ", ".join(map(str, ks))


def _cell(q: QuestionSummary, m: str, i: int) -> str:
    r"""Value at position ``i`` of the method's curve, with its spread over
    seeds (``[min, max]`` for Shapley, ``± std`` for random)."""
    c = q.methods.get(m)
    if c is None or math.isnan(c.curve[i]):
        return "—"
    if len(c.runs) > 1 and m == "random":
        return f"{num(c.curve[i])} ± {num(c.std[i])}"
    if len(c.runs) > 1:
        return spread(c.curve[i], c.min[i], c.max[i])
    return num(c.curve[i])


def winners_table(q: QuestionSummary) -> List[str]:
    r"""Per ``k``: the winner(s), the value, Shapley by value and refined
    (median [min, max] over seeds), the full greedy search (reference), the
    best gradient method, and random removal."""
    head = (
        f"| k | lowest metric: winner(s) | value | {q.label('shapley')} (value "
        f"ranking) | {q.label('shapley-greedy')} (removal set) "
        f"| {q.label('full-greedy')} (reference) | best gradient method | random |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for w in q.winners:
        i = q.ks.index(w.k)
        best = q.best_gradient(w.k)
        rows.append(
            f"| {w.k} | {', '.join(q.label(m) for m in w.winners)} | "
            f"{num(w.value)} | {_cell(q, 'shapley', i)} | "
            f"{_cell(q, 'shapley-greedy', i)} | {_cell(q, 'full-greedy', i)} | "
            + (f"{q.label(best)} {num(q.at(best, w.k))}" if best else "—")
            + f" | {_cell(q, 'random', i)} |"
        )
    return rows + _footnotes(q, [m for m in q.methods if m in _WINNER_NOTES])


def curves_table(q: QuestionSummary) -> List[str]:
    r"""Every method's removal curve, one row per ``k`` (intact model at 0)."""
    names = list(q.methods)
    rows = [
        "| k | " + " | ".join(q.label(m) for m in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, k in enumerate(q.ks):
        rows.append(f"| {k} | " + " | ".join(_cell(q, m, i) for m in names) + " |")
    rows.append(
        "| area under the curve | "
        + " | ".join(num(q.methods[m].auc) for m in names)
        + " |"
    )
    return rows + _footnotes(q, names)


def _state(q: QuestionSummary, m: str) -> str:
    st = q.status[m]
    if st.skipped:
        return f"skipped: {st.reason}"
    if not st.complete:
        return f"{MARK} incomplete: {st.reason}"
    return "complete" + (" (converged)" if m in ("shapley", "shapley-greedy") else "")


def cost_table(q: QuestionSummary) -> List[str]:
    r"""Cost, budget and status of every method (skipped ones included)."""
    head = (
        "| method | wall s | forward passes (examples) | backward passes (examples) "
        "| coalitions evaluated | budget | used | status |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for m, st in q.status.items():
        c = q.costs.get(m)
        if c is None:
            cells = "| | | | "
        else:
            ev = f"{c.model_evaluations:.0f}" if c.model_evaluations else ""
            if m == "shapley-greedy" and c.continuation_evaluations:
                ev += f" (+{c.continuation_evaluations:.0f} to continue)"
            cells = (
                f"| {c.wall_s:.2f} | {c.forward_calls:.0f} "
                f"({c.forward_examples:.0f}) | {c.backward_calls:.0f} "
                f"({c.backward_examples:.0f}) | {ev} "
            )
        rows.append(
            f"| {q.label(m)} {cells}| {st.budget} | {st.used} | {_state(q, m)} |"
        )
    return rows


def _agreement(q: QuestionSummary) -> List[str]:
    ag = q.agreement
    rows = [
        f"Top-{ag.k} overlap (upper triangle) and Spearman rank correlation "
        "(lower triangle) of the scores (Shapley: seed 0):",
        "",
        "| | " + " | ".join(q.label(m) for m in ag.methods) + " |",
        "|---|" + "---|" * len(ag.methods),
    ]
    for i, a in enumerate(ag.methods):
        cells = [
            "—" if i == j else num((ag.overlap if j > i else ag.spearman)[i][j], 2)
            for j in range(len(ag.methods))
        ]
        rows.append(f"| {q.label(a)} | " + " | ".join(cells) + " |")
    return rows


def where_each_wins(q: QuestionSummary) -> str:
    r"""One sentence: the ``k`` at which each method leaves the lowest metric
    (exact ties), and at the headline ``k`` the refined Shapley set against
    the best gradient method and the full greedy search."""
    by: Dict[str, List[int]] = {}
    for w in q.winners:
        for m in w.winners:
            by.setdefault(m, []).append(w.k)
    order = sorted(by, key=lambda m: (-len(by[m]), m))
    parts = [f"{q.label(m)} at k = {ranges(by[m])}" for m in order]
    text = f"**{q.title}** (metric {q.metric}, intact {num(q.intact)}): "
    text += "lowest metric: " + "; ".join(parts) + "." if parts else "no winners."
    if q.k in q.ks:
        i = q.ks.index(q.k)
        bits = [
            f"{q.label(m)} {_cell(q, m, i)}"
            for m in ("shapley-greedy", "shapley")
            if m in q.methods
        ]
        best = q.best_gradient(q.k)
        if best:
            bits.append(f"best gradient method {q.label(best)} {num(q.at(best, q.k))}")
        if "full-greedy" in q.methods:
            bits.append(f"full greedy {num(q.at('full-greedy', q.k))}")
        text += f" At k = {q.k}: " + ", ".join(bits) + "."
    skipped = [m for m, st in q.status.items() if st.skipped]
    if skipped:
        text += (
            " No result: "
            + "; ".join(f"{q.label(m)} ({q.status[m].reason})" for m in skipped)
            + "."
        )
    return text


def _header(s: ReportSummary) -> List[str]:
    quick = (
        f" The methods of the three questions shared a time budget of "
        f"{s.time_budget_s:.0f} s."
        if s.time_budget_s is not None
        else ""
    )
    return [
        "## How this was measured",
        "",
        f"Command: `{s.command}`; total wall time {s.total_wall_s} s.{quick}",
        "",
        f"Environment: {s.environment.line()}.",
        "",
        f"Layers: {', '.join(s.layers)} ({s.n_units} units, one per filter). "
        "Every method ranks the units on the validation split; each ranking is "
        "judged on the held-out test split by its removal curve (the metric after "
        f"removing its first k units, k = 1..{s.K}). Removed units emit their "
        "mean activation over the validation set (the Shapley game's removal rule) "
        "for every method.",
        "",
        "Methods: **shapley** ranks by Shapley value (the top-"
        f"{s.k} bandit; median over {plural(s.seeds, 'seed')}, [min, max] beside); "
        '**shapley-greedy** is the same runs\' removal set (`refine="greedy"`: a '
        "greedy search on the same game over the highest-valued units; for k above "
        f"{s.k} the same search continued over the same pool, evaluations "
        "counted separately); **full-greedy** is the greedy search over every unit "
        "on the same game, the reference a greedy removal set can reach (run when "
        f"affordable: at most {s.full_greedy_max_evaluations} evaluations); "
        "conductance, gradient x activation (grad-x-act), distributional influence "
        "(point mass and integrated path), leave-one-out and activation magnitude "
        f"(one run each), and random removal (mean ± std over "
        f"{plural(s.random_seeds, 'order')}). A {MARK} marks a method that stopped "
        "on its budget before its own criterion (Shapley: not converged, or fewer "
        "than 20 chains); each table's footnotes say why, with its budget.",
        "",
    ]


def _question_intro(s: ReportSummary, q: QuestionSummary) -> List[str]:
    if q.key.startswith("recall"):
        return [
            "Each method ranks units by the class's recall (quantity: that "
            "class's score on its validation examples) and may not remove its "
            f"own top {100 * s.recall_excluded_fraction:.0f}% of units for "
            f"the overall metric ({plural(q.excluded, 'unit')}; as in the paper), "
            "so that what is found is specific to the class; random removal, "
            "the greedy searches and Shapley seed s avoid Shapley's (seed s) "
            "top units likewise.",
            "",
        ]
    if q.key.startswith("pair"):
        return [
            "Metric: on test examples of the two classes, the fraction whose "
            "own class scores higher than the other. Quantity for the gradient "
            "methods: score of the example's class minus the other's, averaged "
            "over the examples of both classes.",
            "",
        ]
    return []


def _question(s: ReportSummary, q: QuestionSummary) -> List[str]:
    cut = (
        f" (the first {q.n_test} of {q.n_test_available}: the removal curves on "
        "all of them did not fit the time budget)"
        if q.n_test_available > q.n_test
        else ""
    )
    lines = [f"## {q.title}", "", *_question_intro(s, q)]
    lines += [
        f"{q.n_val} validation and {q.n_test} test examples{cut}; intact "
        f"{q.metric} (test) {num(q.intact)}; curves at k = {_ks_text(q)}.",
        "",
        "### Per-k winners",
        "",
        *winners_table(q),
        "",
        "### Cost, budget and status of each method",
        "",
        *cost_table(q),
        "",
        "Costs are counted with hooks on the model in this run: forward passes "
        "are calls of the model (examples = rows pushed through, coalitions x "
        "examples for removal methods); the Shapley game replays the part of "
        "the model before the first ablated layer, so its forward passes are "
        "cheaper than full ones. Shapley costs are medians over seeds; "
        "shapley-greedy's include its Shapley run.",
        "",
        f"### Removal curves ({q.metric}, test)",
        "",
        *curves_table(q),
        "",
    ]
    other = q.other_classes_accuracy
    if other:
        lines += [
            f"Other classes' accuracy (test) without each method's first "
            f"{other.k} units (intact {num(other.intact)}): "
            + ", ".join(f"{q.label(m)} {num(v)}" for m, v in other.after.items())
            + ".",
            "",
        ]
    return lines + [*_agreement(q), ""]


def _plain_tmc(s: ReportSummary) -> List[str]:
    p = s.plain_tmc
    lines = ["## The bandit against truncated Monte Carlo", ""]
    if not p.ran:
        return lines + [f"Not run: {p.reason}.", ""]
    return lines + [
        f"Truncated Monte Carlo with the bandit off, every unit for the "
        f"{p.chains} chains the bandit (seed 0, overall question) walked "
        f"({p.chains_requested} requested): {p.evaluations} evaluations "
        f"in {p.wall_s or 0.0:.1f} s, against the bandit's {p.bandit_evaluations}.",
        "",
    ]


def _figures(s: ReportSummary) -> List[str]:
    f = s.figures
    items = {
        "removal_curves": f"removal curves k = 0..{s.K} per question and method "
        "(Shapley by value, its greedy removal set and the full greedy search "
        "drawn in distinct styles; the Shapley lines are medians with the seeds' "
        "range shaded; random as mean ± std).",
        "top_units_by_layer": f"where each method's first {s.k} units sit, the "
        "removal sets (Shapley's greedy refinement, the full greedy search) "
        "hatched.",
        "shapley_values": "sorted Shapley values (seed 0) with confidence "
        f"intervals, the top-{s.k} boundary and the ± epsilon band within which "
        "the stopping rule treats units as tied.",
    }
    if "conductance_top_unit" in f and s.conductance_picture_unit:
        u = s.conductance_picture_unit
        items["conductance_top_unit"] = (
            f"neuron conductance through the top Shapley unit {u[0]}[{u[1]}] for a "
            "few test images, on one colour scale."
        )
    lines = ["## Figures", ""]
    lines += [f"- `{f[name]}`: {text}" for name, text in items.items() if name in f]
    lines.append("")
    for name in items:
        if name in f:
            lines += [f"![{name.replace('_', ' ')}]({f[name]})", ""]
    return lines


def render(s: ReportSummary) -> str:
    r"""``report.md`` from the summary."""
    lines = [
        f"# Which method, for which question, at which k: {s.setup}",
        "",
        "## Verdict",
        "",
        "For each question, the method that leaves the lowest metric on held-out "
        "data after removing its first k units, by range of k (values within the "
        "metric's resolution of the lowest, one test example for an accuracy or "
        "a recall, count as ties; the tables below give every number).",
        "",
    ]
    for q in s.questions.values():
        lines += [*verdict_lines(question_verdict(q)), ""]
    lines += _header(s)
    lines += ["## Where each method wins", ""]
    lines += [where_each_wins(q) + "\n" for q in s.questions.values()]
    for q in s.questions.values():
        lines += _question(s, q)
    lines += _plain_tmc(s)
    lines += _figures(s)
    return "\n".join(lines)
