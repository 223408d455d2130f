r"""The one-command report: every method on the same layers, three questions
(overall metric, one class's recall, class A versus class B), judged on held-out
data by removal, with costs, agreement between methods, figures and a summary
in ``report.md`` / ``results.json``."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.metrics import Accuracy, ClassRecall, NegativeCrossEntropy

from . import figures
from .baselines import neuron_conductance_map
from .cost import count_cost
from .markdown import render
from .protocol import (
    DEFAULT_KS,
    PairAccuracy,
    agreement,
    ranking,
    removal_evaluation,
    top_fraction,
)
from .scenarios import QuantityPart, Scenario, score_methods
from .setup import Setup

__all__ = ["Options", "run_report"]


@dataclass
class Options:
    r"""Settings of :func:`run_report` (the command-line flags)."""

    out: Path
    quick: bool = False
    seeds: int = 3
    top_k: int = 10
    metric: str = "accuracy"
    recall_class: int = 3
    pair: Tuple[int, int] = (3, 8)
    exclude_fraction: float = 0.2
    random_seeds: int = 10
    n_steps: int = 20
    command: str = "python -m comparisons"


def _metric(name: str):
    if name == "accuracy":
        return Accuracy()
    if name == "cross-entropy":
        return NegativeCrossEntropy()
    raise ValueError(f"--metric must be 'accuracy' or 'cross-entropy', got {name!r}")


def _budgets(opts: Options, n_examples: int, small: bool) -> Dict[str, Any]:
    r"""Evaluation budgets: caps that keep the default run within minutes, and
    small ones (with a subset of examples per chain) for ``--quick``."""
    if not opts.quick:
        return {"max_evaluations": 3000 if small else 6000}
    if small:
        return {"max_evaluations": 300}
    kw: Dict[str, Any] = {"max_evaluations": 600}
    if n_examples > 64:
        kw["subset_size"] = 64
    return kw


def _at(ev: Dict[str, Any], curve: List[float], k: int) -> float:
    return float(curve[ev["ks"].index(k)])


def run_report(setup: Setup, opts: Options) -> Dict[str, Any]:
    r"""Run every method and scenario on ``setup``, write ``report.md``,
    ``results.json`` and the figures into ``opts.out``, and return the summary.

    Args:
        setup (Setup): Model, layers and data.
        opts (Options): Settings.

    Returns:
        dict: What ``results.json`` holds.
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    model, layers = setup.model, setup.layers
    metric = _metric(opts.metric)
    progress = sys.stderr.isatty()
    log = lambda msg: print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    # -- 1. overall metric ----------------------------------------------------
    overall = Scenario(
        "overall",
        f"overall {opts.metric}",
        metric,
        setup.x_val,
        setup.y_val,
        [QuantityPart(setup.x_val, setup.y_val)],
        setup.x_test,
        setup.y_test,
    )
    fs = FilterShapley(model, layers)
    base_kw: Dict[str, Any] = dict(
        perturbations_per_eval=8, show_progress=progress
    )
    n_units = fs.game(setup.x_val[:2], target=setup.y_val[:2], metric=metric).n_units
    k = min(opts.top_k, n_units - 1)
    ks = sorted({kk for kk in DEFAULT_KS if kk <= n_units} | {k})
    sk = dict(base_kw, top_k=k, **_budgets(opts, len(setup.y_val), small=False))
    log(f"{n_units} units in {len(layers)} layers; scoring for {overall.title}")
    scores, costs, res0 = score_methods(
        model, layers, overall, sk, n_steps=opts.n_steps, seed=0
    )
    log(
        f"Shapley seed 0: {res0.n_evaluations} evaluations, "
        f"{costs['shapley'].wall_s:.0f}s"
    )
    runs = [(0, res0, costs["shapley"])]
    for seed in range(1, opts.seeds):
        with count_cost(model) as c:
            res = fs.attribute(
                setup.x_val,
                target=setup.y_val,
                metric=metric,
                seed=seed,
                return_result=True,
                **sk,
            )
        runs.append((seed, res, c))
        log(f"Shapley seed {seed}: {res.n_evaluations} evaluations, {c.wall_s:.0f}s")
    top_sets = [ranking(r.flat_values)[:k].tolist() for _, r, _ in runs]
    g = torch.Generator().manual_seed(1234)
    rand_sets = [torch.randperm(n_units, generator=g)[:k].tolist() for _ in range(20)]
    vals = metric_after_removal(
        model, res0, [[]] + top_sets + rand_sets, setup.x_test, setup.y_test, metric
    ).tolist()
    intact, top_vals, rand_vals = (
        vals[0],
        vals[1 : 1 + len(runs)],
        vals[1 + len(runs) :],
    )

    # truncated Monte Carlo with the bandit off (the same stratified chains), for
    # as many chains as the bandit walked: its last active unit was in every one
    n_chains = res0.n_permutations
    plain_kw = dict(base_kw)  # bounded by the number of chains, not evaluations
    if opts.quick:
        plain_kw.update(_budgets(opts, len(setup.y_val), small=False))
    with count_cost(model) as c_plain:
        plain = fs.attribute(
            setup.x_val,
            target=setup.y_val,
            metric=metric,
            top_k=None,
            epsilon=0.0,
            seed=0,
            max_permutations=n_chains,
            return_result=True,
            **plain_kw,
        )
    log(f"plain TMC: {plain.n_evaluations} evaluations, {c_plain.wall_s:.0f}s")
    ev_overall = removal_evaluation(
        model,
        res0,
        scores,
        setup.x_test,
        setup.y_test,
        ks,
        metric,
        range(opts.random_seeds),
    )
    ev_overall["metric"] = opts.metric

    # shared removal rule for the other questions: the overall game's baselines
    sub_kw = dict(
        base_kw,
        top_k=k,
        layer_baselines=tuple(lay.baseline for lay in res0.layers),
        **_budgets(opts, 0, small=True),
    )

    # -- 2. one class's recall, globally important units excluded --------------
    c = opts.recall_class
    vsel = setup.y_val == c
    recall = Scenario(
        f"recall_{c}",
        f"recall of class {setup.classes[c]}",
        ClassRecall(c),
        setup.x_val[vsel],
        setup.y_val[vsel],
        [QuantityPart(setup.x_val[vsel], c)],
        setup.x_test,
        setup.y_test,
        exclude_top_fraction=opts.exclude_fraction,
    )
    log(f"scoring for {recall.title}")
    scores_r, costs_r, _ = score_methods(
        model, layers, recall, sub_kw, n_steps=opts.n_steps, seed=0
    )
    frac = recall.exclude_top_fraction
    excl = {m: top_fraction(scores[m], frac) for m in scores_r}
    excl["random"] = excl["shapley"]
    ev_recall = removal_evaluation(
        model,
        res0,
        scores_r,
        setup.x_test,
        setup.y_test,
        ks,
        ClassRecall(c),
        range(opts.random_seeds),
        exclude=excl,
    )
    ev_recall["metric"] = f"recall of {setup.classes[c]}"
    others = setup.y_test != c
    other_sets = [[]] + [ranking(scores_r[m], excl[m])[:k].tolist() for m in scores_r]
    other_acc = metric_after_removal(
        model, res0, other_sets, setup.x_test[others], setup.y_test[others]
    ).tolist()
    ev_recall["other_classes_accuracy"] = {
        "intact": other_acc[0],
        **{m: v for m, v in zip(scores_r, other_acc[1:])},
    }

    # -- 3. class A versus class B ---------------------------------------------
    a, b = opts.pair
    vpair = (setup.y_val == a) | (setup.y_val == b)
    tpair = (setup.y_test == a) | (setup.y_test == b)
    pair = Scenario(
        f"pair_{a}_{b}",
        f"class {setup.classes[a]} versus {setup.classes[b]}",
        PairAccuracy(a, b),
        setup.x_val[vpair],
        setup.y_val[vpair],
        [
            QuantityPart(setup.x_val[setup.y_val == a], contrast=(a, b)),
            QuantityPart(setup.x_val[setup.y_val == b], contrast=(b, a)),
        ],
        setup.x_test[tpair],
        setup.y_test[tpair],
    )
    log(f"scoring for {pair.title}")
    scores_p, costs_p, _ = score_methods(
        model, layers, pair, sub_kw, n_steps=opts.n_steps, seed=0
    )
    ev_pair = removal_evaluation(
        model,
        res0,
        scores_p,
        pair.test_inputs,
        pair.test_target,
        ks,
        PairAccuracy(a, b),
        range(opts.random_seeds),
    )
    ev_pair["metric"] = f"{setup.classes[a]}-vs-{setup.classes[b]} accuracy"

    # -- figures ----------------------------------------------------------------
    log("figures")
    evals = {overall.title: ev_overall, recall.title: ev_recall, pair.title: ev_pair}
    sizes = [lay.n_units for lay in res0.layers]
    figs = {
        "removal_curves": figures.plot_removal_curves(
            evals, out / "removal_curves.png"
        ),
        "top_units_by_layer": figures.plot_top_units_by_layer(
            {m: s for m, s in scores.items() if m != "random"},
            setup.layer_names,
            sizes,
            k,
            out / "top_units_by_layer.png",
        ),
        "shapley_values": figures.plot_shapley_values(res0, out / "shapley_values.png"),
    }
    top_unit = int(ranking(res0.flat_values)[0])
    layer_name, channel = res0.unit(top_unit)
    lay = res0.layers[[la.name for la in res0.layers].index(layer_name)]
    n_pic = 6
    positions = int(torch.Size(lay.out_shape[1:]).numel())
    if positions <= 256:  # one NeuronConductance call per position of the channel
        maps = neuron_conductance_map(
            model,
            model.get_submodule(layer_name),
            channel,
            setup.x_test[:n_pic],
            setup.y_test[:n_pic],
            n_steps=opts.n_steps,
        )
        figs["conductance_top_unit"] = figures.plot_conductance_map(
            setup.x_test[:n_pic],
            maps,
            f"Neuron conductance through the top Shapley unit {layer_name}[{channel}]"
            " (red: raises the true class's score)",
            out / "conductance_top_unit.png",
            [f"label {setup.classes[int(t)]}" for t in setup.y_test[:n_pic]],
        )

    # -- summary ----------------------------------------------------------------
    def pack(ev, cs, sc, scen):
        return {
            "title": scen.title,
            "metric": ev["metric"],
            "evaluation": ev,
            "costs": {m: cs[m].as_dict() for m in cs},
            "agreement": agreement(sc, k),
            "top_units": {
                m: [list(res0.unit(int(i))) for i in ranking(sc[m])[:k]] for m in sc
            },
        }

    summary: Dict[str, Any] = {
        "command": opts.command,
        "setup": setup.description,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": setup.layer_names,
        "n_units": n_units,
        "k": k,
        "ks": ks,
        "quick": opts.quick,
        "shapley_settings": {
            kk: v for kk, v in sk.items() if kk not in ("show_progress",)
        },
        "intact": intact,
        "shapley_runs": [
            {
                "seed": s,
                "evaluations": r.n_evaluations,
                "permutations": r.n_permutations,
                "converged": r.converged,
                "wall_s": round(cc.wall_s, 2),
                "without_top_k": tv,
                "top_units": [list(u) for u in r.top_units(k)],
            }
            for (s, r, cc), tv in zip(runs, top_vals)
        ],
        "random_k": {
            "median": statistics.median(rand_vals),
            "min": min(rand_vals),
            "max": max(rand_vals),
            "n": len(rand_vals),
        },
        "plain_tmc": {
            "chains_requested": n_chains,
            "chains": plain.n_permutations,
            "converged": plain.n_permutations >= n_chains,
            "evaluations": plain.n_evaluations,
            "wall_s": round(c_plain.wall_s, 2),
        },
        "scenarios": {
            "overall": pack(ev_overall, costs, scores, overall),
            recall.name: pack(ev_recall, costs_r, scores_r, recall),
            pair.name: pack(ev_pair, costs_p, scores_p, pair),
        },
        "recall_excluded_fraction": opts.exclude_fraction,
        "conductance_picture_unit": [layer_name, channel],
        "figures": {n: p.name for n, p in figs.items()},
    }
    summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
    text, headline = render(summary)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(text)
    summary["headline"] = headline
    return summary
