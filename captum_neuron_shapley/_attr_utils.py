r"""Helpers of the Captum classes in :mod:`.attr`: the game of a call (evaluation
data checked and formatted, the intact model's reference pass, the players of each
layer with their baselines) and the layout of the attributions."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from captum._utils.common import _format_additional_forward_args
from torch import nn, Tensor
from torch.utils.data import DataLoader

from ._inputs import (
    check_finite,
    check_not_scripted,
    check_positive_int,
    explain_forward_errors,
    format_eval_data,
    layer_names,
    resolve_layers,
)
from .bounds import Bound
from .game import (
    LayerEval,
    model_guard,
    module_of,
    reference_pass,
    subset_args,
    UnitGame,
)
from .metrics import default_metric, MeanOutput
from .prefix import trace_prefix
from .refine import GreedyRefine
from .removal import (
    filter_groups,
    LayerUnits,
    neuron_groups,
    per_tensor,
    resolve_baseline,
)
from .result import LayerLayout
from .sampler import Sampler
from .stopping import StoppingRule
from .streaming import cat_targets, LoaderSource, StreamedGame

Baseline = Union[None, str, float, int, Tensor]
#: ``layer_baselines``: one entry for every tensor, or a tuple (see ``attribute``).
LayerBaselines = Union[Baseline, Tuple[Any, ...]]
#: ``layer_mask``: one mask for every tensor, or a tuple (see ``attribute``).
LayerMasks = Union[None, Tensor, Tuple[Any, ...]]
#: What ``attribute`` returns: a tensor per layer tensor, tuples as the layers go.
LayerAttributions = Union[
    Tensor, Tuple[Tensor, ...], Tuple[Union[Tensor, Tuple[Tensor, ...]], ...]
]
Inputs = Union[Tensor, Tuple[Tensor, ...], DataLoader]
MetricFn = Optional[Callable[[Tensor, Any], float]]
Refine = Union[None, str, GreedyRefine]
Stop = Union[None, StoppingRule, Bound]
SamplerSpec = Union[None, str, Sampler]


def attr_layers(
    forward_func: Callable, layer: Any
) -> Tuple[List[nn.Module], Optional[nn.Module], List[str]]:
    r"""The constructor's ``layer`` (modules or qualified names, one or a list)
    as modules, the model behind ``forward_func`` and the layers' names in it;
    TorchScript models and foreign layers are refused."""
    model = module_of(forward_func)
    layer = resolve_layers(model, layer)  # names -> modules
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not layers:
        raise ValueError("`layer` must be a module or a non-empty list of them")
    check_not_scripted(model, layers)
    return layers, model, layer_names(forward_func, layers, model)


def layer_units(
    attr: Any,
    evals: List[LayerEval],
    layer_baselines: Any,
    layer_mask: Any,
    layer_input: bool,
) -> List[LayerUnits]:
    r"""The players of every tensor of every layer of ``attr`` (a
    :class:`~captum_neuron_shapley.NeuronShapley`), with their baselines."""
    layers, names, single = attr._layers, attr._names, attr._single
    grouping = attr._grouping
    counts = [len(ev.shapes) for ev in evals]
    baselines = per_tensor(layer_baselines, counts, names, single, "layer_baselines")
    masks = per_tensor(layer_mask, counts, names, single, "layer_mask")
    if grouping == "filter" and any(m is not None for m in masks):
        raise ValueError("`layer_mask` is not supported by FilterShapley")
    units: List[LayerUnits] = []
    for layer, name, ev in zip(layers, names, evals):
        for j, (shape, mean, dtype) in enumerate(zip(ev.shapes, ev.means, ev.dtypes)):
            k = len(units)
            part = f"{name}[{j}]" if ev.is_tuple else name
            if grouping == "filter":
                groups, ids = filter_groups(shape, part), torch.arange(shape[0])
            else:
                groups, ids = neuron_groups(shape, part, masks[k])
            u = LayerUnits(
                layer,
                part,
                shape,
                groups.to(mean.device),
                ids,
                grouping,
                None,
                j if ev.is_tuple else None,
                layer_input,
                dtype,
            )
            u.baseline = resolve_baseline(u, baselines[k], mean, grouping)
            units.append(u)
    return units


def layouts(units: Sequence[LayerUnits], names: Dict[int, str]) -> List[LayerLayout]:
    r"""How each tensor's units map to its reported tensor (for the result)."""
    out = []
    for u in units:
        groups = (
            torch.arange(u.n_units)
            if u.per_unit
            else u.groups.expand(u.out_shape).cpu().clone()
        )
        assert u.baseline is not None
        base = u.baseline.detach().cpu().expand(u.out_shape).clone()
        out.append(
            LayerLayout(
                u.name,
                u.kind,
                groups,
                u.unit_ids.cpu(),
                list(u.out_shape),
                base,
                names[id(u.layer)] if u.index is not None else None,
                u.index,
                u.layer_input,
            )
        )
    return out


