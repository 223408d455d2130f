r"""The evaluation protocol: unit rankings computed on one split are judged on a
held-out split by removing each method's top-k (and bottom-k) units and
measuring the metric, against random removal over several seeds.

Also: area under the removal curves, agreement between methods (top-k overlap and
Spearman rank correlation) and the comparative metric for a class-A-versus-B
question. Removal uses :func:`captum_neuron_shapley.ablation.metric_after_removal`
(the same hooks and baselines as the Shapley game), so every method is judged by
the same removal rule.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.metrics import Metric
from captum_neuron_shapley.result import ShapleyResult
from torch import nn, Tensor

__all__ = [
    "DEFAULT_KS",
    "PairAccuracy",
    "ranking",
    "removal_evaluation",
    "area_under_curve",
    "top_k_overlap",
    "spearman",
    "agreement",
    "top_fraction",
    "prefix_curves",
    "spread",
    "per_k_winners",
]

DEFAULT_KS = (0, 1, 2, 5, 10, 20, 30, 40, 50)


class PairAccuracy(Metric):
    r"""The comparative metric "class ``a`` versus class ``b``": on the examples
    labelled ``a`` or ``b``, the fraction whose own class scores higher than the
    other one of the pair (other classes are ignored).

    Args:
        a (int): First class.
        b (int): Second class.

    Examples::

        >>> PairAccuracy(3, 8)(model(x_test), y_test)
    """

    bounds = (0.0, 1.0)

    def __init__(self, a: int, b: int) -> None:
        if int(a) == int(b):
            raise ValueError(f"PairAccuracy needs two different classes, got {a}")
        self.a, self.b = int(a), int(b)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        if not isinstance(target, Tensor) or target.dim() != 1:
            raise ValueError("PairAccuracy expects `target` to be 1-d class labels")
        labels = target
        sel = (labels == self.a) | (labels == self.b)
        if not bool(sel.any()):
            raise ValueError(f"PairAccuracy({self.a}, {self.b}): no such example")
        out = outputs[:, sel]
        margin = out[..., self.a] - out[..., self.b]
        sign = torch.where(labels[sel] == self.a, 1.0, -1.0).to(margin.dtype)
        return ((margin * sign) > 0).to(torch.float64).mean(-1)

    def __repr__(self) -> str:
        return f"PairAccuracy(a={self.a}, b={self.b})"


def ranking(scores: Tensor, exclude: Sequence[int] = ()) -> Tensor:
    r"""Flat unit indices from the highest score to the lowest (ties broken by
    index), leaving out ``exclude``.

    Args:
        scores (Tensor): One score per unit.
        exclude (sequence of int): Units to leave out.

    Returns:
        Tensor: long, the ordering.
    """
    s = scores.detach().to(torch.float64).cpu()
    order = torch.from_numpy(
        (-s.numpy()).argsort(kind="stable")  # stable: ties keep index order
    )
    if len(exclude):
        drop = torch.zeros(len(s), dtype=torch.bool)
        drop[torch.as_tensor(list(exclude), dtype=torch.long)] = True
        order = order[~drop[order]]
    return order


def top_fraction(scores: Tensor, fraction: float) -> List[int]:
    r"""The ``round(fraction * n)`` highest-scoring units."""
    k = int(round(fraction * scores.numel()))
    return ranking(scores)[:k].tolist()


def removal_evaluation(
    model: nn.Module,
    result: ShapleyResult,
    scores: Mapping[str, Tensor],
    inputs: Tensor,
    target: Any,
    ks: Sequence[int] = DEFAULT_KS,
    metric: Optional[Callable] = None,
    random_seeds: Sequence[int] = range(10),
    exclude: Optional[Mapping[str, Sequence[int]]] = None,
    batch_size: Optional[int] = None,
) -> Dict[str, Any]:
    r"""The metric on held-out data after removing each method's top-k and bottom-k
    units, and k random units over several seeds, for every ``k``.

    Args:
        model (nn.Module): The model.
        result (ShapleyResult): Gives the layers, unit order and removal baselines
            (any Shapley run on the same layers).
        scores (dict): ``{method name: flat scores}`` (order of
            ``result.flat_values``; higher = more important).
        inputs (Tensor): Held-out inputs.
        target (Any): Held-out labels (what the metric compares outputs with).
        ks (sequence of int): Numbers of units removed (clipped to the units left
            after ``exclude``).
        metric (Callable, optional): Default: accuracy.
        random_seeds (sequence of int): One random ordering per seed.
        exclude (dict, optional): ``{method name: units}`` each method may not
            remove (the key ``"random"`` applies to random removal).
        batch_size (int, optional): Examples per forward pass.

    Returns:
        dict: ``"ks"``; ``"methods"``: ``{name: {"top": [...], "bottom": [...],
        "auc_top": float, "auc_bottom": float}}``; ``"random"``: ``{"curves":
        [[...] per seed], "mean": [...], "std": [...], "auc_mean": float,
        "auc_std": float}``.

    Examples::

        >>> ev = removal_evaluation(model, res, {"shapley": res.flat_values},
        ...                         x_test, y_test)
        >>> ev["methods"]["shapley"]["top"]
    """
    exclude = dict(exclude or {})
    n = result.n_units
    orders: Dict[str, List[Tensor]] = {}
    for name, s in scores.items():
        if s.numel() != n:
            raise ValueError(
                f"method {name!r} scored {s.numel()} units; the layers have {n}"
            )
        top = ranking(s, exclude.get(name, ()))
        orders[name] = [top, top.flip(0)]
    left = ranking(torch.zeros(n), exclude.get("random", ()))
    rand_orders = [
        left[torch.randperm(len(left), generator=torch.Generator().manual_seed(s))]
        for s in random_seeds
    ]
    m = min([len(o[0]) for o in orders.values()] + [len(left)])
    kk = sorted({min(int(k), m) for k in ks})
    all_orders = [o for pair in orders.values() for o in pair] + rand_orders
    sets = [o[:k].tolist() for o in all_orders for k in kk]
    vals = metric_after_removal(
        model, result, sets, inputs, target, metric, batch_size
    ).view(len(all_orders), len(kk))
    out: Dict[str, Any] = {"ks": kk, "methods": {}}
    for i, name in enumerate(orders):
        top, bottom = vals[2 * i], vals[2 * i + 1]
        out["methods"][name] = {
            "top": top.tolist(),
            "bottom": bottom.tolist(),
            "auc_top": area_under_curve(kk, top),
            "auc_bottom": area_under_curve(kk, bottom),
        }
    rand = vals[2 * len(orders) :]
    aucs = torch.tensor([area_under_curve(kk, r) for r in rand])
    std = rand.std(0) if len(rand) > 1 else torch.zeros(len(kk))
    out["random"] = {
        "curves": rand.tolist(),
        "mean": rand.mean(0).tolist(),
        "std": std.tolist(),
        "auc_mean": float(aucs.mean()),
        "auc_std": float(aucs.std()) if len(aucs) > 1 else 0.0,
    }
    return out


def area_under_curve(ks: Sequence[int], values: Any) -> float:
    r"""Normalized area under a removal curve: the trapezoid integral over ``k``
    divided by the range of ``k``, i.e. the average metric while removing from
    ``min(ks)`` to ``max(ks)`` units. Lower for a top-k curve means the ranking
    found the important units sooner.

    Args:
        ks (sequence of int): Increasing numbers of units removed.
        values (sequence of float or Tensor): The metric at each ``k``.

    Returns:
        float: The normalized area (the single value when ``len(ks) == 1``).
    """
    x = torch.as_tensor(list(ks), dtype=torch.float64)
    y = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(x) != len(y):
        raise ValueError(f"{len(x)} ks but {len(y)} values")
    if len(x) == 1 or float(x[-1] - x[0]) == 0:
        return float(y[0])
    return float(torch.trapezoid(y, x) / (x[-1] - x[0]))


def top_k_overlap(a: Tensor, b: Tensor, k: int) -> float:
    r"""Fraction of the top ``k`` units of scores ``a`` that are also in the top
    ``k`` of scores ``b`` (ties broken by index)."""
    ta, tb = set(ranking(a)[:k].tolist()), set(ranking(b)[:k].tolist())
    return len(ta & tb) / float(k)


def spearman(a: Tensor, b: Tensor) -> float:
    r"""Spearman rank correlation of two score vectors (average ranks for ties):
    the Pearson correlation of their ranks; ``nan`` if either is constant."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.detach().cpu().double().numpy()))
    rb = torch.from_numpy(rankdata(b.detach().cpu().double().numpy()))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def agreement(scores: Mapping[str, Tensor], k: int = 10) -> Dict[str, Any]:
    r"""Top-``k`` overlap and Spearman correlation for every pair of methods.

    Returns:
        dict: ``"methods"`` (names), ``"overlap"`` and ``"spearman"`` (square
        lists of lists, row ``i`` column ``j`` for methods ``i`` and ``j``).
    """
    names = list(scores)
    ov = [[top_k_overlap(scores[a], scores[b], k) for b in names] for a in names]
    sp = [[spearman(scores[a], scores[b]) for b in names] for a in names]
    return {"methods": names, "k": k, "overlap": ov, "spearman": sp}


