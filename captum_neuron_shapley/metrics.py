r"""Dataset-level metrics for the unit game.

A metric is any ``callable(outputs, target) -> float`` where higher is better.
``outputs`` are the model outputs for the evaluation examples (first dimension is
the example) and ``target`` is whatever was passed as ``target`` to ``attribute``
(restricted to the same examples when it is per-example).

The metrics shipped here additionally implement ``batched(outputs, target)``, which
scores ``M`` coalitions at once from outputs of shape ``(M, N, ...)`` and returns a
tensor of shape ``(M,)`` without a host synchronisation per coalition, and expose
``bounds``: the interval the metric lives in (``None`` when unbounded), which the
strict confidence bounds use as the true range of a marginal contribution.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Metric",
    "Accuracy",
    "ClassRecall",
    "NegativeCrossEntropy",
    "SubgroupAccuracy",
    "accuracy",
    "metric_bounds",
]


class Metric:
    r"""Base class of the shipped metrics: ``batched`` scores many coalitions."""

    bounds: Optional[Tuple[float, float]] = None

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        raise NotImplementedError

    def __call__(self, outputs: Tensor, target: Any) -> float:
        return float(self.batched(outputs.unsqueeze(0), target)[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _labels(target: Any, name: str) -> Tensor:
    if not isinstance(target, Tensor) or target.dim() != 1:
        raise ValueError(
            f"{name} expects `target` to be a 1-d tensor of class labels, got "
            f"{type(target).__name__}"
            + (f" of shape {tuple(target.shape)}" if isinstance(target, Tensor) else "")
        )
    return target


class Accuracy(Metric):
    r"""Top-1 accuracy: fraction of examples whose arg-max output equals the label."""

    bounds = (0.0, 1.0)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        labels = _labels(target, "Accuracy")
        return (outputs.argmax(-1) == labels).to(torch.float64).mean(-1)


class ClassRecall(Metric):
    r"""Recall of one class: accuracy on the examples whose label is ``cls``.

    Args:
        cls (int): The class whose recall is measured.
    """

    bounds = (0.0, 1.0)

    def __init__(self, cls: int) -> None:
        self.cls = int(cls)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        labels = _labels(target, "ClassRecall")
        sel = labels == self.cls
        if not bool(sel.any()):
            raise ValueError(
                f"ClassRecall({self.cls}): no example of class {self.cls} in `target`"
            )
        return (outputs[:, sel].argmax(-1) == self.cls).to(torch.float64).mean(-1)

    def __repr__(self) -> str:
        return f"ClassRecall(cls={self.cls})"


class NegativeCrossEntropy(Metric):
    r"""Minus the mean cross-entropy of the outputs (logits) against the labels."""

    bounds = None

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        labels = _labels(target, "NegativeCrossEntropy")
        logp = F.log_softmax(outputs.to(torch.float64), dim=-1)
        idx = labels.view(1, -1, 1).expand(logp.shape[0], -1, 1)
        return logp.gather(-1, idx).squeeze(-1).mean(-1)


class SubgroupAccuracy(Metric):
    r"""Accuracy on a subgroup of the examples.

    ``target`` must be a pair ``(labels, in_group)`` of per-example tensors, the
    second boolean, so that the subgroup follows the examples when the game
    evaluates a random subset of them.
    """

    bounds = (0.0, 1.0)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        if not (isinstance(target, (tuple, list)) and len(target) == 2):
            raise ValueError(
                "SubgroupAccuracy expects `target` to be a pair (labels, in_group)"
            )
        labels, group = _labels(target[0], "SubgroupAccuracy"), target[1].bool()
        if not bool(group.any()):
            raise ValueError("SubgroupAccuracy: the subgroup `in_group` is empty")
        hit = outputs[:, group].argmax(-1) == labels[group]
        return hit.to(torch.float64).mean(-1)


accuracy = Accuracy()


def metric_bounds(metric: Callable) -> Optional[Tuple[float, float]]:
    r"""The ``bounds`` attribute of a metric, or ``None`` when it declares none."""
    bounds = getattr(metric, "bounds", None)
    if bounds is None:
        return None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"metric.bounds must satisfy low < high, got {bounds}")
    return lo, hi
