r"""How the benchmark scores an estimator's running top-k: its epsilon-precision
against reference values (:func:`precision`), recorded after every round with
what the run had cost by then (:class:`Recorder`), and the cost until the
precision is first reached (:func:`first_reached`), until it stays
(:func:`stays_reached`) and the precision at a given cost (:func:`at_cost`).

Cost is counted on four axes (:data:`AXES`), as users pay it: coalitions
evaluated, examples pushed through the model (an example evaluated for ``M``
coalitions counts ``M`` times), and the seconds spent since the run started,
both as CPU time of the (single-threaded) process and as wall time. On a
machine shared with other jobs the CPU time is the steadier of the two; both
include the run's setup.
"""

from __future__ import annotations

import time
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "EPS",
    "K",
    "KS",
    "LEVELS",
    "AXES",
    "precision",
    "Recorder",
    "Clock",
    "first_reached",
    "stays_reached",
    "at_cost",
]

EPS = 0.005  # tolerance of the epsilon-precision on the digits CNN (accuracy units)
K = 10
KS = (3, 10)
LEVELS = (0.9, 1.0)  # precisions reported

#: The cost axes of a trajectory point, in order (the precision comes last).
AXES = ("evaluations", "examples", "cpu_s", "wall_s")

#: A trajectory: ``(evaluations, examples, cpu_s, wall_s, precision)`` at every
#: point where the precision changed, and the last one.
Point = Tuple[float, float, float, float, float]
Trajectory = List[Point]


def precision(
    values: torch.Tensor, reference: torch.Tensor, k: int = K, eps: float = EPS
) -> float:
    r"""Fraction of the estimated top-k whose reference value is within ``eps`` of
    the reference k-th value or above it."""
    kth = torch.topk(reference, k).values[-1]
    top = torch.topk(values, k).indices
    return float((reference[top] >= kth - eps).double().mean())


class Clock:
    r"""CPU time of this process and wall time since :meth:`start`."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def read(self) -> Tuple[float, float]:
        return time.process_time() - self.cpu0, time.perf_counter() - self.wall0


class Recorder:
    r"""Collects the precision at each k of a run's running estimate against its
    target's reference values, with the evaluations, examples and seconds spent
    by then (only the points where a precision changes, and the last one:
    enough for first and sustained precision and the precision at any cost).

    Args:
        reference (Tensor): The reference values of the run's target.
        ks (sequence of int): The ``k`` scored.
        eps (float): The precision's tolerance.
        offset (tuple, optional): ``(evaluations, examples)`` charged before the
            run (a gradient pass, counted at its measured cost in forward
            evaluations).
    """

    def __init__(
        self,
        reference: torch.Tensor,
        ks: Sequence[int],
        eps: float,
        offset: Tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.reference, self.ks, self.eps = reference, tuple(ks), eps
        self.offset = offset
        self.clock = Clock()
        self.points: List[Tuple[Tuple[float, ...], Tuple[float, ...]]] = []
        self.last: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None

    def start(self) -> None:
        r"""Start the clocks (the run's seconds count from here)."""
        self.clock.start()

    def __call__(
        self, n_evaluations: float, n_examples: float, values: torch.Tensor
    ) -> None:
        cpu, wall = self.clock.read()
        prec = tuple(precision(values, self.reference, k, self.eps) for k in self.ks)
        cost = (
            float(n_evaluations) + self.offset[0],
            float(n_examples) + self.offset[1],
            cpu,
            wall,
        )
        point = (cost, prec)
        if not self.points or self.points[-1][1] != prec:
            self.points.append(point)
        self.last = point

    def trajectory(self, k: int) -> Trajectory:
        i = self.ks.index(k)
        pts = list(self.points)
        if self.last is not None and self.last is not pts[-1]:
            pts.append(self.last)
        return [(c[0], c[1], c[2], c[3], p[i]) for c, p in pts]


def _axis(axis: Union[int, str]) -> int:
    r"""A point's column: an index, or a name of :data:`AXES`."""
    if isinstance(axis, int):
        return axis
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    return AXES.index(axis)


def first_reached(
    traj: Sequence[Sequence[float]], level: float, axis: Union[int, str] = "evaluations"
) -> Optional[float]:
    r"""Cost (on ``axis``) at the first estimate with precision >= ``level``."""
    a = _axis(axis)
    return next((float(p[a]) for p in traj if p[-1] >= level), None)


def stays_reached(
    traj: Sequence[Sequence[float]], level: float, axis: Union[int, str] = "evaluations"
) -> Optional[float]:
    r"""Cost (on ``axis``) after which every later estimate (to the end of the
    run) has precision >= ``level``; None when the last one is below it."""
    if not traj or traj[-1][-1] < level:
        return None
    i = len(traj) - 1
    while i > 0 and traj[i - 1][-1] >= level:
        i -= 1
    return float(traj[i][_axis(axis)])


def at_cost(
    traj: Sequence[Sequence[float]], cost: float, axis: Union[int, str] = "examples"
) -> float:
    r"""Precision of the last estimate made at a cost (on ``axis``) of at most
    ``cost``; 0 before the first estimate (nothing to report yet). A run that
    stopped earlier keeps its final estimate."""
    a = _axis(axis)
    out = 0.0
    for p in traj:
        if p[a] > cost:
            break
        out = float(p[-1])
    return out
