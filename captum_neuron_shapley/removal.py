r"""Players and their removal: which elements of a layer output form a unit, and
how a removed unit is replaced (forward hooks only; weights are never edited).

Why not Captum's ``LayerFeatureAblation`` hook: it replaces a layer's output by a
tensor computed beforehand for the whole batch, one feature group at a time. The
unit game evaluates ``M`` different coalitions in one pass over ``M`` copies of
the examples, so a hook here must replace a different set of units in each
block of rows, and, for the usual conv/linear outputs, can do so in place
without allocating another activation-sized tensor.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

import torch
from torch import nn, Tensor
from torch.utils.hooks import RemovableHandle

from ._inputs import check_finite

__all__ = [
    "LayerUnits",
    "Probe",
    "filter_groups",
    "neuron_groups",
    "ablate",
    "layer_tensors",
    "per_layer",
    "resolve_baseline",
]


#: Unit kinds whose values are reported one per unit, shape ``(n_units,)``.
PER_UNIT_KINDS = ("filter", "head")


class Probe(nn.Module):
    r"""A virtual layer: a module outside the model through which
    :meth:`activate` routes a tensor that the model computes inside one of its
    modules without returning it from a submodule (such as the heads' outputs
    inside ``nn.MultiheadAttention``, before its output projection). Its
    forward is the identity; removal hooks are registered on it as on any
    layer, and :func:`ablate` activates it while it removes units there.

    Attributes:
        site (nn.Module): The model's module in whose forward the tensor is
            computed (not registered as a submodule of the probe).
    """

    def __init__(self, site: nn.Module) -> None:
        super().__init__()
        self.__dict__["site"] = site  # not a submodule: the model owns it

    site: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return x

    def activate(self) -> ContextManager[None]:
        r"""A context inside which the model's forward passes its tensor
        through this probe; everything is restored on exit."""
        raise NotImplementedError


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
        kind (str): ``"filter"`` (one value per channel), ``"head"`` (one value
            per attention head) or ``"neuron"`` (values reported at the layer
            output's shape).
        baseline (Tensor or None): Replacement value, broadcastable to ``out_shape``.
        index (int or None): Position of the tensor in the layer's tuple of
            outputs (or positional inputs); ``None`` when the layer returns a
            single Tensor.
        layer_input (bool): Whether the units are elements of the layer's input
            (Captum's ``attribute_to_layer_input``) instead of its output.
        dtype (torch.dtype or None): The dtype of the tensor, as the layer
            produced it in the reference pass.
    """

    layer: nn.Module
    name: str
    out_shape: torch.Size
    groups: Tensor
    unit_ids: Tensor
    kind: str
    baseline: Optional[Tensor] = None
    index: Optional[int] = None
    layer_input: bool = False
    dtype: Optional[torch.dtype] = None

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.numel())

    @property
    def per_unit(self) -> bool:
        r"""Whether values are reported one per unit (filters, heads) rather
        than at the layer tensor's shape (neurons)."""
        return self.kind in PER_UNIT_KINDS

    def format(self, flat: Tensor) -> Tensor:
        r"""Lay per-unit values of this layer out the Captum way."""
        if self.per_unit:
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
    # at the rank of the layer tensor, so that a mask with fewer dimensions
    # (such as one id per feature, shared by every position) lines up with it
    lead = (1,) * (len(out_shape) - mask.dim())
    return groups.view(*lead, *mask.shape), unit_ids


