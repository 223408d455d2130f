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
from torch import nn, Tensor

from ._inputs import check_finite, explain_forward_errors, resolve_layer
from .game import model_guard, UnitGame
from .metrics import accuracy
from .removal import ablate, filter_groups, LayerUnits
from .result import ShapleyResult

__all__ = [
    "remove_units",
    "metric_after_removal",
    "removal_curve",
    "removal_curves",
    "ablated",
]


Units = Union[Sequence[int], Sequence[Tuple[Any, ...]], Tensor]


def _keep_mask(result: ShapleyResult, units: Units) -> Tensor:
    keep = torch.ones(1, result.n_units, dtype=torch.bool)
    keep[0, result.flat_indices(units)] = False
    return keep


def _is_unit_tuple(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and len(x) in (2, 3) and isinstance(x[0], str)


@contextlib.contextmanager
def remove_units(
    model: nn.Module, result: ShapleyResult, units: Units
) -> Iterator[nn.Module]:
    r"""Temporarily remove units of ``model`` (replaced by the baselines used to
    estimate ``result``) inside a ``with`` block; hooks are removed on exit.

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the layers (by name), units and baselines.
        units (sequence): Units to remove: flat unit indices (as in
            ``result.flat_values``, e.g. ``result.removal_set``) or the
            ``(layer, unit, value)`` tuples of ``result.top_units()``.

    Examples::

        >>> with remove_units(model, result, result.top_units(10)):
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
    units_list: Sequence[Units],
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    target: Any,
    metric: Optional[Callable] = None,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""The metric on ``(inputs, target)`` after removing each set of units, with
    the removal baselines ``result`` was estimated with.

    Args:
        model (nn.Module): The model the result was computed for.
        result (ShapleyResult): Gives the layers (by name), units and baselines.
        units_list (sequence of sets of units): One set per evaluation (an empty
            set measures the intact model); a set is flat unit indices (such as
            ``result.removal_set``) or the ``(layer, unit, value)`` tuples of
            ``result.top_units()``.
        inputs (Tensor or tuple of Tensors): Evaluation inputs.
        target (Any): What the metric compares the outputs with.
        metric (Callable, optional): Default: accuracy.
        batch_size (int, optional): Examples per forward pass.

    Returns:
        Tensor: float64, one value per set.

    Examples::

        >>> metric_after_removal(model, res, [[], res.top_units(10), res.removal_set],
        ...                      x_test, y_test)
        tensor([0.9875, 0.6450, 0.3800], dtype=torch.float64)
    """
    if _is_unit_tuple(units_list) or (
        isinstance(units_list, (list, tuple))
        and units_list
        and (_is_unit_tuple(units_list[0]) or isinstance(units_list[0], int))
    ):
        raise ValueError(
            "`units_list` is a list of unit *sets*; wrap a single set in a list, "
            "e.g. [result.top_units(10)] or [result.removal_set]"
        )
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    for i, x in enumerate(xs):
        check_finite("inputs", x, f" (tensor {i})" if len(xs) > 1 else "")
    layer_units = [lay.to_units(model) for lay in result.layers]
    keep = torch.cat([_keep_mask(result, u) for u in units_list])
    with model_guard(model), explain_forward_errors(model, xs):
        device = xs[0].device
        for u in layer_units:
            assert u.baseline is not None  # to_units always sets one
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
    order: Union[str, Units] = "top",
    metric: Optional[Callable] = None,
    seed: int = 0,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Metric after removing the first ``k`` units of an ordering, for each ``k``.

    Args:
        order (str or sequence): ``"top"`` (highest values first), ``"bottom"``
            (lowest first), ``"random"`` (a random order from ``seed``),
            ``"removal_set"`` (``result.removal_set``, from ``refine``), or units
            in any form :meth:`ShapleyResult.flat_indices` accepts.

    Returns:
        Tensor: float64 of shape ``(len(ks),)``.

    Examples::

        >>> removal_curve(model, res, x_test, y_test, ks=range(11),
        ...               order="removal_set")
    """
    if isinstance(order, str):
        if order == "top":
            idx = torch.argsort(result.flat_values, descending=True).tolist()
        elif order == "bottom":
            idx = torch.argsort(result.flat_values).tolist()
        elif order == "random":
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(result.n_units, generator=g).tolist()
        elif order == "removal_set":
            if result.removal_set is None:
                raise ValueError(
                    "`order='removal_set'` needs a result computed with "
                    "refine='greedy'"
                )
            idx = list(result.removal_set)
        else:
            raise ValueError(
                "`order` must be 'top', 'bottom', 'random', 'removal_set' or units, "
                f"got {order!r}"
            )
    else:
        idx = result.flat_indices(order)
    if any(int(k) < 0 or int(k) > len(idx) for k in ks):
        raise ValueError(f"`ks` must lie in [0, {len(idx)}], got {list(ks)}")
    sets = [idx[: int(k)] for k in ks]
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
        and ``"random_std"`` over seeds (float64; std is 0 with one seed). With a
        ``result.removal_set`` (from ``refine``) also ``"removal_set"``: the
        metric after removing its first ``k`` units, for the ``ks`` up to its
        length (``nan`` beyond).

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
    out = {
        "ks": torch.as_tensor(list(ks), dtype=torch.long),
        "top": vals[0],
        "bottom": vals[1],
        "random": rand,
        "random_mean": rand.mean(0),
        "random_std": rand.std(0) if len(seeds) > 1 else torch.zeros(len(ks)),
    }
    if result.removal_set is not None:
        rs = list(result.removal_set)
        within = [int(k) for k in ks if int(k) <= len(rs)]
        curve = torch.full((len(ks),), float("nan"), dtype=torch.float64)
        if within:
            got = metric_after_removal(
                model,
                result,
                [rs[:k] for k in within],
                inputs,
                target,
                metric,
                batch_size,
            )
            curve[[i for i, k in enumerate(ks) if int(k) <= len(rs)]] = got
        out["removal_set"] = curve
    return out


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
        if not isinstance(key, (str, nn.Module)):
            raise ValueError(
                "`units` keys must be nn.Modules or layer names, got "
                f"{type(key).__name__}"
            )
        module = resolve_layer(model, key, "units")
        name = key if isinstance(key, str) else names[id(module)]
        ids_t = torch.as_tensor(list(ids), dtype=torch.long).flatten()
        if ids_t.numel() and int(ids_t.min()) < 0:
            raise ValueError(f"`units` for layer {name!r} has negative ids")
        out.append((name, module, ids_t.tolist()))
    return out


def _flat_from_spec(
    model: nn.Module, result: ShapleyResult, units: UnitSpec
) -> List[int]:
    r"""Flat indices of ``{layer or name: [unit ids]}`` in ``result``."""
    flat: List[int] = []
    for name, _, ids in _resolve_layers(model, units):
        if name not in [lay.name for lay in result.layers]:
            raise ValueError(
                f"`units`: layer {name!r} is not one of the result's layers "
                f"({', '.join(lay.name for lay in result.layers)})"
            )
        flat += result.flat_indices([(name, i) for i in ids])
    return flat


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
    units: Union[UnitSpec, Units],
    baselines: Any = None,
    kind: str = "filter",
    result: Optional[ShapleyResult] = None,
) -> Iterator[nn.Module]:
    r"""Temporarily remove any units of any layers of ``model`` inside a ``with``
    block.

    Removal is done by forward hooks (:func:`captum_neuron_shapley.removal.ablate`)
    that are removed on exit, also after an exception; weights, modes and
    gradients are untouched, so the ablated model can be trained or attacked.

    With ``result``, the units are removed exactly as the Shapley game removed
    them (its layers, unit grouping and baselines), so that what you check is what
    was estimated; ``units`` may then also be the output of
    ``result.top_units()`` or ``result.removal_set``. Without ``result``, units
    are given per layer and replaced by ``baselines`` (default 0, which differs
    from :class:`~captum_neuron_shapley.FilterShapley`'s default mean removal:
    pass the result, or the same baselines, to judge a ranking by its own
    removal rule).

    Args:
        model (nn.Module): The model.
        units (dict or sequence): ``{layer or qualified layer name: [unit ids]}``
            (with ``kind="filter"`` the ids are channels, dimension 1 of the layer
            output; with ``kind="neuron"`` flat indices into the layer output
            without the batch dimension; with ``result``, the result's unit ids),
            or, with ``result``, flat unit indices or ``(layer, unit, value)``
            tuples as :meth:`ShapleyResult.top_units` gives.
        baselines (number, Tensor or dict, optional): Without ``result``: what a
            removed unit emits: a number, a tensor broadcastable to the layer
            output (without batch), for filters also a vector with one value per
            channel, or a dict ``{layer or name: value}`` (layers missing from it
            get 0). Default: 0. Not allowed with ``result`` (its baselines are
            used).
        kind (str): ``"filter"`` or ``"neuron"`` (without ``result``). Default:
            ``"filter"``.
        result (ShapleyResult, optional): The estimate whose removal rule to use.

    Returns:
        The model, with the units removed until the block exits.

    Examples::

        >>> with ablated(model, res.top_units(10), result=res) as m:
        ...     acc = (m(x_test).argmax(1) == y_test).float().mean()
        >>> with ablated(model, {"conv2": [3, 7], model.conv4: [0]}) as m:
        ...     ...  # zero removal, no result needed
    """
    if result is not None:
        if not isinstance(result, ShapleyResult):
            raise ValueError(
                f"`result` must be a ShapleyResult, got {type(result).__name__}"
            )
        if baselines is not None:
            raise ValueError(
                "pass `baselines` or `result`, not both: with a result the units "
                "are removed with the baselines it was estimated with"
            )
        if isinstance(units, Mapping):
            units = _flat_from_spec(model, result, units)
        with remove_units(model, result, units):
            yield model
        return
    if not isinstance(units, Mapping):
        raise ValueError(
            "`units` must be a dict {layer or layer name: [unit ids]}; flat unit "
            "indices and top_units() tuples need `result=` (the ShapleyResult they "
            f"index), got {type(units).__name__}"
        )
    if baselines is None:
        baselines = 0.0
    if kind not in ("filter", "neuron"):
        raise ValueError(f"`kind` must be 'filter' or 'neuron', got {kind!r}")
    layers = _resolve_layers(model, units)
    entries = []
    for name, module, ids in layers:
        value = _layer_baseline(baselines, module, name)
        check_finite("baselines", value, f" for layer {name!r}")
        entries.append(
            (
                LayerUnits(module, name, None, None, None, kind),  # type: ignore
                ids,
                value,
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
