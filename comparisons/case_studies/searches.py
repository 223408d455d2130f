r"""The greedy set searches a case study runs besides Shapley's own removal set,
and the judging of every ranking (:func:`judge`):

- the oracle (:func:`oracle`): the greedy search on the *test* split itself
  over every candidate unit: not a method (it uses the test labels) but how far
  removing ``k`` units can move the test metric at all;
- ``"<method> + greedy"`` (:func:`refine_gradient`): the same greedy search as
  Shapley's removal set, over the best gradient ranking's own candidates, to
  tell what the Shapley values contribute from what the search does.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from captum_neuron_shapley import FilterShapley, ShapleyResult
from captum_neuron_shapley.refine import greedy_removal
from torch import nn

from ..cost import Cost, count_cost
from .data import Context
from .options import ORACLE
from .protocol import best_gradient, Judge, removal_curves, units, winners
from .summary import Judged

__all__ = ["GameData", "same_game", "oracle", "refine_gradient", "judge"]

#: The data of a game: ``(inputs, target, metric)``.
GameData = Tuple[Any, Any, Callable]


def same_game(model: nn.Module, res: ShapleyResult, data: GameData) -> Any:
    r"""The game ``res`` was estimated on (its layers and removal baselines), on
    the data ``(inputs, target, metric)``."""
    x, t, metric = data
    layers = [model.get_submodule(lay.name) for lay in res.layers]
    return FilterShapley(model, layers).game(
        x,
        target=t,
        metric=metric,
        layer_baselines=tuple(lay.baseline for lay in res.layers),
        perturbations_per_eval=8,
    )


def _search(
    model: nn.Module,
    res: ShapleyResult,
    data: GameData,
    candidates: List[int],
    k: int,
    pool: int,
    goal: str,
) -> Tuple[List[int], Cost]:
    with count_cost(model) as c:
        game = same_game(model, res, data)
        found, _ = greedy_removal(game, candidates, k, pool, goal=goal)
    c.model_evaluations = game.n_evaluations
    return list(found), c


def oracle(
    ctx: Context,
    model: nn.Module,
    res: ShapleyResult,
    test_game: GameData,
    pool: List[int],
    goal: str,
) -> Tuple[List[int], Cost]:
    r"""The greedy search on the test split over every candidate unit."""
    found, c = _search(model, res, test_game, pool, ctx.opts.k, len(pool), goal)
    ctx.log(f"  {ORACLE}: {c.model_evaluations} evaluations, {c.wall_s:.0f}s")
    return found, c


def refine_gradient(
    ctx: Context,
    model: nn.Module,
    res: ShapleyResult,
    game: GameData,
    order: List[int],
    name: str,
    goal: str,
) -> Tuple[List[int], Cost]:
    r"""The same greedy search as the Shapley removal set, over the candidates
    of one gradient ranking (``order``)."""
    opts = ctx.opts
    found, c = _search(model, res, game, order, opts.k, opts.pool, goal)
    ctx.log(f"  {name}: {c.model_evaluations} evaluations, {c.wall_s:.0f}s")
    return found, c


def judge(
    ctx: Context,
    j: Judge,
    model: nn.Module,
    res: ShapleyResult,
    ks: List[int],
    orders: Dict[str, List[int]],
    random: List[List[int]],
    costs: Dict[str, Cost],
    game: Optional[GameData] = None,
    goal: str = "lower",
    room: Optional[Tuple[GameData, List[int]]] = None,
) -> Judged:
    r"""Curves and winners of every ranking on the held-out split; with
    ``room``, the oracle first, and with ``game``, the best gradient ranking's
    greedy search after (both added to ``orders`` and ``costs``).

    Args:
        ctx (Context): Options, log, data.
        j (Judge): The metrics.
        model (nn.Module): The model.
        res (ShapleyResult): Gives the layers, unit order and baselines.
        ks (list of int): Points of the curves.
        orders (dict): ``{method: flat units}``.
        random (list): Random orders.
        costs (dict): ``{method: Cost}``, extended by the searches.
        game (tuple, optional): The validation game's data, for the gradient
            ranking's greedy search.
        goal (str): What the searches do to the game's metric.
        room (tuple, optional): ``(test game data, candidates)`` of the oracle.
    """
    opts = ctx.opts
    if room is not None and opts.oracle:
        orders[ORACLE], costs[ORACLE] = oracle(ctx, model, res, room[0], room[1], goal)
    curves, rnd, before = removal_curves(model, res, j, orders, random, ks)
    wm = j.winner_metric or j.primary
    if game is not None and opts.refine_gradient:
        best = best_gradient(curves, wm, j.goal, ks.index(opts.k))
        name = f"{best} + greedy"
        orders[name], costs[name] = refine_gradient(
            ctx, model, res, game, orders[best], name, goal
        )
        extra, _, _ = removal_curves(model, res, j, {name: orders[name]}, [], ks)
        curves.update(extra)
    return Judged(
        curves=curves,
        before=before,
        random=rnd,
        orders={name: units(res, o) for name, o in orders.items()},
        random_orders=[units(res, o) for o in random],
        winner_metric=wm,
        winners=winners(curves, wm, j.goal, ks),
        winners_primary=winners(curves, j.primary, j.goal, ks),
        cost_metric=j.cost_metric,
        primary=j.primary,
        goal=j.goal,
        metrics=list(j.metrics),
    )
