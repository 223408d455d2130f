r"""Dataset-level metrics for the unit game.

A metric is any ``callable(outputs, target) -> float`` where higher is better.
``outputs`` are the model outputs for the evaluation examples (first dimension is
the example) and ``target`` is whatever was passed as ``target`` to ``attribute``
(restricted to the same examples when it is per-example).

Without a ``metric``, ``attribute`` picks one from the form of ``target``
(:func:`default_metric`), giving each of Captum's target forms a dataset-level
meaning: per-example labels score :class:`Accuracy`; an output index, the same
for every example, or per-example output indices score :class:`MeanOutput`.

The metrics shipped here additionally implement ``batched(outputs, target)``, which
scores ``M`` coalitions at once from outputs of shape ``(M, N, ...)`` and returns a
tensor of shape ``(M,)`` without a host synchronisation per coalition, and expose
``bounds``: the interval the metric lives in (``None`` when unbounded), which the
strict confidence bounds use as the true range of a marginal contribution.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from captum._utils.common import _expand_target, _select_targets
from torch import Tensor

__all__ = [
    "Metric",
    "Accuracy",
    "ClassRecall",
    "MeanOutput",
    "NegativeCrossEntropy",
    "SubgroupAccuracy",
    "accuracy",
    "default_metric",
    "metric_bounds",
]


class Metric:
    r"""Base class of the shipped metrics: ``batched`` scores many coalitions.

    Attributes:
        bounds (tuple, optional): The interval the metric lives in (None:
            unbounded).
        decomposable (bool): Whether the metric of a set of examples is the mean
            of per-example terms (accuracy, cross-entropy, a mean output). Then
            its mean over random batches is its value on the whole set, and so
            are the Shapley values (they are linear in the game): permutation
            chains may each be evaluated on a random batch (see
            :class:`~captum_neuron_shapley.sampler.PermutationSampler`). Ratios
            such as a class's recall or a subgroup's accuracy are not.
    """

    bounds: Optional[Tuple[float, float]] = None
    decomposable: bool = False

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

    decomposable = True
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
        self.cls: int = int(cls)

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

    decomposable = True
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


class MeanOutput(Metric):
    r"""The mean, over the evaluation examples, of the model output that a Captum
    target selects (as Captum's attribution methods select it):

    - ``None``: the output itself, which must be one value per example;
    - an int or a tuple of ints: the same output index for every example, such
      as the logit of one class (a tuple indexes the dimensions after the
      batch dimension; the mean runs over what it leaves as well);
    - a tensor with one index per example, or a list of per-example ints or
      tuples: each example's own output, such as its true-class logit.

    Per-example targets follow the examples when the game evaluates a subset.
    Unbounded (the confidence bounds use the observed range of marginals).
    """

    decomposable = True
    bounds = None

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        m, n = outputs.shape[0], outputs.shape[1]
        flat = outputs.reshape(m * n, *outputs.shape[2:])
        if target is None:
            if flat[0].numel() != 1:
                raise ValueError(
                    "MeanOutput without a `target` needs one output value per "
                    f"example, got outputs of shape {tuple(outputs.shape[1:])}"
                )
            selected = flat
        else:
            try:
                selected = _select_targets(flat, _expand_target(target, m))
            except (AssertionError, IndexError, RuntimeError) as err:
                raise ValueError(
                    f"MeanOutput: `target` cannot select from model outputs of "
                    f"shape {tuple(outputs.shape[1:])}: {err}"
                ) from None
        return selected.reshape(m, -1).to(torch.float64).mean(-1)


accuracy = Accuracy()


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def default_metric(target: Any, n: int, device: torch.device) -> Tuple[Any, Metric]:
    r"""The metric ``attribute`` uses without a ``metric``, and the target it
    reads, from the form of a Captum ``target`` (:data:`captum._utils.typing.
    TargetType`) over ``n`` evaluation examples:

    - a tensor with one entry per example, or a list of ``n`` ints: class
      labels, scored by :class:`Accuracy` (the list becomes a tensor);
    - an int, a tuple of ints or a one-element integer tensor (the same index
      for every example): :class:`MeanOutput` of that output;
    - a list of ``n`` tuples (per-example indices into a multi-dimensional
      output): :class:`MeanOutput` of each example's indexed output;
    - ``None``: :class:`MeanOutput` of the output, which must then be one value
      per example.

    Raises a ``ValueError`` for anything else (pass a ``metric`` for other
    targets, such as the ``(labels, in_group)`` pair of
    :class:`SubgroupAccuracy`).
    """
    if target is None:
        return target, MeanOutput()
    if _is_index(target):  # also a NumPy integer
        return int(target), MeanOutput()
    if isinstance(target, tuple) and target and all(map(_is_index, target)):
        return tuple(map(int, target)), MeanOutput()
    if isinstance(target, Tensor):
        if target.dim() == 1 and target.shape[0] == n:
            return target, accuracy
        if target.numel() == 1 and not target.is_floating_point():
            return int(target.item()), MeanOutput()
    if isinstance(target, list) and target:
        if len(target) != n:
            raise ValueError(
                f"`target` has {len(target)} entries but `inputs` has {n} examples"
            )
        if all(map(_is_index, target)):
            return torch.tensor([int(t) for t in target], device=device), accuracy
        if all(isinstance(t, tuple) and all(map(_is_index, t)) for t in target):
            return [tuple(map(int, t)) for t in target], MeanOutput()
    raise ValueError(
        "`target` must be one of Captum's target forms for the default metric: "
        "a tensor or list of per-example labels (accuracy), an int or tuple of "
        "ints (the mean of that output), a list of per-example tuples (the mean "
        "of each example's output) or None (the mean output); got "
        f"{type(target).__name__}. Pass `metric` to score other targets"
    )


def metric_bounds(metric: Callable) -> Optional[Tuple[float, float]]:
    r"""The ``bounds`` attribute of a metric, or ``None`` when it declares none."""
    bounds = getattr(metric, "bounds", None)
    if bounds is None:
        return None
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"metric.bounds must satisfy low < high, got {bounds}")
    return lo, hi
