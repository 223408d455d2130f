r"""Do the confidence intervals hold where the bandit stops?
(``python -m comparisons coverage --seeds 200``, about an hour on one core;
``--digits-cost``: what each bound costs on the digits CNN.)

On small games whose Shapley values are known exactly (computed by enumerating
every coalition), runs the top-k bandit with the library's defaults over many
seeds, each until *its own* stopping rule ends it, and counts the runs in which
at least one unit's interval misses its exact value: the family-wise miss rate,
which the bound promises to keep below ``delta`` = 0.05. The bandit looks at the
intervals after every round and stops on what it sees, so a bound that is valid
at a fixed sample size only can under-cover here. For each bound it also reports
the median number of evaluations to the stop (what the honesty costs).

By default each chain runs on its own random batch of examples
(``PermutationSampler(batch_size="auto")``), so the batch's noise is part of
every sample and the intervals must cover it. The exact target then depends
on truncation (:mod:`comparisons.bench.targets`): without truncation it is the
Shapley value of the whole set (a mean-over-examples metric is linear in the
examples and the Shapley value linear in the game); with truncation it is the
mean over batches of the exact truncated value on a batch, computed here from
every coalition's metric on every example, averaged over 20,000 random
batches (its Monte Carlo standard error is reported next to the intervals'
widths). ``--batch-size all`` runs the chains on all examples instead.

Games (exact values by enumeration, no truncation unless said):

- ``tiny-cnn``: the test suite's CNN, 7 filters over two conv layers, 200 blob
  images, mean removal; accuracy and negative cross-entropy; top-2.
- ``mlp``: a 10-neuron hidden layer of a random MLP on 300 Gaussian inputs,
  zero removal, labels from the intact model; accuracy and cross-entropy;
  top-3.
- with the default truncation (``"auto"``), the same games once more: the
  estimate then targets a truncated game, so misses also count its bias.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from captum_neuron_shapley import (
    FilterShapley,
    NeuronShapley,
    PermutationSampler,
    TopKSeparated,
)
from captum_neuron_shapley.bounds import make_bound
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.metrics import NegativeCrossEntropy

from .environment import Environment
from .games import blobs, mlp_data, train_tiny

__all__ = [
    "CoverageOptions",
    "coverage_games",
    "coverage_at_stop",
    "digits_cost",
    "run_coverage",
    "METRICS",
    "SELECTORS",
    "main",
]

#: The metrics a coverage row can use (None: the default, accuracy).
METRICS = {"accuracy": None, "cross-entropy": NegativeCrossEntropy()}

#: Selection policies a coverage row can run the chains with
#: (:mod:`comparisons.bench.selection`); the prior ones rank the units by
#: gradient x activation on the game's examples.
SELECTORS = ("lucb", "border", "prior", "screening")


def _sampler(
    attr: Any,
    data: Tuple[Any, ...],
    top_k: int,
    batch_size: Union[None, int, str],
    selector: Optional[str],
) -> Any:
    r"""The chains of a coverage row: the library's sampler on ``batch_size``
    examples per chain, with ``selector`` choosing which active units each
    round samples."""
    chains = PermutationSampler(batch_size=batch_size)
    if selector is None:
        return chains
    from .bench import selection as S

    if selector == "lucb":
        pick = S.lucb_selector(top_k)
    elif selector == "border":
        pick = S.border_selector(top_k)
    elif selector in ("prior", "screening"):
        from .methods.baselines import gradient_x_activation

        x, y = data
        prior = gradient_x_activation(attr.forward_func, attr.layer, x, y).flatten()
        pick = (
            S.prior_selector(prior, 3 * top_k)
            if selector == "prior"
            else S.screening_selector(prior, top_k)
        )
    else:
        raise ValueError(f"unknown selector {selector!r} (choose from {SELECTORS})")
    return S.SelectingSampler(pick, chains)


@dataclass
class CoverageOptions:
    r"""Settings of :func:`run_coverage` (the flags of ``python -m comparisons
    coverage``).

    Attributes:
        seeds (int): Runs per row.
        bounds (list of str): Bound modes (``anytime``, ``fixed``, ...).
        truncation (list): ``None`` (no truncation) and / or ``"auto"``.
        games (list of str): ``tiny-cnn``, ``mlp``.
        metrics (list of str): Keys of :data:`METRICS`.
        max_evaluations (int): Each run's evaluation budget.
        digits_cost (bool): Instead, what each bound costs on the digits CNN.
        batch_size (int, str or None): The chains' examples
            (``PermutationSampler(batch_size=...)``: ``"auto"``, the default, a
            number, or None for all examples).
        selector (str, optional): A selection policy of
            :mod:`comparisons.bench.selection` on the chains (a key of
            :data:`SELECTORS`); None: the library's sampler as it is.
    """

    seeds: int = 200
    bounds: Sequence[str] = ("anytime", "fixed")
    truncation: Sequence[Optional[str]] = (None, "auto")
    games: Sequence[str] = ("tiny-cnn", "mlp")
    metrics: Sequence[str] = ("accuracy", "cross-entropy")
    max_evaluations: int = 200_000
    digits_cost: bool = False
    batch_size: Union[None, int, str] = "auto"
    selector: Optional[str] = None


def _stop(top_k: int, bound: Optional[str]) -> Dict[str, Any]:
    r"""``attribute`` keywords for the top-k rule with the named bound."""
    if bound is None:
        return {}
    return {"stop": TopKSeparated(top_k, None, make_bound(bound))}


def coverage_games() -> Dict[str, Tuple[Any, Tuple[Any, ...], Dict[str, Any], int]]:
    r"""``{name: (attribution object, (x, y), game kwargs, top_k)}``."""
    x, y = blobs(200, torch.Generator().manual_seed(0))
    cnn = train_tiny(x, y)
    mlp, xm, ym = mlp_data()
    return {
        "tiny-cnn": (FilterShapley(cnn, [cnn.conv1, cnn.conv2]), (x, y), {}, 2),
        "mlp": (
            NeuronShapley(mlp, mlp.act),
            (xm, ym),
            {"layer_baselines": "zero"},
            3,
        ),
    }


def coverage_at_stop(
    attr: Any,
    data: Tuple[Any, ...],
    game_kw: Dict[str, Any],
    top_k: int,
    seeds: Sequence[int],
    max_evaluations: int = 200_000,
    batch_size: Union[None, int, str] = "auto",
    selector: Optional[str] = None,
    **kwargs: Any,
) -> Dict[str, Any]:
    r"""Run the bandit once per seed until it stops and compare every unit's
    interval with the exact values: the estimator's target (the Shapley values
    without truncation; with it, the exact target of truncated chains on the
    examples the run used: all of them, or random batches of the size it drew,
    :func:`~comparisons.bench.targets.exact_batch_values`), the Shapley values,
    and the truncated target on all examples.

    Returns:
        dict: ``miss_rate`` (family-wise, against the estimator's target),
        ``miss_rate_shapley`` (against the Shapley values),
        ``miss_rate_full_set`` (against the truncated target on all examples),
        ``unit_misses``, ``runs``, ``converged`` (runs that stopped on the
        rule, not the budget), ``median_evaluations``, ``median_examples``
        (examples through the model, in evaluations of all examples),
        ``median_permutations``, ``batch_size``, ``max_bias`` (largest
        difference between the target and the Shapley values),
        ``target_se`` (largest Monte Carlo standard error of the target) and
        ``median_radius`` (median half-width of the intervals at the stop).
    """
    from .bench.targets import exact_batch_values, per_example_values

    x, y = data
    game = attr.game(x, target=y, **game_kw)
    shapley = exact_values(game)
    full: Dict[Optional[float], torch.Tensor] = {None: shapley}
    targets: Dict[Tuple[Optional[float], Optional[int]], Dict[str, Any]] = {}
    per_example: List[torch.Tensor] = []
    misses = misses_shapley = misses_full = units = conv = 0
    bias = target_se = 0.0
    evals: List[int] = []
    examples: List[float] = []
    perms: List[int] = []
    radii: List[float] = []
    batches = set()
    kwargs = dict(kwargs)
    kwargs.update(_stop(top_k, kwargs.pop("bound", None)))
    sampler = _sampler(attr, data, top_k, batch_size, selector)
    for seed in seeds:
        res = attr.attribute(
            x,
            target=y,
            top_k=top_k,
            seed=seed,
            return_result=True,
            max_evaluations=max_evaluations,
            sampler=sampler,
            **game_kw,
            **kwargs,
        )
        thr, batch = res.truncation, res.cost.batch_size
        if batch is not None and batch >= game.n_examples:
            batch = None
        batches.add(batch)
        if thr not in full:
            full[thr] = exact_values(game, thr)
        if (thr, batch) not in targets:
            if thr is not None and batch is not None and not per_example:
                per_example.append(per_example_values(game))
            targets[(thr, batch)] = exact_batch_values(
                game,
                thr,
                batch,
                per_example=per_example[0] if per_example else None,
            )
        target = targets[(thr, batch)]["values"]
        target_se = max(target_se, float(targets[(thr, batch)]["se"].max()))
        bias = max(bias, float((target - shapley).abs().max()))
        rad = res.flat_radius
        miss = (res.flat_values - target).abs() > rad
        misses += int(bool(miss.any()))
        misses_shapley += int(bool(((res.flat_values - shapley).abs() > rad).any()))
        misses_full += int(bool(((res.flat_values - full[thr]).abs() > rad).any()))
        units += int(miss.sum())
        conv += int(res.converged)
        evals.append(res.n_evaluations)
        examples.append(res.cost.examples / game.n_examples)
        perms.append(res.n_permutations)
        radii.append(float(rad[torch.isfinite(rad)].median()))
    n = len(seeds)
    return {
        "runs": n,
        "miss_rate": misses / n,
        "miss_rate_shapley": misses_shapley / n,
        "miss_rate_full_set": misses_full / n,
        "max_bias": bias,
        "target_se": target_se,
        "median_radius": statistics.median(radii),
        "unit_misses": units,
        "converged": conv,
        "median_evaluations": statistics.median(evals),
        "median_examples": statistics.median(examples),
        "median_permutations": statistics.median(perms),
        "batch_size": sorted(batches, key=lambda b: -1 if b is None else b),
    }


def digits_cost(seeds: Sequence[int], bounds: Sequence[str]) -> List[str]:
    r"""What each bound costs where it matters: the top-10 bandit on the digits
    CNN's 160 filters (defaults otherwise), evaluations until it stops, per seed.
    Returns markdown lines."""
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    data, model = load_digits_splits(), trained_digits_cnn()
    fs = FilterShapley(model, model.conv_layers)
    lines = [
        "| bound | evaluations to stop, per seed | median | converged |",
        "|---|---|---|---|",
    ]
    for bound in bounds:
        evals, conv = [], 0
        for seed in seeds:
            res = fs.attribute(
                data.x_val,
                target=data.y_val,
                top_k=10,
                perturbations_per_eval=8,
                seed=seed,
                return_result=True,
                **_stop(10, bound),
            )
            evals.append(res.n_evaluations)
            conv += int(res.converged)
        lines.append(
            f"| {bound} | {', '.join(map(str, evals))} | "
            f"{statistics.median(evals):.0f} | {conv}/{len(evals)} |"
        )
    return lines


def _row(gname: str, mname: str, n_units: int, **kw: Any) -> str:
    r"""One row of the coverage table (runs the seeds)."""
    r = coverage_at_stop(**kw)
    attr, k, trunc, bound = kw["attr"], kw["top_k"], kw["truncation"], kw["bound"]
    batch = "/".join("all" if b is None else str(b) for b in r["batch_size"])
    return (
        f"| {gname} ({attr.__class__.__name__}, top-{k}) | {mname} "
        f"| {trunc or 'none'} | {batch} | {bound} | {r['miss_rate']:.3f} | "
        f"{r['miss_rate_shapley']:.3f} | {r['miss_rate_full_set']:.3f} | "
        f"{r['max_bias']:.4f} | {r['target_se']:.5f} | {r['median_radius']:.4f} | "
        f"{r['unit_misses']}/{r['runs'] * n_units} | "
        f"{r['converged']}/{r['runs']} | "
        f"{r['median_evaluations']:.0f} | "
        f"{r['median_examples']:.0f} | "
        f"{r['median_permutations']:.0f} |"
    )


def run_coverage(opts: CoverageOptions) -> int:
    r"""Print the coverage table (or, with ``digits_cost``, the cost table) in
    markdown, with the environment it ran in."""
    torch.set_num_threads(1)
    print(f"Environment: {Environment.capture().line()}.")
    print()
    if opts.digits_cost:
        print("Top-10 bandit on the digits CNN (160 filters), seeds 0-2:")
        print()
        print("\n".join(digits_cost(range(3), opts.bounds)))
        return 0
    print(
        f"Family-wise miss rate at the bandit's stopping time, {opts.seeds} seeds "
        f"per row, at most {opts.max_evaluations} evaluations per run (the bound "
        "promises at most 0.05), against the estimator's exact "
        "target (the Shapley values without truncation; with it, the truncated "
        "chains' expectation on the examples they ran on: random batches of the "
        "size shown, or all), against the Shapley values and against the "
        "truncated target on all examples; chains' examples: "
        f"{opts.batch_size if opts.batch_size is not None else 'all'}"
        + (f"; selection policy: {opts.selector}" if opts.selector else "")
        + "; default settings otherwise."
    )
    print()
    print(
        "| game | metric | truncation | examples per chain | bound | "
        "miss rate (target) | miss rate (Shapley values) | "
        "miss rate (truncated, all examples) | max truncation bias | "
        "target's Monte Carlo se | median half-width | unit misses | "
        "converged | median evaluations | median examples (full-set "
        "evaluations) | median chains |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    games = coverage_games()
    for gname in opts.games:
        attr, data, game_kw, k = games[gname]
        for mname in opts.metrics:
            kw = dict(game_kw)
            if METRICS[mname] is not None:
                kw["metric"] = METRICS[mname]
            n_units = attr.game(*data[:1], target=data[1], **kw).n_units
            for trunc in opts.truncation:
                for bound in opts.bounds:
                    line = _row(
                        gname,
                        mname,
                        n_units,
                        attr=attr,
                        data=data,
                        game_kw=kw,
                        top_k=k,
                        seeds=range(opts.seeds),
                        bound=bound,
                        truncation=trunc,
                        perturbations_per_eval=16,
                        max_evaluations=opts.max_evaluations,
                        batch_size=opts.batch_size,
                        selector=opts.selector,
                    )
                    print(line, flush=True)
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""``python -m comparisons.coverage``: the same as ``python -m comparisons
    coverage``."""
    import sys

    from .cli import main as cli_main

    return cli_main(["coverage", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
