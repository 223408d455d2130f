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

Units on the *input* of a projection are exported the same way from the other
side: attention heads (:class:`~captum_neuron_shapley.HeadShapley`: the input
of the output projection, ``out_proj`` of an ``nn.MultiheadAttention``), and
the hidden neurons of an MLP taken at the input of its second linear layer
(:class:`~captum_neuron_shapley.NeuronShapley` with
``attribute_to_layer_input=True`` and a per-feature ``layer_mask``). When the
projection is an ``nn.Linear`` (weight ``(out, in)``) or a ``Conv1D``-style
module (weight ``(in, out)``), every removed input feature is removed at every
position, and its replacement is one constant ``c_j`` per feature, the removed
features' weights are zeroed and their constant is folded into the bias:
``bias += W[:, removed] @ c`` (mathematically exact; the sum is rounded in
another order than the hooks' matrix product, so outputs agree to
floating-point rounding). A projection without a bias can only drop features
whose folded constant is 0 (the ``"zero"`` baseline).
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

from ._inputs import resolve_layer
from .heads import head_groups
from .result import LayerLayout, ShapleyResult

__all__ = ["export_repaired", "repaired_state_dict"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _removed_elements(
    result: ShapleyResult, units: Any
) -> List[Tuple[LayerLayout, Tensor, Tensor]]:
    r"""Per layer with removed units: its layout, and ``(removed, baseline)``,
    both at the layer tensor's shape."""
    idx = torch.as_tensor(result.flat_indices(units), dtype=torch.long)
    out: List[Tuple[LayerLayout, Tensor, Tensor]] = []
    start = 0
    for lay in result.layers:
        local = idx[(idx >= start) & (idx < start + lay.n_units)] - start
        start += lay.n_units
        if not local.numel():
            continue
        if lay.index is not None:
            raise ValueError(
                f"cannot export removals of {lay.name!r} exactly: its units are "
                "elements of one of several tensors of that layer, which no "
                "weight of the layer produces alone. Keep the hooks "
                "(captum_neuron_shapley.ablation.ablated)"
            )
        shape = torch.Size(lay.out_shape)
        base = torch.zeros(()) if lay.baseline is None else lay.baseline
        base = base.expand(shape)
        if lay.kind == "filter":
            removed = torch.zeros(shape, dtype=torch.bool)
            removed[local] = True
        elif lay.kind == "head":
            removed = torch.isin(head_groups(shape, lay.n_units).expand(shape), local)
        else:
            removed = torch.isin(lay.groups.expand(shape), local)
        out.append((lay, removed, base))
    return out


def _projection(model: nn.Module, lay: LayerLayout) -> Tuple[str, nn.Module]:
    r"""The module whose *input* holds the layer's units, and its name: the
    output projection of a head layer, or the layer itself for
    ``attribute_to_layer_input``; it must take its input through one weight."""
    name = lay.module_name
    module = resolve_layer(model, name, "result")
    if lay.kind == "head" and isinstance(module, nn.MultiheadAttention):
        name, module = f"{name}.out_proj" if name else "out_proj", module.out_proj
    if not (isinstance(module, nn.Linear) or _is_conv1d(module)):
        raise ValueError(
            f"cannot export removals of {lay.name!r} exactly: its units are the "
            f"input of a {type(module).__name__}; only an nn.Linear or a "
            "Conv1D-style projection (weight (in, out)) maps its input through "
            "one weight whose columns can be zeroed. Keep the hooks "
            "(captum_neuron_shapley.ablation.ablated)"
        )
    return name, module


def _is_conv1d(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        isinstance(weight, Tensor)
        and weight.dim() == 2
        and not isinstance(module, nn.Linear)
        and (type(module).__name__ == "Conv1D" or hasattr(module, "nf"))
    )


@torch.no_grad()
def _bake_input(
    module: nn.Module, name: str, features: List[int], consts: Tensor
) -> None:
    r"""Remove input features of a projection: zero their weights and fold
    their constant into the bias."""
    if not features:
        return
    weight = cast(Tensor, module.weight)
    bias = cast(Optional[Tensor], module.bias)
    idx = torch.as_tensor(features, dtype=torch.long, device=weight.device)
    c = consts.to(weight.device, torch.float64)
    if isinstance(module, nn.Linear):  # (out, in)
        shift = weight[:, idx].double() @ c
        weight[:, idx] = 0.0
    else:  # Conv1D: (in, out)
        shift = c @ weight[idx, :].double()
        weight[idx, :] = 0.0
    if bias is None:
        if bool((shift != 0).any()):
            raise ValueError(
                f"cannot export removals at the input of {name!r} exactly: it has "
                "no bias (bias=False), so removed inputs can only be replaced by "
                "values whose projection is 0, but the baseline's is not. Use a "
                "zero baseline, or keep the hooks"
            )
        return
    bias += shift.to(bias.dtype)


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
    ``ValueError`` says why. ``model`` itself is not changed. Removed attention
    heads become zero columns of the output projection, their baseline folded
    into its bias.

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
    for lay, removed, base in _removed_elements(result, units):
        if lay.kind == "head" or lay.layer_input:  # columns of a projection
            name, module = _projection(model, lay)
            last = removed.dim() - 1
            features, consts = _per_channel(lay.name, removed, base, last)
            plan.append((True, name, features, consts))
            continue
        name = lay.name
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer named {name!r}") from None
        dim = _channel_dim(module, name, removed.shape)
        channels, consts = _per_channel(name, removed, base, dim)
        plan.append((False, name, channels, consts))
    repaired = copy.deepcopy(model)
    for on_input, name, channels, consts in plan:
        if on_input:
            _bake_input(repaired.get_submodule(name), name, channels, consts)
        else:
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
