r"""Attention heads as players: :class:`HeadShapley`, and :func:`feature_mask` for
the hidden neurons of a transformer block's MLP.

A head's contribution to an attention layer is its slice of the heads'
concatenated outputs, the tensor the output projection maps back to the model
width. No module of the model returns that tensor, so each head site gets a
*probe* (:class:`~captum_neuron_shapley.removal.Probe`): a module outside the
model through which the concatenated head outputs are routed while heads are
removed there. The removal hooks, the baselines, the batched coalitions, the
cached prefix and every helper that takes a result then treat heads like any
other grouped units.

Two kinds of site:

* an ``nn.MultiheadAttention`` (alone, or inside ``nn.TransformerEncoderLayer``,
  ``nn.TransformerDecoderLayer`` or torchvision's ``VisionTransformer``).
  PyTorch computes its output projection functionally inside
  ``F.multi_head_attention_forward`` (``out_proj`` is never called as a module)
  and, in ``eval`` mode without gradients, may run the whole attention, or the
  whole encoder layer, as one fused kernel. While heads are removed there, the
  probe replaces the instance's ``forward`` by the same computation done in two
  steps: ``F.multi_head_attention_forward`` with the identity as output
  projection (multiplying by an identity matrix only adds zeros, so the heads'
  outputs come out exactly), the probe, then ``out_proj``'s weight and bias
  applied as PyTorch applies them. The fused fast path is switched off for that
  time (``torch.backends.mha.set_fastpath_enabled(False)``), so that the layer
  calls its attention module at all. The instance's ``forward`` and the flag are
  restored on exit, also after an exception. Every argument the module takes
  (``key_padding_mask``, ``attn_mask``, ``is_causal``, ``need_weights``,
  ``average_attn_weights``) and every configuration (``batch_first``,
  ``kdim``/``vdim``, ``add_bias_kv``, ``add_zero_attn``, ``bias``) pass through
  unchanged. With no head removed nothing is patched: the model runs PyTorch's
  own path, fast paths included.
* an output projection whose *input* is the heads' outputs concatenated, as in
  hand-written and Hugging Face attention blocks: Llama's ``o_proj``
  (``nn.Linear``), GPT-2's ``c_proj`` (a ``Conv1D`` whose weight is
  ``(in, out)``), BERT's ``attention.output.dense``. While heads are removed
  there, a forward pre-hook on the projection routes its input through the
  probe.

A removed head's output (its ``head_dim`` slice at every position) is replaced by
the baseline before the output projection.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, cast, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn, Tensor

from ._attr_utils import device_ids_of
from ._inputs import resolve_layer, resolve_layers
from .attr import LayerBaselines, LayerMasks, MetricFn, NeuronShapley
from .game import (
    _batches,
    _forward,
    LayerEval,
    model_guard,
    module_of,
    subset_args,
    UnitGame,
)
from .removal import LayerUnits, per_layer, per_tensor, Probe, resolve_baseline

__all__ = ["HeadShapley", "feature_mask"]

# attributes that hold an attention module's number of heads, its head size,
# and the width of its heads' concatenated outputs (PyTorch, Hugging Face and
# common hand-written blocks)
_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
_SIZE_ATTRS = ("head_dim", "attention_head_size", "head_size")
_WIDTH_ATTRS = ("embed_dim", "all_head_size", "hidden_size")

#: Container modules whose attention must be passed instead of the block.
_BLOCKS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def feature_mask(num_features: int) -> Tensor:
    r"""A ``layer_mask`` that makes each feature (the last dimension of a layer
    tensor) one unit, shared by every position: one unit per hidden neuron of a
    transformer block's MLP, whatever the sequence length. It is
    ``torch.arange(num_features)``, which broadcasts over the tensor's other
    dimensions; with the ``"mean"`` baseline a removed neuron emits its mean over
    the examples *and* the positions.

    Args:
        num_features (int): The size of the last dimension (the MLP's hidden
                    width, ``dim_feedforward`` in ``nn.TransformerEncoderLayer``).

    Returns:
        *Tensor* of shape ``(num_features,)``: the unit id of each feature.

    Examples::

        >>> # the 64 hidden neurons of an encoder layer's MLP (the input of its
        >>> # second linear layer, after the activation), one unit per neuron
        >>> enc = model.encoder.layers[0]
        >>> ns = NeuronShapley(model, enc.linear2)
        >>> phi = ns.attribute(x, target=y, attribute_to_layer_input=True,
        >>>                    layer_mask=feature_mask(64),
        >>>                    layer_baselines="mean")
        >>> phi[0]  # one value per neuron (every position carries it)
    """
    if isinstance(num_features, bool) or not isinstance(num_features, int):
        raise ValueError(
            f"`num_features` must be a positive integer, got {num_features!r}"
        )
    if num_features < 1:
        raise ValueError(
            f"`num_features` must be a positive integer, got {num_features!r}"
        )
    return torch.arange(num_features)


def head_groups(shape: torch.Size, num_heads: int) -> Tensor:
    r"""The head of every element of the heads' concatenated outputs: a tensor of
    the rank of ``shape`` (without batch) whose last dimension, of width ``E``,
    holds ``d // (E // num_heads)``."""
    width = int(shape[-1])
    return (torch.arange(width) // (width // num_heads)).view(
        *([1] * (len(shape) - 1)), width
    )


