r"""The estimator rows of the benchmark (:func:`estimator_rows`): how each one is
run on a cell's game, with the running estimate recorded after every round,
together with what it had cost by then (:class:`~.precision.Recorder`).

``run(bg, recorder, seed, budget, k, eps)`` runs one estimator on the game
``bg`` until it has pushed ``budget`` examples through the model (or its own
rule stops it). A row's ``target`` says which reference it is scored against
(``"truncated"``: the target of chains truncated with ``truncation="auto"``,
on the examples its ``batch`` says; ``"untruncated"``: the Shapley values of
the whole set, also the target of untruncated estimators on batches);
``batch``: the examples per chain (None: all; ``"auto"``: the library's
default); ``per_k``: one run per k (it uses k to choose what to sample or when
to stop), otherwise one run scored at every k.

Rows: the library's default (per-chain batches), the default on all examples,
plain truncated Monte Carlo on all examples and on batches of 32 to 256,
Captum's ``ShapleyValueSampling`` through a mask wrapper over the same game,
the alternatives of :mod:`comparisons.bench.estimators` (sample reuse, also on
batches, kernel SHAP, stratified SVARM, CMCS), top-k selection inside the
library's loop (:mod:`comparisons.bench.selection`), a gradient prior (its
gradient pass charged at its measured cost), a shorter exploration and more
coalitions per forward pass.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from captum.attr import ShapleyValueSampling

from captum_neuron_shapley import Callback, PermutationSampler, Sampler, TopKSeparated
from captum_neuron_shapley.bounds import Bound, make_bound

from .precision import Clock, Recorder

__all__ = [
    "estimator_rows",
    "forward_time",
    "BASE_ROWS",
    "BATCH_ROWS",
    "REUSE_ROWS",
    "TOPK_ROWS",
    "K10_ONLY",
    "PPE",
    "BATCH",
    "FORWARDS",
]

#: ``perturbations_per_eval`` of the chain estimators: the library's default, so that
#: a chain never evaluates a state after the one that fell to the threshold.
PPE = 1
#: Coalitions per forward pass of the untruncated estimators (nothing to truncate,
#: so batching changes their wall time only).
BATCH = 8
#: Plain forward passes on all examples timed before every run (the time unit
#: of the wall-time comparisons, measured in the run's own process).
FORWARDS = 200

T, U = "truncated", "untruncated"

#: Rows every cell runs: the default, the default on all examples, and the
#: baselines of the targets (plain truncated MC on all examples and on the
#: default's batches, Captum's sampler).
BASE_ROWS = (
    "default",
    "default, all examples",
    "plain truncated MC",
    "plain truncated MC, batches of 64",
    "Captum ShapleyValueSampling",
)
#: Plain truncated MC on other batch sizes.
BATCH_ROWS = (
    "plain truncated MC, batches of 32",
    "plain truncated MC, batches of 128",
    "plain truncated MC, batches of 256",
)
#: Estimators that reuse every evaluation.
REUSE_ROWS = (
    "maximum sample reuse, regression-adjusted",
    "maximum sample reuse, batches of 64",
    "stratified SVARM",
)
#: Top-k selection on the library's chains.
TOPK_ROWS = (
    "LUCB boundary arms",
    "border-uncertainty sampling",
    "CMCS, greedy selection",
    "gradient prior (sampling order only)",
    "prior screening",
)
#: Rows run at k = 10 only where the cell also has k = 3 (to save time).
K10_ONLY = TOPK_ROWS + (
    "min_samples=2 (2 cycles)",
    "default, perturbations_per_eval=4",
    "stratified truncated MC (bandit off)",
    "kernel SHAP, paired",
)

Run = Callable[..., Dict[str, Any]]
BatchSpec = Union[None, int, str]


def forward_time(bg: Any, n: int = FORWARDS) -> Tuple[float, float]:
    r"""``(cpu_s, wall_s)`` of ``n`` plain forward passes of the unmodified
    model on all of the cell's examples (after two warm-up passes)."""
    model = bg.attr.forward_func
    with torch.no_grad():
        for _ in range(2):
            model(bg.x)
        clock = Clock()
        for _ in range(n):
            model(bg.x)
        return clock.read()


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
    running estimate after every round and stopping once ``budget`` examples
    went through the model; ``sampler`` (a sampler object, such as a
    :class:`~comparisons.bench.selection.SelectingSampler`) replaces the
    default; ``bound`` replaces the top-k rule's bound."""
    kw.setdefault("perturbations_per_eval", PPE)
    if sampler is not None:
        kw["sampler"] = sampler
    offset = rec.offset[1]

    def record(run: Any) -> bool:
        rec(run.n_evaluations, run.examples_evaluated, run.stats.mean)
        return run.examples_evaluated + offset >= budget

    stop = Callback(record)
    if bound is not None:
        rule = TopKSeparated(int(kw["top_k"]), kw.pop("epsilon", None), bound)
        kw["stop"] = rule | stop
    else:
        kw["stop"] = stop
    t = time.perf_counter()
    res = bg.attribute(seed=seed, **kw)
    return {
        "converged": bool(res.converged),
        "evaluations": int(res.n_evaluations),
        "examples": int(res.cost.examples),
        "chains": int(res.n_permutations),
        "batch_size": res.cost.batch_size,
        "wall_s": time.perf_counter() - t,
    }