def prefix_curves(
    game: Any,
    orders: Mapping[str, Sequence[int]],
    ks: Sequence[int],
) -> Dict[str, List[float]]:
    r"""The game's value after removing the first ``k`` units of each ordering,
    for every ``k`` in ``ks`` (a ``k`` beyond an ordering's length gives
    ``nan``). Identical sets (the empty set, shared prefixes) are evaluated once.

    Use a game built on held-out data with the removal baselines of the
    estimation run (``FilterShapley(...).game(x_test, target=y_test, metric=...,
    layer_baselines=...)``): the part of the model before the first removed
    layer is computed once for all sets.

    Args:
        game (UnitGame): The held-out game; its ``n_evaluations`` grows by the
            distinct non-trivial sets.
        orders (dict): ``{name: flat unit indices, most important first}``.
        ks (sequence of int): Numbers of units removed.

    Returns:
        dict: ``{name: [value at each k]}``.

    Examples::

        >>> test_game = fs.game(x_test, target=y_test, layer_baselines=baselines)
        >>> prefix_curves(test_game, {"shapley": ranking(res.flat_values)}, [0, 5])
        {'shapley': [0.9875, 0.8125]}
    """
    n = game.n_units
    index: Dict[frozenset, int] = {}
    rows: List[List[int]] = []
    where: Dict[str, List[Optional[int]]] = {}
    for name, order in orders.items():
        order = [int(u) for u in order]
        slots: List[Optional[int]] = []
        for k in ks:
            k = int(k)
            if k < 0:
                raise ValueError(f"`ks` must be non-negative, got {k}")
            if k > len(order):
                slots.append(None)
                continue
            key = frozenset(order[:k])
            if key not in index:
                index[key] = len(rows)
                rows.append(order[:k])
            slots.append(index[key])
        where[name] = slots
    keep = torch.ones(len(rows), n, dtype=torch.bool)
    for i, units in enumerate(rows):
        keep[i, units] = False
    vals = game.value(keep).tolist() if rows else []
    return {
        name: [float("nan") if i is None else vals[i] for i in slots]
        for name, slots in where.items()
    }


