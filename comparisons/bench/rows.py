r"""The estimator rows of the benchmark (:func:`estimator_rows`): how each one is
run on a cell's game, with the running estimate recorded after every round.

``run(bg, recorder, seed, budget, k, eps)`` runs one estimator on the game
``bg`` for ``budget`` evaluations; ``target`` says which reference it is scored
against (``"truncated"``: the target of the chains with ``truncation="auto"``;
``"untruncated"``: the Shapley values); ``per_k``: one run per k (it uses k to
choose what to sample or when to stop), otherwise one run scored at every k.

Rows: the library's default, plain truncated Monte Carlo, Captum's
``ShapleyValueSampling`` through a mask wrapper over the same game, the
alternatives of :mod:`comparisons.bench.estimators` (sample reuse, kernel SHAP,
stratified SVARM, CMCS), top-k selection inside the library's loop
(:mod:`comparisons.bench.selection`), a gradient prior, fewer exploration
samples and batched evaluation.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import torch
from captum.attr import ShapleyValueSampling

from captum_neuron_shapley import Callback, PermutationSampler, Sampler, TopKSeparated
from captum_neuron_shapley.bounds import Bound, make_bound

from .precision import Recorder

__all__ = [
    "estimator_rows",
    "BASE_ROWS",
    "REUSE_ROWS",
    "TOPK_ROWS",
    "K10_ONLY",
    "PPE",
    "BATCH",
    "PRIOR_COST",
]

#: ``perturbations_per_eval`` of the chain estimators: the library's default, so that
#: a chain never evaluates a state after the one that fell to the threshold.
PPE = 1
#: Coalitions per forward pass of the untruncated estimators (nothing to truncate,
#: so batching changes their wall time only).
BATCH = 8
#: Evaluations charged for the gradient prior: one forward and one backward pass
#: over the evaluation set (a backward pass costs about two forward passes).
PRIOR_COST = 3

T, U = "truncated", "untruncated"

#: Rows every cell runs: the default and the two baselines of the targets.
BASE_ROWS = ("default", "plain truncated MC", "Captum ShapleyValueSampling")
#: Estimators that reuse every evaluation (candidates for another default).
REUSE_ROWS = ("maximum sample reuse, regression-adjusted", "stratified SVARM")
#: Top-k selection and shorter exploration on the library's chains.
TOPK_ROWS = (
    "LUCB boundary arms",
    "border-uncertainty sampling",
    "CMCS, greedy selection",
    "gradient prior (sampling order only)",
)
#: Rows run at k = 10 only where the cell also has k = 3 (to save time).
K10_ONLY = TOPK_ROWS + (
    "min_samples=2 (2 cycles)",
    "default, perturbations_per_eval=8",
    "stratified truncated MC (bandit off)",
    "kernel SHAP, paired",
)

Run = Callable[..., Dict[str, Any]]


def _attribute(
    bg: Any,
    rec: Recorder,
    seed: int,
    budget: int,
    sampler: Optional[Sampler] = None,
    bound: Optional[Bound] = None,
    **kw: Any,
) -> Dict[str, Any]:
    r"""``attribute`` with the library's defaults but for ``kw``, recording the
    running estimate after every round; ``sampler`` (a sampler object, such as a
    :class:`~comparisons.bench.selection.SelectingSampler`) replaces the
    default; ``bound`` replaces the top-k rule's bound."""
    kw.setdefault("perturbations_per_eval", PPE)
    if sampler is not None:
        kw["sampler"] = sampler
    record = Callback(lambda e: rec(e.n_evaluations, e.stats.mean))
    if bound is not None:
        rule = TopKSeparated(int(kw["top_k"]), kw.pop("epsilon", None), bound)
        kw["stop"] = rule | record
    else:
        kw["stop"] = record
    t = time.perf_counter()
    res = bg.attribute(seed=seed, max_evaluations=budget, **kw)
    return {
        "converged": bool(res.converged),
        "evaluations": int(res.n_evaluations),
        "chains": int(res.n_permutations),
        "wall_s": time.perf_counter() - t,
    }