def _replica_start(
    rows: int, total: int, device: torch.device, device_ids: Optional[List[int]]
) -> int:
    r"""First row, in the batch the model was called with, of the ``rows`` rows a
    ``DataParallel`` replica on ``device`` received: the batch of ``total`` rows
    is cut like ``Tensor.chunk(len(device_ids))`` and chunk ``i`` runs on
    ``device_ids[i]`` (as ``torch.nn.DataParallel`` scatters it)."""
    if not device_ids:
        raise ValueError(
            f"a layer saw {rows} of the {total} rows of the forward pass: the model "
            "splits its batch across devices (DataParallel?). Pass the DataParallel "
            "model as `forward_func`, or its `device_ids` to the constructor"
        )
    if device.index not in device_ids:
        raise ValueError(
            f"a layer ran on {device}, which is not in `device_ids` {device_ids}"
        )
    step = -(-total // len(device_ids))
    start = device_ids.index(device.index) * step
    if rows != min(step, total - start):
        raise ValueError(
            f"a layer on {device} saw {rows} rows; splitting {total} rows over "
            f"`device_ids` {device_ids} gives that device "
            f"{max(min(step, total - start), 0)}"
        )
    return start


def _replace_rows(
    keep: Tensor, groups: Tensor, base: Tensor, out: Tensor, start: int, per: int
) -> Tensor:
    r"""Replace removed units in the rows ``start, start + 1, ...`` of the
    forward pass (a replica's slice), row ``r`` belonging to coalition
    ``r // per``."""
    rows = torch.arange(start, start + out.shape[0], device=out.device)
    present = keep[rows // per][:, groups]  # (rows, *groups)
    return torch.where(present, out, base)


def _replace(
    units: LayerUnits,
    keep: Tensor,
    out: Tensor,
    inplace: bool,
    per_coalition: Optional[int] = None,
    device_ids: Optional[List[int]] = None,
) -> Tensor:
    r"""Replace the removed units of ``out``: rows ``[j * B, (j + 1) * B)`` of the
    forward pass belong to coalition ``j`` (``B = per_coalition``, or
    ``len(out) // M``), writing into ``out`` itself when ``inplace`` (no new
    activation-sized tensor). A ``DataParallel`` replica sees a slice of the rows;
    ``device_ids`` tell which."""
    assert units.baseline is not None, f"no baseline for {units.name!r}"
    m = keep.shape[0]
    keep = keep.to(out.device)  # no-op unless the model moves tensors itself
    base = units.baseline.to(dtype=out.dtype, device=out.device)
    groups = units.groups.to(out.device)
    if per_coalition is not None and m > 1 and out.shape[0] != m * per_coalition:
        start = _replica_start(out.shape[0], m * per_coalition, out.device, device_ids)
        return _replace_rows(keep, groups, base, out, start, per_coalition)
    shaped = out.reshape(m, out.shape[0] // m, *out.shape[1:])
    inplace = inplace and shaped.data_ptr() == out.data_ptr()
    if inplace and units.kind == "filter" and out.device.type == "cpu":
        # write only the removed channels (on a GPU, nonzero would sync)
        full = base.expand(units.out_shape)
        for j, row in enumerate(keep):
            gone = (~row).nonzero().flatten()
            if gone.numel():
                shaped[j][:, gone] = full[gone]
        return out
    present = keep[:, groups].unsqueeze(1)  # (M, 1, *groups)
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


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Folded:
    r"""A conv or linear layer's forward with the removal folded into its weights:
    the rows of removed output channels / features are zeroed and their bias set
    to the baseline, so they come out as the baseline constant without any write
    to the output. New tensors; the module's parameters are not touched."""

    def __init__(self, module: nn.Module, weight: Tensor, bias: Tensor) -> None:
        self.module: nn.Module = module
        self.weight: Tensor = weight
        self.bias: Tensor = bias

    def __call__(self, x: Tensor) -> Tensor:
        if isinstance(self.module, nn.Linear):
            return nn.functional.linear(x, self.weight, self.bias)
        assert isinstance(self.module, _CONV)
        return self.module._conv_forward(x, self.weight, self.bias)


def _channel_baseline(u: LayerUnits) -> Optional[Tensor]:
    r"""The baseline as one constant per output channel (conv filters) or feature
    (linear), or None when it varies within a channel. Cached on ``u``."""
    cache = u.__dict__.get("_channel_baseline_cache")
    if cache is not None:
        return cache[0]
    assert u.baseline is not None
    full = u.baseline.expand(u.out_shape)
    flat = full.reshape(full.shape[0], -1) if full.dim() > 1 else full.view(-1, 1)
    const = flat[:, 0] if bool((flat == flat[:, :1]).all()) else None
    u.__dict__["_channel_baseline_cache"] = (const,)
    return const


def _fold(u: LayerUnits, keep: Tensor) -> Optional[_Folded]:
    r"""The folded forward for one coalition (``keep`` of shape ``(1, n_units)``)
    of an exact ``nn.Conv1d/2d/3d`` (filter units) or ``nn.Linear`` (units over
    its output features) output, when nothing else observes that output (no
    forward hook on it, no global hook, no ``forward`` set on the instance) and
    the baseline is one constant per channel; None otherwise. Exact: a removed
    channel is ``0 * x + b = b`` (for finite ``x``), a present one is computed
    with its own, unchanged weights."""
    module = u.layer
    linear = type(module) is nn.Linear and len(u.out_shape) == 1
    conv = type(module) in _CONV and u.kind == "filter"
    if not (linear or conv) or u.index is not None or u.layer_input:
        return None
    if (
        module._forward_hooks
        or getattr(nn.modules.module, "_global_forward_hooks", None)
        or "forward" in module.__dict__
        or u.baseline is None
    ):
        return None
    base = _channel_baseline(u)
    if base is None:
        return None
    weight, bias = module.weight, module.bias
    assert isinstance(weight, Tensor)
    present = keep[0].to(weight.device)
    if linear:
        present = present[u.groups.to(weight.device).expand(u.out_shape)]
    shape = (-1,) + (1,) * (weight.dim() - 1)
    w = weight * present.to(weight.dtype).view(shape)
    if not isinstance(bias, Tensor):  # bias=False
        bias = torch.zeros(present.shape, dtype=weight.dtype, device=weight.device)
    b = torch.where(present, bias, base.to(device=weight.device, dtype=weight.dtype))
    return _Folded(module, w, b)


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


def layer_tensors(value: Any, name: str, where: str) -> Tuple[Tensor, ...]:
    r"""The tensors of a layer's output (or positional inputs): a Tensor, or a
    tuple or list of Tensors, each ``(N, ...)`` with unit dimensions."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(isinstance(t, Tensor) for t in items):
        kinds = ", ".join(type(t).__name__ for t in items) or "nothing"
        hint = (
            " (an nn.MultiheadAttention returns (output, None) without attention "
            "weights: HeadShapley takes its heads as units)"
            if any(t is None for t in items)
            else ""
        )
        raise ValueError(
            f"`layer` {name!r} {where} {type(value).__name__} ({kinds}); only "
            "layers whose output (or, with `attribute_to_layer_input`, positional "
            f"input) is a Tensor or a tuple of Tensors can be ablated{hint}"
        )
    for t in items:
        if t.dim() < 2:
            raise ValueError(
                f"`layer` {name!r} has a tensor of shape {tuple(t.shape)}; "
                "expected (N, ...) with a batch dimension and unit dimensions"
            )
    return tuple(items)


@contextlib.contextmanager
def ablate(
    units: Sequence[LayerUnits],
    keep: Sequence[Optional[Tensor]],
    per_coalition: Optional[int] = None,
    device_ids: Optional[List[int]] = None,
    fold: bool = False,
) -> Iterator[None]:
    r"""Forward hooks that replace removed units during the ``with`` block.

    Args:
        units (sequence of LayerUnits): The units, tensor by tensor (a layer with
            a tuple of outputs has one entry per tensor).
        keep (sequence of Tensor): One boolean tensor of shape ``(M, n_units)``
            per entry of ``units``: which units are present in each of the ``M``
            coalitions. The batch the model sees must be ``M`` copies of the
            evaluation examples, coalition-major. ``None`` means nothing is
            removed there.
        per_coalition (int, optional): Rows of the forward pass per coalition
            (default: the rows a layer sees, divided by ``M``); needed when a
            ``DataParallel`` model splits the batch across devices.
        device_ids (list of int, optional): The devices such a model scatters
            its batch to, in order.
        fold (bool): For one coalition (``M = 1``) and an exact conv or linear
            layer whose output nothing else observes and whose baseline is one
            constant per channel, fold the removal into the layer's weights for
            the pass (see :class:`_Folded`; the module's ``forward`` is replaced
            on the instance and restored on exit) instead of writing the output.
            The same result, without the write (not for ``DataParallel``, whose
            replicas copy the instance).

    The output of a conv, linear or batch-norm layer with no other forward hook
    is overwritten in place (it is a fresh tensor nothing else holds); any other
    tensor (a layer's input, an element of a tuple of outputs, another layer's
    output) is left as it is and a new tensor is returned. A :class:`Probe`
    with units removed is activated for the block. Hooks are removed and probes
    deactivated when the block exits, also after an exception.
    """
    # one hook per (module, input or output) replaces every tensor of it
    sites: Dict[Tuple[int, bool], List[Tuple[LayerUnits, Tensor]]] = {}
    for u, k in zip(units, keep):
        if k is None or (k.device.type == "cpu" and bool(k.all())):
            continue  # nothing removed in this tensor
        sites.setdefault((id(u.layer), u.layer_input), []).append((u, k))

    def replace_all(
        module: nn.Module, value: Any, parts: List[Tuple[LayerUnits, Tensor]]
    ) -> Any:
        u0 = parts[0][0]
        where = "takes" if u0.layer_input else "returned"
        tensors = list(layer_tensors(value, u0.name, where))
        for u, k in parts:
            j = 0 if u.index is None else u.index
            own = not u.layer_input and u.index is None and _owns(module, tensors[j])
            tensors[j] = _replace(u, k, tensors[j], own, per_coalition, device_ids)
        if isinstance(value, Tensor):
            return tensors[0]
        return type(value)(tensors)

    def make_hook(parts: List[Tuple[LayerUnits, Tensor]]) -> Callable[..., Any]:
        if parts[0][0].layer_input:

            def pre_hook(module: nn.Module, args: Any) -> Any:
                return tuple(replace_all(module, tuple(args), parts))

            return pre_hook

        def hook(module: nn.Module, args: Any, out: Any) -> Any:
            return replace_all(module, out, parts)

        return hook

    handles: List[RemovableHandle] = []
    folded: List[nn.Module] = []
    probes = contextlib.ExitStack()
    try:
        for parts in sites.values():
            layer = parts[0][0].layer
            if isinstance(layer, Probe):
                probes.enter_context(layer.activate())
            if fold and len(parts) == 1 and parts[0][1].shape[0] == 1:
                forward = _fold(*parts[0])
                if forward is not None:
                    layer.forward = forward  # type: ignore[method-assign]
                    folded.append(layer)
                    continue
            if parts[0][0].layer_input:
                handles.append(layer.register_forward_pre_hook(make_hook(parts)))
            else:
                handles.append(layer.register_forward_hook(make_hook(parts)))
        yield
    finally:
        for h in handles:
            h.remove()
        for layer in folded:
            del layer.forward
        probes.close()


def per_layer(value: Any, n: int, name: str) -> List[Any]:
    r"""One entry per layer: a tuple/list is checked for length, else repeated."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(
                f"`{name}` has {len(value)} entries but there are {n} layers"
            )
        return list(value)
    return [value] * n


def per_tensor(
    value: Any, counts: Sequence[int], names: Sequence[str], single: bool, name: str
) -> List[Any]:
    r"""One entry per tensor of every layer (a layer with a tuple of outputs has
    ``counts[i] > 1`` tensors), as Captum's layer methods take a tuple for a
    layer with several tensors: with one layer (``single``) a tuple is per
    tensor; with a list of layers a tuple is per layer, and its entry for a
    layer with several tensors may be a tuple per tensor. Anything else is
    repeated."""
    if single:
        entries = [value] if counts[0] > 1 else per_layer(value, 1, name)
    else:
        entries = per_layer(value, len(counts), name)
    out: List[Any] = []
    for entry, k, layer in zip(entries, counts, names):
        if k == 1:
            out.append(entry)
        elif isinstance(entry, (tuple, list)):
            if len(entry) != k:
                raise ValueError(
                    f"`{name}` for layer {layer!r} has {len(entry)} entries but "
                    f"the layer has {k} tensors"
                )
            out.extend(entry)
        else:
            out.extend([entry] * k)
    return out


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
            b = u.group_mean(mean).to(torch.float32)
            check_finite("layer_baselines", b, f" ('mean' of layer {u.name!r})")
            return b
        raise ValueError(
            "`layer_baselines` must be 'zero', 'mean', a number or a Tensor, "
            f"got {value!r}"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_finite("layer_baselines", value, f" for layer {u.name!r}")
        return torch.tensor(float(value), device=mean.device)
    if not isinstance(value, Tensor):
        raise ValueError(
            f"`layer_baselines` must be 'zero', 'mean', a number or a Tensor, got "
            f"{type(value).__name__}"
        )
    check_finite("layer_baselines", value, f" for layer {u.name!r}")
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
