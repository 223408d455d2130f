r"""``applications.md`` from the case studies' summary (:func:`render`): the
headline table (paper, here, the targeted gradient baselines), then per case
its setting, curves, winners and costs."""

from __future__ import annotations

import statistics
from typing import List, Optional, Tuple

from ..text import num, plural
from .options import GRADIENT_METHODS, ORACLE, SHAPLEY_SET, SHAPLEY_VALUE
from .summary import CaseStudies, CaseSummary, ClassRow

__all__ = ["render", "headline_table"]

#: The metric of each case's headline.
HEADLINE_METRIC = {
    "overall": "accuracy",
    "class": "recall",
    "fairness": "subgroup_accuracy",
    "adversarial": "attack_success",
}

_SHORT = {
    "accuracy_other_classes": "other classes",
    "rest_accuracy": "rest",
    "clean_accuracy": "clean",
}


def _who_wins(case: CaseSummary, k: int, primary: bool = False) -> str:
    table = case.judged.winners_primary if primary else case.judged.winners
    w = table.get(str(k), [])
    return " = ".join(w) if w else "—"


def _baseline_cell(case: CaseSummary, metric: str, k: int) -> str:
    j = case.judged
    cost = j.cost_metric

    def one(m: str) -> str:
        txt = f"{m} {num(case.at(m, metric, k))}"
        if cost:
            txt += f" ({_SHORT.get(cost, cost)} {num(case.at(m, cost, k))})"
        return txt

    names = list(GRADIENT_METHODS) + [m for m in j.curves if m.endswith("+ greedy")]
    cell = "; ".join(one(m) for m in names)
    cell += f". Winner at k={k} by {j.primary}: {_who_wins(case, k, primary=True)}"
    if j.winner_metric != j.primary:
        cell += f"; by {j.winner_metric}: {_who_wins(case, k)}"
    return cell


def _oracle_note(case: CaseSummary, metric: str) -> str:
    if ORACLE not in case.judged.curves:
        return ""
    return (
        "; room left (greedy on the test split itself): "
        f"{num(case.at(ORACLE, metric, case.k))}"
    )


def _random(case: CaseSummary, metric: str, k: int) -> str:
    return num(case.random_at(metric, k))


def _here_overall(case: CaseSummary) -> str:
    k, b = case.k, case.judged.before
    text = (
        f"accuracy {num(b['accuracy'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'accuracy', k))} (removal set), "
        f"{num(case.at(SHAPLEY_VALUE, 'accuracy', k))}"
    )
    if 20 not in case.ks:
        return text + f" (by value); random {_random(case, 'accuracy', k)}"
    return text + (
        f" (top-{k} by value); top-20 by value "
        f"{num(case.at(SHAPLEY_VALUE, 'accuracy', 20))}; {k} random: "
        f"{_random(case, 'accuracy', k)} (median of "
        f"{len(case.judged.random_orders)})"
    )


def _here_class(case: CaseSummary) -> str:
    k, b, k2 = case.k, case.judged.before, max(case.ks)
    other = "accuracy_other_classes"
    return (
        f"class {case.cls} recall {num(b['recall'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'recall', k))} (removal set; other classes "
        f"{num(b[other])} -> {num(case.at(SHAPLEY_SET, other, k))}), "
        f"{num(case.at(SHAPLEY_VALUE, 'recall', k))} by value (other classes "
        f"{num(case.at(SHAPLEY_VALUE, other, k))}); top-{k2} by value: recall "
        f"{num(case.at(SHAPLEY_VALUE, 'recall', k2))}, other classes "
        f"{num(case.at(SHAPLEY_VALUE, other, k2))}; {k} random: recall "
        f"{_random(case, 'recall', k)}" + _oracle_note(case, "recall")
    )


def _here_fairness(case: CaseSummary) -> str:
    k, b = case.k, case.judged.before
    return (
        f"bold digits {num(b['subgroup_accuracy'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'subgroup_accuracy', k))} (removal set; rest "
        f"{num(b['rest_accuracy'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'rest_accuracy', k))}, overall "
        f"{num(b['accuracy'])} -> {num(case.at(SHAPLEY_SET, 'accuracy', k))}), "
        f"{num(case.at(SHAPLEY_VALUE, 'subgroup_accuracy', k))} with the {k} most "
        f"negative values (rest {num(case.at(SHAPLEY_VALUE, 'rest_accuracy', k))})"
        f"; {k} random: {_random(case, 'subgroup_accuracy', k)}"
        + _oracle_note(case, "subgroup_accuracy")
    )


