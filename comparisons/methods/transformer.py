r"""Baselines for transformer units, attention heads and MLP neurons: one
dataset-level score per unit, in the flat order of ``ShapleyResult.flat_values``
(the heads of ``HeadShapley(model, layers)``, layer 0 first; or the hidden
neurons of ``NeuronShapley(model, layers)`` with ``layer_mask=feature_mask(d)``
on the MLPs' second linear layers).

A unit is a slice of the last dimension of a *site* tensor, at every position:
a head is its ``head_dim`` slice of the heads' concatenated outputs (read
through :func:`~captum_neuron_shapley.head_outputs`, :func:`head_sites`), an MLP
neuron is one feature of the input of the MLP's second linear layer
(:func:`neuron_sites`). Higher scores mean more important for the quantity of
interest ``q``, one number per example (default :func:`answer_log_likelihood`,
minus the loss):

- :func:`gate_importance`: the head importance of Michel et al. ("Are Sixteen
  Heads Really Better than One?", 2019), ``I_h = E_x |dL(x)/d xi_h|`` for a
  gate ``xi_h`` (1 in the model) multiplying the unit's output, each layer's
  scores divided by their l2 norm as in the paper;
- :func:`attribution_patching` (AtP; Nanda 2023, Kramár et al. 2024): the
  first-order estimate of what replacing the unit's output ``a`` by its
  baseline ``b`` does to ``q``, ``g . (b - a)`` summed over the unit's slice
  with ``g = dq/da``; the score is minus its mean (the predicted drop);
- :func:`unit_conductance`: Captum's ``LayerConductance`` on the site, summed
  per unit, averaged over the examples;
- :func:`unit_grad_x_act`: Captum's ``LayerGradientXActivation`` on the site,
  summed per unit, averaged (a first-order estimate of zero removal).

Leave-one-out and random scores come from :mod:`~comparisons.methods.baselines`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, cast, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import LayerConductance, LayerGradientXActivation

from captum_neuron_shapley import head_outputs
from torch import nn, Tensor

from .baselines import _quantity

__all__ = [
    "Site",
    "head_sites",
    "neuron_sites",
    "answer_log_likelihood",
    "gate_importance",
    "attribution_patching",
    "unit_conductance",
    "unit_grad_x_act",
    "unit_sums",
]

Quantity = Callable[[Tensor, Any], Tensor]


@dataclass
class Site:
    r"""Where the units of one layer are read.

    Attributes:
        module (nn.Module): The module whose output (or input) holds the units.
        n_units (int): Units: equal slices of the tensor's last dimension.
        layer_input (bool): The units are in the module's (first) input.
        name (str): The layer's name, for messages.
    """

    module: nn.Module
    n_units: int
    layer_input: bool = False
    name: str = ""


@contextlib.contextmanager
def head_sites(
    model: nn.Module,
    layers: Union[nn.Module, Sequence[nn.Module]],
    num_heads: Union[None, int, Sequence[Optional[int]]] = None,
) -> Iterator[List[Site]]:
    r"""The heads of attention layers as sites (one per layer): the modules of
    :func:`~captum_neuron_shapley.head_outputs`, valid inside the context."""
    layer_list: List[nn.Module] = (
        list(layers) if isinstance(layers, (list, tuple)) else [cast(nn.Module, layers)]
    )
    with head_outputs(model, layer_list, num_heads) as probes:
        yield [
            Site(p, int(getattr(p, "num_heads")), False, str(getattr(p, "name")))
            for p in probes
        ]


@contextlib.contextmanager
def neuron_sites(layers: Sequence[nn.Module]) -> Iterator[List[Site]]:
    r"""The hidden neurons of MLPs as sites: the input features of each MLP's
    second linear layer (``nn.Linear``), one unit per feature."""
    sites = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"`layers` entry {i} must be the MLP's second nn.Linear (its input "
                f"features are the neurons), got {type(layer).__name__}"
            )
        sites.append(Site(layer, int(layer.in_features), True, f"layers[{i}]"))
    yield sites


def answer_log_likelihood(outputs: Tensor, target: Any) -> Tensor:
    r"""Per example, the log-probability of the right answer under the softmax
    of ``outputs`` (minus the cross-entropy loss): logits ``(N, C)`` and labels
    ``(N,)``, or several answers per example, ``(N, T, C)`` and ``(N, T)``,
    averaged over the ``T`` answers.

    Returns:
        Tensor: ``(N,)``.
    """
    if not isinstance(target, Tensor) or target.shape != outputs.shape[:-1]:
        raise ValueError(
            "answer_log_likelihood expects labels of the outputs' shape without "
            f"its last dimension {tuple(outputs.shape[:-1])}, got "
            + (
                f"shape {tuple(target.shape)}"
                if isinstance(target, Tensor)
                else type(target).__name__
            )
        )
    logp = torch.log_softmax(outputs, dim=-1)
    q = logp.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    return q.reshape(q.shape[0], -1).mean(1)


def unit_sums(t: Tensor, n_units: int) -> Tensor:
    r"""``(N, ..., W)`` to ``(N, n_units)``: each unit's ``W // n_units``
    features summed over every position."""
    n, width = t.shape[0], int(t.shape[-1])
    if width % n_units:
        raise ValueError(f"{n_units} units do not divide the width {width}")
    return t.reshape(n, -1, n_units, width // n_units).sum(dim=(1, 3))


def _check(sites: Sequence[Site]) -> List[Site]:
    sites = list(sites)
    if not sites or not all(isinstance(s, Site) for s in sites):
        raise ValueError("`sites` must be a non-empty list of Site")
    return sites


def _batches(inputs: Tensor, target: Any, batch_size: Optional[int]):
    n = int(inputs.shape[0])
    step = n if batch_size is None else int(batch_size)
    for i in range(0, n, step):
        yield inputs[i : i + step], target[i : i + step]


@contextlib.contextmanager
def _hooks(
    sites: Sequence[Site],
    edit: Callable[[int, Tensor], Tensor],
) -> Iterator[None]:
    r"""Route each site's tensor through ``edit(site index, tensor)``."""
    handles = []
    try:
        for i, s in enumerate(sites):
            if s.layer_input:

                def pre(
                    module: nn.Module, args: Tuple[Any, ...], i: int = i
                ) -> Tuple[Any, ...]:
                    return (edit(i, args[0]),) + tuple(args[1:])

                handles.append(s.module.register_forward_pre_hook(pre))
            else:

                def post(
                    module: nn.Module, args: Any, out: Tensor, i: int = i
                ) -> Tensor:
                    return edit(i, out)

                handles.append(s.module.register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


def _expand(per_unit: Tensor, like: Tensor) -> Tensor:
    r"""``(N, n_units)`` to the shape of ``like`` ``(N, ..., W)``: each unit's
    value on its slice of the last dimension, at every position."""
    width = int(like.shape[-1])
    rep = per_unit.repeat_interleave(width // per_unit.shape[1], dim=1)
    return rep.view(rep.shape[0], *([1] * (like.dim() - 2)), width)


def gate_importance(
    forward_func: Callable[..., Tensor],
    sites: Sequence[Site],
    inputs: Tensor,
    target: Any,
    quantity: Quantity = answer_log_likelihood,
    normalize: bool = True,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Michel et al.'s (2019) importance of every unit: a gate ``xi_u = 1``
    multiplies the unit's output, and

    .. math::
        I_u = \mathbb{E}_x \left| \frac{\partial L(x)}{\partial \xi_u} \right|

    with ``L = -q`` (the loss, by default), one backward pass per batch (each
    example has its own gates, so that the derivatives stay per example). With
    ``normalize`` each layer's scores are divided by their l2 norm, as the
    paper does before ranking heads across layers.

    Args:
        forward_func (Callable): The model.
        sites (list of Site): Where the units are (:func:`head_sites`,
            :func:`neuron_sites`).
        inputs (Tensor): Examples to average over.
        target (Tensor): Per-example labels read by ``quantity``.
        quantity (Callable): ``quantity(outputs, target)``, ``(N,)``.
        normalize (bool): Divide each layer's scores by their l2 norm.
        batch_size (int, optional): Examples per pass (all if None).

    Returns:
        Tensor: float64 ``(n_units,)``, layer 0 first.

    Examples::

        >>> with head_sites(model, [l.self_attn for l in model.encoder.layers]) as s:
        ...     imp = gate_importance(model, s, x, y)
    """
    sites = _check(sites)
    sums = [torch.zeros(s.n_units, dtype=torch.float64) for s in sites]
    for x, t in _batches(inputs, target, batch_size):
        gates = [  # float64 whatever the model's dtype (inputs may be tokens)
            torch.ones(
                x.shape[0], s.n_units, dtype=torch.float64, device=x.device
            ).requires_grad_()
            for s in sites
        ]

        def scale(i: int, a: Tensor) -> Tensor:
            return a * _expand(gates[i].to(a.dtype), a)

        with torch.enable_grad(), _hooks(sites, scale):
            q = quantity(forward_func(x), t)
            grads = torch.autograd.grad((-q).sum(), gates)
        for i, g in enumerate(grads):
            sums[i] += g.detach().abs().sum(0).to(torch.float64).cpu()
    n = float(inputs.shape[0])
    scores = [s / n for s in sums]
    if normalize:
        scores = [s / s.norm() if float(s.norm()) > 0 else s for s in scores]
    return torch.cat(scores)


def attribution_patching(
    forward_func: Callable[..., Tensor],
    sites: Sequence[Site],
    inputs: Tensor,
    target: Any,
    baselines: Optional[Sequence[Tensor]] = None,
    quantity: Quantity = answer_log_likelihood,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Attribution patching (AtP): for every unit, the first-order estimate of
    the change of ``q`` when the unit's output ``a`` is replaced by its
    baseline ``b`` (the removal the Shapley game uses),

    .. math::
        \widehat{\Delta q}_u(x) = \sum_{p,\, d \in u} \frac{\partial q}{\partial
        a_{p,d}}(x)\, (b_{p,d} - a_{p,d}(x)),

    from one forward and one backward pass per batch; the score is minus its
    mean over the examples (the predicted drop of ``q``; positive when removing
    the unit is predicted to hurt).

    Args:
        forward_func (Callable): The model.
        sites (list of Site): Where the units are.
        inputs (Tensor): Examples to average over.
        target (Tensor): Per-example labels read by ``quantity``.
        baselines (list of Tensor, optional): One replacement per site,
            broadcastable to the site tensor without its batch dimension (the
            Shapley game's ``unit.baseline``). Default: the mean of each
            feature over ``inputs`` and the positions (the default removal of
            ``HeadShapley`` and of ``feature_mask`` units with ``"mean"``).
        quantity (Callable): ``quantity(outputs, target)``, ``(N,)``.
        batch_size (int, optional): Examples per pass (all if None).

    Returns:
        Tensor: float64 ``(n_units,)``, layer 0 first.

    Examples::

        >>> game = hs.game(x, target=y)
        >>> with head_sites(model, layers) as s:
        ...     atp = attribution_patching(model, s, x, y,
        ...                                [u.baseline for u in game.units])
    """
    sites = _check(sites)
    if baselines is None:
        baselines = _mean_features(forward_func, sites, inputs, batch_size)
    if len(baselines) != len(sites):
        raise ValueError(
            f"`baselines` holds {len(baselines)} tensors for {len(sites)} sites"
        )
    sums = [torch.zeros(s.n_units, dtype=torch.float64) for s in sites]
    for x, t in _batches(inputs, target, batch_size):
        seen: List[Optional[Tensor]] = [None] * len(sites)

        def keep(i: int, a: Tensor) -> Tensor:
            seen[i] = a
            return a

        with torch.enable_grad(), _hooks(sites, keep):
            q = quantity(forward_func(x), t)
            acts = [a for a in seen if a is not None]
            if len(acts) != len(sites):
                raise ValueError("a site was not reached by the forward pass")
            grads = torch.autograd.grad(q.sum(), acts)
        for i, (a, g, b) in enumerate(zip(acts, grads, baselines)):
            b = b.to(device=a.device, dtype=a.dtype)
            delta = g.detach() * (b - a.detach())
            sums[i] += unit_sums(delta, sites[i].n_units).sum(0).double().cpu()
    n = float(inputs.shape[0])
    return -torch.cat([s / n for s in sums])


def _mean_features(
    forward_func: Callable[..., Tensor],
    sites: Sequence[Site],
    inputs: Tensor,
    batch_size: Optional[int],
) -> List[Tensor]:
    r"""Each site's mean over the examples and positions, per feature."""
    totals: List[Optional[Tensor]] = [None] * len(sites)
    count = [0] * len(sites)

    def add(i: int, a: Tensor) -> Tensor:
        flat = a.detach().reshape(-1, a.shape[-1]).double()
        s = flat.sum(0)
        before = totals[i]
        totals[i] = s if before is None else before + s
        count[i] += flat.shape[0]
        return a

    with torch.no_grad(), _hooks(sites, add):
        for x, _ in _batches(inputs, inputs, batch_size):
            forward_func(x)
    if any(t is None for t in totals):
        raise ValueError("a site was not reached by the forward pass")
    return [(t / c).float() for t, c in zip(totals, count) if t is not None]


def _captum_quantity(
    forward_func: Callable[..., Tensor], target: Any, quantity: Quantity
) -> Callable[..., Tensor]:
    forward, _ = _quantity(forward_func, target, None, quantity)
    return forward


def unit_conductance(
    forward_func: Callable[..., Tensor],
    sites: Sequence[Site],
    inputs: Tensor,
    target: Any,
    input_baselines: Union[None, float, Tensor] = None,
    quantity: Quantity = answer_log_likelihood,
    n_steps: int = 20,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Conductance (Dhamdhere et al., 2018) of every unit: Captum's
    ``LayerConductance`` of ``q`` on each site (its input for
    ``layer_input`` sites), along the straight path from ``input_baselines``
    to each input, summed over the unit's slice and the positions, averaged over
    the examples. In a residual network the conductances of one layer's units
    add up to the part of ``q(x) - q(baseline)`` that flows through that layer,
    not to all of it.

    Args:
        forward_func (Callable): The model (on inputs that can be interpolated,
            such as embeddings).
        sites (list of Site): Where the units are.
        inputs (Tensor): Examples to average over.
        target (Tensor): Per-example labels read by ``quantity``.
        input_baselines (float or Tensor, optional): Start of the path
            (Captum's ``baselines``; default 0).
        quantity (Callable): ``quantity(outputs, target)``, ``(N,)``.
        n_steps (int): Points of the path (``riemann_trapezoid``).
        batch_size (int, optional): Examples per call (all if None).

    Returns:
        Tensor: float64 ``(n_units,)``, layer 0 first.
    """
    sites = _check(sites)
    sums = [torch.zeros(s.n_units, dtype=torch.float64) for s in sites]
    n_all = int(inputs.shape[0])
    per_example = (
        isinstance(input_baselines, Tensor)
        and input_baselines.dim() == inputs.dim()
        and input_baselines.shape[0] == n_all
        and n_all > 1
    )
    start = 0
    for x, t in _batches(inputs, target, batch_size):
        forward = _captum_quantity(forward_func, t, quantity)
        base = input_baselines
        if per_example:
            assert isinstance(base, Tensor)
            base = base[start : start + x.shape[0]]
        start += int(x.shape[0])
        for i, s in enumerate(sites):
            attr = LayerConductance(forward, s.module).attribute(
                x,
                baselines=base,
                target=0,
                additional_forward_args=(t,),
                n_steps=n_steps,
                method="riemann_trapezoid",
                attribute_to_layer_input=s.layer_input,
            )
            sums[i] += unit_sums(attr.detach(), s.n_units).sum(0).double().cpu()
    n = float(inputs.shape[0])
    return torch.cat([s / n for s in sums])


def unit_grad_x_act(
    forward_func: Callable[..., Tensor],
    sites: Sequence[Site],
    inputs: Tensor,
    target: Any,
    quantity: Quantity = answer_log_likelihood,
    batch_size: Optional[int] = None,
) -> Tensor:
    r"""Gradient times activation of every unit, ``E_x[sum_{p, d in u} a_{p,d}
    dq/da_{p,d}]``, with Captum's ``LayerGradientXActivation`` on the sites
    (one call for all of them), summed per unit, averaged over the examples.

    Args:
        forward_func (Callable): The model.
        sites (list of Site): Where the units are (all outputs, or all inputs).
        inputs (Tensor): Examples to average over.
        target (Tensor): Per-example labels read by ``quantity``.
        quantity (Callable): ``quantity(outputs, target)``, ``(N,)``.
        batch_size (int, optional): Examples per call (all if None).

    Returns:
        Tensor: float64 ``(n_units,)``, layer 0 first.
    """
    sites = _check(sites)
    kinds = {s.layer_input for s in sites}
    if len(kinds) != 1:
        raise ValueError("all sites must be layer inputs, or all layer outputs")
    sums = [torch.zeros(s.n_units, dtype=torch.float64) for s in sites]
    for x, t in _batches(inputs, target, batch_size):
        forward = _captum_quantity(forward_func, t, quantity)
        method = LayerGradientXActivation(forward, [s.module for s in sites])
        attrs = method.attribute(
            x,
            target=0,
            additional_forward_args=(t,),
            attribute_to_layer_input=sites[0].layer_input,
        )
        for i, (a, s) in enumerate(zip(attrs, sites)):
            sums[i] += unit_sums(a.detach(), s.n_units).sum(0).double().cpu()
    n = float(inputs.shape[0])
    return torch.cat([s / n for s in sums])
