r"""Players and their removal: which elements of a layer output form a unit, and
how a removed unit is replaced (forward hooks only; weights are never edited)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = [
    "LayerUnits",
    "filter_groups",
    "neuron_groups",
    "ablate",
    "per_layer",
    "resolve_baseline",
]


@dataclass
class LayerUnits:
    r"""The units (players) of one layer.

    Attributes:
        layer (nn.Module): The module whose output is ablated.
        name (str): Its qualified name in the model.
        out_shape (torch.Size): The layer output's shape without the batch dimension.
        groups (Tensor): Integer tensor broadcastable to ``out_shape`` giving, for each
            output element, the index (``0 .. n_units - 1``) of the unit it belongs to.
        unit_ids (Tensor): The user-facing id of each unit (channel index for
            filters, ``layer_mask`` value or flat element index for neurons).
        kind (str): ``"filter"`` (one value per channel) or ``"neuron"`` (values
            reported at the layer output's shape).
        baseline (Tensor or None): Replacement value, broadcastable to ``out_shape``.
    """

    layer: nn.Module
    name: str
    out_shape: torch.Size
    groups: Tensor
    unit_ids: Tensor
    kind: str
    baseline: Optional[Tensor] = None

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.numel())

    def format(self, flat: Tensor) -> Tensor:
        r"""Lay per-unit values of this layer out the Captum way."""
        if self.kind == "filter":
            return flat
        return flat[self.groups.expand(self.out_shape)]

    def group_mean(self, element_mean: Tensor) -> Tensor:
        r"""Average an ``out_shape`` tensor within each unit; returns ``out_shape``."""
        idx = self.groups.expand(self.out_shape).reshape(-1)
        flat = element_mean.reshape(-1).to(torch.float64)
        sums = torch.zeros(self.n_units, dtype=torch.float64, device=flat.device)
        sums.index_add_(0, idx, flat)
        counts = torch.bincount(idx, minlength=self.n_units).clamp_min(1)
        means = (sums / counts).to(element_mean.dtype)
        return means[self.groups.expand(self.out_shape)]


def filter_groups(out_shape: torch.Size, name: str) -> Tensor:
    r"""One unit per channel (dimension 1 of the layer output)."""
    if len(out_shape) < 2:
        raise ValueError(
            f"`layer` {name!r} has output shape (N, {', '.join(map(str, out_shape))}) "
            "with no channel dimension; FilterShapley needs (N, C, L) or (N, C, H, W) "
            "outputs. Use NeuronShapley for linear layers."
        )
    c = out_shape[0]
    return torch.arange(c).view(c, *([1] * (len(out_shape) - 1)))


def neuron_groups(
    out_shape: torch.Size, name: str, layer_mask: Optional[Tensor]
) -> "tuple[Tensor, Tensor]":
    r"""Units from a Captum-style ``layer_mask`` (or one unit per element).

    Returns ``(groups, unit_ids)`` with groups renumbered to ``0 .. n - 1``.
    """
    numel = int(torch.Size(out_shape).numel())
    if layer_mask is None:
        return torch.arange(numel).view(out_shape), torch.arange(numel)
    mask = torch.as_tensor(layer_mask)
    if mask.is_floating_point() or mask.dtype == torch.bool:
        raise ValueError("`layer_mask` must be an integer tensor of unit ids")
    if mask.dim() == len(out_shape) + 1:
        if mask.shape[0] != 1:
            raise ValueError(
                f"`layer_mask` for layer {name!r} has batch dimension "
                f"{mask.shape[0]}; it must be 1 (the same grouping for every example)"
            )
        mask = mask[0]
    try:
        torch.broadcast_shapes(mask.shape, out_shape)
    except RuntimeError:
        raise ValueError(
            f"`layer_mask` of shape {tuple(mask.shape)} does not broadcast to the "
            f"output shape {tuple(out_shape)} of layer {name!r}"
        ) from None
    if torch.broadcast_shapes(mask.shape, out_shape) != torch.Size(out_shape):
        raise ValueError(
            f"`layer_mask` of shape {tuple(mask.shape)} is larger than the output "
            f"shape {tuple(out_shape)} of layer {name!r}"
        )
    unit_ids, groups = torch.unique(mask, return_inverse=True)
    return groups.view(mask.shape), unit_ids


def _replace(units: LayerUnits, keep: Tensor, out: Tensor, inplace: bool) -> Tensor:
    r"""Replace the removed units of ``out`` (shape ``(M * B, *S)``), writing into
    ``out`` itself when ``inplace`` (no new activation-sized tensor)."""
    m = keep.shape[0]
    shaped = out.reshape(m, out.shape[0] // m, *out.shape[1:])
    keep = keep.to(out.device)  # no-op unless the model moves tensors itself
    base = units.baseline.to(dtype=out.dtype, device=out.device)
    inplace = inplace and shaped.data_ptr() == out.data_ptr()
    if inplace and units.kind == "filter" and out.device.type == "cpu":
        # write only the removed channels (on a GPU, nonzero would sync)
        full = base.expand(units.out_shape)
        for j, row in enumerate(keep):
            gone = (~row).nonzero().flatten()
            if gone.numel():
                shaped[j][:, gone] = full[gone]
        return out
    present = keep[:, units.groups.to(out.device)].unsqueeze(1)  # (M, 1, *groups)
    if inplace:
        torch.where(present, shaped, base, out=shaped)
        return out
    return torch.where(present, shaped, base).reshape(out.shape)


# Layers whose forward returns a tensor freshly allocated by one functional op
# (exact types: a subclass may override forward).
_FRESH_OUTPUT = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)


def _owns(module: nn.Module, out: Tensor) -> bool:
    r"""Whether a layer's output may be overwritten in place: the layer is one
    whose output is always a fresh tensor (conv, linear, batch norm; not a
    subclass), ours is its only forward hook (an earlier hook may keep the
    tensor), and the output is a dense, contiguous tensor outside autograd."""
    global_hooks = getattr(nn.modules.module, "_global_forward_hooks", None)
    return (
        type(module) in _FRESH_OUTPUT
        and len(module._forward_hooks) == 1
        and not global_hooks
        and out.layout == torch.strided
        and out._base is None
        and not out.requires_grad
        and out.is_contiguous()
    )


@contextlib.contextmanager
def ablate(
    units: Sequence[LayerUnits], keep: Union[Tensor, List[Tensor], Any]
) -> Iterator[None]:
    r"""Forward hooks that replace removed units during the ``with`` block.

    Args:
        units (sequence of LayerUnits): The layers and their units.
        keep (list of Tensor): One boolean tensor of shape ``(M, n_units)`` per layer:
            which units are present in each of the ``M`` coalitions. The batch the
            model sees must be ``M`` copies of the evaluation examples, coalition-major.
            ``None`` for a layer means nothing is removed there (no hook).

    The output of a conv, linear or batch-norm layer with no other forward hook
    is overwritten in place (it is a fresh tensor nothing else holds); any other
    layer's output is left as it is and a new tensor is returned. Hooks are
    removed when the block exits, also after an exception.
    """
    handles = []

    def make_hook(u: LayerUnits, k: Tensor):
        def hook(module: nn.Module, inputs: Any, out: Any) -> Tensor:
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"`layer` {u.name!r} returned {type(out).__name__}; only layers "
                    "whose output is a single Tensor can be ablated"
                )
            return _replace(u, k, out, _owns(module, out))

        return hook

    try:
        for u, k in zip(units, keep):
            if k is None or (k.device.type == "cpu" and bool(k.all())):
                continue  # nothing removed in this layer
            handles.append(u.layer.register_forward_hook(make_hook(u, k)))
        yield
    finally:
        for h in handles:
            h.remove()


def per_layer(value: Any, n: int, name: str) -> List[Any]:
    r"""One entry per layer: a tuple/list is checked for length, else repeated."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(
                f"`{name}` has {len(value)} entries but there are {n} layers"
            )
        return list(value)
    return [value] * n


