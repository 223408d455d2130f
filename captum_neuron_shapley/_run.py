r"""One estimate of ``attribute``: the stopping rule built from its keywords, the
sampler bound to the game, the estimator loop, the removal-set search, the
result, and the warning when units end without a sample."""

from __future__ import annotations

import secrets
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ._attr_utils import layouts
from .bounds import AnytimeBound, Bound, PaperBound
from .distributed import Collective, rank_seed
from .estimator import ShapleyEstimator
from .game import UnitGame
from .metrics import Metric, metric_bounds
from .refine import GreedyRefine
from .result import RunCost, ShapleyResult
from .sampler import Sampler, truncation_threshold
from .stopping import (
    HalfWidth,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    RuleDefaults,
    StoppingRule,
    TopKSeparated,
)

__all__ = ["estimate", "compose_stop", "UnestimatedWarning"]


#: Default ``epsilon``: this fraction of ``|V(all) - V(none)|``.
DEFAULT_EPSILON = 0.01


def compose_stop(
    stop: Any,
    top_k: Optional[int],
    epsilon: Optional[float],
    max_evaluations: Optional[int],
    max_permutations: Optional[int],
    max_time: Optional[float],
) -> Tuple[StoppingRule, Optional[int]]:
    r"""The stopping rule of ``attribute``: the interval rule of ``top_k`` /
    ``epsilon`` (unless ``stop`` brings one), the budgets, and ``stop`` (a rule,
    or a :class:`Bound` for the interval rule); and the ``k`` of the top-k
    rule."""
    bound: Optional[Bound] = None
    if isinstance(stop, Bound):
        bound, stop = stop, None
    elif stop is not None and not isinstance(stop, StoppingRule):
        raise ValueError(
            "`stop` must be a stopping rule (TopKSeparated(...), MaxTime(...), ... "
            f"combined with | and &) or a Bound, got {type(stop).__name__}"
        )
    interval = [r for r in stop.leaves() if r.is_interval] if stop else []
    parts: List[StoppingRule] = []
    if not interval:
        parts.append(
            TopKSeparated(top_k, epsilon, bound)
            if top_k is not None
            else HalfWidth(epsilon, bound)
        )
    else:
        ks = [r.k for r in interval if isinstance(r, TopKSeparated)]
        if top_k is not None and top_k not in ks:
            raise ValueError(
                f"`top_k` ({top_k}) differs from the k of the TopKSeparated rule in "
                f"`stop` ({ks or 'none'}); give it once"
            )
        if epsilon is not None:
            raise ValueError(
                "`epsilon` applies to the rule built from `top_k`; `stop` brings its "
                "own interval rule: set its epsilon there"
            )
        top_k = ks[0] if ks else None
    if max_evaluations is not None:
        parts.append(MaxEvaluations(max_evaluations))
    if max_permutations is not None:
        parts.append(MaxPermutations(max_permutations))
    if max_time is not None:
        parts.append(MaxTime(max_time))
    if stop is not None:
        parts.append(stop)
    out = parts[0]
    for p in parts[1:]:
        out = out | p
    return out, top_k


def default_epsilon(v_all: float, v_none: float) -> float:
    r"""1% of ``|V(all) - V(none)|`` (0.01 if that is 0)."""
    return DEFAULT_EPSILON * (abs(v_all - v_none) or 1.0)


def marginal_range(metric: Callable) -> Optional[float]:
    r"""The true range of a marginal contribution: twice the metric's range."""
    bounds = metric_bounds(metric)
    return None if bounds is None else 2.0 * (bounds[1] - bounds[0])


def fingerprint(
    game: UnitGame, sampler: Sampler, stop: StoppingRule, seed: Optional[int]
) -> Dict[str, Any]:
    r"""The settings a checkpoint must match to be resumed."""
    metric = game.metric
    return {
        "layers": [u.name for u in game.units],
        "metric": (
            repr(metric)
            if isinstance(metric, Metric)
            else getattr(metric, "__qualname__", type(metric).__name__)
        ),
        "full_value": game.full_value(),
        "empty_value": game.empty_value(),
        "n_units": game.n_units,
        "n_examples": game.n_examples,
        "seed": seed,
        **sampler.settings(),
        **stop.settings(),
        "perturbations_per_eval": game.perturbations_per_eval,
        "world_size": Collective().world,
    }


def fresh_seed() -> int:
    return secrets.randbits(62)


