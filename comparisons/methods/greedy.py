r"""Greedy removal-set searches on the same game as the Shapley runs
(:func:`greedy_sets`): over the top of a Shapley ranking (exactly what
``refine="greedy"`` returns, then continued past ``k`` over the same pool), or
over every unit (the full greedy search: what a greedy removal set can reach at
most, the reference the other methods are measured against)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from captum_neuron_shapley.game import UnitGame
from captum_neuron_shapley.refine import greedy_removal
from torch import Tensor

from ..budget import greedy_evaluations

__all__ = ["GreedySearch", "greedy_sets"]


@dataclass
class GreedySearch:
    r"""What one greedy search found and cost.

    Attributes:
        order (list of int): Flat units in removal order (up to ``K``).
        curve (list of float): The game's value after removing the first ``j``.
        evaluations (int): Coalitions of the first ``k`` steps.
        continuation_evaluations (int): Coalitions of the steps past ``k``.
        wall_s (float): Seconds of the first ``k`` steps.
        continuation_wall_s (float): Seconds of the steps past ``k``.
        pool (int): Candidates searched.
        continued_to (int): The set's final size.
        forward_calls (int): Forward passes of the first ``k`` steps.
        forward_examples (int): Examples pushed through them.
    """

    order: List[int]
    curve: List[float]
    evaluations: int
    pool: int
    continued_to: int
    wall_s: float = 0.0
    continuation_evaluations: int = 0
    continuation_wall_s: float = 0.0
    forward_calls: int = 0
    forward_examples: int = 0


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
) -> GreedySearch:
    r"""A greedy removal search on ``game`` over the first ``pool`` units of
    ``order``: first ``k`` steps (exactly what ``refine="greedy"`` with
    ``top_k=k`` and ``GreedyRefine(pool)`` returns, as the greedy search with a
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
        GreedySearch: The set, its curve and its cost.
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
    out = GreedySearch(
        order=list(units),
        curve=curve.tolist(),
        evaluations=ev,
        pool=pool,
        continued_to=k,
        wall_s=wall,
        forward_calls=game.n_forward - passes,
        forward_examples=ev * game.n_examples,
    )
    need = greedy_evaluations(K, pool, start=k)
    if K > k and (
        continue_seconds is None or need * seconds_per_eval <= continue_seconds
    ):
        rest = [u for u in order[:pool] if u not in set(units)]
        view: Any = _AfterRemoving(game, units, float(curve[-1]))
        before = game.n_evaluations
        t0 = time.perf_counter()
        more, curve2 = greedy_removal(view, rest, K - k, pool_size=len(rest))
        out.continuation_wall_s = time.perf_counter() - t0
        out.continuation_evaluations = game.n_evaluations - before
        out.order += list(more)
        out.curve += curve2.tolist()[1:]
        out.continued_to = K
    return out
