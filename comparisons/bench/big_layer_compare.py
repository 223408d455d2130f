r"""Methods on the big layer against time (``python -m comparisons bench
--big-layer``): the 2,560 filters of ResNet-18's ``layer4`` on the digits
(:mod:`~comparisons.bench.big_layer`), each method given a budget of CPU time
on one thread, its running top-10 scored against reference values read from a
file (``--reference``: the ``device.json`` of ``python -m comparisons device``,
or a reference written by ``--make-reference``).

Methods (:data:`METHODS`): the library's default top-10 call; the default with
a selection policy (:mod:`~comparisons.bench.selection`: LUCB, border,
gradient prior, prior-ordered screening; selection changes only which units
are sampled); maximum sample reuse (``MSRSampler``); and the one-pass gradient
rankings (gradient x activation, conductance) of
:mod:`comparisons.methods.baselines`.

For each: the top-10 precision against CPU time (and wall time, examples,
evaluations), and the quality of its answer as a removal set: the test-split
accuracy after removing its top-10, and after removing the removal set of a
greedy search (:func:`~captum_neuron_shapley.refine.greedy_removal`) over its
ranking, at the end of its budget (the search's time is added). And, from the
reference and the runs, what the top-10 is up against: each unit's sample
noise against the gaps between the values (:func:`noise_vs_gaps`).

The functions take the game's data (:class:`LayerData`) so that the tests run
them on a small game.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from captum_neuron_shapley import (
    Callback,
    FilterShapley,
    MaxTime,
    PermutationSampler,
    UnestimatedWarning,
)
from torch import nn, Tensor

from ..environment import Environment
from .precision import Clock

__all__ = [
    "LayerData",
    "big_layer_data",
    "METHODS",
    "load_reference",
    "make_reference",
    "combine_references",
    "run_method",
    "noise_vs_gaps",
    "removal_quality",
    "compare",
    "make_references",
    "save_reference",
    "render",
]

K = 10


@dataclass
class LayerData:
    r"""A game's data: the model, the ``FilterShapley`` over its layers, the
    estimation split and the held-out test split."""

    model: nn.Module
    fs: FilterShapley
    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    name: str = ""


def big_layer_data() -> LayerData:
    r"""The big layer's game (:func:`~comparisons.bench.big_layer.game_data`)
    with the digits' test split at 32 px."""
    from captum_neuron_shapley.examples import load_digits_splits

    from . import big_layer

    model, fs, x, y = big_layer.game_data("cpu")
    data = load_digits_splits()
    return LayerData(
        model,
        fs,
        x,
        y,
        big_layer.digits32(data.x_test),
        data.y_test,
        "ResNet-18 layer4 (2,560 filters), digits at 32 px",
    )


# -- references ----------------------------------------------------------------------


