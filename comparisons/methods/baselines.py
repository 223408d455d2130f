r"""Baselines to compare Neuron Shapley with: one dataset-level score per unit.

Every function here scores the units of the same layers as
``FilterShapley(model, layers)`` and returns them in the same flat order as
``ShapleyResult.flat_values``: the channels (dimension 1 of the layer output) of
layer 0, then those of layer 1, and so on. Higher means more important for the
quantity asked about. They are built on Captum's layer methods:

- :func:`distributional_influence` (Leino et al., 2018), with Captum's
  ``LayerGradientXActivation(multiply_by_inputs=False)`` (the gradient at the
  data points) or ``InternalInfluence`` (the gradient along the integrated
  gradients path);
- :func:`layer_conductance` (Dhamdhere et al., 2018) with ``LayerConductance``,
  and :func:`neuron_conductance_map` with ``NeuronConductance`` for a picture of
  what flows through one unit;
- :func:`activation_magnitude` (``LayerActivation``), :func:`gradient_x_activation`
  (``LayerGradientXActivation``), :func:`leave_one_out` (the unit game with one
  unit removed at a time) and :func:`random_scores`.

The *quantity of interest* is ``target`` (Captum's target: a class index or
one label per example; the score of that class), ``contrast=(a, b)`` (the score
of class ``a`` minus that of class ``b``), or any per-example ``quantity``
computed from the outputs, such as a loss: ``quantity(outputs, target)`` returns
one number per example, and ``target`` (a tensor or tuple of tensors with one
entry per example) is sliced and expanded along with the inputs, so that the
quantity can read each example's label, subgroup or attack target
(:func:`log_likelihood` is the negative cross-entropy).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, cast, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import (
    InternalInfluence,
    LayerActivation,
    LayerConductance,
    LayerGradientXActivation,
    NeuronConductance,
)

from captum_neuron_shapley.game import UnitGame
from torch import nn, Tensor

__all__ = [
    "distributional_influence",
    "layer_conductance",
    "neuron_conductance_map",
    "activation_magnitude",
    "gradient_x_activation",
    "leave_one_out",
    "random_scores",
    "log_likelihood",
]

Layers = Union[nn.Module, Sequence[nn.Module]]
Target = Union[None, int, Tensor, Tuple[Tensor, ...]]
Quantity = Callable[[Tensor, Any], Tensor]


def log_likelihood(outputs: Tensor, target: Any) -> Tensor:
    r"""A per-example quantity: the log-probability of each example's label
    under the softmax of ``outputs``, i.e. minus its cross-entropy loss. With
    ``target = (labels, weights)`` it is multiplied by the per-example weights
    (e.g. ``+1`` and ``-1`` to contrast two groups of examples).

    Args:
        outputs (Tensor): Logits ``(N, C)``.
        target (Tensor or tuple): Labels ``(N,)``, or ``(labels, weights)``.

    Returns:
        Tensor: ``(N,)``.

    Examples::

        >>> gxa = gradient_x_activation(model, model.conv_layers, x_val,
        ...                             target=y_val, quantity=log_likelihood)
    """
    weights = None
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(
                "log_likelihood expects `target` = labels or (labels, weights), got "
                f"a tuple of {len(target)}"
            )
        target, weights = target
    if not isinstance(target, Tensor) or target.dim() != 1:
        raise ValueError("log_likelihood expects 1-d labels in `target`")
    logp = torch.log_softmax(outputs, dim=-1)
    q = logp.gather(-1, target.long().view(-1, 1)).squeeze(-1)
    return q if weights is None else q * weights.to(q.dtype)


def _as_list(layers: Layers) -> List[nn.Module]:
    if isinstance(layers, (list, tuple)):
        out = list(cast(Sequence[nn.Module], layers))
    else:
        out = [cast(nn.Module, layers)]
    if not out:
        raise ValueError("`layers` must be a module or a non-empty list of them")
    return out


def _quantity(
    model: Callable,
    target: Target,
    contrast: Optional[Tuple[int, int]],
    quantity: Optional[Quantity] = None,
) -> Tuple[Callable, Callable[[Target], Tuple[Any, Any]]]:
    r"""The forward function of the quantity of interest, and a function giving,
    for one batch's slice of ``target``, Captum's ``(target,
    additional_forward_args)``."""
    if quantity is not None and contrast is not None:
        raise ValueError("pass either `quantity` or `contrast`, not both")
    if contrast is not None and target is not None:
        raise ValueError("pass either `target` or `contrast`, not both")
    if quantity is not None:
        if not callable(quantity):
            raise ValueError(
                f"`quantity` must be callable(outputs, target) -> (N,) tensor, got "
                f"{type(quantity).__name__}"
            )
        parts = target if isinstance(target, (tuple, list)) else (target,)
        if target is not None and not all(
            isinstance(t, Tensor) and t.dim() > 0 for t in parts
        ):
            raise ValueError(
                "with `quantity`, `target` must be a tensor or a tuple of tensors "
                "with one entry per example (it is passed to the quantity)"
            )
        packed = isinstance(target, (tuple, list))

        def per_example(x: Tensor, *t: Tensor) -> Tensor:
            out = model(x)
            arg = None if target is None else (tuple(t) if packed else t[0])
            q = quantity(out, arg)
            if not isinstance(q, Tensor) or q.shape != out.shape[:1]:
                raise ValueError(
                    "`quantity` must return one number per example, shape "
                    f"({out.shape[0]},), got "
                    + (
                        f"shape {tuple(q.shape)}"
                        if isinstance(q, Tensor)
                        else type(q).__name__
                    )
                )
            return q.unsqueeze(1)

        def args(t: Target) -> Tuple[Any, Any]:
            if t is None:
                return 0, None
            return 0, tuple(cast(Any, t)) if packed else (t,)

        return per_example, args
    if contrast is None:
        return model, lambda t: (t, None)
    a, b = (int(c) for c in contrast)

    def difference(*inputs: Tensor) -> Tensor:
        out = model(*inputs)
        return (out[:, a] - out[:, b]).unsqueeze(1)

    return difference, lambda t: (0, None)


def _per_channel(attr: Tensor) -> Tensor:
    r"""``(N, C, ...)`` -> ``(N, C)`` float64, summed over positions."""
    attr = attr.detach().to(torch.float64)
    return attr.flatten(2).sum(2) if attr.dim() > 2 else attr


def _slice(target: Target, sl: slice) -> Target:
    if isinstance(target, Tensor) and target.dim() > 0:
        return target[sl]
    if isinstance(target, (tuple, list)):
        return cast(Target, tuple(_slice(t, sl) for t in target))
    return target


def _batches(inputs: Tensor, target: Target, batch_size: Optional[int]):
    n = inputs.shape[0]
    step = n if batch_size is None else batch_size
    for i in range(0, n, step):
        yield inputs[i : i + step], _slice(target, slice(i, i + step))


def _mean_over_data(
    per_batch: Callable[[Tensor, Target], List[Tensor]],
    inputs: Tensor,
    target: Target,
    batch_size: Optional[int],
) -> Tensor:
    r"""Mean over examples of per-layer ``(n, C)`` scores, concatenated."""
    sums: Optional[List[Tensor]] = None
    for x, t in _batches(inputs, target, batch_size):
        parts = [_per_channel(a).sum(0) for a in per_batch(x, t)]
        sums = parts if sums is None else [s + p for s, p in zip(sums, parts)]
    assert sums is not None
    return torch.cat(sums) / inputs.shape[0]


def distributional_influence(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    target: Target = None,
    contrast: Optional[Tuple[int, int]] = None,
    distribution: str = "data",
    baselines: Union[None, float, Tensor] = None,
    n_steps: int = 20,
    batch_size: Optional[int] = None,
    quantity: Optional[Quantity] = None,
) -> Tensor:
    r"""Distributional influence (Leino et al., 2018) of every channel:

    .. math::
        \chi_j = \mathbb{E}_{x \sim P}\Big[\sum_{p} \frac{\partial q}{\partial
        z_{j,p}}(h(x))\Big]

    the expected gradient of the quantity of interest ``q`` with respect to the
    layer's output ``z`` at channel ``j``, summed over spatial positions ``p``.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list[nn.Module]): Layers whose output channels are
            scored.
        inputs (Tensor): The examples defining the distribution of interest
            ``P`` (the evaluation set, or only one class's examples).
        target (int or Tensor, optional): ``q`` is the score of this class (or of
            each example's own label when a tensor of labels is given).
        contrast (tuple[int, int], optional): ``q`` is the score of class ``a``
            minus that of class ``b``. Exclusive with ``target``.
        distribution (str): ``"data"``: ``P`` is the point masses at ``inputs``,
            computed with ``LayerGradientXActivation(multiply_by_inputs=False)``,
            which returns the gradient. ``"path"``: ``P`` is uniform on the straight
            lines from ``baselines`` to each input (the integrated-gradients path),
            computed with ``InternalInfluence``.
        baselines (float or Tensor, optional): Start of the path (default 0).
        n_steps (int): Points on the path for ``"path"``. Default: 20.
        batch_size (int, optional): Examples per call (all if None).
        quantity (Callable, optional): ``q`` is ``quantity(outputs, target)``,
            one number per example (e.g. :func:`log_likelihood`, minus the
            loss); ``target`` is then the per-example tensor (or tuple of them)
            it reads. Exclusive with ``contrast``.

    Returns:
        Tensor: float64 of shape ``(n_units,)``, channels of layer 0, then layer 1,
        ... (the order of ``ShapleyResult.flat_values``).

    Examples::

        >>> chi = distributional_influence(model, [model.conv1, model.conv2],
        ...                                x_val, target=y_val)
        >>> chi_ab = distributional_influence(model, model.conv4, x_val[y_val == 3],
        ...                                   contrast=(3, 8), distribution="path")
    """
    layers = _as_list(layers)
    forward, args = _quantity(model, target, contrast, quantity)
    if distribution == "data":
        method = LayerGradientXActivation(forward, layers, multiply_by_inputs=False)

        def run(x: Tensor, t: Target) -> List[Tensor]:
            tt, extra = args(t)
            return list(method.attribute(x, target=tt, additional_forward_args=extra))

    elif distribution == "path":
        methods = [InternalInfluence(forward, layer) for layer in layers]

        def run(x: Tensor, t: Target) -> List[Tensor]:
            tt, extra = args(t)
            return [
                m.attribute(
                    x,
                    baselines=baselines,
                    target=tt,
                    additional_forward_args=extra,
                    n_steps=n_steps,
                )
                for m in methods
            ]

    else:
        raise ValueError(
            f"`distribution` must be 'data' or 'path', got {distribution!r}"
        )
    return _mean_over_data(run, inputs, target, batch_size)


def layer_conductance(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    target: Target = None,
    contrast: Optional[Tuple[int, int]] = None,
    baselines: Union[None, float, Tensor] = None,
    n_steps: int = 20,
    batch_size: Optional[int] = None,
    method: str = "riemann_trapezoid",
    quantity: Optional[Quantity] = None,
) -> Tensor:
    r"""Conductance (Dhamdhere et al., 2018) of every channel, averaged over the
    dataset: Captum's ``LayerConductance`` per example, summed over spatial
    positions, averaged over ``inputs``.

    Conductance is complete: for each example, the conductances of all units of
    one layer add up to ``q(x) - q(baseline)`` (up to the integration error of
    ``n_steps`` points), so the returned scores of one layer sum to
    ``mean_x q(x) - q(baseline)``.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list[nn.Module]): Layers whose channels are scored.
        inputs (Tensor): Examples to average over.
        target (int or Tensor, optional): Class (or per-example labels) whose score
            is the quantity of interest.
        contrast (tuple[int, int], optional): Score of ``a`` minus that of ``b``.
        baselines (float or Tensor, optional): Input baseline (default 0).
        n_steps (int): Integration points. Default: 20.
        batch_size (int, optional): Examples per call (all if None).
        method (str): Captum's integration method. Default
            ``"riemann_trapezoid"``, whose grid includes both ends of the path, so
            that the differences of the layer output telescope over the whole path
            (Captum's default ``"gausslegendre"`` uses interior points only and
            misses the two end pieces: completeness then holds only roughly).
        quantity (Callable, optional): ``q`` is ``quantity(outputs, target)``,
            one number per example (e.g. :func:`log_likelihood`, minus the
            loss); ``target`` is then the per-example tensor (or tuple of them)
            it reads. Exclusive with ``contrast``.

    Returns:
        Tensor: float64 ``(n_units,)`` in the order of
        ``ShapleyResult.flat_values``.

    Examples::

        >>> cond = layer_conductance(model, model.conv_layers, x_val, target=y_val)
    """
    layers = _as_list(layers)
    forward, args = _quantity(model, target, contrast, quantity)
    methods = [LayerConductance(forward, layer) for layer in layers]

    def run(x: Tensor, t: Target) -> List[Tensor]:
        tt, extra = args(t)
        return [
            m.attribute(
                x,
                baselines=baselines,
                target=tt,
                additional_forward_args=extra,
                n_steps=n_steps,
                method=method,
            )
            for m in methods
        ]

    return _mean_over_data(run, inputs, target, batch_size)


def neuron_conductance_map(
    model: nn.Module,
    layer: nn.Module,
    channel: int,
    inputs: Tensor,
    target: Target = None,
    contrast: Optional[Tuple[int, int]] = None,
    baselines: Union[None, float, Tensor] = None,
    n_steps: int = 20,
    quantity: Optional[Quantity] = None,
) -> Tensor:
    r"""What flows through one channel: for each input feature, the conductance
    through every position of channel ``channel`` of ``layer``, added up. Each
    position is one call of Captum's ``NeuronConductance`` with the neuron
    ``(channel, *position)``; the sum is exact (conductance is linear in the
    path through each neuron), whereas a callable selector that sums the
    channel first would multiply the summed gradients, which is not the
    conductance. Summed over the input features, the map equals the channel's
    layer conductance for the example (up to the integration error).

    Args:
        model (nn.Module): The model.
        layer (nn.Module): The layer.
        channel (int): The channel (filter) index.
        inputs (Tensor): Examples, ``(N, ...)``.
        target (int or Tensor, optional): Class whose score is the quantity.
        contrast (tuple[int, int], optional): Score of ``a`` minus that of ``b``.
        baselines (float or Tensor, optional): Input baseline (default 0).
        n_steps (int): Integration points. Default: 20.
        quantity (Callable, optional): ``q`` is ``quantity(outputs, target)``,
            one number per example (e.g. :func:`log_likelihood`, minus the
            loss); ``target`` is then the per-example tensor (or tuple of them)
            it reads. Exclusive with ``contrast``.

    Returns:
        Tensor: Same shape as ``inputs``: the conductance of each input feature
        through the channel. Costs one ``NeuronConductance`` call per position.

    Examples::

        >>> pic = neuron_conductance_map(model, model.conv4, 17, x_test[:8], y_test[:8])
    """
    forward, args = _quantity(model, target, contrast, quantity)
    target, extra = args(target)
    shape = LayerActivation(model, layer).attribute(inputs[:1]).shape[2:]
    nc = NeuronConductance(forward, layer)
    total = torch.zeros_like(inputs, dtype=torch.float64)
    for pos in itertools.product(*(range(s) for s in shape)):
        total += nc.attribute(
            inputs,
            (channel, *pos),
            baselines=baselines,
            target=target,
            additional_forward_args=extra,
            n_steps=n_steps,
        ).detach()
    return total


def activation_magnitude(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Mean absolute activation of every channel: ``E_x[mean_p |z_{j,p}(x)|]``
    from Captum's ``LayerActivation`` (averaged, not summed, over positions so that
    layers of different resolutions are comparable). No quantity of interest:
    it does not look at the output at all.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list[nn.Module]): Layers whose channels are scored.
        inputs (Tensor): Examples to average over.
        batch_size (int, optional): Examples per call (all if None).

    Returns:
        Tensor: float64 ``(n_units,)`` in the order of
        ``ShapleyResult.flat_values``.

    Examples::

        >>> mag = activation_magnitude(model, model.conv_layers, x_val)
    """
    layers = _as_list(layers)
    method = LayerActivation(model, layers)

    def run(x: Tensor, t: Target) -> List[Tensor]:
        acts = []
        for a in method.attribute(x):
            a = a.detach().abs().to(torch.float64)
            acts.append(a.flatten(2).mean(2) if a.dim() > 2 else a)
        return acts

    with torch.no_grad():
        return _mean_over_data(run, inputs, None, batch_size)


def gradient_x_activation(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    target: Target = None,
    contrast: Optional[Tuple[int, int]] = None,
    batch_size: Optional[int] = None,
    quantity: Optional[Quantity] = None,
) -> Tensor:
    r"""Gradient times activation of every channel, ``E_x[sum_p z_{j,p}
    dq/dz_{j,p}]``, with Captum's ``LayerGradientXActivation``: a first-order
    estimate of how much ``q`` drops when the channel is set to zero.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list[nn.Module]): Layers whose channels are scored.
        inputs (Tensor): Examples to average over.
        target (int or Tensor, optional): Class (or per-example labels).
        contrast (tuple[int, int], optional): Score of ``a`` minus that of ``b``.
        batch_size (int, optional): Examples per call (all if None).
        quantity (Callable, optional): ``q`` is ``quantity(outputs, target)``,
            one number per example (e.g. :func:`log_likelihood`, minus the
            loss); ``target`` is then the per-example tensor (or tuple of them)
            it reads. Exclusive with ``contrast``.

    Returns:
        Tensor: float64 ``(n_units,)`` in the order of
        ``ShapleyResult.flat_values``.

    Examples::

        >>> gxa = gradient_x_activation(model, model.conv_layers, x_val, y_val)
    """
    layers = _as_list(layers)
    forward, args = _quantity(model, target, contrast, quantity)
    method = LayerGradientXActivation(forward, layers)

    def run(x: Tensor, t: Target) -> List[Tensor]:
        tt, extra = args(t)
        return list(method.attribute(x, target=tt, additional_forward_args=extra))

    return _mean_over_data(run, inputs, target, batch_size)


def leave_one_out(game: UnitGame) -> Tensor:
    r"""Leave-one-out value of every unit of a unit game: ``V(all) - V(all \ {j})``,
    the drop of the metric when unit ``j`` alone is removed (with the game's
    removal rule, on the game's data). Costs one evaluation per unit, counted in
    ``game.n_evaluations``.

    Args:
        game (UnitGame): From ``FilterShapley(model, layers).game(inputs, target,
            metric)``; it fixes the units, their order and the removal rule.

    Returns:
        Tensor: float64 ``(game.n_units,)`` in the order of
        ``ShapleyResult.flat_values``.

    Examples::

        >>> game = FilterShapley(model, model.conv_layers).game(x_val, target=y_val)
        >>> loo = leave_one_out(game)
    """
    n = game.n_units
    keep = ~torch.eye(n, dtype=torch.bool)
    return game.full_value() - game.value(keep)


def random_scores(n_units: int, seed: int = 0) -> Tensor:
    r"""Scores drawn uniformly at random (a private generator seeded by
    ``seed``): the ranking any method should beat.

    Args:
        n_units (int): Number of units.
        seed (int): Seed. Default: 0.

    Returns:
        Tensor: float64 ``(n_units,)``.

    Examples::

        >>> random_scores(160, seed=3).argsort(descending=True)[:10]
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(n_units, generator=g, dtype=torch.float64)
