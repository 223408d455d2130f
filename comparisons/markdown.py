r"""Rendering the report's summary (``results.json``) as ``report.md``."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

__all__ = ["render", "method_table"]


def _f(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def method_table(sc: Dict[str, Any], k: int) -> List[str]:
    r"""One row per method: the metric after removing its top-``k`` units, areas
    under the removal curves, and its cost."""
    ev = sc["evaluation"]
    i = ev["ks"].index(k) if k in ev["ks"] else len(ev["ks"]) - 1
    kk = ev["ks"][i]
    intact = ev["random"]["mean"][0]
    other = sc["evaluation"].get("other_classes_accuracy")
    head = (
        f"| method | {sc['metric']} without top-{kk} | AUC top-k (lower: sharper) "
        "| AUC bottom-k (higher: better) "
        + ("| other classes' accuracy without top-k " if other else "")
        + "| wall s | forward passes (examples) | backward passes (examples) "
        "| coalitions evaluated |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    rows.append(
        f"| intact model | {_f(intact)} | | | "
        + (f"{_f(other['intact'])} | " if other else "")
        + "| | | |"
    )
    order = sorted(ev["methods"], key=lambda m: ev["methods"][m]["top"][i])
    for m in order:
        r, c = ev["methods"][m], sc["costs"][m]
        rows.append(
            f"| {m} | {_f(r['top'][i])} | {_f(r['auc_top'])} | {_f(r['auc_bottom'])} | "
            + (f"{_f(other[m])} | " if other else "")
            + f"{c['wall_s']:.2f} | {c['forward_calls']} ({c['forward_examples']}) | "
            f"{c['backward_calls']} ({c['backward_examples']}) | "
            f"{c['model_evaluations'] or ''} |"
        )
    rnd = ev["random"]
    n = len(rnd["curves"])
    rows.append(
        f"| random removal, {n} seeds (mean ± std) | {_f(rnd['mean'][i])} ± "
        f"{_f(rnd['std'][i])} | {_f(rnd['auc_mean'])} ± {_f(rnd['auc_std'])} | | "
        + ("| " if other else "")
        + "| | | |"
    )
    return rows


def _agreement(sc: Dict[str, Any]) -> List[str]:
    ag = sc["agreement"]
    names = ag["methods"]
    rows = [
        f"Top-{ag['k']} overlap (upper triangle) and Spearman rank correlation "
        "(lower triangle):",
        "",
        "| | " + " | ".join(names) + " |",
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
        rows.append(f"| {a} | " + " | ".join(cells) + " |")
    return rows


def _curve_table(sc: Dict[str, Any]) -> List[str]:
    ev = sc["evaluation"]
    rows = [
        f"{sc['metric']} (test) after removing each method's top-k units:",
        "",
        "| method | " + " | ".join(f"k={k}" for k in ev["ks"]) + " |",
        "|---|" + "---|" * len(ev["ks"]),
    ]
    for m, r in ev["methods"].items():
        rows.append(f"| {m} | " + " | ".join(_f(v) for v in r["top"]) + " |")
    rnd = ev["random"]
    rows.append(
        "| random (mean ± std) | "
        + " | ".join(f"{_f(m)} ± {_f(s)}" for m, s in zip(rnd["mean"], rnd["std"]))
        + " |"
    )
    return rows


def render(s: Dict[str, Any]) -> Tuple[str, str]:
    r"""``(report.md text, headline table)`` from the summary dict."""
    k = s["k"]
    scen = s["scenarios"]
    ov = scen["overall"]
    headline = "\n".join(method_table(ov, k))
    runs = s["shapley_runs"]
    rk = s["random_k"]
    lines = [
        f"# Neuron Shapley versus conductance and distributional influence: "
        f"{s['setup']}",
        "",
        f"Command: `{s['command']}`; {s['machine']}, torch {s['torch']}, "
        f"{s['threads']} threads; total wall time {s['total_wall_s']} s.",
        f"Layers: {', '.join(s['layers'])} ({s['n_units']} units, one per filter). "
        "Scores are computed on the validation split and judged on the held-out "
        "test split; removed units emit their mean activation over the validation "
        "set (the Shapley game's removal rule) for every method.",
        f"Shapley settings: `{s['shapley_settings']}`.",
        "",
        f"## Headline: {ov['title']}, removing each method's top-{k} units",
        "",
        headline,
        "",
        "Costs are counted with hooks on the model in this run: forward passes are "
        "calls of the model (examples = rows pushed through, coalitions x examples "
        "for removal methods); Shapley replays the part of the model before the "
        "first ablated layer, so its forward passes are cheaper than full ones.",
        "",
        *_curve_table(ov),
        "",
        *_agreement(ov),
        "",
        f"## Top-{k} by Shapley versus {k} random filters (several seeds)",
        "",
        f"| | {ov['metric']} (test) |",
        "|---|---|",
        f"| intact model | {_f(s['intact'])} |",
        *[
            f"| without top-{k} by Shapley (seed {r['seed']}) | "
            f"{_f(r['without_top_k'])} |"
            for r in runs
        ],
        f"| without {k} random filters (median of {rk['n']}; min-max) | "
        f"{_f(rk['median'])} ({_f(rk['min'])}-{_f(rk['max'])}) |",
        "",
        "| estimator | model evaluations | wall s |",
        "|---|---|---|",
        *[
            f"| top-{k} bandit (seed {r['seed']}, converged={r['converged']}) | "
            f"{r['evaluations']} | {r['wall_s']:.1f} |"
            for r in runs
        ],
        f"| truncated Monte Carlo (bandit off), every unit for "
        f"{s['plain_tmc']['chains']} chains (the bandit walked "
        f"{s['plain_tmc']['chains_requested']}"
        + ("" if s["plain_tmc"]["converged"] else "; stopped by the budget")
        + ") | "
        f"{s['plain_tmc']['evaluations']} | {s['plain_tmc']['wall_s']:.1f} |",
        "",
    ]
    for key, sc in scen.items():
        if key == "overall":
            continue
        lines += [f"## {sc['title']}", ""]
        if key.startswith("recall"):
            lines += [
                f"Each method ranks units by the class's recall (quantity: that "
                f"class's score on its validation examples) and may not remove its "
                f"own top {100 * s['recall_excluded_fraction']:.0f}% of units for "
                "overall accuracy (as in the paper), so that what is found is "
                "specific to the class; random removal avoids Shapley's top "
                "units likewise. The other classes' accuracy shows how specific "
                "the removed units are.",
                "",
            ]
        else:
            lines += [
                "Metric: on test examples of the two classes, the fraction whose own "
                "class scores higher than the other. Quantity for the gradient "
                "methods: score of the example's class minus the other's, averaged "
                "over the examples of both classes.",
                "",
            ]
        lines += [
            *method_table(sc, k),
            "",
            *_curve_table(sc),
            "",
            *_agreement(sc),
            "",
        ]
    f = s["figures"]
    lines += [
        "## Figures",
        "",
        f"- `{f['removal_curves']}`: removal curves per method and question; random "
        "removal as mean ± std over seeds.",
        f"- `{f['top_units_by_layer']}`: where each method's top-{k} units sit.",
        f"- `{f['shapley_values']}`: sorted Shapley values with confidence intervals.",
        *(
            [
                f"- `{f['conductance_top_unit']}`: neuron conductance through the top "
                f"Shapley unit {s['conductance_picture_unit'][0]}"
                f"[{s['conductance_picture_unit'][1]}] for a few test images.",
            ]
            if "conductance_top_unit" in f
            else []
        ),
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
