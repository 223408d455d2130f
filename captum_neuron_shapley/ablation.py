r"""Removing units from a model and measuring what happens (ablation checks)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .game import UnitGame, model_guard
from .metrics import accuracy
from .removal import ablate
from .result import ShapleyResult

__all__ = ["remove_units", "metric_after_removal", "removal_curve"]


def _keep_mask(result: ShapleyResult, units: Sequence[int]) -> Tensor:
    keep = torch.ones(1, result.n_units, dtype=torch.bool)
    idx = torch.as_tensor(list(units), dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= result.n_units):
        raise ValueError(
            f"`units` must be flat unit indices in [0, {result.n_units}), got "
            f"{idx.tolist()}"
        )
    keep[0, idx] = False
    return keep


@contextlib.contextmanager
def remove_units(
    model: nn.Module, result: ShapleyResult, units: Sequence[int]
) -> Iterator[nn.Module]:
    r"""Temporarily remove units of ``model`` (replaced by the baselines used to
    estimate ``result``) inside a ``with`` block; hooks are removed on exit.

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the layers (by name), units and baselines.
        units (sequence of int): Flat unit indices to remove (as in
            ``result.flat_values``).

    Examples::

        >>> top = result.flat_values.argsort(descending=True)[:10]
        >>> with remove_units(model, result, top):
        ...     acc = (model(x_test).argmax(1) == y_test).float().mean()
    """
    layer_units = [lay.to_units(model) for lay in result.layers]
    offsets = [0]
    for u in layer_units:
        offsets.append(offsets[-1] + u.n_units)
    keep = _keep_mask(result, units)
    device = next(iter(model.parameters()), torch.zeros(())).device
    keep_parts = [keep[:, a:b].to(device) for a, b in zip(offsets[:-1], offsets[1:])]
    for u in layer_units:
        u.groups = u.groups.to(device)
    with ablate(layer_units, keep_parts):
        yield model


def metric_after_removal(
    model: nn.Module,
    result: ShapleyResult,
    units_list: Sequence[Sequence[int]],
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target: Any,
    metric: Optional[Callable] = None,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""The metric on ``(inputs, target)`` after removing each set of units.

    Args:
        units_list (sequence of sequences of int): One set of flat unit indices per
            evaluation (an empty set measures the intact model).

    Returns:
        Tensor: float64, one value per set.
    """
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    layer_units = [lay.to_units(model) for lay in result.layers]
    keep = torch.cat([_keep_mask(result, u) for u in units_list])
    with model_guard(model):
        device = xs[0].device
        for u in layer_units:
            u.groups, u.baseline = u.groups.to(device), u.baseline.to(device)
        game = UnitGame(
            model,
            layer_units,
            xs,
            target,
            metric or accuracy,
            full_outputs=torch.empty(0),
            perturbations_per_eval=1,
            batch_size=batch_size,
        )
        return game.score(game.outputs(keep), None)


def removal_curve(
    model: nn.Module,
    result: ShapleyResult,
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target: Any,
    ks: Sequence[int] = (0, 1, 2, 5, 10, 20),
    order: Union[str, Tensor] = "top",
    metric: Optional[Callable] = None,
    seed: int = 0,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Metric after removing the first ``k`` units of an ordering, for each ``k``.

    Args:
        order (str or Tensor): ``"top"`` (highest values first), ``"bottom"``
            (lowest first), ``"random"`` (a random order from ``seed``) or a tensor
            of flat unit indices.

    Returns:
        Tensor: float64 of shape ``(len(ks),)``.
    """
    if isinstance(order, str):
        if order == "top":
            order = torch.argsort(result.flat_values, descending=True)
        elif order == "bottom":
            order = torch.argsort(result.flat_values)
        elif order == "random":
            g = torch.Generator().manual_seed(seed)
            order = torch.randperm(result.n_units, generator=g)
        else:
            raise ValueError(
                f"`order` must be 'top', 'bottom', 'random' or a Tensor, got {order!r}"
            )
    sets = [order[:k].tolist() for k in ks]
    return metric_after_removal(model, result, sets, inputs, target, metric, batch_size)