def _svs(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
    r"""Captum ``ShapleyValueSampling`` through a mask wrapper over the same game
    (all examples). Its estimate with ``n_samples = m`` is the mean of ``m``
    independent permutations, so it is run one permutation at a time (each
    seeded from ``seed``) and the running mean is recorded after every
    permutation."""
    t = time.perf_counter()
    game = bg.game(BATCH)
    svs = ShapleyValueSampling(lambda m: game.value(m > 0.5).float())
    total = torch.zeros(game.n_units, dtype=torch.float64)
    per_perm = (game.n_units + 1) * game.n_examples
    m = 0
    while game.examples_evaluated + per_perm <= budget:
        with torch.random.fork_rng(devices=[]):  # Captum samples with the global RNG
            torch.manual_seed(seed * 1_000_003 + m)
            total += svs.attribute(
                torch.ones(1, game.n_units),
                baselines=0.0,
                n_samples=1,
                perturbations_per_eval=BATCH,
            )[0].double()
        m += 1
        rec(game.n_evaluations, game.examples_evaluated, total / m)
    return {
        "converged": False,
        "evaluations": game.n_evaluations,
        "examples": game.examples_evaluated,
        "chains": m,
        "wall_s": time.perf_counter() - t,
    }


def _standalone(fn: Callable, batch: Optional[int] = None, **extra: Any) -> Run:
    r"""A benchmark-only estimator of :mod:`~comparisons.bench.estimators` on the
    cell's game (on all examples, or each coalition on its own random batch of
    ``batch`` examples)."""

    def run(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
        from .estimators import RandomBatches

        t = time.perf_counter()
        game = bg.game(BATCH)
        inner = game
        if batch is not None:
            game = RandomBatches(game, batch, seed)
        kw = dict(extra)
        if k is not None:
            kw["top_k"] = k
        per_eval = batch or inner.n_examples
        evals = max(int((budget - inner.examples_evaluated) // per_eval), 1)
        start = inner.n_evaluations

        def record(e: int, values: torch.Tensor) -> None:
            rec(start + e, inner.examples_evaluated, values)

        fn(game, evals, seed, record, **kw)
        return {
            "converged": False,
            "evaluations": inner.n_evaluations,
            "examples": inner.examples_evaluated,
            "wall_s": time.perf_counter() - t,
        }

    return run


def _prior(how: str) -> Run:
    r"""Gradient x activation (Captum's ``LayerGradientXActivation`` averaged
    over the evaluation set) as a prior for a selection policy on the
    default's chains: ``"pool"`` explores the ``3 k`` units it ranks highest
    first (:func:`~comparisons.bench.selection.prior_selector`),
    ``"screening"`` explores every unit in its order, a block at a time
    (:func:`~comparisons.bench.selection.screening_selector`). Its forward and
    backward pass is charged at its measured cost: its CPU time over that of a
    plain forward pass on the same examples, in forward evaluations of all
    examples (and its time counts on the time axes, since the recorder's clocks
    run). The estimates are the default's."""

    def run(bg, rec: Recorder, seed: int, budget: int, k: int, eps: float):
        from ..methods.baselines import gradient_x_activation
        from .selection import prior_selector, screening_selector, selecting

        model = bg.attr.forward_func
        fwd_cpu = forward_time(bg, 20)[0] / 20
        rec.start()
        clock = Clock()
        prior = gradient_x_activation(model, bg.attr.layer, bg.x, bg.y).flatten()
        ratio = clock.read()[0] / fwd_cpu
        rec.offset = (ratio, ratio * len(bg.x))
        select = (
            prior_selector(prior, 3 * k)
            if how == "pool"
            else screening_selector(prior, k)
        )
        info = _attribute(
            bg, rec, seed, budget, selecting(select), top_k=k, epsilon=eps
        )
        info["prior_forward_equivalents"] = ratio
        return info

    return run


def _chains(batch: BatchSpec, **sampler_kw: Any) -> PermutationSampler:
    return PermutationSampler(batch_size=batch, **sampler_kw)


def _default(batch: BatchSpec = "auto", **kw: Any) -> Run:
    return lambda bg, r, s, b, k, eps: _attribute(
        bg, r, s, b, _chains(batch), top_k=k, epsilon=eps, **kw
    )


def _plain(batch: BatchSpec) -> Run:
    r"""Independent truncated chains, every unit in every chain."""
    return lambda bg, r, s, b, k=None, eps=None: _attribute(
        bg, r, s, b, _chains(batch, strata=1), epsilon=0.0
    )


def _select(make: Callable[[int], Callable]) -> Run:
    from .selection import selecting

    return lambda bg, r, s, b, k, eps: _attribute(
        bg, r, s, b, selecting(make(k)), top_k=k, epsilon=eps
    )


def _row(run: Run, target: str, per_k: bool, batch: BatchSpec) -> Dict[str, Any]:
    return {"run": run, "target": target, "per_k": per_k, "batch": batch}


def estimator_rows() -> Dict[str, Dict[str, Any]]:
    r"""Every estimator of the benchmark: ``{name: {"run", "target", "per_k",
    "batch"}}`` (see the module's docstring)."""
    from . import estimators as E, selection as S

    rows = {
        "default": _row(_default(), T, True, "auto"),
        "default, all examples": _row(_default(None), T, True, None),
        "plain truncated MC": _row(_plain(None), T, False, None),
    }
    for b in (32, 64, 128, 256):
        rows[f"plain truncated MC, batches of {b}"] = _row(_plain(b), T, False, b)
    rows.update(
        {
            "Captum ShapleyValueSampling": _row(_svs, U, False, None),
            "stratified truncated MC (bandit off)": _row(
                lambda bg, r, s, b, k=None, eps=None: _attribute(
                    bg, r, s, b, epsilon=0.0
                ),
                T,
                False,
                "auto",
            ),
            "maximum sample reuse, regression-adjusted": _row(
                _standalone(E.msr), U, False, None
            ),
            "maximum sample reuse, batches of 64": _row(
                _standalone(E.msr, 64), U, False, 64
            ),
            "kernel SHAP, paired": _row(_standalone(E.kernel_shap), U, False, None),
            "stratified SVARM": _row(_standalone(E.stratified_svarm), U, False, None),
            "CMCS, greedy selection": _row(_standalone(E.cmcs_greedy), U, True, None),
            "LUCB boundary arms": _row(_select(S.lucb_selector), T, True, "auto"),
            "border-uncertainty sampling": _row(
                _select(S.border_selector), T, True, "auto"
            ),
            "gradient prior (sampling order only)": _row(
                _prior("pool"), T, True, "auto"
            ),
            "prior screening": _row(_prior("screening"), T, True, "auto"),
            "min_samples=2 (2 cycles)": _row(
                _default(bound=make_bound(None, None, 2)), T, True, "auto"
            ),
            "default, perturbations_per_eval=4": _row(
                _default(perturbations_per_eval=4), T, True, "auto"
            ),
        }
    )
    return rows
