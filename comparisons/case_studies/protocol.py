r"""How a case study judges its rankings on held-out data: each ranking's first
``k`` units are removed and several metrics measured (:class:`Judge`: the one
that decides the winner, and what the removal costs beside it), against random
removal over several orders (:func:`removal_curves`); the winner at each ``k``
(:func:`winners`). Also the rankings themselves: Shapley's order and the
gradient scores of the same target quantity (:func:`gradient_scores`), and
:class:`RecallMinusOthers`, the class case's metric that a ranking cannot win
by breaking every class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley import ShapleyResult
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.metrics import Metric
from torch import nn, Tensor

from ..cost import Cost, count_cost
from ..methods import baselines as B
from .options import GRADIENT_METHODS, ORACLE
from .summary import Curves, RandomCurves, Unit

__all__ = [
    "RecallMinusOthers",
    "Judge",
    "removal_curves",
    "winners",
    "best_gradient",
    "order",
    "random_orders",
    "gradient_scores",
    "units",
]


class RecallMinusOthers(Metric):
    r"""Recall of class ``cls`` minus the accuracy on the examples of the other
    classes: low when the class collapses *and* the rest of the model is intact,
    the class-specific question's two halves in one number (the way
    :class:`~captum_neuron_shapley.applications.AdversarialVulnerability` weighs
    attack success against clean accuracy)."""

    bounds = (-1.0, 1.0)

    def __init__(self, cls: int) -> None:
        self.cls = int(cls)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        hit = (outputs.argmax(-1) == target).to(torch.float64)
        sel = target == self.cls
        return hit[:, sel].mean(-1) - hit[:, ~sel].mean(-1)

    def __repr__(self) -> str:
        return f"RecallMinusOthers(cls={self.cls})"


@dataclass
class Judge:
    r"""How one case is judged on held-out data.

    Attributes:
        primary (str): The metric that decides the winner.
        goal (str): ``"lower"`` or ``"raise"``: what removal should do to it.
        metrics (dict): ``{name: (metric, inputs, target)}``.
        winner_metric (str, optional): Decides the winner instead (default:
            ``primary``).
        cost_metric (str, optional): What the removal costs (shown beside).
    """

    primary: str
    goal: str
    metrics: Dict[str, Tuple[Callable, Tensor, Any]]
    winner_metric: Optional[str] = None
    cost_metric: Optional[str] = None

    def evaluate(
        self, model: nn.Module, res: ShapleyResult, sets: List[List[int]]
    ) -> Dict[str, List[float]]:
        return {
            name: metric_after_removal(model, res, sets, x, t, m).tolist()
            for name, (m, x, t) in self.metrics.items()
        }


def units(res: ShapleyResult, flat: Sequence[int]) -> List[Unit]:
    r"""Flat unit indices as ``[layer name, unit id]`` lists."""
    return [list(res.unit(int(i))) for i in flat]


def order(scores: Tensor, ascending: bool, exclude: Sequence[int] = ()) -> List[int]:
    r"""Units by score (highest first, or lowest with ``ascending``), ties by
    index, without ``exclude``."""
    s = scores.detach().double().cpu()
    idx = torch.from_numpy((s if ascending else -s).numpy().argsort(kind="stable"))
    drop = set(int(i) for i in exclude)
    return [int(i) for i in idx if int(i) not in drop]


def random_orders(pool: Sequence[int], seeds: int, length: int) -> List[List[int]]:
    r"""``seeds`` random orders of ``length`` units of ``pool``."""
    pool = list(pool)
    out = []
    for s in range(seeds):
        g = torch.Generator().manual_seed(1000 + s)
        perm = torch.randperm(len(pool), generator=g)[:length]
        out.append([pool[int(i)] for i in perm])
    return out


def gradient_scores(
    model: nn.Module,
    layers: List[nn.Module],
    inputs: Tensor,
    target: Any,
    quantity: Optional[Callable],
    n_steps: int,
) -> Tuple[Dict[str, Tensor], Dict[str, Cost]]:
    r"""Conductance, gradient x activation and distributional influence of the
    same quantity, each timed and counted."""
    runners = {
        "conductance": lambda: B.layer_conductance(
            model, layers, inputs, target, n_steps=n_steps, quantity=quantity
        ),
        "grad-x-act": lambda: B.gradient_x_activation(
            model, layers, inputs, target, quantity=quantity
        ),
        "influence": lambda: B.distributional_influence(
            model, layers, inputs, target, quantity=quantity
        ),
    }
    scores, costs = {}, {}
    for name in GRADIENT_METHODS:
        with count_cost(model) as c:
            scores[name] = runners[name]()
        costs[name] = c
    return scores, costs


def _random_stats(
    vals: Dict[str, List[float]], start: int, n_orders: int, n_ks: int
) -> RandomCurves:
    rnd = RandomCurves()
    if not n_orders:
        return rnd
    for m, v in vals.items():
        rows = torch.tensor(v[start:], dtype=torch.float64).view(n_orders, n_ks)
        rnd.curves[m] = rows.tolist()
        rnd.mean[m] = rows.mean(0).tolist()
        rnd.median[m] = rows.median(0).values.tolist()
        rnd.min[m] = rows.min(0).values.tolist()
        rnd.max[m] = rows.max(0).values.tolist()
    return rnd


def removal_curves(
    model: nn.Module,
    res: ShapleyResult,
    judge: Judge,
    orders: Dict[str, List[int]],
    random: List[List[int]],
    ks: Sequence[int],
) -> Tuple[Curves, RandomCurves, Dict[str, float]]:
    r"""Every method's removal curves (``None`` where its order is shorter than
    ``k``), random removal's, and the intact model's metrics, in one batch of
    evaluations per metric."""
    sets, where = [], []
    for name, o in orders.items():
        for j, k in enumerate(ks):
            if k <= len(o):
                where.append((name, j))
                sets.append(o[:k])
    n_named = len(sets)
    for o in random:
        sets += [o[:k] for k in ks]
    vals = judge.evaluate(model, res, [[]] + sets)
    curves: Curves = {
        name: {m: [None] * len(ks) for m in judge.metrics} for name in orders
    }
    for m, v in vals.items():
        for (name, j), val in zip(where, v[1 : 1 + n_named]):
            curves[name][m][j] = val
    rnd = _random_stats(vals, 1 + n_named, len(random), len(ks))
    return curves, rnd, {m: v[0] for m, v in vals.items()}


def winners(
    curves: Curves, metric: str, goal: str, ks: Sequence[int]
) -> Dict[str, List[str]]:
    r"""``{k: the methods with the best value}`` (the oracle takes no part)."""
    out = {}
    for j, k in enumerate(ks):
        vals: Dict[str, float] = {}
        for n, c in curves.items():
            v = c[metric][j]
            if v is not None and n != ORACLE:
                vals[n] = v
        if not vals:
            continue
        best = (min if goal == "lower" else max)(vals.values())
        out[str(k)] = [n for n, v in vals.items() if abs(v - best) < 1e-12]
    return out


def best_gradient(curves: Curves, metric: str, goal: str, j: int) -> str:
    r"""The gradient method with the best value at position ``j``."""
    vals = {m: curves[m][metric][j] for m in GRADIENT_METHODS}
    pick = min if goal == "lower" else max
    return pick(vals, key=lambda m: (vals[m], GRADIENT_METHODS.index(m)))