def in_layer_dtype(values: Any, dtypes: Iterator[Optional[torch.dtype]]) -> Any:
    r"""The attributions (float64, laid out as ``ShapleyResult.values``) in the
    dtype of each layer tensor, in layout order (float64 for integer tensors)."""
    if isinstance(values, Tensor):
        dtype = next(dtypes)
        return (
            values.to(dtype)
            if dtype is not None and dtype.is_floating_point
            else values
        )
    return tuple(in_layer_dtype(v, dtypes) for v in values)


def flat_attributions(attributions: Any, units: Sequence[LayerUnits]) -> List[Tensor]:
    r"""The tensors of ``attributions``, one per layer tensor, checked against
    the game's units."""
    flat: List[Tensor] = []

    def walk(a: Any) -> None:
        if isinstance(a, Tensor):
            flat.append(a)
        elif isinstance(a, (tuple, list)):
            for b in a:
                walk(b)
        else:
            raise ValueError(
                "`attributions` must be a Tensor or (nested) tuples of Tensors as "
                f"`attribute` returns, got {type(a).__name__}"
            )

    walk(attributions)
    want = [(u.n_units,) if u.per_unit else tuple(u.out_shape) for u in units]
    got = [tuple(a.shape) for a in flat]
    if got != want:
        raise ValueError(
            f"`attributions` have shapes {got}; the layers' units give {want}"
        )
    return flat


def unit_values(u: LayerUnits, attribution: Tensor) -> Tensor:
    r"""One value per unit: a filter's entry, or the mean over a unit's elements."""
    a = attribution.detach().to("cpu", torch.float64).reshape(-1)
    if u.per_unit:
        return a
    idx = u.groups.expand(u.out_shape).reshape(-1).cpu()
    sums = torch.zeros(u.n_units, dtype=torch.float64).index_add_(0, idx, a)
    return sums / torch.bincount(idx, minlength=u.n_units).clamp_min(1)


def device_ids_of(attr: Any) -> Optional[List[int]]:
    r"""The devices a DataParallel model scatters its batch to (Captum's rule: the
    constructor's ``device_ids``, else ``forward_func.device_ids``); None when the
    batch is not split."""
    ids = attr.device_ids
    if ids is None:
        ids = getattr(attr.forward_func, "device_ids", None)
    if ids is None and attr._model is not None:
        ids = getattr(attr._model, "device_ids", None)
    return list(ids) if ids else None


def build_game(
    attr: Any,
    inputs: Any,
    layer_baselines: Any,
    target: Any,
    additional_forward_args: Any,
    layer_mask: Any,
    attribute_to_layer_input: bool,
    perturbations_per_eval: int,
    metric: Optional[Callable],
    cache_activations: bool,
) -> UnitGame:
    r"""The game of ``attr`` (a :class:`~captum_neuron_shapley.NeuronShapley`):
    check and format the evaluation data, run the intact model once (reference
    outputs, layer shapes and means, the replayed prefix), and build the units."""
    check_positive_int("perturbations_per_eval", perturbations_per_eval, False)
    if not isinstance(attribute_to_layer_input, bool):
        raise ValueError(
            "`attribute_to_layer_input` must be a bool, got "
            f"{type(attribute_to_layer_input).__name__}"
        )
    if metric is not None and not callable(metric):
        raise ValueError(f"`metric` must be callable, got {type(metric).__name__}")
    device_ids = device_ids_of(attr)
    if isinstance(inputs, DataLoader):
        return _streamed_game(
            attr,
            inputs,
            layer_baselines,
            target,
            additional_forward_args,
            layer_mask,
            attribute_to_layer_input,
            perturbations_per_eval,
            metric,
            cache_activations,
        )
    xs, target, args = format_eval_data(inputs, target, additional_forward_args)
    n = int(xs[0].shape[0])
    if metric is None:
        target, metric = default_metric(target, n, xs[0].device)
    with model_guard(attr.forward_func), explain_forward_errors(attr._model, xs):
        skip: List[nn.Module] = []
        if cache_activations and attr._model is not None and not device_ids:
            skip = trace_prefix(
                attr._model,
                attr._layers,
                tuple(x[:1] for x in xs),
                subset_args(args, slice(0, 1), n),
                attr.forward_func,
            )
        outputs, evals, cached = reference_pass(
            attr.forward_func,
            attr._layers,
            attr._names,
            xs,
            args,
            attr.internal_batch_size,
            skip,
            attribute_to_layer_input,
            device_ids,
        )
    _check_target_needed(metric, target, outputs)
    units = attr._units(evals, layer_baselines, layer_mask, attribute_to_layer_input)
    game = UnitGame(
        attr.forward_func,
        units,
        xs,
        target,
        metric,
        outputs,
        perturbations_per_eval,
        attr.internal_batch_size,
        (skip, cached),
        args,
        device_ids,
    )
    game.examples_evaluated += n  # the reference pass
    return game