def _here_adversarial(case: CaseSummary) -> str:
    k, b = case.k, case.judged.before
    fr = case.fresh_attack_success or {}
    return (
        f"attack success {num(b['attack_success'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'attack_success', k))} (removal set; clean "
        f"{num(b['clean_accuracy'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'clean_accuracy', k))}), "
        f"{num(case.at(SHAPLEY_VALUE, 'attack_success', k))} by value (clean "
        f"{num(case.at(SHAPLEY_VALUE, 'clean_accuracy', k))}); fresh attack on the "
        f"repaired model {num(fr.get(SHAPLEY_SET))}; transfer attack from the "
        f"digits CNN {num(b['transfer_attack_success'])} -> "
        f"{num(case.at(SHAPLEY_SET, 'transfer_attack_success', k))}; {k} random: "
        f"{_random(case, 'attack_success', k)}"
    )


_HERE = {
    "overall": _here_overall,
    "class": _here_class,
    "fairness": _here_fairness,
    "adversarial": _here_adversarial,
}


def headline_table(studies: CaseStudies) -> List[str]:
    r"""One row per case: the paper, here, and the targeted gradient baselines."""
    rows = [
        "| application | paper | here: before -> after on held-out data | k | "
        "evaluations | wall time | targeted gradient baselines (same k, same "
        "metric) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, case in studies.cases.items():
        sh = case.shapley
        conv = "" if sh.converged else f" (stopped by {sh.stop_reason})"
        rows.append(
            f"| {case.title} | {case.paper} | {_HERE[key](case)} | {case.k} | "
            f"{case.n_evaluations}{conv} | {case.costs['shapley'].wall_s:.0f} s "
            f"| {_baseline_cell(case, HEADLINE_METRIC[key], case.k)} |"
        )
    return rows


def _curve_table(case: CaseSummary) -> List[str]:
    j = case.judged
    lines = []
    for m in j.metrics:
        note = f"(winner column: {j.winner_metric})" if m == j.metrics[0] else ""
        lines += [
            f"{m} (test) after removing each method's first k units {note}".rstrip(),
            "",
            "| method | " + " | ".join(f"k={k}" for k in case.ks) + " |",
            "|---|" + "---|" * len(case.ks),
            f"| intact | {num(j.before[m])} |" + " |" * (len(case.ks) - 1),
        ]
        for name, c in j.curves.items():
            lines.append(f"| {name} | " + " | ".join(num(v) for v in c[m]) + " |")
        r = j.random
        lines += [
            f"| random ({plural(len(j.random_orders), 'order')}: median [min, max]) "
            "| "
            + " | ".join(
                f"{num(md)} [{num(lo)}, {num(hi)}]"
                for md, lo, hi in zip(r.median[m], r.min[m], r.max[m])
            )
            + " |",
            "",
        ]
    best = "lowest" if j.goal == "lower" else "highest"
    tables: List[Tuple[dict, str]] = [(j.winners_primary, j.primary)]
    if j.winner_metric != j.primary:
        tables.append((j.winners, j.winner_metric))
    for table, metric in tables:
        lines += [
            f"Winner at each k by {metric} ({best} wins): "
            + "; ".join(f"k={k}: {' = '.join(w)}" for k, w in table.items()),
            "",
        ]
    return lines


def _cost_table(case: CaseSummary) -> List[str]:
    lines = [
        "| method | wall s | forward passes (examples) | backward passes (examples) "
        "| coalitions evaluated |",
        "|---|---|---|---|---|",
    ]
    for name, c in case.costs.items():
        lines.append(
            f"| {name} | {c.wall_s:.2f} | {c.forward_calls} "
            f"({c.forward_examples}) | {c.backward_calls} "
            f"({c.backward_examples}) | {c.model_evaluations or ''} |"
        )
    return lines


def _intro(studies: CaseStudies) -> List[str]:
    st, data = studies.settings, studies.data
    models = "; ".join(
        f"{m['description']} [weights {m['fingerprint']}]"
        for m in studies.models.values()
    )
    refine = (
        "; the best of them at k is also given the same greedy search over "
        "its own candidates (`<method> + greedy`)"
        if st["refine_gradient"]
        else ""
    )
    oracle = (
        f" `{ORACLE}` is not a method: the same greedy search run on the test "
        "split itself over every candidate, i.e. how far removing k units can "
        "move the test metric at all (the room the setup leaves); it takes "
        "no part in the winners."
        if st["oracle"]
        else ""
    )
    return [
        "# Neuron Shapley: the paper's four applications, against targeted "
        "gradient rankings",
        "",
        f"Command: `{studies.command}`; total wall time {studies.total_wall_s} s.",
        "",
        f"Environment: {studies.environment.line()}.",
        "",
        f"Models: {models}. Players: every filter of every conv layer (336, "
        "shortcut convolutions included). Values and gradient scores are computed "
        "on the validation digits; every number below is measured on the held-out "
        f"test digits ({data['test']}; bold test: {data['bold_test']}). Removed "
        "units emit their mean activation over the clean validation digits, for "
        "every method.",
        f"Shapley: at most {st['max_evaluations']} coalitions per game "
        f"({st['adversarial_max_evaluations']} for the adversarial one) "
        f"(`perturbations_per_eval=8`, seed 0), the greedy removal set of k = "
        f"{st['k']} searched among the {st['refine_pool']} best candidates by "
        "value (its evaluations included in the counts).",
        "",
        "Two Shapley answers: **by value** (the paper's: the k units with the "
        "highest values, or the most negative for a repair) and the **removal "
        "set** (the k units whose *joint* removal moves the metric most on the "
        "validation data, found greedily among the best candidates by value). "
        "The gradient baselines rank the same units by the same target quantity "
        f"and remove the same k (by value){refine}.{oracle}",
        "",
    ]


def _case_notes(studies: CaseStudies, case: CaseSummary) -> List[str]:
    st = studies.settings
    if case.key == "class":
        return [
            "Every method may not remove the global top 20% of units for "
            "accuracy (by Shapley value, "
            f"{plural(len(case.excluded or []), 'unit')}): the same candidates "
            "for all; random removal draws from them too. The exclusion reuses the "
            "accuracy run of the overall row (its evaluations and time are not "
            "counted again here). Winners are also judged by recall minus the "
            "other classes' accuracy, so that a ranking cannot win by breaking "
            "every class.",
            "",
        ]
    if case.key == "fairness":
        g = case.subgroup or {}
        return [
            f"Training: {g.get('train_bold')} of {g.get('train')} digits rendered "
            f"bold (a thick marker). Test: the {g.get('test_rest')} test digits "
            "as written and the same digits bold. The game is the bold "
            "validation digits' accuracy; the removal set is searched for "
            "the units whose joint removal *raises* it most, among the "
            f"{st['refine_pool']} units with the most negative values.",
            "",
        ]
    if case.key == "adversarial":
        a, fr = case.attack or {}, case.fresh_attack_success or {}
        subset = a.get("game_subset_size")
        return [
            f"Attack: targeted L-inf PGD, eps {a.get('eps')}, {a.get('step_num')} "
            f"steps, targets {a.get('targets')}, crafted against the intact "
            f"model; transfer attack crafted on the {a.get('transfer_source')} "
            "with the same targets. Game: success minus clean accuracy on "
            "clean plus adversarial validation digits"
            + (f" ({subset} per chain)" if subset else "")
            + ". Winners by success minus clean accuracy (the game's metric), "
            "so that a method cannot win by breaking the model.",
            "",
            f"Fresh attack (PGD against each repaired model, k={case.k}): "
            + "; ".join(f"{n} {num(v)}" for n, v in fr.items()),
            "",
        ]
    return []


def _every_class(case: CaseSummary) -> List[str]:
    if not case.other_classes:
        return []
    lib = case.library_report or {}
    first = ClassRow(
        cls=case.cls or 0,
        before=lib.get("before", {}),
        after_set=lib.get("after", {}),
        evaluations=case.n_evaluations,
        wall_s=case.costs["shapley"].wall_s,
    )
    rows = sorted([first] + list(case.other_classes), key=lambda r: r.cls)
    lines = [
        f"Every class (removal set of {case.k}, global top 20% excluded; one "
        "recall game each):",
        "",
        "| class | recall before | recall after | other classes before | "
        "other classes after | evaluations | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.cls} | {num(r.before['recall'])} | {num(r.after_set['recall'])} "
            f"| {num(r.before['accuracy_other_classes'])} | "
            f"{num(r.after_set['accuracy_other_classes'])} | {r.evaluations} | "
            f"{r.wall_s:.1f} |"
        )
    med = statistics.median(r.after_set["recall"] for r in rows)
    return lines + [
        "",
        f"Median recall after removal over the classes: {num(med)}.",
        "",
    ]


def _case(studies: CaseStudies, case: CaseSummary, figure: Optional[str]) -> List[str]:
    sh = case.shapley
    lines = [
        f"## {case.title}",
        "",
        f"Paper: {case.paper}.",
        "",
        f"Gradient quantity: {case.quantity}. Shapley: "
        f"{case.n_evaluations} coalitions, {case.costs['shapley'].wall_s:.1f} s, "
        f"{plural(sh.permutations, 'chain')}, stopped by {sh.stop_reason}.",
        "",
    ]
    lines += _case_notes(studies, case)
    lines += _curve_table(case)
    lines += _every_class(case)
    lines += ["Cost of each ranking (this run):", "", *_cost_table(case), ""]
    if figure:
        lines += [f"![{case.title}]({figure})", ""]
    return lines


def render(studies: CaseStudies) -> str:
    r"""``applications.md`` from the summary."""
    lines = _intro(studies) + headline_table(studies) + [""]
    for key, case in studies.cases.items():
        lines += _case(studies, case, studies.figures.get(key))
    return "\n".join(lines)