def load_reference(path: Path) -> Dict[str, Any]:
    r"""Reference values from ``path``: the ``big_layer.reference`` of a
    ``device.json`` (``python -m comparisons device``), or a file written by
    :func:`make_reference` (the same layout). Returns the reference with
    ``values`` and ``stderr`` as float64 tensors."""
    data = json.loads(Path(path).read_text())
    ref = data.get("big_layer", {}).get("reference", data.get("reference", data))
    if "values" not in ref:
        raise ValueError(
            f"{path}: no reference values (expected big_layer.reference.values, "
            "as python -m comparisons device writes them)"
        )
    out = dict(ref)
    out["values"] = torch.tensor(ref["values"], dtype=torch.float64)
    out["stderr"] = torch.tensor(
        ref.get("stderr", [math.nan] * len(ref["values"])), dtype=torch.float64
    )
    if "samples" not in ref and "chains" in ref:
        # the device run's reference keeps every unit in every chain, in
        # stratified cycles of 4 chains (one sample per unit per cycle): its
        # samples per unit follow from its chains
        out["samples"] = [int(ref["chains"]) // 4] * len(ref["values"])
        out["samples_from_chains"] = True
    out["source"] = str(path)
    return out


def make_reference(
    data: LayerData, cpu_seconds: float, seed: int, chains_per_round: int = 4
) -> Dict[str, Any]:
    r"""A reference from a long run on this machine: every unit in every chain
    (``epsilon=0``), the default sampler (stratified cycles of 4 chains, each
    cycle on its own random batch), ``chains_per_round`` cycles walked in
    lockstep with one state of each chain per forward pass, until
    ``cpu_seconds`` of CPU time (checked between rounds). The layout of
    ``device.json``'s ``big_layer.reference``."""
    clock = Clock()
    per_pass = 4 * chains_per_round
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnestimatedWarning)
        res = data.fs.attribute(
            data.x,
            target=data.y,
            epsilon=0.0,
            sampler=PermutationSampler(chains_per_round=chains_per_round),
            perturbations_per_eval=per_pass,
            stop=Callback(lambda run: clock.read()[0] >= cpu_seconds),
            seed=seed,
            return_result=True,
        )
    cpu, wall = clock.read()
    return {
        "values": res.flat_values.tolist(),
        "stderr": res.flat_stderr.tolist(),
        "samples": res.counts.tolist(),
        "chains": res.n_permutations,
        "evaluations": res.n_evaluations,
        "examples": res.cost.examples,
        "seconds": wall,
        "cpu_seconds": cpu,
        "full_value": res.full_value,
        "empty_value": res.empty_value,
        "truncation": res.truncation,
        "batch_size": res.cost.batch_size,
        "device": "cpu",
        "seed": seed,
    }