# -- finding the site and its number of heads ---------------------------------------


def _int_attr(obj: Any, names: Sequence[str]) -> Optional[int]:
    for a in names:
        v = getattr(obj, a, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _declared_heads(holder: nn.Module) -> Tuple[Optional[int], Optional[int]]:
    r"""``(num_heads, width)`` that a module declares (either may be None)."""
    config = getattr(holder, "config", None)
    num = _int_attr(holder, _COUNT_ATTRS)
    if num is None and config is not None:
        num = _int_attr(config, ("num_attention_heads",))
    if num is None:
        return None, None
    size = _int_attr(holder, _SIZE_ATTRS)
    if size is None and config is not None:
        size = _int_attr(config, ("head_dim",))
    if size is not None:
        return num, num * size
    width = _int_attr(holder, _WIDTH_ATTRS)
    if width is None and config is not None:
        width = _int_attr(config, ("hidden_size",))
    return num, width


def _projection_width(module: nn.Module) -> Optional[int]:
    r"""The input width of an output projection: ``nn.Linear`` (weight
    ``(out, in)``) or a ``Conv1D``-style module (weight ``(in, out)``), else
    None."""
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if (
        isinstance(weight, Tensor)
        and weight.dim() == 2
        and (type(module).__name__ == "Conv1D" or hasattr(module, "nf"))
    ):
        return int(weight.shape[0])
    return None


def _infer_heads(model: Optional[nn.Module], name: str, width: int) -> Optional[int]:
    r"""The number of heads of the attention an output projection belongs to,
    read from its parent (or a sibling of its parent, as BERT's
    ``attention.self`` for ``attention.output.dense``); None if not found or
    ambiguous."""
    if model is None or not name:
        return None
    parts = name.split(".")
    for level in (1, 2):
        if level > len(parts):
            break
        ancestor = model.get_submodule(".".join(parts[:-level]))
        holders = [ancestor] + [c for c in ancestor.children()]
        found = set()
        for h in holders:
            num, declared = _declared_heads(h)
            if num is None:
                continue
            if declared is not None:
                if declared == width:
                    found.add(num)
            elif level == 1 and width % num == 0:
                found.add(num)
        if len(found) == 1:
            return found.pop()
        if found:
            return None  # ambiguous: the caller asks for num_heads
    return None


def _parent_attention(
    model: Optional[nn.Module], module: nn.Module
) -> Optional[nn.MultiheadAttention]:
    r"""The ``nn.MultiheadAttention`` whose ``out_proj`` is ``module``, if any."""
    if model is None:
        return None
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) and m.out_proj is module:
            return m
    return None


def _check_attention(mha: nn.MultiheadAttention, name: str) -> None:
    if type(mha).forward is not nn.MultiheadAttention.forward:
        raise ValueError(
            f"`layer` {name!r} is a {type(mha).__name__}, a subclass of "
            "nn.MultiheadAttention with its own forward, which HeadShapley cannot "
            "reproduce; pass the module that projects its heads' outputs (its "
            "input being the heads' outputs concatenated) with `num_heads`"
        )