def _svs(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
    r"""Captum ``ShapleyValueSampling`` through a mask wrapper over the same game.
    Its estimate with ``n_samples = m`` is the mean of ``m`` independent
    permutations, so it is run one permutation at a time (each seeded from
    ``seed``) and the running mean is recorded after every permutation."""
    game = bg.game(BATCH)
    svs = ShapleyValueSampling(lambda m: game.value(m > 0.5).float())
    total = torch.zeros(game.n_units, dtype=torch.float64)
    t, m = time.perf_counter(), 0
    while game.n_evaluations + game.n_units + 1 <= budget:
        with torch.random.fork_rng(devices=[]):  # Captum samples with the global RNG
            torch.manual_seed(seed * 1_000_003 + m)
            total += svs.attribute(
                torch.ones(1, game.n_units),
                baselines=0.0,
                n_samples=1,
                perturbations_per_eval=BATCH,
            )[0].double()
        m += 1
        rec(game.n_evaluations, total / m)
    return {
        "converged": False,
        "evaluations": game.n_evaluations,
        "chains": m,
        "wall_s": time.perf_counter() - t,
    }


def _standalone(fn: Callable, **extra: Any) -> Run:
    def run(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
        game = bg.game(BATCH)
        t = time.perf_counter()
        kw = dict(extra)
        if k is not None:
            kw["top_k"] = k
        fn(game, budget, seed, rec, **kw)
        return {
            "converged": False,
            "evaluations": game.n_evaluations,
            "wall_s": time.perf_counter() - t,
        }

    return run


def _prior(bg, rec: Recorder, seed: int, budget: int, k: int, eps: float):
    r"""Gradient x activation (Captum's ``LayerGradientXActivation`` averaged over
    the evaluation set) decides which ``3 k`` units are explored first; charged
    :data:`PRIOR_COST` evaluations. The estimates are the default's."""
    from ..methods.baselines import gradient_x_activation
    from .selection import prior_selector, selecting

    model = bg.attr.forward_func
    prior = gradient_x_activation(model, bg.attr.layer, bg.x, bg.y).flatten()
    rec.offset = PRIOR_COST
    smp = selecting(prior_selector(prior, 3 * k))
    return _attribute(bg, rec, seed, budget - PRIOR_COST, smp, top_k=k, epsilon=eps)


def _default(**kw: Any) -> Run:
    return lambda bg, r, s, b, k, eps: _attribute(
        bg, r, s, b, top_k=k, epsilon=eps, **kw
    )


def _select(make: Callable[[int], Callable]) -> Run:
    from .selection import selecting

    return lambda bg, r, s, b, k, eps: _attribute(
        bg, r, s, b, selecting(make(k)), top_k=k, epsilon=eps
    )


def estimator_rows() -> Dict[str, Dict[str, Any]]:
    r"""Every estimator of the benchmark: ``{name: {"run", "target", "per_k"}}``
    (see the module's docstring)."""
    from . import estimators as E, selection as S

    return {
        "default": {"run": _default(), "target": T, "per_k": True},
        "plain truncated MC": {
            "run": lambda bg, r, s, b, k=None, eps=None: _attribute(
                bg, r, s, b, PermutationSampler(strata=1), epsilon=0.0
            ),
            "target": T,
            "per_k": False,
        },
        "Captum ShapleyValueSampling": {"run": _svs, "target": U, "per_k": False},
        "stratified truncated MC (bandit off)": {
            "run": lambda bg, r, s, b, k=None, eps=None: _attribute(
                bg, r, s, b, epsilon=0.0
            ),
            "target": T,
            "per_k": False,
        },
        "maximum sample reuse, regression-adjusted": {
            "run": _standalone(E.msr),
            "target": U,
            "per_k": False,
        },
        "kernel SHAP, paired": {
            "run": _standalone(E.kernel_shap),
            "target": U,
            "per_k": False,
        },
        "stratified SVARM": {
            "run": _standalone(E.stratified_svarm),
            "target": U,
            "per_k": False,
        },
        "CMCS, greedy selection": {
            "run": _standalone(E.cmcs_greedy),
            "target": U,
            "per_k": True,
        },
        "LUCB boundary arms": {
            "run": _select(S.lucb_selector),
            "target": T,
            "per_k": True,
        },
        "border-uncertainty sampling": {
            "run": _select(S.border_selector),
            "target": T,
            "per_k": True,
        },
        "gradient prior (sampling order only)": {
            "run": _prior,
            "target": T,
            "per_k": True,
        },
        "min_samples=2 (2 cycles)": {
            "run": _default(bound=make_bound(None, None, 2)),
            "target": T,
            "per_k": True,
        },
        "default, perturbations_per_eval=8": {
            "run": _default(perturbations_per_eval=8),
            "target": T,
            "per_k": True,
        },
    }