def make_result(
    run: Any,
    game: UnitGame,
    names: Dict[int, str],
    single: bool,
    top_k: Optional[int],
    removal: Optional[Tuple[List[int], Tensor, int, int, float]],
) -> ShapleyResult:
    r"""The :class:`ShapleyResult` of a finished run and its refine search
    (``removal``: the set, its curve, its evaluations, examples and seconds)."""
    rules = [r for r in run.stop.leaves() if r.is_interval]
    epsilon = getattr(rules[0], "epsilon", None) if rules else None
    return ShapleyResult(
        flat_values=run.stats.mean.clone(),
        flat_stderr=run.stats.stderr,
        flat_radius=run.radius(),
        counts=run.stats.count.to(torch.long),
        n_evaluations=run.n_evaluations + (removal[2] if removal else 0),
        n_permutations=run.n_permutations,
        converged=run.converged,
        stop_reason=run.stop_reason,
        top_k=top_k,
        full_value=game.full_value(),
        empty_value=game.empty_value(),
        truncation=run.sampler.truncation,
        bound=run.bound.name,
        layers=layouts(game.units, names),
        history=run.history_tensor(),
        single_layer=single,
        epsilon=None if epsilon is None else float(epsilon),
        removal_set=removal[0] if removal else None,
        removal_curve=removal[1] if removal else None,
        refine_evaluations=removal[2] if removal else 0,
        cost=RunCost(
            examples=run.examples_evaluated + (removal[3] if removal else 0),
            seconds=time.monotonic() - run.started,
            setup_seconds=run.setup_time,
            setup_evaluations=run.setup_evaluations,
            refine_seconds=removal[4] if removal else 0.0,
            evaluations_per_chain=run.sampler.chain_cost(),
            batch_size=getattr(run.sampler, "batch_size", None),
        ),
    )


def estimate(
    game: UnitGame,
    sampler: Sampler,
    stop: StoppingRule,
    top_k: Optional[int],
    refine: Optional[GreedyRefine],
    truncation: Any,
    seed: Optional[int],
    show_progress: bool,
    started: float,
    layout: Tuple[Dict[int, str], bool],
) -> ShapleyResult:
    r"""Run ``attribute``'s estimate on ``game``: bind the sampler, resolve the
    stopping rule, run the estimator loop, then the removal-set search.
    ``layout`` holds the layers' names (by ``id``) and whether a single layer
    was given."""
    if top_k is not None and top_k >= game.n_units:
        raise ValueError(
            f"`top_k` must be smaller than the number of units ({game.n_units}), "
            f"got {top_k}"
        )
    base_seed = int(seed) if seed is not None else fresh_seed()
    generator = torch.Generator().manual_seed(rank_seed(base_seed, Collective().rank))
    v_all, v_none = game.full_value(), game.empty_value()
    paper = any(
        isinstance(getattr(r, "bound", None), PaperBound) for r in stop.leaves()
    )
    smp = sampler.bind(
        game, generator, truncation_threshold(truncation, v_all, v_none), paper=paper
    )
    stop = stop.resolve(
        RuleDefaults(default_epsilon(v_all, v_none), AnytimeBound(), smp.min_samples)
    )
    run = ShapleyEstimator(
        smp,
        stop,
        value_range=marginal_range(game.metric),
        fingerprint=fingerprint(game, smp, stop, seed),
        show_progress=show_progress,
        started=started,
    ).run()
    warn_unestimated(run)
    removal: Optional[Tuple[List[int], Tensor, int, int, float]] = None
    sampled = run.stats.count > 0
    if refine is not None and int(sampled.sum()) < int(top_k or 0):
        warnings.warn(
            f"no removal set: it needs {top_k} units with samples and the run "
            f"has {int(sampled.sum())}; raise the budget (see the warning above "
            "or estimate_cost)",
            UnestimatedWarning,
            stacklevel=5,  # estimate, attribute, usage log, moved keywords, caller
        )
    elif refine is not None:
        assert top_k is not None
        before, rows = game.n_evaluations, game.examples_evaluated
        t0 = time.monotonic()
        units, curve = refine.search(
            game,
            run.stats.mean,
            top_k,
            show_progress and Collective().rank == 0,
            sampled,
        )
        removal = (
            units,
            curve,
            game.n_evaluations - before,
            game.examples_evaluated - rows,
            time.monotonic() - t0,
        )
    return make_result(run, game, layout[0], layout[1], top_k, removal)


class UnestimatedWarning(RuntimeWarning):
    r"""A run ended with units that have no sample (its budget completed no
    chain that reached them): their values are 0 with infinite intervals."""


def warn_unestimated(run: Any) -> None:
    r"""Warn when units have no sample, naming the budget a chain needs."""
    missing = int((run.stats.count == 0).sum())
    if not missing:
        return
    per_chain = run.sampler.chain_cost()
    sampled = run.n_evaluations - run.setup_evaluations
    rate = (run.elapsed - run.setup_time) / sampled if sampled > 0 else None
    need = ""
    if per_chain is not None:
        about = "about" if run.n_permutations else "up to about"
        need = f"; one chain takes {about} {per_chain:,.0f} evaluations"
        if rate is not None:
            need += f" ({per_chain * rate:.3g} s at the {rate:.3g} s per evaluation"
            need += " measured here)"
        need += (
            f", so some {20 * per_chain:,.0f} evaluations buy the 20 chains a "
            "confidence interval needs"
        )
    warnings.warn(
        f"{missing} of {run.game.n_units} units have no sample: the run stopped "
        f"({run.stop_reason}) after {run.n_permutations} completed chain(s) and "
        f"{run.n_evaluations:,} evaluations{need}. Their values are 0 with "
        "infinite intervals (result.unestimated); raise max_evaluations / "
        "max_time, or see estimate_cost()",
        UnestimatedWarning,
        stacklevel=6,  # here, estimate, attribute, usage log, moved keywords, caller
    )
