r"""How the benchmark scores an estimator's running top-k: its epsilon-precision
against reference values (:func:`precision`), recorded after every round
(:class:`Recorder`), and the evaluations until the precision is first reached
(:func:`first_reached`) and until it stays (:func:`stays_reached`)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

__all__ = [
    "EPS",
    "K",
    "KS",
    "LEVELS",
    "precision",
    "Recorder",
    "first_reached",
    "stays_reached",
]

EPS = 0.005  # tolerance of the epsilon-precision on the digits CNN (accuracy units)
K = 10
KS = (3, 10)
LEVELS = (0.9, 1.0)  # precisions reported

#: A trajectory: ``(evaluations, precision)`` at every point where it changed.
Trajectory = List[Tuple[int, float]]


def precision(
    values: torch.Tensor, reference: torch.Tensor, k: int = K, eps: float = EPS
) -> float:
    r"""Fraction of the estimated top-k whose reference value is within ``eps`` of
    the reference k-th value or above it."""
    kth = torch.topk(reference, k).values[-1]
    top = torch.topk(values, k).indices
    return float((reference[top] >= kth - eps).double().mean())


class Recorder:
    r"""Collects ``(evaluations, precision at each k)`` of a run's running estimate
    against its target's reference values (only the points where a precision
    changes, and the last one: enough for first and sustained precision)."""

    def __init__(
        self, reference: torch.Tensor, ks: Sequence[int], eps: float, offset: int = 0
    ) -> None:
        self.reference, self.ks, self.eps = reference, tuple(ks), eps
        self.offset = offset
        self.points: List[Tuple[int, Tuple[float, ...]]] = []
        self.last: Optional[Tuple[int, Tuple[float, ...]]] = None

    def __call__(self, n_evaluations: int, values: torch.Tensor) -> None:
        prec = tuple(precision(values, self.reference, k, self.eps) for k in self.ks)
        point = (int(n_evaluations) + self.offset, prec)
        if not self.points or self.points[-1][1] != prec:
            self.points.append(point)
        self.last = point

    def trajectory(self, k: int) -> Trajectory:
        i = self.ks.index(k)
        pts = list(self.points)
        if self.last is not None and self.last is not pts[-1]:
            pts.append(self.last)
        return [(e, p[i]) for e, p in pts]


def first_reached(traj: Sequence[Sequence[float]], level: float) -> Optional[int]:
    r"""Evaluations at the first estimate with precision >= ``level``."""
    return next((int(e) for e, p in traj if p >= level), None)


def stays_reached(traj: Sequence[Sequence[float]], level: float) -> Optional[int]:
    r"""Evaluations after which every later estimate (to the end of the run) has
    precision >= ``level``; None when the last one is below it."""
    if not traj or traj[-1][1] < level:
        return None
    i = len(traj) - 1
    while i > 0 and traj[i - 1][1] >= level:
        i -= 1
    return int(traj[i][0])