def _check_target_needed(metric: Any, target: Any, outputs: Tensor) -> None:
    if isinstance(metric, MeanOutput) and target is None:
        if outputs[0].numel() != 1:
            raise ValueError(
                "`target` is required by the default metric when the model "
                "returns more than one value per example (outputs of shape "
                f"{tuple(outputs.shape[1:])}): pass per-example labels "
                "(accuracy), an output index (its mean), or a `metric`"
            )


def _model_device(attr: Any) -> Optional[torch.device]:
    model = attr._model
    if model is None:
        return None
    first = next(iter(model.parameters()), None)
    return None if first is None else first.device


def _streamed_game(
    attr: Any,
    loader: DataLoader,
    layer_baselines: Any,
    target: Any,
    additional_forward_args: Any,
    layer_mask: Any,
    attribute_to_layer_input: bool,
    perturbations_per_eval: int,
    metric: Optional[Callable],
    cache_activations: bool,
) -> UnitGame:
    r"""The game of a ``DataLoader`` of examples (see :mod:`.streaming`): one
    pass gives the intact model's outputs, the layer means and the targets."""
    args = _format_additional_forward_args(additional_forward_args)
    source = LoaderSource(loader, target, args, _model_device(attr))
    if source.n is not None:
        _check_loader_lengths(source, target, args)
    targets: List[Any] = []
    seen: List[Tensor] = []  # the batch being run, for explain_forward_errors

    def chunks() -> Iterator[Tuple[Tuple[Tensor, ...], Any]]:
        for b, (xs, tgt, a, _) in enumerate(source.passes()):
            for i, x in enumerate(xs):
                part = f" (tensor {i})" if len(xs) > 1 else ""
                check_finite("inputs", x, f"{part} in DataLoader batch {b}")
            seen[:] = xs
            targets.append(tgt)
            yield xs, a

    device_ids = device_ids_of(attr)
    with model_guard(attr.forward_func), explain_forward_errors(attr._model, seen):
        skip: List[nn.Module] = []
        if cache_activations and attr._model is not None and not device_ids:
            xs, _, a, _ = next(source.passes())
            seen[:] = xs
            skip = trace_prefix(
                attr._model,
                attr._layers,
                tuple(x[:1] for x in xs),
                subset_args(a, slice(0, 1), int(xs[0].shape[0])),
                attr.forward_func,
            )
        outputs, evals, _ = reference_pass(
            attr.forward_func,
            attr._layers,
            attr._names,
            (),
            None,
            None,
            (),
            attribute_to_layer_input,
            device_ids,
            chunks=chunks(),
        )
    if not targets:
        raise ValueError("`inputs` is empty: the DataLoader yielded no batch")
    n = int(outputs.shape[0])
    whole = cat_targets(targets)
    if metric is None:
        whole, metric = default_metric(whole, n, outputs.device)
        if target is not None:  # the form the metric reads, for drawn batches
            source.target = default_metric(target, n, outputs.device)[0]
    _check_target_needed(metric, whole, outputs)
    units = attr._units(evals, layer_baselines, layer_mask, attribute_to_layer_input)
    game = StreamedGame(
        attr.forward_func,
        units,
        source,
        whole,
        metric,
        outputs,
        perturbations_per_eval,
        attr.internal_batch_size,
        skip,
        device_ids,
    )
    game.examples_evaluated += n  # the reference pass
    return game


def _check_loader_lengths(source: LoaderSource, target: Any, args: Any) -> None:
    n = int(source.n or 0)
    items = target if isinstance(target, (tuple, list)) else [target]
    for t in items:
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] != n:
            raise ValueError(
                f"`target` has {t.shape[0]} entries but the DataLoader's dataset "
                f"has {n} examples"
            )
    for i, a in enumerate(args or ()):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != n:
            raise ValueError(
                f"`additional_forward_args` tensor {i} has shape {tuple(a.shape)}; "
                f"a tensor argument must have one entry per example ({n}) along "
                "dimension 0, as in Captum (pass other values as non-tensors or "
                "wrap the model)"
            )


def check_execution(internal_batch_size: Any, cache_activations: Any) -> None:
    r"""Check the constructor's execution settings."""
    check_positive_int("internal_batch_size", internal_batch_size)
    if not isinstance(cache_activations, bool):
        raise ValueError(
            "`cache_activations` must be a bool, got "
            f"{type(cache_activations).__name__}"
        )


def efficiency_gap(game: UnitGame, attributions: Any) -> Tensor:
    r"""``V(all) - V(none) - sum(values)`` of ``attributions`` on ``game``."""
    total = sum(
        float(unit_values(u, a).sum())
        for u, a in zip(game.units, flat_attributions(attributions, game.units))
    )
    with model_guard(game.model):
        v_all, v_none = game.full_value(), game.empty_value()
    return torch.tensor(v_all - v_none - total, dtype=torch.float64)
