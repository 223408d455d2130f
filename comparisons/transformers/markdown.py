r"""``report.md`` of the transformer comparison, from its summary alone
(:func:`render`).

It opens with the verdict: for each group of studies (heads for the induction
task, heads for the four tasks, MLP neurons of the modular model), the winners
at every ``k`` on each model, how often each method is among them, and every
``(model, k)`` where a baseline leaves a lower metric than both Shapley rows by
more than the metric's resolution (one test example). Then where each method
ranks the induction circuit's heads, what each method cost, how it was
measured, and each study's tables. A dagger marks a method that stopped on its
budget (a Shapley run that did not converge, or drew fewer than 20 chains);
the footnotes say why.
"""

from __future__ import annotations

import math
import statistics
from typing import List, Sequence, Tuple

from ..text import num, plural, spread
from .options import COMPETING, METHODS
from .summary import MARK, StudySummary, TransformerSummary

__all__ = ["render", "GROUPS"]

#: ``(question, title)`` of each group of studies, in the report's order.
GROUPS: Tuple[Tuple[str, str], ...] = (
    ("induction", "Heads, induction accuracy (RecallTransformer)"),
    ("overall", "Heads, mean accuracy over the four tasks (RecallTransformer)"),
    ("modular", "MLP neurons, modular addition (ModularTransformer)"),
)

SHAPLEY = ("shapley", "shapley-greedy")


def _groups(s: TransformerSummary) -> List[Tuple[str, List[StudySummary]]]:
    out = []
    for q, title in GROUPS:
        studies = [st for st in s.studies.values() if st.question == q]
        if studies:
            out.append((title, studies))
    return out


def _model(st: StudySummary) -> str:
    return st.key.split("-")[0]


def _cell(st: StudySummary, m: str, i: int) -> str:
    c = st.methods.get(m)
    if c is None or math.isnan(c.curve[i]):
        return "—"
    if len(c.runs) > 1 and m == "random":
        return f"{num(c.curve[i])} ± {num(c.std[i])}"
    if len(c.runs) > 1:
        return spread(c.curve[i], c.min[i], c.max[i])
    return num(c.curve[i])


def _footnotes(st: StudySummary, shown: Sequence[str]) -> List[str]:
    notes = [
        f"{MARK} **{m}** did not finish: {st.status[m].reason}. Budget: "
        f"{st.status[m].budget}. Used: {st.status[m].used}."
        for m in shown
        if st.incomplete(m)
    ]
    return [""] + notes if notes else []


# -- the verdict ---------------------------------------------------------------------


def _winners_by_model(studies: List[StudySummary]) -> List[str]:
    ks = sorted({w.k for st in studies for w in st.winners})
    head = "| k | " + " | ".join(_model(st) for st in studies) + " |"
    rows = [head, "|---|" + "---|" * len(studies)]
    for k in ks:
        cells = []
        for st in studies:
            w = next((w for w in st.winners if w.k == k), None)
            cells.append(
                "—"
                if w is None
                else f"{', '.join(st.label(m) for m in w.winners)} ({num(w.value)})"
            )
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return rows


def _within(st: StudySummary, k: int) -> List[str]:
    r"""Competing methods within the metric's resolution of the lowest value."""
    vals = {m: st.at(m, k) for m in COMPETING if m in st.methods}
    vals = {m: v for m, v in vals.items() if not math.isnan(v)}
    if not vals:
        return []
    best = min(vals.values())
    return [m for m, v in vals.items() if v <= best + st.resolution + 1e-9]