def _site(
    model: Optional[nn.Module], layer: Any, index: int
) -> Tuple[nn.Module, Optional[int]]:
    r"""The head site of one entry of ``layer`` and its width (None for an
    attention module, whose width is its ``embed_dim``)."""
    if isinstance(layer, nn.MultiheadAttention):
        return layer, None
    if not isinstance(layer, nn.Module):
        raise ValueError(
            f"`layer` must be an nn.Module, a layer name or a list of them; entry "
            f"{index} is {type(layer).__name__}"
        )
    parent = _parent_attention(model, layer)
    if parent is not None:  # out_proj: PyTorch never calls it; its attention
        return parent, None
    width = _projection_width(layer)
    if width is not None:
        return layer, width
    inner = [
        n for n, m in layer.named_modules() if isinstance(m, nn.MultiheadAttention)
    ]
    hint = (
        f"; it contains nn.MultiheadAttention modules ({', '.join(inner[:4])}"
        f"{', ...' if len(inner) > 4 else ''}): pass those"
        if inner
        else ""
    )
    raise ValueError(
        f"`layer` entry {index} ({type(layer).__name__}) is neither an attention "
        "module nor an output projection: HeadShapley takes nn.MultiheadAttention "
        "modules, or the module that projects the heads' concatenated outputs "
        "(an nn.Linear or a Conv1D-style module whose input is the heads' "
        f"outputs, such as o_proj, c_proj or BERT's attention.output.dense){hint}"
    )


# -- the probes ---------------------------------------------------------------------


@contextlib.contextmanager
def _fastpath_disabled() -> Iterator[None]:
    r"""``torch.backends.mha``'s fast path off, restored to its previous value."""
    backend = getattr(torch.backends, "mha", None)
    setter = getattr(backend, "set_fastpath_enabled", None)
    if setter is None:  # releases without the switch: the patched forward is
        yield  # called all the same (the fused encoder layer checks hooks)
        return
    previous = bool(backend.get_fastpath_enabled())  # type: ignore[union-attr]
    setter(False)
    try:
        yield
    finally:
        setter(previous)


class _HeadProbe(Probe):
    r"""The probe of one head site: the heads' concatenated outputs pass through
    it, examples first (``(N, ..., E)``)."""

    def __init__(self, site: nn.Module, name: str, num_heads: int) -> None:
        super().__init__(site)
        self.name = name
        self.num_heads = num_heads
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x

    def extra_repr(self) -> str:
        return f"{self.name!r}, num_heads={self.num_heads}"


class _AttentionHeads(_HeadProbe):
    r"""The heads of an ``nn.MultiheadAttention``."""

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        mha = cast(nn.MultiheadAttention, self.site)
        current = mha.__dict__.get("forward")
        if current is not None:
            raise RuntimeError(
                f"cannot remove heads of {self.name!r}: its forward is already "
                f"replaced on the instance ({current!r}), by a removal in "
                "progress (nested removal contexts on one attention module are "
                "not supported) or by other code"
            )
        mha.forward = _HeadsForward(mha, self)  # type: ignore[method-assign]
        try:
            with _fastpath_disabled():
                yield
        finally:
            mha.__dict__.pop("forward", None)