def spread(curves: Sequence[Sequence[float]]) -> Dict[str, List[float]]:
    r"""Median, minimum, maximum, mean and standard deviation at each position
    of several curves of equal length (``nan`` entries are ignored; a position
    with none left is ``nan``).

    Examples::

        >>> spread([[1.0, 0.5], [1.0, 0.3], [1.0, 0.4]])["median"]
        [1.0, 0.4]
    """
    t = torch.tensor([list(c) for c in curves], dtype=torch.float64)
    out: Dict[str, List[float]] = {
        key: [] for key in ("median", "min", "max", "mean", "std")
    }
    for col in t.T:
        v = col[~torch.isnan(col)]
        if v.numel() == 0:
            for key in out:
                out[key].append(float("nan"))
            continue
        out["median"].append(float(statistics.median(v.tolist())))
        out["min"].append(float(v.min()))
        out["max"].append(float(v.max()))
        out["mean"].append(float(v.mean()))
        out["std"].append(float(v.std()) if v.numel() > 1 else 0.0)
    return out


def per_k_winners(
    curves: Mapping[str, Sequence[float]], ks: Sequence[int], tol: float = 1e-9
) -> List[Dict[str, Any]]:
    r"""Which method leaves the lowest metric at each ``k``: every method within
    ``tol`` of the lowest value is a winner (ties are shown, not broken);
    ``nan`` entries (a method without a value at that ``k``) do not compete.

    Args:
        curves (dict): ``{method: [value at each k]}`` (the aggregate shown in
            the tables, e.g. the median over seeds).
        ks (sequence of int): The ``k`` of each position.
        tol (float): Values this close to the lowest one tie with it.

    Returns:
        list of dict: ``{"k", "value", "winners"}`` per ``k`` (``winners`` in the
        order of ``curves``).

    Examples::

        >>> w = per_k_winners({"a": [0.5, 0.2], "b": [0.4, 0.2]}, [1, 2])
        >>> [x["winners"] for x in w]
        [['b'], ['a', 'b']]
    """
    out = []
    for i, k in enumerate(ks):
        vals = {
            m: float(c[i])
            for m, c in curves.items()
            if i < len(c) and c[i] == c[i]  # not nan
        }
        if not vals:
            out.append({"k": int(k), "value": float("nan"), "winners": []})
            continue
        best = min(vals.values())
        out.append(
            {
                "k": int(k),
                "value": best,
                "winners": [m for m, v in vals.items() if v <= best + tol],
            }
        )
    return out