def combine_references(refs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    r"""Independent references of the same game pooled: each unit's values
    weighted by their samples (by chains when samples are not recorded), the
    standard errors combined accordingly; with ``split_half``: the top-10
    precision of each part against the other (how well a part alone pins the
    top-10 down)."""
    vals = [torch.as_tensor(r["values"], dtype=torch.float64) for r in refs]
    ses = [torch.as_tensor(r["stderr"], dtype=torch.float64) for r in refs]
    ws = [
        torch.as_tensor(r.get("samples", [r["chains"]] * len(r["values"])))
        .to(torch.float64)
        .clamp_min(1e-12)
        for r in refs
    ]
    total = torch.stack(ws).sum(0)
    values = torch.stack([w * v for w, v in zip(ws, vals)]).sum(0) / total
    stderr = torch.stack([(w * s).pow(2) for w, s in zip(ws, ses)]).sum(0).sqrt()
    stderr = stderr / total
    out = {
        k: v
        for k, v in refs[0].items()
        if k not in ("values", "stderr", "samples", "seed")
    }
    for key in ("chains", "evaluations", "examples", "seconds", "cpu_seconds"):
        if all(key in r for r in refs):
            out[key] = sum(r[key] for r in refs)
    out.update(
        values=values,
        stderr=stderr,
        seeds=[r.get("seed") for r in refs],
        parts=len(refs),
    )
    if len(refs) == 2 and values.numel() > K:
        eps = epsilon(values)
        out["split_half"] = [
            precision(vals[0], vals[1], K, eps),
            precision(vals[1], vals[0], K, eps),
        ]
    return out


def epsilon(ref: Tensor) -> float:
    r"""The benchmark's tolerance rule (15% of the mean of the three largest
    reference values, at least 0.0005)."""
    from .cells import game_epsilon

    return game_epsilon({"untruncated": ref})


def precision(values: Tensor, ref: Tensor, k: int = K, eps: float = 0.0) -> float:
    r"""Fraction of the top-``k`` of ``values`` whose reference value is within
    ``eps`` of the reference's k-th value or above it."""
    kth = torch.topk(ref, k).values[-1]
    top = torch.topk(values, k).indices
    return float((ref[top] >= kth - eps).double().mean())


# -- the methods -------------------------------------------------------------------


def _prior(data: LayerData) -> Tensor:
    from ..methods.baselines import gradient_x_activation

    return gradient_x_activation(data.model, data.fs.layer, data.x, data.y).flatten()


def _selected(make: Callable[[Tensor, int], Callable], needs_prior: bool) -> Callable:
    def sampler(data: LayerData) -> Any:
        from .selection import SelectingSampler

        prior = _prior(data) if needs_prior else torch.empty(0)
        return SelectingSampler(make(prior, K))

    return sampler


def _samplers() -> Dict[str, Callable[[LayerData], Any]]:
    from captum_neuron_shapley import MSRSampler

    from .selection import (
        border_selector,
        lucb_selector,
        prior_selector,
        screening_selector,
    )

    return {
        "default": lambda data: None,
        "default + LUCB": _selected(lambda p, k: lucb_selector(k), False),
        "default + border": _selected(lambda p, k: border_selector(k), False),
        "default + gradient prior": _selected(
            lambda p, k: prior_selector(p, 3 * k), True
        ),
        "default + prior screening": _selected(screening_selector, True),
        "maximum sample reuse": lambda data: MSRSampler(),
    }


def _gradients() -> Dict[str, Callable[[LayerData], Tensor]]:
    from ..methods.baselines import layer_conductance

    return {
        "gradient x activation": _prior,
        "conductance": lambda d: layer_conductance(
            d.model, d.fs.layer, d.x, target=d.y, batch_size=100
        ).flatten(),
    }


#: Every method, in the order of the tables.
METHODS = (
    "default",
    "default + LUCB",
    "default + border",
    "default + gradient prior",
    "default + prior screening",
    "maximum sample reuse",
    "gradient x activation",
    "conductance",
)


def run_method(
    method: str,
    data: LayerData,
    ref: Tensor,
    cpu_seconds: float,
    seed: int,
    snapshots: Sequence[float] = (),
    eps: Optional[float] = None,
) -> Dict[str, Any]:
    r"""Run ``method`` for ``cpu_seconds`` of CPU time (checked between rounds;
    a wall-time limit of eight times as much as a safety), recording its
    running top-10 precision against ``ref`` after every round.

    Returns:
        dict: ``points`` (``[cpu_s, wall_s, evaluations, examples,
        precision]`` per round; one point for a one-pass ranking),
        ``snapshots`` (``{t: estimate}`` at the last round within each CPU time
        ``t`` of ``snapshots``; a one-pass ranking gives its one answer),
        ``final`` (the last estimate), ``converged``, ``chains``,
        ``batch_size``, ``epsilon``.
    """
    eps = epsilon(ref) if eps is None else eps
    clock = Clock()
    if method in _gradients():
        scores = _gradients()[method](data).to(torch.float64)
        cpu, wall = clock.read()
        point = [cpu, wall, 0, 0, precision(scores, ref, K, eps)]
        return {
            "points": [point],
            "snapshots": {float(t): scores for t in snapshots},
            "final": scores,
            "converged": None,
            "chains": 0,
            "batch_size": None,
            "epsilon": eps,
        }
    if method not in _samplers():
        raise ValueError(f"unknown method {method!r} (choose from {METHODS})")
    sampler = _samplers()[method](data)  # a prior's pass counts: clock runs
    points: List[List[float]] = []
    snaps: Dict[float, Tensor] = {}

    def record(run: Any) -> bool:
        cpu, wall = clock.read()
        mean = run.stats.mean
        points.append(
            [
                cpu,
                wall,
                run.n_evaluations,
                run.examples_evaluated,
                precision(mean, ref, K, eps),
            ]
        )
        for t in snapshots:
            if cpu <= t:
                snaps[float(t)] = mean.clone()
        return cpu >= cpu_seconds

    kw: Dict[str, Any] = {}
    if sampler is not None:
        kw["sampler"] = sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnestimatedWarning)
        res = data.fs.attribute(
            data.x,
            target=data.y,
            top_k=K,
            stop=Callback(record) | MaxTime(8 * cpu_seconds),
            seed=seed,
            return_result=True,
            **kw,
        )
    for t in snapshots:  # rounds that ended past t leave the last estimate before
        snaps.setdefault(float(t), torch.zeros_like(res.flat_values))
    return {
        "points": points,
        "snapshots": snaps,
        "final": res.flat_values.clone(),
        "converged": bool(res.converged),
        "chains": res.n_permutations,
        "batch_size": res.cost.batch_size,
        "evaluations_per_chain": res.cost.evaluations_per_chain,
        "epsilon": eps,
    }


