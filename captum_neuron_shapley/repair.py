r"""Exporting a repaired model: removals baked into the weights, no hooks.

:func:`export_repaired` returns a *copy* of the model whose removed units emit their
replacement value by construction, so that it can be saved as a ``state_dict`` and
loaded into the original class.

When the export is exact
------------------------
A removed unit is the output of an ablated layer replaced by a baseline (as in
:func:`captum_neuron_shapley.ablation.remove_units`). The copy reproduces that
replacement exactly (up to floating point: ``0 * x + b == b`` for finite ``x``) when,
for every layer with removed units,

* the ablated module is an ``nn.Conv1d/2d/3d`` (units: output channels), an
  ``nn.Linear`` (units: output features, the last dimension) or an
  ``nn.BatchNorm1d/2d/3d`` with ``affine=True`` (units: channels);
* each removed unit covers whole channels / features (always true for
  :class:`~captum_neuron_shapley.FilterShapley`; for
  :class:`~captum_neuron_shapley.NeuronShapley` on a conv layer only when every
  element of a channel is removed together), and
* the replacement is one constant per removed channel / feature (true for the
  default ``"mean"`` and ``"zero"`` baselines and any scalar).

Then a conv or linear unit gets zero weights (its output channel / row) and
``bias = constant``; a BatchNorm unit gets ``weight = 0`` and ``bias = constant``
(exact in train and eval mode). A conv or linear layer created with ``bias=False``
can only drop units whose constant is 0, because the class has no bias to load.
Anything else (activations such as ``nn.ReLU``, pooling, spatially varying
baselines, single positions of a channel) raises a ``ValueError`` that says why:
keep using the hooks (:func:`~captum_neuron_shapley.ablation.ablated`) there.

The copy is exact for what the hooks do to *this module's output*. If the same
module object is called several times per forward pass, both replace every call.
"""

from __future__ import annotations

import copy
from typing import Any, cast, Dict, List, Optional, Tuple

import torch
from torch import nn, Tensor

from .result import ShapleyResult