class _ProjectionHeads(_HeadProbe):
    r"""The heads whose concatenated outputs are an output projection's input."""

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        handle = self.site.register_forward_pre_hook(self._route)
        try:
            yield
        finally:
            handle.remove()

    def _route(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        if not args or not isinstance(args[0], Tensor):
            raise ValueError(
                f"the output projection {self.name!r} must be called with the "
                "heads' outputs as its first positional argument"
            )
        return (self(args[0]),) + tuple(args[1:])


class _HeadsForward:
    r"""``nn.MultiheadAttention.forward`` (its non-fused path), with the heads'
    concatenated outputs routed through a probe before the output projection."""

    def __init__(self, mha: nn.MultiheadAttention, probe: _HeadProbe) -> None:
        self.mha = mha
        self.probe = probe

    def __repr__(self) -> str:
        return f"<head removal of {self.probe.name!r}>"

    def __call__(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        m = self.mha
        name = self.probe.name
        if query.is_nested or key.is_nested or value.is_nested:
            raise ValueError(
                f"attention {name!r} received a nested tensor (PyTorch's fast path "
                "of nn.TransformerEncoder with a padding mask); heads cannot be "
                "removed from it. This PyTorch has no "
                "torch.backends.mha.set_fastpath_enabled to switch it off"
            )
        if query.dim() != 3:
            raise ValueError(
                f"attention {name!r} received an unbatched query of shape "
                f"{tuple(query.shape)}: heads are removed per example, which needs "
                "the batch dimension (the coalitions are stacked along it)"
            )
        # the same preparation as nn.MultiheadAttention.forward's slow path
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        attn_mask = F._canonical_mask(
            mask=attn_mask,
            mask_name="attn_mask",
            other_type=None,
            other_name="",
            target_type=query.dtype,
            check_other=False,
        )
        if m.batch_first:  # keep the "is" relations the functional form reads
            if key is value:
                if query is key:
                    query = key = value = query.transpose(1, 0)
                else:
                    query, key = (x.transpose(1, 0) for x in (query, key))
                    value = key
            else:
                query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        weight, bias = m.out_proj.weight, m.out_proj.bias
        eye = torch.eye(m.embed_dim, dtype=weight.dtype, device=weight.device)
        separate: dict = {}
        if not m._qkv_same_embed_dim:
            separate = dict(
                use_separate_proj_weight=True,
                q_proj_weight=m.q_proj_weight,
                k_proj_weight=m.k_proj_weight,
                v_proj_weight=m.v_proj_weight,
            )
        heads, weights = F.multi_head_attention_forward(
            query,
            key,
            value,
            m.embed_dim,
            m.num_heads,
            m.in_proj_weight,
            m.in_proj_bias,
            m.bias_k,
            m.bias_v,
            m.add_zero_attn,
            m.dropout,
            eye,  # the heads' outputs, concatenated: (L, N, E)
            None,
            training=m.training,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            **separate,
        )
        tgt_len, bsz, width = heads.shape
        routed = self.probe(heads.transpose(0, 1))  # examples first: (N, L, E)
        if not isinstance(routed, Tensor) or routed.shape != (bsz, tgt_len, width):
            raise ValueError(
                f"a hook on the heads of {name!r} returned "
                f"{getattr(routed, 'shape', type(routed).__name__)}; expected a "
                f"tensor of shape {(bsz, tgt_len, width)}"
            )
        # the output projection as F.multi_head_attention_forward applies it
        flat = routed.transpose(0, 1).reshape(tgt_len * bsz, width)
        out = F.linear(flat, weight, bias).view(tgt_len, bsz, -1)
        if m.batch_first:
            out = out.transpose(1, 0)
        return out, weights


def _make_probe(site: nn.Module, name: str, num_heads: int) -> _HeadProbe:
    if isinstance(site, nn.MultiheadAttention):
        return _AttentionHeads(site, name, num_heads)
    return _ProjectionHeads(site, name, num_heads)


@contextlib.contextmanager
def _all_active(probes: Sequence[nn.Module]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for p in probes:
            assert isinstance(p, Probe)
            stack.enter_context(p.activate())
        yield


def _resolve_num_heads(
    model: Optional[nn.Module],
    site: nn.Module,
    name: str,
    width: Optional[int],
    given: Any,
) -> int:
    if given is not None and (
        isinstance(given, bool) or not isinstance(given, int) or given < 1
    ):
        raise ValueError(
            f"`num_heads` must be a positive integer (or one per layer), got "
            f"{given!r}"
        )
    if isinstance(site, nn.MultiheadAttention):
        _check_attention(site, name)
        if given is not None and given != site.num_heads:
            raise ValueError(
                f"`num_heads` is {given} but the attention {name!r} has "
                f"{site.num_heads} heads"
            )
        return int(site.num_heads)
    assert width is not None
    num = given if given is not None else _infer_heads(model, name, width)
    if num is None:
        raise ValueError(
            f"`num_heads` is needed for the output projection {name!r}: its "
            "attention module does not declare an unambiguous number of heads "
            f"(attributes {', '.join(_COUNT_ATTRS)} or config.num_attention_heads "
            "consistent with its input width). Pass HeadShapley(model, layer, "
            "num_heads=...)"
        )
    if width % num:
        raise ValueError(
            f"`num_heads` ({num}) does not divide the input width {width} of "
            f"{name!r}: the heads' outputs must be concatenated in equal slices"
        )
    return int(num)


def head_units(model: nn.Module, layout: Any) -> LayerUnits:
    r"""The :class:`~captum_neuron_shapley.removal.LayerUnits` of a head layout
    (``layout.kind == "head"``) of a saved result, in ``model`` (the site found
    by name)."""
    site = resolve_layer(model, layout.module_name, "result")
    if not isinstance(site, nn.MultiheadAttention) and _projection_width(site) is None:
        raise ValueError(
            f"the result's layer {layout.module_name!r} holds heads, but that "
            f"module of the model is a {type(site).__name__}, neither an "
            "attention module nor an output projection"
        )
    shape = torch.Size(layout.out_shape)
    n = layout.n_units
    base = torch.zeros(()) if layout.baseline is None else layout.baseline
    return LayerUnits(
        _make_probe(site, layout.name, n),
        layout.name,
        shape,
        head_groups(shape, n),
        layout.unit_ids,
        "head",
        base,
        None,
        False,
    )


class HeadShapley(NeuronShapley):
    r"""Neuron Shapley with one player per attention head.

    The same method as :class:`~captum_neuron_shapley.NeuronShapley`, with the
    units of each layer being its attention heads. A layer is

    - an ``nn.MultiheadAttention`` (PyTorch's own, also inside
      ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` or
      torchvision's ``VisionTransformer``; its ``out_proj`` stands for it), or
    - an output projection whose *input* is the heads' outputs concatenated
      (Llama's ``o_proj``, GPT-2's ``c_proj``, BERT's
      ``attention.output.dense``; an ``nn.Linear`` or a ``Conv1D``-style module
      with weight ``(in, out)``).

    A removed head's output, before the output projection, is replaced by the
    baseline. The default, ``"mean"``, is the mean of each dimension of the
    head's output over the evaluation examples *and* the positions ("mean
    ablation"): the rest of the network keeps receiving the head's average
    contribution, so a head's value measures the information it carries rather
    than the shock of an input the layers after it never saw in training.
    ``layer_baselines=0.0`` gives the gate of Michel et al. (2019), which
    multiplies a head's output by 0. With no head removed the model runs
    unchanged (PyTorch's fused paths included); see :mod:`.heads` for what is
    patched while heads are removed, and restored afterwards.

    The attributions of a layer have shape ``(num_heads,)``. ``layer_mask`` and
    ``attribute_to_layer_input`` do not apply. Everything that takes a result
    (``ablated``, ``metric_after_removal``, ``removal_curves``,
    ``export_repaired``, ``refine``) works on heads.

    Examples::

        >>> # a model built on nn.TransformerEncoder (batch_first=True); x holds
        >>> # token ids (N, L), y the labels (N,)
        >>> blocks = model.encoder.layers
        >>> hs = HeadShapley(model, [blk.self_attn for blk in blocks])
        >>> phi = hs.attribute(x, target=y, seed=0)  # one tensor per layer
        >>> phi[0].shape  # (num_heads,)
        torch.Size([8])
        >>> # Hugging-Face-style blocks: the output projections, heads counted
        >>> # from the attention module (or given)
        >>> hs = HeadShapley(model, [blk.attn.o_proj for blk in model.blocks],
        >>>                  num_heads=8)
        >>> res = hs.attribute(x, target=y, top_k=3, seed=0, return_result=True)
        >>> res.top_units(3)  # (layer name, head, value)
    """

    _grouping: str = "head"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Union[nn.Module, str, Sequence[Union[nn.Module, str]]],
        num_heads: Union[None, int, Sequence[Optional[int]]] = None,
        device_ids: Optional[List[int]] = None,
        *,
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
    ) -> None:
        r"""
        Args:

            forward_func (Callable): The model or a forward function of it, as
                        for :class:`~captum_neuron_shapley.NeuronShapley`.
            layer (torch.nn.Module, str or list): The attention module(s) or
                        output projection(s) whose heads are the players, as
                        modules or qualified names. A list gives one joint game
                        over all their heads.
            num_heads (int or list, optional): The number of heads of each
                        layer, or one per layer (None entries are read from the
                        module). For ``nn.MultiheadAttention`` it is read from
                        the module (a different value is an error); for an
                        output projection, from its attention module (the
                        parent, or a sibling such as BERT's ``attention.self``:
                        ``num_heads``, ``num_attention_heads``, ``n_head`` or
                        ``config.num_attention_heads``, consistent with the
                        projection's input width).
                        Default: None
            device_ids (list[int], optional): As for
                        :class:`~captum_neuron_shapley.NeuronShapley`
                        (``DataParallel`` models; not with
                        ``nn.MultiheadAttention`` layers, whose replicas would
                        not see the patched forward).
            internal_batch_size (int, optional): As for
                        :class:`~captum_neuron_shapley.NeuronShapley`.
            cache_activations (bool, optional): As for
                        :class:`~captum_neuron_shapley.NeuronShapley`: what runs
                        before the first head site is computed once.
        """
        model = module_of(forward_func)
        resolved = resolve_layers(model, layer)
        given = list(resolved) if isinstance(resolved, (list, tuple)) else [resolved]
        if not given:
            raise ValueError("`layer` must be a module or a non-empty list of them")
        counts = per_layer(num_heads, len(given), "num_heads")
        sites: List[nn.Module] = []
        widths: List[Optional[int]] = []
        for i, entry in enumerate(given):
            site, width = _site(model, entry, i)
            sites.append(site)
            widths.append(width)
        single = not isinstance(resolved, (list, tuple))
        super().__init__(
            forward_func,
            sites[0] if single else sites,
            device_ids,
            internal_batch_size=internal_batch_size,
            cache_activations=cache_activations,
        )
        self.num_heads: List[int] = [
            _resolve_num_heads(model, s, n, w, c)
            for s, n, w, c in zip(sites, self._names, widths, counts)
        ]
        self._sites: List[nn.Module] = sites
        # the reference pass and the removal hooks see the heads' outputs
        self._layers = [
            _make_probe(s, n, h) for s, n, h in zip(sites, self._names, self.num_heads)
        ]

    def game(
        self,
        inputs: Any,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        cache_activations: Optional[bool] = None,
    ) -> UnitGame:
        r"""The :class:`~captum_neuron_shapley.game.UnitGame` over the heads that
        :meth:`attribute` estimates. Arguments as in :meth:`attribute`.

        The reference pass (the heads' mean outputs for the ``"mean"`` baseline)
        runs with the heads routed through the probes; the intact model's
        outputs, ``V(all)``, come from a second pass with nothing patched. A
        warning says when the two differ by more than floating-point rounding.

        Examples::

            >>> game = HeadShapley(model, model.blocks[0].attn).game(x, target=y)
            >>> keep = torch.ones(1, game.n_units, dtype=torch.bool)
            >>> keep[0, 2] = False  # remove head 2
            >>> game.value(keep)
        """
        if layer_mask is not None:
            raise ValueError(
                "`layer_mask` does not apply to HeadShapley: its units are the "
                "heads (for neurons of a layer use NeuronShapley)"
            )
        if attribute_to_layer_input is not False:
            raise ValueError(
                "`attribute_to_layer_input` does not apply to HeadShapley: the "
                "heads' outputs are the output projection's input already"
            )
        if device_ids_of(self) and any(
            isinstance(p, _AttentionHeads) for p in self._layers
        ):
            raise ValueError(
                "HeadShapley cannot remove heads of nn.MultiheadAttention in a "
                "DataParallel model: its replicas copy the module without the "
                "patched forward. Run on one device, or use torch.distributed"
            )
        for p in self._layers:
            cast(_HeadProbe, p).calls = 0
        try:
            with _all_active(self._layers):
                game = super().game(
                    inputs,
                    layer_baselines,
                    target,
                    additional_forward_args,
                    None,
                    False,
                    perturbations_per_eval,
                    metric=metric,
                    cache_activations=cache_activations,
                )
        except ValueError as err:
            missing = [
                cast(_HeadProbe, p).name
                for p in self._layers
                if cast(_HeadProbe, p).calls == 0
            ]
            if missing and "was not called" in str(err):
                raise ValueError(
                    f"the heads of {missing[0]!r} were not reached in the model's "
                    "forward pass: the module was not called (or, for an output "
                    "projection, was called without its input as a positional "
                    "argument). Pass an attention module or output projection "
                    "that the model's forward runs"
                ) from err
            raise
        self._plain_reference(game)
        return game

    def _plain_reference(self, game: UnitGame) -> None:
        r"""Replace the reference outputs (heads routed through the probes) by
        the model's own, nothing patched, and warn if they differ."""
        if not any(isinstance(p, _AttentionHeads) for p in self._layers):
            return  # a projection's pre-hook hands its input on unchanged
        with model_guard(self.forward_func):
            if game.streamed:
                source = getattr(game, "source")
                passes: Iterator[Tuple[Tuple[Tensor, ...], Any]] = (
                    (xs, a) for xs, _, a, _ in source.passes()
                )
            else:
                n = game.n_examples
                passes = (
                    (
                        tuple(x[sl] for x in game.inputs),
                        subset_args(game.additional_forward_args, sl, n),
                    )
                    for sl in _batches(n, game.batch_size)
                )
            plain = torch.cat([_forward(self.forward_func, xs, a) for xs, a in passes])
        routed = game.full_outputs.to(plain.device)
        if routed.shape == plain.shape and routed.is_floating_point():
            gap = float((routed.double() - plain.double()).abs().max())
            scale = float(plain.double().abs().max())
            if gap > 1e-3 * (1.0 + scale):
                warnings.warn(
                    f"with no head removed, the model's outputs through the heads' "
                    f"path differ from PyTorch's own by up to {gap:.3g} (outputs "
                    f"up to {scale:.3g}); V(all) uses PyTorch's outputs, every "
                    "other coalition the heads' path. (PyTorch's nested-tensor "
                    "path of nn.TransformerEncoder with a padding mask returns "
                    "zeros at padded positions, where the other path computes "
                    "values: keep padded positions out of the outputs the metric "
                    "reads.)",
                    stacklevel=3,
                )
        game.full_outputs = plain
        game.examples_evaluated += int(plain.shape[0])

    def _units(
        self,
        evals: List[LayerEval],
        layer_baselines: Any,
        layer_mask: Any,
        layer_input: bool,
    ) -> List[LayerUnits]:
        counts = [len(ev.shapes) for ev in evals]
        baselines = per_tensor(
            layer_baselines, counts, self._names, self._single, "layer_baselines"
        )
        units: List[LayerUnits] = []
        for probe, name, ev, value, num in zip(
            self._layers, self._names, evals, baselines, self.num_heads
        ):
            shape, mean, dtype = ev.shapes[0], ev.means[0], ev.dtypes[0]
            width = int(shape[-1]) if len(shape) else 0
            if width % num:
                raise ValueError(
                    f"the heads' outputs of {name!r} have width {width}, which "
                    f"`num_heads` ({num}) does not divide"
                )
            u = LayerUnits(
                probe,
                name,
                shape,
                head_groups(shape, num).to(mean.device),
                torch.arange(num),
                "head",
                None,
                None,
                False,
                dtype,
            )
            u.baseline = _head_baseline(u, value, mean)
            units.append(u)
        return units


def _head_baseline(u: LayerUnits, value: Any, mean: Tensor) -> Tensor:
    r"""A head layer's replacement tensor: ``"mean"`` (the default) is the mean
    of every dimension of the heads' outputs over the examples and positions;
    anything else as for neurons (``"zero"``, a number, a tensor broadcastable
    to the heads' outputs without batch, e.g. ``(E,)``)."""
    if value is None or (isinstance(value, str) and value == "mean"):
        dims = tuple(range(mean.dim() - 1))
        b = mean.mean(dim=dims, keepdim=True) if dims else mean
        return resolve_baseline(u, b.to(torch.float32), mean, "head")
    return resolve_baseline(u, value, mean, "head")