def removal_quality(
    data: LayerData, rankings: Dict[str, Tensor], k: int = K
) -> Dict[str, Dict[str, float]]:
    r"""For each ranking: the test-split accuracy after removing its top-``k``,
    and after removing the removal set of a greedy search over its ranking on
    the estimation split (:func:`~captum_neuron_shapley.refine.greedy_removal`,
    a pool of 6k candidates), with that search's CPU seconds and evaluations.
    The removal baselines are the game's (the channel means on the estimation
    split)."""
    from captum_neuron_shapley.ablation import metric_after_removal
    from captum_neuron_shapley.refine import greedy_removal

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnestimatedWarning)
        carrier = data.fs.attribute(
            data.x, target=data.y, max_evaluations=3, seed=0, return_result=True
        )
    game = data.fs.game(data.x, target=data.y)
    out: Dict[str, Dict[str, float]] = {}
    intact = float(
        metric_after_removal(data.model, carrier, [[]], data.x_test, data.y_test)[0]
    )
    for name, scores in rankings.items():
        order = scores.argsort(descending=True).tolist()
        clock = Clock()
        before = game.n_evaluations
        greedy, _ = greedy_removal(game, order, k)
        cpu, _ = clock.read()
        acc = metric_after_removal(
            data.model, carrier, [order[:k], greedy], data.x_test, data.y_test
        )
        out[name] = {
            "intact": intact,
            "top_k": float(acc[0]),
            "removal_set": float(acc[1]),
            "search_cpu_s": cpu,
            "search_evaluations": game.n_evaluations - before,
        }
    return out


def noise_vs_gaps(
    ref: Dict[str, Any], runs: Dict[str, Dict[str, Any]], k: int = K
) -> Dict[str, Any]:
    r"""What the top-k is up against. From the reference: the top ``2k``
    values with their standard errors, ``epsilon``, the k-th value, how many
    units count as correct (within ``epsilon`` of the k-th or above) and the
    median value; the median standard deviation of one sample of a unit (one
    sample per cycle of chains), the CPU seconds per chain, and the chains a
    unit needs before the largest of
    the noisy estimates of the units that count as wrong (about
    ``sqrt(2 ln n)`` standard errors above their mean) falls below the k-th
    value: a lower bound, since the top units' own estimates are noisy too.
    The sample noise comes from the reference (its ``samples`` per unit, when
    recorded), the CPU seconds per chain from the default's run."""
    values = torch.as_tensor(ref["values"], dtype=torch.float64)
    se = torch.as_tensor(ref["stderr"], dtype=torch.float64)
    eps = epsilon(values)
    top = torch.topk(values, 2 * k)
    kth = float(top.values[k - 1])
    correct = values >= kth - eps
    wrong = ~correct
    n_wrong = int(wrong.sum())
    z = math.sqrt(2 * math.log(max(n_wrong, 2)))
    out: Dict[str, Any] = {
        "epsilon": eps,
        "kth_value": kth,
        "top": [
            [int(i), float(v), float(se[i])] for v, i in zip(top.values, top.indices)
        ],
        "correct_units": int(correct.sum()),
        "median_value": float(values.median()),
        "mean_wrong_value": float(values[wrong].mean()),
        "z_max_wrong": z,
    }
    samples = ref.get("samples")
    default = runs.get("default")
    if samples is not None:
        counts = torch.as_tensor(samples, dtype=torch.float64)
        var = se.pow(2) * counts
        ok = (counts >= 2) & torch.isfinite(var)
        sd = float(var[ok].median().sqrt())
        per_sample = float(counts.max()) / max(float(ref["chains"]), 1.0)
        gap = kth - float(values[wrong].mean())
        need_samples = (z * sd / gap) ** 2 if gap > 0 else math.inf
        chains = need_samples / per_sample
        # the contenders (the top 2k by reference) are far noisier than the
        # median unit: what resolving the boundary to epsilon takes is set by
        # them (a standard error of epsilon / 2)
        contenders = top.indices[ok[top.indices]]
        sd_top = float(var[contenders].median().sqrt()) if len(contenders) else sd
        eps_samples = (2 * sd_top / eps) ** 2
        out.update(
            sample_sd=sd,
            samples_per_chain=per_sample,
            gap=gap,
            samples_needed=need_samples,
            chains_needed=chains,
            sample_sd_top=sd_top,
            samples_for_epsilon=eps_samples,
            chains_for_epsilon=eps_samples / per_sample,
        )
        if default and default.get("chains") and default.get("points"):
            per_chain = default["points"][-1][0] / default["chains"]
            out.update(
                cpu_s_per_chain=per_chain,
                cpu_s_needed=chains * per_chain,
                cpu_s_for_epsilon=eps_samples / per_sample * per_chain,
            )
    return out


