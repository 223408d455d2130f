r"""Rendering the report's summary (``results.json``) as ``report.md``.

Every table names a method with :func:`label`, which appends a dagger to any
method that stopped on a budget (Shapley not converged or on fewer than 20
chains, a gradient method averaged over part of its data, a greedy search not
continued to ``K``) or gave no result (skipped as unaffordable, or a Shapley run
that completed no chain); the footnote under each table, or the cost table's
status column for methods without a result, says why, with the method's budget
and what it used.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

__all__ = [
    "render",
    "label",
    "winners_table",
    "curves_table",
    "cost_table",
    "where_each_wins",
]

MARK = "†"

_GRADIENT = ("conductance", "grad-x-act", "influence", "influence-path")


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:.{nd}f}"


def _incomplete(q: Dict[str, Any], m: str) -> bool:
    st = q["status"].get(m)
    return bool(st) and not st["complete"] and not st["skipped"]


def label(q: Dict[str, Any], m: str) -> str:
    r"""The method's name, with a dagger when it did not finish within its
    budget (see the footnotes) or gave no result (skipped, or a Shapley run
    that completed no chain: see the cost table)."""
    st = q["status"].get(m)
    return m + (MARK if st and not st["complete"] else "")


def _footnotes(q: Dict[str, Any], shown: Sequence[str]) -> List[str]:
    notes = []
    for m in shown:
        if _incomplete(q, m):
            st = q["status"][m]
            notes.append(
                f"{MARK} **{m}** did not finish: {st['reason']}. Budget: "
                f"{st['budget']}. Used: {st['used']}."
            )
    return notes if not notes else [""] + notes


def _ranges(ks: Sequence[int]) -> str:
    r"""``[1, 2, 3, 5, 7, 8]`` -> ``"1-3, 5, 7-8"``."""
    ks = sorted(ks)
    out, start, prev = [], None, None
    for k in ks:
        if start is None:
            start = prev = k
        elif k == prev + 1:
            prev = k
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = k
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def _ks_text(q: Dict[str, Any]) -> str:
    ks = q["ks"][1:]
    return (
        f"1..{q['K']}" if ks == list(range(1, q["K"] + 1)) else ", ".join(map(str, ks))
    )


def _cell(q: Dict[str, Any], m: str, i: int) -> str:
    r"""Value at position ``i`` of the method's curve, with its spread over
    seeds (``[min-max]`` for Shapley, ``± std`` for random)."""
    e = q["methods"].get(m)
    if e is None:
        return "—"
    v = e["curve"][i]
    if v is None or v != v:
        return "—"
    if len(e["runs"]) > 1 and m == "random":
        return f"{_f(v)} ± {_f(e['std'][i])}"
    if len(e["runs"]) > 1:
        return f"{_f(v)} [{_f(e['min'][i], 2)}-{_f(e['max'][i], 2)}]"
    return _f(v)


def winners_table(q: Dict[str, Any]) -> List[str]:
    r"""Per ``k``: the winner(s), the value, Shapley by value and refined
    (median [min-max] over seeds), the full greedy search (reference), the best
    gradient method, and random removal."""
    ks = q["ks"]
    head = (
        f"| k | lowest metric: winner(s) | value | {label(q, 'shapley')} (value "
        f"ranking) | {label(q, 'shapley-greedy')} (removal set) "
        f"| {label(q, 'full-greedy')} (reference) | best gradient method | random |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for w in q["winners"]:
        i = ks.index(w["k"])
        grads = [
            (q["methods"][m]["curve"][i], m)
            for m in _GRADIENT
            if m in q["methods"]
            and q["methods"][m]["curve"][i] == q["methods"][m]["curve"][i]
        ]
        best = min(grads) if grads else None
        rows.append(
            f"| {w['k']} | {', '.join(label(q, m) for m in w['winners'])} | "
            f"{_f(w['value'])} | {_cell(q, 'shapley', i)} | "
            f"{_cell(q, 'shapley-greedy', i)} | {_cell(q, 'full-greedy', i)} | "
            + (f"{label(q, best[1])} {_f(best[0])}" if best else "—")
            + f" | {_cell(q, 'random', i)} |"
        )
    return rows + _footnotes(
        q,
        [
            m
            for m in q["methods"]
            if m in ("shapley", "shapley-greedy", "full-greedy", "random", *_GRADIENT)
        ],
    )


def curves_table(q: Dict[str, Any]) -> List[str]:
    r"""Every method's removal curve, one row per ``k`` (intact model at 0)."""
    names = list(q["methods"])
    rows = [
        "| k | " + " | ".join(label(q, m) for m in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, k in enumerate(q["ks"]):
        rows.append(f"| {k} | " + " | ".join(_cell(q, m, i) for m in names) + " |")
    rows.append(
        "| area under the curve | "
        + " | ".join(_f(q["methods"][m]["auc"]) for m in names)
        + " |"
    )
    return rows + _footnotes(q, names)


def cost_table(q: Dict[str, Any]) -> List[str]:
    r"""Cost, budget and status of every method (skipped ones included)."""
    head = (
        "| method | wall s | forward passes (examples) | backward passes (examples) "
        "| coalitions evaluated | budget | used | status |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for m, st in q["status"].items():
        c = q["costs"].get(m)
        if st["skipped"]:
            state = f"skipped: {st['reason']}"
        elif not st["complete"]:
            state = f"{MARK} incomplete: {st['reason']}"
        else:
            state = "complete" + (
                " (converged)" if m in ("shapley", "shapley-greedy") else ""
            )
        if c is None:
            cells = "| | | | "
        else:
            ev = c.get("model_evaluations") or ""
            if m == "shapley-greedy" and c.get("continuation_evaluations"):
                ev = f"{ev:.0f} (+{c['continuation_evaluations']:.0f} to continue)"
            elif isinstance(ev, float):
                ev = f"{ev:.0f}"
            cells = (
                f"| {c['wall_s']:.2f} | {c['forward_calls']:.0f} "
                f"({c['forward_examples']:.0f}) | {c['backward_calls']:.0f} "
                f"({c['backward_examples']:.0f}) | {ev} "
            )
        rows.append(
            f"| {label(q, m)} {cells}| {st['budget']} | {st['used']} | {state} |"
        )
    return rows


def _agreement(q: Dict[str, Any]) -> List[str]:
    ag = q["agreement"]
    names = ag["methods"]
    rows = [
        f"Top-{ag['k']} overlap (upper triangle) and Spearman rank correlation "
        "(lower triangle) of the scores (Shapley: seed 0):",
        "",
        "| | " + " | ".join(label(q, m) for m in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, a in enumerate(names):
        cells = []
        for j in range(len(names)):
            if i == j:
                cells.append("—")
            elif j > i:
                cells.append(_f(ag["overlap"][i][j], 2))
            else:
                cells.append(_f(ag["spearman"][i][j], 2))
        rows.append(f"| {label(q, a)} | " + " | ".join(cells) + " |")
    return rows


def where_each_wins(q: Dict[str, Any]) -> str:
    r"""One sentence: the ``k`` at which each method leaves the lowest metric,
    and at the headline ``k`` the refined Shapley set against the best gradient
    method and the full greedy search."""
    by: Dict[str, List[int]] = {}
    for w in q["winners"]:
        for m in w["winners"]:
            by.setdefault(m, []).append(w["k"])
    order = sorted(by, key=lambda m: (-len(by[m]), m))
    parts = [f"{label(q, m)} at k = {_ranges(by[m])}" for m in order]
    text = f"**{q['title']}** (metric {q['metric']}, intact {_f(q['intact'])}): "
    text += "lowest metric: " + "; ".join(parts) + "." if parts else "no winners."
    k, ks = q["k"], q["ks"]
    if k in ks:
        i = ks.index(k)
        grads = [
            (q["methods"][m]["curve"][i], m) for m in _GRADIENT if m in q["methods"]
        ]
        bits = []
        for m in ("shapley-greedy", "shapley"):
            if m in q["methods"]:
                bits.append(f"{label(q, m)} {_cell(q, m, i)}")
        if grads:
            v, m = min(grads)
            bits.append(f"best gradient method {label(q, m)} {_f(v)}")
        if "full-greedy" in q["methods"]:
            bits.append(f"full greedy {_f(q['methods']['full-greedy']['curve'][i])}")
        text += f" At k = {k}: " + ", ".join(bits) + "."
    skipped = [m for m, st in q["status"].items() if st["skipped"]]
    if skipped:
        text += (
            " No result: "
            + "; ".join(f"{label(q, m)} ({q['status'][m]['reason']})" for m in skipped)
            + "."
        )
    return text


def render(s: Dict[str, Any]) -> Tuple[str, str]:
    r"""``(report.md text, headline)`` from the summary dict; the headline is
    the summary of where each method wins, one line per question."""
    qs = s["questions"]
    summary_lines = [where_each_wins(q) for q in qs.values()]
    headline = "\n\n".join(summary_lines)
    quick = (
        f" `--quick`: the methods of the three questions shared a time budget of "
        f"{s['time_budget_s']:.0f} s."
        if s["time_budget_s"] is not None
        else ""
    )
    lines = [
        f"# Which method, for which question, at which k: {s['setup']}",
        "",
        f"Command: `{s['command']}`; {s['machine']}, torch {s['torch']}, "
        f"{s['threads']} threads; total wall time {s['total_wall_s']} s.{quick}",
        "",
        f"Layers: {', '.join(s['layers'])} ({s['n_units']} units, one per filter). "
        "Every method ranks the units on the validation split; each ranking is "
        "judged on the held-out test split by its removal curve (the metric after "
        f"removing its first k units, k = 1..{s['K']}). Removed units emit their "
        "mean activation over the validation set (the Shapley game's removal rule) "
        "for every method.",
        "",
        "Methods: **shapley** ranks by Shapley value (the top-"
        f"{s['k']} bandit; median over {s['seeds']} seeds, [min-max] beside); "
        '**shapley-greedy** is the same runs\' removal set (`refine="greedy"`: a '
        "greedy search on the same game over the highest-valued units; for k above "
        f"{s['k']} the same search continued over the same pool, evaluations "
        "counted separately); **full-greedy** is the greedy search over every unit "
        "on the same game, the reference a greedy removal set can reach (run when "
        f"affordable: at most {s['full_greedy_max_evaluations']} evaluations); "
        "conductance, gradient x activation (grad-x-act), distributional influence "
        "(point mass and integrated path), leave-one-out and activation magnitude "
        f"(one run each), and random removal (mean ± std over {s['random_seeds']} "
        f"orders). A {MARK} marks a method that stopped on its budget before its "
        "own criterion (Shapley: not converged, or fewer than 20 chains); each "
        "table's footnotes say why, with its budget.",
        "",
        "## Where each method wins",
        "",
        *[line + "\n" for line in summary_lines],
    ]
    for key, q in qs.items():
        lines += [f"## {q['title']}", ""]
        if key.startswith("recall"):
            lines += [
                "Each method ranks units by the class's recall (quantity: that "
                "class's score on its validation examples) and may not remove its "
                f"own top {100 * s['recall_excluded_fraction']:.0f}% of units for "
                f"the overall metric ({q['excluded']} units; as in the paper), so "
                "that what is found is specific to the class; random removal, "
                "the greedy searches and Shapley seed s avoid Shapley's (seed s) "
                "top units likewise.",
                "",
            ]
        elif key.startswith("pair"):
            lines += [
                "Metric: on test examples of the two classes, the fraction whose "
                "own class scores higher than the other. Quantity for the gradient "
                "methods: score of the example's class minus the other's, averaged "
                "over the examples of both classes.",
                "",
            ]
        lines += [
            f"{q['n_val']} validation and {q['n_test']} test examples"
            + (
                f" (the first {q['n_test']} of {q['n_test_available']}: the "
                "removal curves on all of them did not fit the time budget)"
                if q.get("n_test_available", q["n_test"]) > q["n_test"]
                else ""
            )
            + f"; intact {q['metric']} (test) {_f(q['intact'])}; curves at k = "
            f"{_ks_text(q)}.",
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
            f"### Removal curves ({q['metric']}, test)",
            "",
            *curves_table(q),
            "",
        ]
        other = q.get("other_classes_accuracy")
        if other:
            lines += [
                f"Other classes' accuracy (test) without each method's first "
                f"{other['k']} units (intact {_f(other['intact'])}): "
                + ", ".join(
                    f"{label(q, m)} {_f(v)}"
                    for m, v in other.items()
                    if m not in ("k", "intact")
                )
                + ".",
                "",
            ]
        lines += [*_agreement(q), ""]
    p = s["plain_tmc"]
    lines += ["## The bandit against truncated Monte Carlo", ""]
    if p.get("ran"):
        lines += [
            f"Truncated Monte Carlo with the bandit off, every unit for the "
            f"{p['chains']} chains the bandit (seed 0, overall question) walked "
            f"({p['chains_requested']} requested): {p['evaluations']} evaluations "
            f"in {p['wall_s']:.1f} s, against the bandit's {p['bandit_evaluations']}.",
            "",
        ]
    else:
        lines += [f"Not run: {p.get('reason', '')}.", ""]
    f = s["figures"]
    lines += [
        "## Figures",
        "",
        f"- `{f['removal_curves']}`: removal curves k = 0..{s['K']} per question "
        "and method (Shapley by value, its greedy removal set and the full greedy "
        "search drawn in distinct styles; the Shapley lines are medians with the "
        "seeds' range shaded; random as mean ± std).",
        f"- `{f['top_units_by_layer']}`: where each method's top-{s['k']} units "
        "sit.",
        f"- `{f['shapley_values']}`: sorted Shapley values (seed 0) with "
        "confidence intervals.",
    ]
    if "conductance_top_unit" in f:
        u = s["conductance_picture_unit"]
        lines.append(
            f"- `{f['conductance_top_unit']}`: neuron conductance through the top "
            f"Shapley unit {u[0]}[{u[1]}] for a few test images."
        )
    lines += [
        "",
        f"![removal curves]({f['removal_curves']})",
        "",
        f"![top units by layer]({f['top_units_by_layer']})",
        "",
        f"![Shapley values]({f['shapley_values']})",
        "",
    ]
    if "conductance_top_unit" in f:
        lines += [f"![conductance]({f['conductance_top_unit']})", ""]
    return "\n".join(lines), headline
