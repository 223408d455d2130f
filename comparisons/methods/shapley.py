r"""Neuron Shapley as a compared method: one ``attribute`` run per seed on a
question's validation data, each timed and counted with the model's hooks
(:func:`run_shapley`), and the status of the runs: complete only when every seed
converged on at least :data:`MIN_CHAINS` chains (:func:`shapley_status`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from captum_neuron_shapley import NeuronShapley, ShapleyResult
from captum_neuron_shapley.game import UnitGame

from ..cost import Cost, count_cost
from ..scenario import Scenario
from .status import MethodStatus

__all__ = [
    "MIN_CHAINS",
    "ShapleyRun",
    "run_shapley",
    "shapley_status",
    "seconds_per_evaluation",
]

#: A Shapley run with fewer permutation chains than this is marked as such.
MIN_CHAINS = 20

#: ``attribute`` keywords recorded as a run's budget, in this order.
BUDGET_KEYS = ("max_evaluations", "max_permutations", "max_time", "batch_size")


@dataclass
class ShapleyRun:
    r"""One seed of the Shapley estimator on a question.

    Attributes:
        seed (int): The run's seed.
        result (ShapleyResult): What ``attribute(..., return_result=True)`` gave.
        cost (Cost): Wall time and passes, counted with hooks on the model.
        budget (dict): The budgets it ran under (``max_evaluations``,
            ``max_time``, ... and ``batch_size``, the examples per chain).
    """

    seed: int
    result: ShapleyResult
    cost: Cost
    budget: Dict[str, Any]


def seconds_per_evaluation(game: UnitGame, seed: int = 0) -> float:
    r"""Wall seconds per coalition of ``game``: one forward pass of
    ``game.perturbations_per_eval`` random coalitions (about a tenth of the
    units removed), timed once and divided by their number; counted in
    ``game.n_evaluations``."""
    m = max(1, int(game.perturbations_per_eval))
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(m, game.n_units, generator=g) > 0.1
    keep[:, 0] = False  # never the intact model, whose value is cached
    t = time.perf_counter()
    game.value(keep)
    return (time.perf_counter() - t) / m


def _budget(kw: Dict[str, Any]) -> Dict[str, Any]:
    smp = kw.get("sampler")
    batch = getattr(smp, "batch_size", None)
    found = {**kw, "batch_size": batch if isinstance(batch, int) else None}
    return {key: found[key] for key in BUDGET_KEYS if found.get(key) is not None}


def run_shapley(
    fs: NeuronShapley,
    scenario: Scenario,
    seeds: Sequence[int],
    kwargs: Dict[str, Any],
    max_time: Optional[float] = None,
) -> List[ShapleyRun]:
    r"""One ``fs.attribute(..., return_result=True, **kwargs)`` per seed on the
    scenario's validation data, each timed and counted; ``max_time`` (seconds for
    all seeds together, shared equally) is added to each run's budget.

    Returns:
        list of ShapleyRun.
    """
    runs = []
    for seed in seeds:
        kw = dict(kwargs)
        if max_time is not None:
            kw["max_time"] = max(1.0, max_time / len(seeds))
        with count_cost(fs.forward_func) as c:
            res = fs.attribute(
                scenario.val_inputs,
                target=scenario.val_target,
                metric=scenario.metric,
                seed=seed,
                return_result=True,
                **kw,
            )
        c.model_evaluations = res.n_evaluations
        runs.append(ShapleyRun(seed, res, c, _budget(kw)))
    return runs


def _budget_text(budget: Dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{k} {round(v, 1) if isinstance(v, float) else v}"
            for k, v in budget.items()
        )
        or "none"
    )


def shapley_status(runs: Sequence[ShapleyRun]) -> MethodStatus:
    r"""Budget and status of Shapley runs: incomplete when any seed stopped on a
    budget before converging, or drew fewer than :data:`MIN_CHAINS` chains."""
    bad = [
        r
        for r in runs
        if r.result.stop_reason != "converged" or r.result.n_permutations < MIN_CHAINS
    ]
    used = "; ".join(
        f"seed {r.seed}: {r.result.n_permutations} chains, "
        f"{r.result.n_evaluations} evaluations, {r.result.stop_reason}"
        for r in runs
    )
    reason = "; ".join(
        f"seed {r.seed} stopped by {r.result.stop_reason} after "
        f"{r.result.n_permutations} chains and {r.result.n_evaluations} "
        "evaluations"
        + (
            f" (fewer than {MIN_CHAINS} chains)"
            if r.result.n_permutations < MIN_CHAINS
            else ""
        )
        for r in bad
    )
    return MethodStatus(
        _budget_text(runs[0].budget), used, complete=not bad, reason=reason
    )