__all__ = ["export_repaired", "repaired_state_dict"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _removed_elements(
    result: ShapleyResult, units: Any
) -> Dict[str, Tuple[Tensor, Tensor]]:
    r"""Per layer name: ``(removed, baseline)``, both at the layer output's shape."""
    idx = torch.as_tensor(result.flat_indices(units), dtype=torch.long)
    out: Dict[str, Tuple[Tensor, Tensor]] = {}
    start = 0
    for lay in result.layers:
        local = idx[(idx >= start) & (idx < start + lay.n_units)] - start
        start += lay.n_units
        if not local.numel():
            continue
        if lay.index is not None or lay.layer_input:
            raise ValueError(
                f"cannot export removals of {lay.name!r} exactly: its units are "
                "elements of one of several output tensors, or of a layer's "
                "input, which no weight of that layer produces alone. Keep the "
                "hooks (captum_neuron_shapley.ablation.ablated)"
            )
        shape = torch.Size(lay.out_shape)
        base = torch.zeros(()) if lay.baseline is None else lay.baseline
        base = base.expand(shape)
        if lay.kind == "filter":
            removed = torch.zeros(shape, dtype=torch.bool)
            removed[local] = True
        else:
            removed = torch.isin(lay.groups.expand(shape), local)
        out[lay.name] = (removed, base)
    return out


def _channel_dim(module: nn.Module, name: str, shape: torch.Size) -> int:
    if isinstance(module, nn.Linear):
        return len(shape) - 1
    if isinstance(module, _CONV + _BN):
        return 0
    raise ValueError(
        f"cannot export removals of layer {name!r} ({type(module).__name__}) "
        "exactly: only nn.Conv1d/2d/3d, nn.Linear and nn.BatchNorm1d/2d/3d outputs "
        "can be replaced by editing weights (a removed unit must become a constant "
        "that the layer's own bias can produce). Ablate the conv/linear/BatchNorm "
        "layer instead, or keep the hooks (captum_neuron_shapley.ablation.ablated)"
    )


def _per_channel(
    name: str, removed: Tensor, base: Tensor, dim: int
) -> Tuple[List[int], Tensor]:
    r"""Channels that are removed entirely, and their constant replacement."""
    r = removed.movedim(dim, 0).reshape(removed.shape[dim], -1)
    b = base.movedim(dim, 0).reshape(base.shape[dim], -1)
    whole, some = r.all(1), r.any(1)
    if bool((some & ~whole).any()):
        c = int((some & ~whole).nonzero()[0])
        raise ValueError(
            f"cannot export removals of layer {name!r} exactly: channel/feature {c} "
            "is only partly removed, and weights can only silence whole "
            "channels/features"
        )
    channels = whole.nonzero().flatten().tolist()
    consts = []
    for c in channels:
        vals = b[c]
        if not bool((vals == vals[0]).all()):
            raise ValueError(
                f"cannot export removals of layer {name!r} exactly: the baseline of "
                f"channel/feature {c} varies over positions (from "
                f"{float(vals.min()):.4g} to {float(vals.max()):.4g}), and a bias is "
                "one constant per channel"
            )
        consts.append(vals[0])
    return channels, torch.stack(consts) if consts else torch.empty(0)


@torch.no_grad()
def _bake(module: nn.Module, name: str, channels: List[int], consts: Tensor) -> None:
    if not channels:
        return
    idx = torch.as_tensor(channels, dtype=torch.long, device=_device(module))
    weight = cast(Tensor, module.weight)
    bias = cast(Optional[Tensor], module.bias)
    if isinstance(module, _BN):
        if not module.affine or bias is None:
            raise ValueError(
                f"cannot export removals of layer {name!r} exactly: it is a "
                "BatchNorm with affine=False, which has no weight and bias to edit"
            )
        weight[idx] = 0.0
        bias[idx] = consts.to(bias)
        return
    weight[idx] = 0.0  # conv: (C_out, ...), linear: (F_out, F_in)
    if bias is None:
        if bool((consts != 0).any()):
            raise ValueError(
                f"cannot export removals of layer {name!r} exactly: it has no bias "
                "(bias=False), so a removed unit can only emit 0, but its baseline "
                f"is {consts.tolist()}. Use zero baselines or keep the hooks"
            )
        return
    bias[idx] = consts.to(bias)


def _device(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def export_repaired(model: nn.Module, result: ShapleyResult, units: Any) -> nn.Module:
    r"""A repaired copy of ``model`` in which ``units`` are removed by editing
    weights, so that no hooks are needed and ``copy.state_dict()`` loads into the
    original class. See the module docstring for when this is exact; otherwise a
    ``ValueError`` says why. ``model`` itself is not changed.

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the layers (by name) and the baselines.
        units (sequence): Units to remove: flat unit indices (as in
            ``result.flat_values``, e.g. ``result.removal_set``) or the
            ``(layer, unit, value)`` tuples of ``result.top_units()``.

    Returns:
        nn.Module: A deep copy with the removals in its weights (same modes).

    Examples::

        >>> fixed = export_repaired(model, result, result.top_units(10))
        >>> torch.save(fixed.state_dict(), "repaired.pt")
        >>> clean = DigitsCNN(); clean.load_state_dict(torch.load("repaired.pt"))
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    if not isinstance(result, ShapleyResult):
        raise ValueError(
            f"`result` must be a ShapleyResult, got {type(result).__name__}"
        )
    plan = []
    for name, (removed, base) in _removed_elements(result, units).items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer named {name!r}") from None
        dim = _channel_dim(module, name, removed.shape)
        channels, consts = _per_channel(name, removed, base, dim)
        plan.append((name, channels, consts))
    repaired = copy.deepcopy(model)
    for name, channels, consts in plan:
        _bake(repaired.get_submodule(name), name, channels, consts)
    return repaired


def repaired_state_dict(
    model: nn.Module, result: ShapleyResult, units: Any
) -> Dict[str, Tensor]:
    r"""The ``state_dict`` of :func:`export_repaired` (loads into ``model``'s class).

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the layers and the baselines.
        units (sequence): Units to remove, as for :func:`export_repaired`.

    Returns:
        dict: Parameter and buffer tensors.

    Examples::

        >>> torch.save(repaired_state_dict(model, result, top), "repaired.pt")
    """
    return export_repaired(model, result, units).state_dict()
