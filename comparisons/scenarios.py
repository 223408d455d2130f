r"""Scoring every unit by every method for one question (a *scenario*), and
measuring what each method cost and what budget it had, in the same run.

A scenario fixes the metric (what the Shapley game and the removal check
measure), the validation data the scores are computed on, and the quantity of
interest for the gradient methods: the target class, or a contrast between two
classes, over one or more parts of the data (the comparative question "``a``
versus ``b``" averages ``q = z_a - z_b`` over the ``a`` examples and
``q = z_b - z_a`` over the ``b`` examples).

Methods come in three kinds:

- Shapley (:func:`run_shapley`): one bandit run per seed; its *value ranking*,
  and the *removal set* of ``refine="greedy"`` (:func:`greedy_sets`).
- Searches on the same game (:func:`greedy_sets`): the greedy removal set over
  the top of a ranking (Shapley's refinement) or over every unit (the full
  greedy search, an upper bound on what a greedy ranking can reach).
- Baselines (:func:`score_baselines`): conductance, distributional influence
  (point mass and path), gradient x activation, leave-one-out, activation.

Each returns a :class:`MethodStatus` saying what budget it had and whether it
finished (``complete``); the report marks every incomplete method.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley import FilterShapley, ShapleyResult
from captum_neuron_shapley.game import UnitGame
from captum_neuron_shapley.refine import greedy_removal
from torch import nn, Tensor

from . import baselines as B
from .budget import greedy_evaluations
from .cost import Cost, count_cost

__all__ = [
    "QuantityPart",
    "Scenario",
    "METHODS",
    "BASELINES",
    "MIN_CHAINS",
    "MethodStatus",
    "ShapleyRun",
    "run_shapley",
    "shapley_status",
    "greedy_sets",
    "score_baselines",
    "seconds_per_evaluation",
]

#: Every method of the report, in the order of its tables.
METHODS = (
    "shapley",
    "shapley-greedy",
    "full-greedy",
    "leave-one-out",
    "influence",
    "influence-path",
    "conductance",
    "grad-x-act",
    "activation",
    "random",
)

#: The methods :func:`score_baselines` computes.
BASELINES = (
    "leave-one-out",
    "influence",
    "influence-path",
    "conductance",
    "grad-x-act",
    "activation",
)

#: A Shapley run with fewer permutation chains than this is marked as such.
MIN_CHAINS = 20


@dataclass
class QuantityPart:
    r"""Examples and the quantity of interest on them: ``target`` (class index or
    per-example labels) or ``contrast=(a, b)``."""

    inputs: Tensor
    target: Any = None
    contrast: Optional[Tuple[int, int]] = None


@dataclass
class Scenario:
    r"""One question to compare the methods on.

    Attributes:
        name (str): Short key (``"overall"``, ``"recall_3"``, ``"pair_3_8"``).
        title (str): Human-readable description.
        metric (Callable): ``metric(outputs, target)``, higher is better.
        val_inputs (Tensor): Data of the Shapley game and of leave-one-out.
        val_target (Any): Its labels.
        parts (list of QuantityPart): Data and quantity for the gradient methods.
        test_inputs (Tensor): Held-out data of the removal check.
        test_target (Any): Its labels.
        exclude_top_fraction (float): Each method may not pick its own top
            fraction of units for overall accuracy (0: none).
    """

    name: str
    title: str
    metric: Callable
    val_inputs: Tensor
    val_target: Any
    parts: List[QuantityPart]
    test_inputs: Tensor
    test_target: Any
    exclude_top_fraction: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodStatus:
    r"""What budget a method had and whether it finished.

    Attributes:
        budget (str): The budget, in words (``"max_evaluations 6000"``, ``"all 397
            examples, 20 steps"``, ``"12.0 s"``).
        used (str): What it used (evaluations, chains, examples).
        complete (bool): False when it stopped on a budget before its own
            criterion (Shapley not converged or on fewer than
            :data:`MIN_CHAINS` chains; a gradient method on part of its data).
        skipped (bool): It did not run (its cost did not fit); ``reason`` says
            why.
        reason (str): Why it is incomplete or skipped.
    """

    budget: str = ""
    used: str = ""
    complete: bool = True
    skipped: bool = False
    reason: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


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


# -- Shapley ---------------------------------------------------------------------


@dataclass
class ShapleyRun:
    r"""One seed of the Shapley estimator on a question."""

    seed: int
    result: ShapleyResult
    cost: Cost
    budget: Dict[str, Any]


def run_shapley(
    fs: FilterShapley,
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
    for i, seed in enumerate(seeds):
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
        budget = {
            key: kw.get(key)
            for key in (
                "max_evaluations",
                "max_permutations",
                "max_time",
                "subset_size",
            )
            if kw.get(key) is not None
        }
        runs.append(ShapleyRun(seed, res, c, budget))
    return runs


def shapley_status(runs: Sequence[ShapleyRun]) -> MethodStatus:
    r"""Budget and status of Shapley runs: incomplete when any seed stopped on a
    budget before converging, or drew fewer than :data:`MIN_CHAINS` chains."""
    bad = [
        r
        for r in runs
        if r.result.stop_reason != "converged" or r.result.n_permutations < MIN_CHAINS
    ]
    b = runs[0].budget
    budget = (
        ", ".join(
            f"{k} {round(v, 1) if isinstance(v, float) else v}" for k, v in b.items()
        )
        or "none"
    )
    used = "; ".join(
        f"seed {r.seed}: {r.result.n_permutations} chains, "
        f"{r.result.n_evaluations} evaluations, {r.result.stop_reason}"
        for r in runs
    )
    reason = ""
    if bad:
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
    return MethodStatus(budget, used, complete=not bad, reason=reason)


# -- greedy searches on the same game ----------------------------------------------


class _AfterRemoving:
    r"""The game with ``removed`` units already removed (a view: evaluations are
    counted in the underlying game)."""

    def __init__(self, game: UnitGame, removed: Sequence[int], start_value: float):
        self.game = game
        self.n_units = game.n_units
        self._removed = list(removed)
        self._start = float(start_value)

    def full_value(self) -> float:
        return self._start

    def value(self, keep: Tensor) -> Tensor:
        keep = keep.clone()
        keep[:, self._removed] = False
        return self.game.value(keep)


def greedy_sets(
    game: UnitGame,
    order: Sequence[int],
    k: int,
    K: int,
    pool: int,
    continue_seconds: Optional[float] = None,
    seconds_per_eval: float = 0.0,
) -> Dict[str, Any]:
    r"""A greedy removal search on ``game`` over the first ``pool`` units of
    ``order``: first ``k`` steps (exactly what ``refine="greedy"`` with
    ``top_k=k`` and ``refine_pool=pool`` returns, as the greedy search with a
    fixed pool never revisits a step), then continued over the same pool up to
    ``K`` units when that fits in ``continue_seconds``.

    Args:
        game (UnitGame): The game (same metric, data and removal baselines as
            the Shapley run whose ``order`` is given).
        order (sequence of int): Candidate units, most promising first.
        k (int): Size of the removal set.
        K (int): Size up to which the search is continued (``>= k``).
        pool (int): Candidates: the first ``pool`` units of ``order``.
        continue_seconds (float, optional): Time for the continuation (None:
            no limit).
        seconds_per_eval (float): Estimated seconds per coalition.

    Returns:
        dict: ``"order"`` (flat units, up to ``K``), ``"curve"`` (game value after
        removing the first ``j``), ``"evaluations"`` (first ``k`` steps),
        ``"continuation_evaluations"``, ``"wall_s"``, ``"continuation_wall_s"``,
        ``"pool"``, ``"continued_to"``, ``"forward_calls"`` and
        ``"forward_examples"`` (first ``k`` steps).
    """
    order = [int(u) for u in order]
    pool = min(pool, len(order))
    k = min(k, pool)
    K = max(k, min(K, pool))
    before, passes = game.n_evaluations, game.n_forward
    t0 = time.perf_counter()
    units, curve = greedy_removal(game, order, k, pool_size=pool)
    wall = time.perf_counter() - t0
    ev = game.n_evaluations - before
    out = {
        "order": list(units),
        "curve": curve.tolist(),
        "evaluations": ev,
        "continuation_evaluations": 0,
        "wall_s": wall,
        "continuation_wall_s": 0.0,
        "pool": pool,
        "continued_to": k,
        "forward_calls": game.n_forward - passes,
        "forward_examples": ev * game.n_examples,
    }
    need = greedy_evaluations(K, pool, start=k)
    if K > k and (
        continue_seconds is None or need * seconds_per_eval <= continue_seconds
    ):
        rest = [u for u in order[:pool] if u not in set(units)]
        view = _AfterRemoving(game, units, float(curve[-1]))
        before = game.n_evaluations
        t0 = time.perf_counter()
        more, curve2 = greedy_removal(view, rest, K - k, pool_size=len(rest))
        out["continuation_wall_s"] = time.perf_counter() - t0
        out["continuation_evaluations"] = game.n_evaluations - before
        out["order"] += list(more)
        out["curve"] += curve2.tolist()[1:]
        out["continued_to"] = K
    return out


# -- baselines ------------------------------------------------------------------


def _slice_target(target: Any, a: int, b: int) -> Any:
    if isinstance(target, Tensor) and target.dim() > 0:
        return target[a:b]
    return target


def _limited_mean(
    parts: Sequence[QuantityPart],
    fn: Callable[[QuantityPart], Tensor],
    seconds: Optional[float],
    chunk: int,
) -> Tuple[Tensor, int, int]:
    r"""The examples-weighted mean of ``fn`` over ``parts``; with ``seconds``, each
    part is scored in chunks of ``chunk`` examples while its share of the time
    lasts (at least one chunk). Returns ``(scores, examples used, examples)``."""
    total = sum(p.inputs.shape[0] for p in parts)
    if seconds is None:
        out = None
        for p in parts:
            s = fn(p) * (p.inputs.shape[0] / total)
            out = s if out is None else out + s
        assert out is not None
        return out, total, total
    out, used = None, 0
    per_part = seconds / len(parts)
    for p in parts:
        n = p.inputs.shape[0]
        t0 = time.perf_counter()
        acc, m = None, 0
        while m < n:
            b = min(chunk, n - m)
            sub = QuantityPart(
                p.inputs[m : m + b], _slice_target(p.target, m, m + b), p.contrast
            )
            s = fn(sub) * b
            acc = s if acc is None else acc + s
            m += b
            spent = time.perf_counter() - t0
            if spent * (m + chunk) / m > per_part:  # the next chunk would not fit
                break
        used += m
        s = acc / m * (n / total)  # the part keeps its weight in the mixture
        out = s if out is None else out + s
    assert out is not None
    return out, used, total


def score_baselines(
    model: nn.Module,
    layers: Sequence[nn.Module],
    scenario: Scenario,
    game: Optional[UnitGame] = None,
    n_steps: int = 20,
    methods: Sequence[str] = BASELINES,
    seconds: Optional[Callable[[str], Optional[float]]] = None,
    seconds_per_eval: Optional[float] = None,
) -> Tuple[Dict[str, Tensor], Dict[str, Cost], Dict[str, MethodStatus]]:
    r"""Score every unit of ``layers`` by each baseline on the scenario's
    validation data, timing and counting each one separately.

    Args:
        model (nn.Module): The model.
        layers (list of nn.Module): The layers (same for every method).
        scenario (Scenario): The question.
        game (UnitGame, optional): The scenario's game on its validation data
            (needed by leave-one-out; its removal rule decides the units' order).
        n_steps (int): Integration points of the path methods.
        methods (sequence of str): Which of :data:`BASELINES` to run.
        seconds (Callable, optional): ``seconds(method)``: the method's time
            (None: no limit). A gradient method then averages over as many
            examples as fit (at least one chunk); leave-one-out, which needs
            one evaluation per unit, is skipped when ``n_units`` times
            ``seconds_per_eval`` does not fit.
        seconds_per_eval (float, optional): Seconds per coalition of ``game``.

    Returns:
        tuple: ``(scores, costs, statuses)``: flat float64 scores, a
        :class:`~comparisons.cost.Cost` and a :class:`MethodStatus` per method
        (skipped methods have a status but no score).
    """
    layers = list(layers)
    parts = scenario.parts
    scores: Dict[str, Tensor] = {}
    costs: Dict[str, Cost] = {}
    status: Dict[str, MethodStatus] = {}
    n_parts = sum(p.inputs.shape[0] for p in parts)
    gradient: Dict[str, Tuple[Callable[[QuantityPart], Tensor], int, str]] = {
        "influence": (
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast
            ),
            16,
            "",
        ),
        "influence-path": (
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast, "path", n_steps=n_steps
            ),
            2,
            f", {n_steps} steps",
        ),
        "conductance": (
            lambda p: B.layer_conductance(
                model, layers, p.inputs, p.target, p.contrast, n_steps=n_steps
            ),
            2,
            f", {n_steps} steps",
        ),
        "grad-x-act": (
            lambda p: B.gradient_x_activation(
                model, layers, p.inputs, p.target, p.contrast
            ),
            16,
            "",
        ),
        "activation": (
            lambda p: B.activation_magnitude(model, layers, p.inputs),
            32,
            "",
        ),
    }
    for name in methods:
        limit = None if seconds is None else seconds(name)
        if name == "leave-one-out":
            if game is None:
                raise ValueError("leave-one-out needs the scenario's `game`")
            n = game.n_units
            need = n * (seconds_per_eval or 0.0)
            if limit is not None and need > limit:
                status[name] = MethodStatus(
                    f"{limit:.1f} s",
                    "",
                    complete=False,
                    skipped=True,
                    reason=f"needs {n} evaluations, about {need:.0f} s; its share "
                    f"of the time was {limit:.1f} s",
                )
                continue
            with count_cost(model) as c:
                before = game.n_evaluations
                scores[name] = B.leave_one_out(game)
            c.model_evaluations = game.n_evaluations - before
            costs[name] = c
            status[name] = MethodStatus(
                f"{n} evaluations" + ("" if limit is None else f" ({limit:.1f} s)"),
                f"{c.model_evaluations} evaluations",
            )
            continue
        if name not in gradient:
            raise ValueError(f"unknown method {name!r}; choose from {BASELINES}")
        fn, chunk, extra = gradient[name]
        with count_cost(model) as c:
            scores[name], used, total = _limited_mean(parts, fn, limit, chunk)
        costs[name] = c
        budget = (
            f"all {n_parts} examples{extra}"
            if limit is None
            else f"{limit:.1f} s over {n_parts} examples{extra}"
        )
        st = MethodStatus(budget, f"{used} of {total} examples")
        if used < total:
            st.complete = False
            st.reason = f"averaged over {used} of {total} examples (time limit)"
        status[name] = st
    return scores, costs, status