def _wins_table(groups: List[Tuple[str, List[StudySummary]]]) -> List[str]:
    head = (
        "| method | "
        + " | ".join(
            f"{t.split(' (')[0]}: lowest / within one example" for t, _ in groups
        )
        + " |"
    )
    rows = [head, "|---|" + "---|" * len(groups)]
    for m in COMPETING:
        cells = []
        for _, studies in groups:
            total = sum(len(st.winners) for st in studies)
            exact = sum(m in w.winners for st in studies for w in st.winners)
            near = sum(m in _within(st, w.k) for st in studies for w in st.winners)
            cells.append(f"{exact} / {near} of {total}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return rows


def _beats_shapley(studies: List[StudySummary]) -> List[str]:
    r"""Every (model, k) where a non-Shapley method leaves a lower metric than
    both Shapley rows by more than one test example."""
    out = []
    for st in studies:
        for w in st.winners:
            k = w.k
            sh = [st.at(m, k) for m in SHAPLEY if not math.isnan(st.at(m, k))]
            if not sh:
                continue
            best_sh = min(sh)
            better = [
                (st.at(m, k), m)
                for m in COMPETING
                if m not in SHAPLEY
                and not math.isnan(st.at(m, k))
                and st.at(m, k) < best_sh - st.resolution - 1e-9
            ]
            if better:
                v, m = min(better)
                out.append(
                    f"{_model(st)} k = {k}: {st.label(m)} {num(v)} against "
                    f"Shapley's best {num(best_sh)}"
                )
    return out


def _shapley_vs_best(studies: List[StudySummary]) -> str:
    r"""How often each Shapley row is within one example of the lowest."""
    total = sum(len(st.winners) for st in studies)
    parts = []
    for m in SHAPLEY:
        near = sum(m in _within(st, w.k) for st in studies for w in st.winners)
        parts.append(f"{m} at {near} of {total}")
    either = sum(
        any(m in _within(st, w.k) for m in SHAPLEY)
        for st in studies
        for w in st.winners
    )
    return (
        "Within one test example of the lowest held-out metric: "
        + ", ".join(parts)
        + f" (model, k) points; at least one Shapley row at {either} of {total}."
    )


def _convergence(studies: List[StudySummary]) -> str:
    bad = [
        f"{_model(st)} seed {r.seed} ({r.stop_reason} after "
        f"{plural(r.permutations, 'chain')})"
        for st in studies
        for r in st.shapley_runs
        if not r.converged or r.permutations < 20
    ]
    runs = sum(len(st.shapley_runs) for st in studies)
    if not bad:
        return f"All {runs} Shapley runs converged (top-k rule)."
    return (
        f"{MARK} {len(bad)} of {runs} Shapley runs did not converge: "
        + "; ".join(bad)
        + "."
    )


def _verdict(groups: List[Tuple[str, List[StudySummary]]]) -> List[str]:
    lines = ["## Verdict", ""]
    lines += [
        "Every method ranks the units on the estimation split; each ranking is "
        "judged on the held-out test split by the metric after removing its "
        "first k units. The tables give, for every k and model, the method(s) "
        "leaving the lowest metric (exact ties shown; value in brackets). "
        "full-greedy and exact-shapley are references, not competitors.",
        "",
    ]
    for title, studies in groups:
        lines += [f"### {title}", "", *_winners_by_model(studies), ""]
        lines.append(_shapley_vs_best(studies))
        beats = _beats_shapley(studies)
        lines.append("")
        if beats:
            lines.append(
                "A baseline leaves a lower metric than both Shapley rows by more "
                "than one test example at: " + "; ".join(beats) + "."
            )
        else:
            lines.append(
                "No baseline leaves a lower metric than both Shapley rows by more "
                "than one test example at any (model, k)."
            )
        lines += ["", _convergence(studies), ""]
    lines += [
        "How often each method leaves the lowest metric (exactly, and within one "
        "test example), over every (model, k) of each group:",
        "",
        *_wins_table(groups),
        "",
    ]
    return lines


# -- the mechanism ---------------------------------------------------------------------


def _mechanism(s: TransformerSummary) -> List[str]:
    studies = [
        st
        for st in s.studies.values()
        if st.question == "induction" and st.mechanism is not None
    ]
    if not studies:
        return []
    head = "| method | " + " | ".join(
        f"{_model(st)}: "
        + ", ".join(
            f"{n} ({r})" for n, r in zip(st.mechanism.names, st.mechanism.roles)
        )
        for st in studies
        if st.mechanism is not None
    )
    rows = [
        "## Where each method ranks the induction circuit",
        "",
        "The induction circuit of each model, read from its attention patterns "
        "alone (`induction_circuit`: layer-0 heads attending to the previous "
        "position, layer-1 heads attending from the last position to the "
        "answer, scores above 0.5), and the rank each method gives its heads "
        "for the induction accuracy (1 = removed first; Shapley rows: median "
        "over estimator seeds). ✓: the method's first |circuit| units are "
        "exactly the circuit (for Shapley, the fraction of seeds).",
        "",
        head + " |",
        "|---|" + "---|" * len(studies),
    ]
    methods = [m for m in METHODS if m != "random"]
    for m in methods:
        cells = []
        for st in studies:
            mech = st.mechanism
            assert mech is not None
            if m not in mech.ranks:
                cells.append("—")
                continue
            ranks = ", ".join(f"{r:g}" for r in mech.ranks[m])
            f = mech.found.get(m, 0.0)
            mark = " ✓" if f == 1.0 else (f" ✓ {f:.0%} of seeds" if f > 0 else "")
            cells.append(ranks + mark)
        dagger = MARK if any(st.incomplete(m) for st in studies) else ""
        rows.append(f"| {m}{dagger} | " + " | ".join(cells) + " |")
    rows.append("")
    roles = [st for st in s.studies.values() if st.roles]
    if roles:
        rows += [
            "Every head's roles (attention score above 0.5; previous-token "
            "counted in layer 0, induction in layer 1; first, marked and offset: "
            "attention from the last position to that task's answer):",
            "",
            "| model | " + " | ".join(roles[0].unit_names) + " |",
            "|---|" + "---|" * len(roles[0].unit_names),
        ]
        seen = set()
        for st in roles:
            if _model(st) in seen or not st.roles:
                continue
            seen.add(_model(st))
            rows.append(f"| {_model(st)} | " + " | ".join(st.roles) + " |")
        rows.append("")
    return rows


# -- costs ---------------------------------------------------------------------------


def _costs(groups: List[Tuple[str, List[StudySummary]]]) -> List[str]:
    lines = [
        "## What each method cost",
        "",
        "Medians over the models of each group, measured in the same run with "
        "hooks on the model: wall seconds, forward passes (examples pushed "
        "through them; an example evaluated for M coalitions counts M times), "
        "backward passes (examples), coalitions evaluated. Shapley: median "
        "over estimator seeds first; shapley-greedy includes its Shapley run.",
        "",
    ]
    for title, studies in groups:
        lines += [
            f"### {title}",
            "",
            "| method | wall s | forward passes (examples) | backward passes "
            "(examples) | coalitions |",
            "|---|---|---|---|---|",
        ]
        for m in METHODS:
            cs = [st.costs[m] for st in studies if m in st.costs]
            if not cs or m == "random":
                continue

            def med(field: str) -> float:
                return float(statistics.median(getattr(c, field) for c in cs))

            ev = med("model_evaluations")
            lines.append(
                f"| {m} | {med('wall_s'):.2f} | {med('forward_calls'):.0f} "
                f"({med('forward_examples'):.0f}) | {med('backward_calls'):.0f} "
                f"({med('backward_examples'):.0f}) | "
                f"{f'{ev:.0f}' if ev else ''} |"
            )
        lines.append("")
    return lines


# -- how it was measured ---------------------------------------------------------------


def _measured(s: TransformerSummary) -> List[str]:
    recall = [
        (st, v)
        for st in s.studies.values()
        for name, v in st.all_mlp_removed.items()
        if name == "recall" and st.question == "induction"
    ]
    modular = [
        (st, v)
        for st in s.studies.values()
        for name, v in st.all_mlp_removed.items()
        if name == "modular"
    ]
    why = []
    if recall:
        why.append(
            "with all 128 MLP neurons of RecallTransformer removed (each by its "
            "mean) the induction accuracy stays at "
            + ", ".join(f"{num(v)} ({_model(st)})" for st, v in recall)
        )
    if modular:
        why.append(
            "with all 128 MLP neurons of ModularTransformer removed the accuracy "
            "of modular addition falls to "
            + ", ".join(f"{num(v)} ({_model(st)})" for st, v in modular)
            + " (chance: 1/59 = 0.017)"
        )
    return [
        "## How this was measured",
        "",
        f"Command: `{s.command}`; total wall time {s.total_wall_s} s.",
        "",
        f"Environment: {s.environment.line()}.",
        "",
        "Models (shipped weights, nothing trained or downloaded): "
        "`RecallTransformer`, two `nn.TransformerEncoderLayer` blocks with 4 heads "
        "each, trained on four recall tasks (the induction task needs a "
        "previous-token head and an induction head), and `ModularTransformer`, one "
        "`nn.TransformerEncoderLayer` with 128 ReLU MLP neurons trained on "
        "(a + b) mod 59 from half of the pairs. The MLP neurons are studied on the "
        "second model because "
        + "; ".join(why)
        + ": removal curves over neurons that carry almost nothing would compare "
        "noise.",
        "",
        "Units and removal: a head is its slice of the heads' concatenated outputs "
        "before the output projection (`HeadShapley`), an MLP neuron one feature of "
        "the input of the MLP's second linear layer (`NeuronShapley` with "
        "`feature_mask`); a removed unit emits its mean over the estimation "
        "examples and positions, for every method and in every removal curve.",
        "",
        "Methods: **shapley** ranks by Shapley value (`attribute(top_k=k)` with "
        "the default stopping rule; median over "
        f"{plural(s.seeds, 'estimator seed')}, [min, max] beside); "
        '**shapley-greedy** is the same runs\' removal set (`refine="greedy"`: a '
        "greedy search on the same game over the 6k highest-valued units, "
        "continued past k over the same pool; for 8 heads the pool holds every "
        "head); **full-greedy** (reference) is the greedy search over every unit; "
        "**exact-shapley** (reference, heads) ranks by the exact Shapley values "
        "(all 256 coalitions); **leave-one-out** removes one unit at a time; "
        "**michel** is the head importance of Michel et al. (2019), "
        "E|dL/dξ| for a gate ξ on the unit's output, layer-normalized; **atp** is "
        "attribution patching, the first-order estimate g·(b − a) of replacing "
        "the unit's output a by its baseline b, averaged (minus, so that higher "
        "means removing hurts more); **conductance** is Captum's "
        "`LayerConductance` and **grad-x-act** Captum's "
        "`LayerGradientXActivation`, on the heads' concatenated outputs "
        "(`head_outputs`) or the MLP's hidden features, summed per unit and "
        f"averaged ({s.n_steps} steps of the path from the positions alone, no "
        "token information); **random** is the mean ± std of "
        f"{plural(s.random_seeds, 'random order')}. The gradient methods "
        "differentiate the log-likelihood of the right answer (minus the loss; "
        "the mean over the four answers for the overall metric), on the model "
        "fed its embeddings.",
        "",
    ]


# -- each study ----------------------------------------------------------------------


def _study(st: StudySummary) -> List[str]:
    names = list(st.methods)
    lines = [
        f"### {st.title}",
        "",
        f"{st.model}; {st.n_units} units; {st.n_est} estimation and {st.n_test} "
        f"test examples; intact {st.metric} (test) {num(st.intact)}; k = {st.k} "
        f"(the bandit's top_k), curves to k = {st.K}; {st.wall_s} s.",
        "",
        "| k | " + " | ".join(st.label(m) for m in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, k in enumerate(st.ks):
        lines.append(f"| {k} | " + " | ".join(_cell(st, m, i) for m in names) + " |")
    lines.append(
        "| area under the curve | "
        + " | ".join(num(st.methods[m].auc) for m in names)
        + " |"
    )
    lines += _footnotes(st, names)
    lines += [
        "",
        "Shapley runs: "
        + "; ".join(
            f"seed {r.seed}: {plural(r.permutations, 'chain')}, "
            f"{r.evaluations} evaluations, {r.stop_reason}, {r.wall_s} s"
            + (
                f", greedy set +{r.refine.evaluations} evaluations"
                if r.refine is not None
                else ""
            )
            for r in st.shapley_runs
        )
        + ".",
        "",
        "First units of each method (Shapley: seed 0): "
        + "; ".join(
            f"{m}: {', '.join(st.unit_names[u] for u in o[: max(st.k, 3)])}"
            for m, o in st.orders.items()
        )
        + ".",
        "",
    ]
    return lines


def _figures(s: TransformerSummary) -> List[str]:
    f = s.figures
    items = {
        "removal_curves": "removal curves of every study (rows: models; "
        "columns: heads for the induction task, heads for the four tasks, MLP "
        "neurons); Shapley's lines are medians over estimator seeds with their "
        "range shaded.",
        "mechanism_ranks": "the rank each method gives the induction circuit's "
        "heads, per model.",
        "head_values": "the heads' Shapley values for the induction accuracy: "
        "seed 0's estimate with its confidence interval, and the exact value.",
    }
    lines = ["## Figures", ""]
    for name, text in items.items():
        if name in f:
            lines += [f"`{f[name]}`: {text}", "", f"![{name}]({f[name]})", ""]
    return lines


def render(s: TransformerSummary) -> str:
    r"""``report.md`` from the summary."""
    groups = _groups(s)
    lines = [
        "# Attention heads and MLP neurons: Shapley values against gradient "
        "and removal baselines",
        "",
        *_verdict(groups),
        *_mechanism(s),
        *_costs(groups),
        *_measured(s),
        "## Each study",
        "",
        "Removal curves on the test split (Shapley rows: median [min, max] over "
        "estimator seeds; random: mean ± std), k = 0 is the intact model.",
        "",
    ]
    for _, studies in groups:
        for st in studies:
            lines += _study(st)
    lines += _figures(s)
    return "\n".join(lines)
