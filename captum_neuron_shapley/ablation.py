r"""Removing units from a model and measuring what happens (ablation checks)."""

from __future__ import annotations

import contextlib
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn

from .game import UnitGame, model_guard
from .metrics import accuracy
from .removal import LayerUnits, ablate, filter_groups
from .result import ShapleyResult

__all__ = [
    "remove_units",
    "metric_after_removal",
    "removal_curve",
    "removal_curves",
    "ablated",
]


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


def removal_curves(
    model: nn.Module,
    result: ShapleyResult,
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target: Any,
    ks: Sequence[int] = (0, 1, 2, 5, 10, 20),
    metric: Optional[Callable] = None,
    seeds: Sequence[int] = range(5),
    batch_size: Optional[int] = None,
) -> Dict[str, Tensor]:
    r"""Removal curves for the top-k, bottom-k and random-k units, the random ones
    over several seeds, in one call (every set of units is evaluated once).

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the ranking, layers and baselines.
        inputs (Tensor or tuple of Tensors): Held-out evaluation inputs.
        target (Any): What the metric compares the outputs with.
        ks (sequence of int): Numbers of units removed.
        metric (Callable, optional): Default: accuracy.
        seeds (sequence of int): One random order per seed. Default: 0 .. 4.
        batch_size (int, optional): Examples per forward pass.

    Returns:
        dict: ``"ks"`` (long), ``"top"`` and ``"bottom"`` of shape ``(len(ks),)``,
        ``"random"`` of shape ``(len(seeds), len(ks))``, and its ``"random_mean"``
        and ``"random_std"`` over seeds (float64; std is 0 with one seed).

    Examples::

        >>> curves = removal_curves(model, res, x_test, y_test, ks=[0, 5, 10])
        >>> curves["top"], curves["random_mean"], curves["random_std"]
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` must hold at least one seed")
    if any(int(k) < 0 or int(k) > result.n_units for k in ks):
        raise ValueError(f"`ks` must lie in [0, {result.n_units}], got {list(ks)}")
    orders = [
        torch.argsort(result.flat_values, descending=True),
        torch.argsort(result.flat_values),
    ] + [
        torch.randperm(result.n_units, generator=torch.Generator().manual_seed(int(s)))
        for s in seeds
    ]
    sets = [o[: int(k)].tolist() for o in orders for k in ks]
    vals = metric_after_removal(
        model, result, sets, inputs, target, metric, batch_size
    ).view(len(orders), len(ks))
    rand = vals[2:]
    return {
        "ks": torch.as_tensor(list(ks), dtype=torch.long),
        "top": vals[0],
        "bottom": vals[1],
        "random": rand,
        "random_mean": rand.mean(0),
        "random_std": rand.std(0) if len(seeds) > 1 else torch.zeros(len(ks)),
    }


# -- ablating arbitrary units without a ShapleyResult -------------------------------

UnitSpec = Mapping[Union[str, nn.Module], Sequence[int]]


def _resolve_layers(
    model: nn.Module, units: UnitSpec
) -> List[Tuple[str, nn.Module, List[int]]]:
    if not isinstance(units, Mapping) or not units:
        raise ValueError(
            "`units` must be a non-empty dict {layer or layer name: [unit ids]}, got "
            f"{type(units).__name__}"
        )
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for key, ids in units.items():
        if isinstance(key, str):
            try:
                module = model.get_submodule(key)
            except AttributeError:
                raise ValueError(
                    f"`units`: the model has no layer named {key!r}"
                ) from None
            name = key
        elif isinstance(key, nn.Module):
            if id(key) not in names:
                raise ValueError(
                    f"`units`: {type(key).__name__} is not a submodule of the model"
                )
            module, name = key, names[id(key)]
        else:
            raise ValueError(
                "`units` keys must be nn.Modules or layer names, got "
                f"{type(key).__name__}"
            )
        ids_t = torch.as_tensor(list(ids), dtype=torch.long).flatten()
        if ids_t.numel() and int(ids_t.min()) < 0:
            raise ValueError(f"`units` for layer {name!r} has negative ids")
        out.append((name, module, ids_t.tolist()))
    return out


def _layer_baseline(baselines: Any, module: nn.Module, name: str) -> Any:
    if isinstance(baselines, Mapping):
        for key in (module, name):
            try:
                if key in baselines:
                    return baselines[key]
            except TypeError:
                continue
        return 0.0
    return baselines


def _baseline_tensor(value: Any, out_shape: torch.Size, kind: str, name: str) -> Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise ValueError(
            f"`baselines` for layer {name!r} must be a number or a Tensor, got "
            f"{type(value).__name__}"
        )
    b = torch.as_tensor(value, dtype=torch.float32).detach()
    if kind == "filter" and b.dim() == 1 and b.numel() == out_shape[0] > 1:
        b = b.view(-1, *([1] * (len(out_shape) - 1)))  # one value per channel
    try:
        ok = torch.broadcast_shapes(b.shape, out_shape) == torch.Size(out_shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"`baselines` of shape {tuple(b.shape)} does not broadcast to the output "
            f"shape {tuple(out_shape)} of layer {name!r}"
        )
    return b


@contextlib.contextmanager
def ablated(
    model: nn.Module,
    units: UnitSpec,
    baselines: Any = 0.0,
    kind: str = "filter",
) -> Iterator[nn.Module]:
    r"""Temporarily remove any units of any layers of ``model`` inside a ``with``
    block, without a :class:`ShapleyResult`.

    Removal is done by forward hooks (:func:`captum_neuron_shapley.removal.ablate`)
    that are removed on exit, also after an exception; weights, modes and
    gradients are untouched, so the ablated model can be trained or attacked.
    Unit ids are checked against the layer's output at the first forward pass.

    Args:
        model (nn.Module): The model.
        units (dict): ``{layer or qualified layer name: [unit ids]}``. With
            ``kind="filter"`` the ids are channels (dimension 1 of the layer
            output); with ``kind="neuron"`` they are flat indices into the layer
            output without the batch dimension.
        baselines (number, Tensor or dict, optional): What a removed unit emits: a
            number, a tensor broadcastable to the layer output (without batch), for
            filters also a vector with one value per channel, or a dict
            ``{layer or name: value}`` (layers missing from it get 0). Default: 0.
        kind (str): ``"filter"`` or ``"neuron"``. Default: ``"filter"``.

    Returns:
        The model, with the units removed until the block exits.

    Examples::

        >>> with ablated(model, {"conv2": [3, 7], model.conv4: [0]}) as m:
        ...     acc = (m(x_test).argmax(1) == y_test).float().mean()
    """
    if kind not in ("filter", "neuron"):
        raise ValueError(f"`kind` must be 'filter' or 'neuron', got {kind!r}")
    layers = _resolve_layers(model, units)
    entries = []
    for name, module, ids in layers:
        entries.append(
            (
                LayerUnits(module, name, None, None, None, kind),  # type: ignore
                ids,
                _layer_baseline(baselines, module, name),
            )
        )
    keeps: List[Tensor] = []
    handles = []

    def make_setup(u: LayerUnits, ids: List[int], value: Any, keep: Tensor):
        def setup(module: nn.Module, inputs: Any, out: Any) -> None:
            if not isinstance(out, Tensor) or out.dim() < 2:
                raise ValueError(
                    f"`units`: layer {u.name!r} must return one Tensor (N, ...)"
                )
            shape = out.shape[1:]
            if u.out_shape == shape:
                return
            n = shape[0] if kind == "filter" else int(shape.numel())
            if kind == "filter":
                groups = filter_groups(shape, u.name)
            else:
                groups = torch.arange(n).view(shape)
            if ids and max(ids) >= n:
                raise ValueError(
                    f"`units` for layer {u.name!r} has id {max(ids)} but the layer "
                    f"has {n} {kind}s"
                )
            u.out_shape, u.unit_ids = shape, torch.arange(n)
            u.groups = groups.to(out.device)
            u.baseline = _baseline_tensor(value, shape, kind, u.name).to(out.device)
            k = torch.ones(1, n, dtype=torch.bool, device=out.device)
            k[0, ids] = False
            keep.data = k

        return setup

    try:
        for u, ids, value in entries:
            keep = torch.zeros(1, 1, dtype=torch.bool)  # filled at the first call
            keeps.append(keep)
            handles.append(
                u.layer.register_forward_hook(make_setup(u, ids, value, keep))
            )
        with ablate([u for u, _, _ in entries], keeps):
            yield model
    finally:
        for h in handles:
            h.remove()
