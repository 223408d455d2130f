r"""Budgets of the report: evaluation budgets scaled to the number of units (never
zero), the rule that decides whether an exhaustive search is affordable, and the
wall-clock plan of ``--quick``, which splits a total time limit between the
questions and, within a question, between the methods.

Every method of the report is either cheap and fixed in cost (activation, the
point-mass gradient methods on a few examples), anytime (Shapley with
``max_time``; the gradient methods average over as many examples as their share
of the time allows), or a fixed number of model evaluations (leave-one-out,
greedy searches, removal curves) whose cost is estimated from a timed evaluation
before it runs and which is skipped, with the reason recorded, when it does not
fit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = [
    "shapley_budget",
    "greedy_evaluations",
    "TimePlan",
    "Stage",
    "affordable_pool",
    "thin_ks",
]


def shapley_budget(n_units: int, quick: bool, main_question: bool) -> int:
    r"""``max_evaluations`` of one Shapley run: a floor, or a number of
    evaluations per unit when that is larger, so that the budget grows with the
    layer size and is never zero.

    ============  =====================  ======================
    mode          overall question       other questions
    ============  =====================  ======================
    default       ``max(6000, 40 n)``    ``max(3000, 20 n)``
    ``--quick``   ``max(600, 4 n)``      ``max(300, 2 n)``
    ============  =====================  ======================

    Args:
        n_units (int): Units of the game (positive).
        quick (bool): ``--quick``.
        main_question (bool): The overall metric (the larger budget).

    Returns:
        int: A positive number of evaluations.

    Examples::

        >>> shapley_budget(160, quick=False, main_question=True)
        6400
        >>> shapley_budget(1024, quick=True, main_question=False)
        2048
    """
    if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 1:
        raise ValueError(f"`n_units` must be a positive integer, got {n_units!r}")
    floor, per_unit = {
        (False, True): (6000, 40),
        (False, False): (3000, 20),
        (True, True): (600, 4),
        (True, False): (300, 2),
    }[(bool(quick), bool(main_question))]
    return max(floor, per_unit * n_units)


def greedy_evaluations(k: int, pool: int, start: int = 0) -> int:
    r"""Coalitions a greedy search over ``pool`` candidates evaluates to go from
    ``start`` to ``k`` removed units: ``sum_{j=start}^{k-1} (pool - j)``.

    Examples::

        >>> greedy_evaluations(10, 60)   # refine="greedy", top_k=10, pool 60
        555
        >>> greedy_evaluations(20, 160)  # a full greedy search for k = 1..20
        3010
    """
    if not 0 <= start <= k <= pool:
        raise ValueError(f"need 0 <= start <= k <= pool, got {start}, {k}, {pool}")
    return sum(pool - j for j in range(start, k))


def affordable_pool(
    k: int, pool: int, seconds_per_evaluation: float, seconds: Optional[float]
) -> Optional[int]:
    r"""The largest pool in ``[2k, pool]`` whose greedy search for ``k`` units fits
    in ``seconds``, ``pool`` itself without a time limit, or None when not even a
    pool of ``2k`` fits (a pool of ``k`` only reorders the top ``k``).

    Examples::

        >>> affordable_pool(10, 60, 0.01, None)
        60
        >>> affordable_pool(10, 60, 0.1, 30.0)  # 300 evaluations fit: pool 34
        34
        >>> affordable_pool(10, 60, 1.0, 30.0) is None
        True
    """
    if seconds is None:
        return pool
    lo = min(2 * k, pool)
    best = None
    for p in range(lo, pool + 1):
        if greedy_evaluations(k, p) * seconds_per_evaluation <= seconds:
            best = p
        else:
            break
    return best


def thin_ks(
    k: int,
    K: int,
    n_orders: int,
    seconds_per_set: float,
    seconds: Optional[float],
) -> List[int]:
    r"""The removal sizes at which curves are measured: every ``1..K`` when that
    fits in ``seconds`` (``n_orders`` orderings, one evaluation per ordering and
    size), else the densest of a few thinner grids that fits, down to
    ``[k, K]``.

    Examples::

        >>> thin_ks(10, 20, 12, 0.001, None)[:3], len(thin_ks(10, 20, 12, 0.001, None))
        ([1, 2, 3], 20)
        >>> thin_ks(10, 20, 10, 0.2, 30.0)  # 20 sizes x 10 orders: 40 s
        [1, 2, 3, 5, 7, 10, 15, 20]
    """
    grids = [
        list(range(1, K + 1)),
        sorted({1, 2, 3, 5, 7, k, (k + K) // 2, K}),
        sorted({1, 2, 5, k, K}),
        sorted({1, k, K}),
        sorted({k, K}),
    ]
    grids = [[x for x in g if 1 <= x <= K] for g in grids]
    if seconds is None:
        return grids[0]
    for g in grids:
        if len(g) * n_orders * seconds_per_set <= seconds:
            return g
    return grids[-1]


@dataclass
class Stage:
    r"""One step of a question (a method, or the removal curves) and its weight
    in the question's time."""

    name: str
    weight: float


@dataclass
class TimePlan:
    r"""A wall-clock budget, split as it is spent.

    ``None`` as ``total_s`` means no limit: every ``seconds_for`` is ``None``.
    Otherwise each question gets a fraction of the time left when it starts, and
    each stage of a question the share of the question's time left that its
    weight gives among the stages not yet run, so that time a stage leaves
    unused goes to the stages after it.

    Args:
        total_s (float, optional): Seconds for all questions.
        reserve_s (float): Seconds kept back for figures and writing files.

    Examples::

        >>> plan = TimePlan(120.0)
        >>> q = plan.question(0.5, [Stage("shapley", 3), Stage("curves", 1)])
        >>> s = q.seconds_for("shapley")  # about 3/4 of 60 s
    """

    total_s: Optional[float] = None
    reserve_s: float = 5.0
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> Optional[float]:
        if self.total_s is None:
            return None
        used = time.perf_counter() - self.started
        return max(0.0, self.total_s - self.reserve_s - used)

    def question(self, fraction: float, stages: Sequence[Stage]) -> "QuestionPlan":
        left = self.left()
        return QuestionPlan(None if left is None else fraction * left, list(stages))


@dataclass
class QuestionPlan:
    r"""The time of one question, handed out stage by stage."""

    total_s: Optional[float]
    stages: List[Stage]
    started: float = field(default_factory=time.perf_counter)
    given: Dict[str, Optional[float]] = field(default_factory=dict)

    def left(self) -> Optional[float]:
        if self.total_s is None:
            return None
        return max(0.0, self.total_s - (time.perf_counter() - self.started))

    def seconds_for(self, name: str) -> Optional[float]:
        r"""Seconds for stage ``name`` (its weight's share of the time left among
        the stages not yet given time); ``None`` without a limit."""
        names = [s.name for s in self.stages]
        if name not in names:
            raise ValueError(f"unknown stage {name!r}; stages: {names}")
        left = self.left()
        if left is None:
            self.given[name] = None
            return None
        rest = [s for s in self.stages if s.name not in self.given]
        w = {s.name: s.weight for s in rest}
        total = sum(w.values()) or 1.0
        share = left * w.get(name, 0.0) / total
        self.given[name] = share
        return share


def per_example_seconds(wall_s: float, examples: int) -> float:
    r"""``wall_s / examples`` (``inf`` for no examples)."""
    return wall_s / examples if examples > 0 else math.inf