def _method_task(args: Any) -> Dict[str, Any]:
    r"""One method on the big layer, in a worker process of one thread."""
    method, values, cpu_seconds, seed, snapshots, eps = args
    torch.set_num_threads(1)
    r = run_method(method, big_layer_data(), values, cpu_seconds, seed, snapshots, eps)
    return {"method": method, **r}


def compare(
    data: Optional[LayerData],
    ref: Dict[str, Any],
    cpu_seconds: float,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    snapshots: Sequence[float] = (),
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    r"""Every method of ``methods`` for ``cpu_seconds`` (in ``jobs`` worker
    processes of one thread, on the big layer, when ``data`` is None; else one
    after the other in this process), the removal quality of their final
    answers, and the noise against the gaps; a JSON-ready dict."""
    import multiprocessing as mp

    torch.set_num_threads(1)
    values = ref["values"]
    eps = epsilon(values)
    t0 = time.perf_counter()
    tasks = [(m, values, cpu_seconds, seed, tuple(snapshots), eps) for m in methods]
    if data is None and jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            results = list(pool.imap(_method_task, tasks))
    else:
        data = data or big_layer_data()
        results = [{"method": t[0], **run_method(t[0], data, *t[1:])} for t in tasks]
    data = data or big_layer_data()
    runs: Dict[str, Dict[str, Any]] = {}
    rankings: Dict[str, Tensor] = {}
    for r in results:
        m = r.pop("method")
        rankings[m] = r["final"]
        last = r["points"][-1] if r["points"] else None
        log(
            f"[{time.perf_counter() - t0:6.0f}s] {m}: {len(r['points'])} points, "
            f"final precision {precision(r['final'], values, K, eps):.2f}"
            + (f" at {last[0]:.0f} CPU s" if last else "")
        )
        runs[m] = {key: v for key, v in r.items() if key not in ("final", "snapshots")}
        runs[m]["final_precision"] = precision(r["final"], values, K, eps)
        runs[m]["snapshot_precision"] = {
            str(t): precision(v, values, K, eps) for t, v in r["snapshots"].items()
        }
    removal = removal_quality(data, rankings)
    gaps = noise_vs_gaps(ref, runs)
    return {
        "game": data.name,
        "cpu_seconds": cpu_seconds,
        "seed": seed,
        "epsilon": eps,
        "reference": {
            k: v
            for k, v in ref.items()
            if k not in ("values", "stderr", "samples") and not isinstance(v, Tensor)
        },
        "runs": runs,
        "removal": removal,
        "noise_vs_gaps": gaps,
        "wall_s": time.perf_counter() - t0,
    }


def _reference_task(args: Any) -> Dict[str, Any]:
    cpu_seconds, seed = args
    torch.set_num_threads(1)
    return make_reference(big_layer_data(), cpu_seconds, seed)


def make_references(
    cpu_seconds: float, seeds: Sequence[int], jobs: int = 1
) -> Dict[str, Any]:
    r"""Independent references of the big layer (one per seed, each
    ``cpu_seconds`` of CPU time, in ``jobs`` processes of one thread), pooled
    (:func:`combine_references`, with the split-half precision for two)."""
    import multiprocessing as mp

    tasks = [(cpu_seconds, s) for s in seeds]
    if jobs > 1:
        with mp.get_context("spawn").Pool(jobs) as pool:
            parts = list(pool.imap(_reference_task, tasks))
    else:
        parts = [_reference_task(t) for t in tasks]
    out = combine_references(parts)
    out["samples"] = sum(
        torch.as_tensor(p["samples"], dtype=torch.float64) for p in parts
    )
    return out


def save_reference(ref: Dict[str, Any], path: Path, command: str) -> None:
    r"""Write ``ref`` in the layout of ``device.json`` (``big_layer.reference``)
    with the command and environment."""
    plain = {k: (v.tolist() if isinstance(v, Tensor) else v) for k, v in ref.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        json.dumps(
            {
                "command": command,
                "environment": Environment.capture("cpu").to_dict(),
                "big_layer": {"reference": plain},
            }
        )
    )


def _at(points: Sequence[Sequence[float]], t: float) -> Optional[float]:
    r"""Precision of the last point at CPU time <= ``t`` (None before the
    first)."""
    out = None
    for p in points:
        if p[0] > t:
            break
        out = p[-1]
    return out


def render(result: Dict[str, Any], command: str, env: Environment) -> List[str]:
    r"""The markdown of a :func:`compare` result."""
    cpu = result["cpu_seconds"]
    grid = [t for t in (30, 60, 120, 300, 600, 1200) if t <= cpu]
    ref = result["reference"]
    lines = [
        f"# The big layer: {result['game']}",
        "",
        f"`{command}`. Environment: {env.line()}.",
        "",
        f"Reference: {ref.get('source', '')} ({ref.get('chains', '?')} chains, "
        f"{ref.get('evaluations', '?')} evaluations, device "
        f"{ref.get('device', '?')}); epsilon {result['epsilon']:.4g}."
        + (
            " Split-half top-10 precision of the reference (each half against the "
            f"other): {', '.join(f'{v:.1f}' for v in ref['split_half'])}."
            if "split_half" in ref
            else ""
        ),
        "",
        "Top-10 precision against CPU seconds (one thread; the last estimate "
        "made within each time; '-': no estimate yet):",
        "",
        "| method | " + " | ".join(f"{t} s" for t in grid) + " | final | chains |",
        "|---|" + "---|" * (len(grid) + 2),
    ]
    for m, r in result["runs"].items():
        if "points" not in r:
            continue
        cells = [_at(r["points"], t) for t in grid]
        last = r["points"][-1] if r["points"] else [math.nan]
        lines.append(
            f"| {m} | "
            + " | ".join("-" if c is None else f"{c:.1f}" for c in cells)
            + f" | {r['final_precision']:.1f} (at {last[0]:.0f} s) "
            f"| {r.get('chains', 0)} |"
        )
    rem = result["removal"]
    lines += [
        "",
        "Removal on the held-out test split (accuracy; intact "
        f"{next(iter(rem.values()))['intact']:.3f}): after removing each method's "
        "final top-10, and the removal set of a greedy search over its ranking "
        "(the search's CPU seconds and evaluations):",
        "",
        "| method | top-10 removed | greedy removal set | search CPU s | search "
        "evaluations |",
        "|---|---|---|---|---|",
    ]
    for m, q in rem.items():
        lines.append(
            f"| {m} | {q['top_k']:.3f} | {q['removal_set']:.3f} | "
            f"{q['search_cpu_s']:.0f} | {q['search_evaluations']} |"
        )
    g = result["noise_vs_gaps"]
    lines += [
        "",
        "Noise against gaps (reference values; one sample of a unit per cycle "
        "of chains):",
        "",
        f"- the 10th value {g['kth_value']:.4g}; units counted correct "
        f"(>= 10th - epsilon): {g['correct_units']}; mean value of the others "
        f"{g['mean_wrong_value']:.3g}, median of all {g['median_value']:.3g}",
        "- top-20 values (unit, value, standard error): "
        + "; ".join(f"{i}: {v:.4f} ({s:.4f})" for i, v, s in g["top"]),
    ]
    if "sample_sd" in g:
        lines.append(
            f"- one sample's standard deviation (median over units) "
            f"{g['sample_sd']:.3g}; the largest of the noisy estimates of the "
            f"units counted wrong lies about {g['z_max_wrong']:.1f} standard "
            "errors above their mean, so the 10th value "
            f"({g['gap']:.3g} above that mean) clears it after about "
            f"{g['samples_needed']:.0f} samples per unit = "
            f"{g['chains_needed']:.0f} chains"
            + (
                f", {g['cpu_s_needed'] / 60:.1f} CPU minutes at the default "
                f"run's {g['cpu_s_per_chain']:.1f} CPU s per chain"
                if g.get("cpu_s_needed")
                else ""
            )
            + " (a lower bound: the top units' own estimates are noisy too)"
        )
    if "sample_sd_top" in g:
        lines.append(
            "- the contenders (the top 20 by reference) are noisier: one sample's "
            f"standard deviation {g['sample_sd_top']:.3g} (median over them); a "
            f"standard error of epsilon / 2 ({g['epsilon'] / 2:.3g}) on them takes "
            f"about {g['samples_for_epsilon']:.0f} samples per unit = "
            f"{g['chains_for_epsilon']:.0f} chains"
            + (
                f", {g['cpu_s_for_epsilon'] / 3600:.1f} CPU hours at the default "
                f"run's {g['cpu_s_per_chain']:.1f} CPU s per chain"
                if g.get("cpu_s_for_epsilon")
                else ""
            )
        )
    return lines + [""]


def plot(result: Dict[str, Any], path: Path) -> Path:
    r"""Top-10 precision against CPU seconds per method (a one-pass ranking is
    a point), and the test accuracy after removing each method's top-10 and
    greedy removal set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, r in result["runs"].items():
        pts = r.get("points") or []
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[-1] for p in pts]
        if len(pts) == 1:
            ax.plot(xs, ys, "o", label=m)
        else:
            ax.step(xs, ys, where="post", label=m, lw=1.3)
    ax.axhline(0.8, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("CPU seconds (one thread)")
    ax.set_ylabel("top-10 precision against the reference")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    rem = result["removal"]
    names = list(rem)
    pos = torch.arange(len(names), dtype=torch.float64)
    bx.bar(pos - 0.2, [rem[n]["top_k"] for n in names], 0.4, label="top-10 removed")
    bx.bar(
        pos + 0.2,
        [rem[n]["removal_set"] for n in names],
        0.4,
        label="greedy removal set",
    )
    bx.axhline(next(iter(rem.values()))["intact"], color="k", ls=":", lw=1)
    bx.set_xticks(pos.tolist())
    bx.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    bx.set_ylabel("test accuracy after removal")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_big_layer(
    out: Path,
    reference: Optional[Path],
    make_reference_s: Optional[float],
    cpu_seconds: float,
    methods: Sequence[str],
    jobs: int,
    command: str,
    compare_methods: bool = True,
) -> int:
    r"""``python -m comparisons bench --big-layer``: make the reference when
    asked (two independent CPU runs, pooled, written to ``reference``), then
    compare the methods against it and write ``big_layer.json``,
    ``big_layer.md`` and ``big_layer.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if make_reference_s is not None:
        if reference is None:
            raise ValueError("--make-reference needs --reference PATH to write to")
        ref = make_references(make_reference_s, (12345, 23456), jobs)
        save_reference(ref, reference, command)
        print(f"wrote {reference}")
    if not compare_methods:
        return 0
    if reference is None:
        raise ValueError(
            "--big-layer needs --reference PATH (the device.json of python -m "
            "comparisons device, or a file written with --make-reference)"
        )
    ref = load_reference(reference)
    result = compare(None, ref, cpu_seconds, methods, jobs=jobs, snapshots=(60, 300))
    env = Environment.capture("cpu")
    (out / "big_layer.json").write_text(
        json.dumps(
            {"command": command, "environment": env.to_dict(), **result},
            default=lambda v: v.tolist() if isinstance(v, Tensor) else float(v),
        )
    )
    lines = render(result, command, env)
    fig = plot(result, out / "big_layer.png")
    lines += [f"![precision against CPU time]({fig.name})", ""]
    (out / "big_layer.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0