def resolve_baseline(u: LayerUnits, value: Any, mean: Tensor, grouping: str) -> Tensor:
    r"""The replacement tensor of a layer's removed units from a user's
    ``layer_baselines`` entry (``"zero"``, ``"mean"``, a number or a tensor
    broadcastable to the layer output, with an optional leading 1)."""
    if value is None:
        value = "mean" if grouping == "filter" else "zero"
    if isinstance(value, str):
        if value == "zero":
            return torch.zeros((), device=mean.device)
        if value == "mean":
            return u.group_mean(mean).to(torch.float32)
        raise ValueError(
            "`layer_baselines` must be 'zero', 'mean', a number or a Tensor, "
            f"got {value!r}"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), device=mean.device)
    if not isinstance(value, Tensor):
        raise ValueError(
            f"`layer_baselines` must be 'zero', 'mean', a number or a Tensor, got "
            f"{type(value).__name__}"
        )
    b = value.detach()
    if b.dim() == len(u.out_shape) + 1 and b.shape[0] == 1:
        b = b[0]
    try:
        ok = torch.broadcast_shapes(b.shape, u.out_shape) == torch.Size(u.out_shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"`layer_baselines` of shape {tuple(value.shape)} does not broadcast to "
            f"the output shape {tuple(u.out_shape)} of layer {u.name!r}"
        )
    return b.to(mean.device)
