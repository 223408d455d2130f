r"""The unit game: the set function ``V(coalition)`` of a model, some of its layers'
units, a removal rule, evaluation data and a metric. It knows nothing of Shapley
values; it evaluates coalitions (many per forward pass) and counts what it did."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .prefix import capture_hooks, repeat_for, replay
from .removal import LayerUnits, ablate

__all__ = ["UnitGame", "reference_pass", "model_guard", "subset_target"]


@contextlib.contextmanager
def model_guard(model: Callable) -> Iterator[None]:
    r"""Evaluate in ``eval`` mode without gradients; restore every module's
    ``training`` flag on exit, also after an exception. A plain callable is only
    run without gradients."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.training = False
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def subset_target(target: Any, idx: Optional[Tensor], n: int) -> Any:
    r"""Restrict a per-example target (tensor or tuple/list of them) to ``idx``."""
    if idx is None:
        return target
    if isinstance(target, Tensor) and target.dim() > 0 and target.shape[0] == n:
        return target[idx.to(target.device)]
    if isinstance(target, (tuple, list)):
        return type(target)(subset_target(t, idx, n) for t in target)
    return target


def _forward(model: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    out = model(*inputs)
    if not isinstance(out, Tensor):
        raise ValueError(
            f"the model returned {type(out).__name__}; the metric needs a Tensor of "
            "outputs (wrap the model so that forward returns one)"
        )
    return out


def _batches(n: int, batch_size: Optional[int]) -> List[slice]:
    step = n if batch_size is None else batch_size
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def reference_pass(
    model: nn.Module,
    layers: Sequence[nn.Module],
    names: Sequence[str],
    inputs: Tuple[Tensor, ...],
    batch_size: Optional[int] = None,
    capture: Sequence[nn.Module] = (),
) -> Tuple[Tensor, List[torch.Size], List[Tensor], List[Tensor]]:
    r"""One pass of the intact model over the evaluation inputs.

    Returns the model outputs, each layer's output shape (without batch), each
    layer's output averaged over the examples (float64, same shape), and the
    outputs of the ``capture`` modules for all examples.
    """
    sums: List[Optional[Tensor]] = [None] * len(layers)
    shapes: List[Optional[torch.Size]] = [None] * len(layers)

    def make_hook(i: int):
        def hook(module: nn.Module, inp: Any, out: Any) -> None:
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"`layer` {names[i]!r} returned {type(out).__name__}; only "
                    "layers whose output is a single Tensor can be ablated"
                )
            if out.dim() < 2:
                raise ValueError(
                    f"`layer` {names[i]!r} has output shape {tuple(out.shape)}; "
                    "expected (N, ...) with a batch dimension and unit dimensions"
                )
            calls[i] += 1
            if calls[i] > n_batches[0]:
                raise ValueError(
                    f"`layer` {names[i]!r} is called more than once per forward "
                    "pass (a shared module, such as a ReLU reused in a residual "
                    "block); removing its units would tie every call together. "
                    "Choose layers that run once (e.g. the conv or norm layers)"
                )
            shapes[i] = out.shape[1:]
            s = out.detach().to(torch.float64).sum(0)
            sums[i] = s if sums[i] is None else sums[i] + s

        return hook

    outs = []
    calls, n_batches = [0] * len(layers), [0]
    captured: List[List[Tensor]] = [[] for _ in capture]
    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(layers)]
    handles += [
        m.register_forward_hook(h)
        for m, h in zip(capture, capture_hooks(capture, captured))
    ]
    try:
        for sl in _batches(inputs[0].shape[0], batch_size):
            n_batches[0] += 1
            outs.append(_forward(model, [x[sl] for x in inputs]))
    finally:
        for h in handles:
            h.remove()
    for i, s in enumerate(sums):
        if s is None:
            raise ValueError(
                f"`layer` {names[i]!r} was not called in the model's forward pass"
            )
    n = inputs[0].shape[0]
    prefix = [torch.cat(c) for c in captured]
    return torch.cat(outs), shapes, [s / n for s in sums], prefix  # type: ignore


class UnitGame:
    r"""The set function ``V(S)``: the metric of the model with only the units in
    ``S`` present.

    Args:
        model (nn.Module): The model (evaluated in eval mode, without gradients).
        units (sequence of LayerUnits): The players, layer by layer.
        inputs (tuple of Tensor): The evaluation inputs, examples along dim 0.
        target (Any): Passed to the metric (subset along with the examples when it
            is a per-example tensor or a tuple of them).
        metric (Callable): ``metric(outputs, target) -> float``, higher is better.
        full_outputs (Tensor): The intact model's outputs on ``inputs``.
        perturbations_per_eval (int): Coalitions evaluated in one forward pass.
        batch_size (int, optional): Examples per forward pass (times coalitions).
        prefix (tuple, optional): Modules that run before every ablated layer and
            their outputs on all ``inputs`` (see :mod:`.prefix`): replayed instead
            of recomputed.

    Attributes:
        n_evaluations (int): Coalitions evaluated by running the model.
        n_forward (int): Forward passes made.
    """

    def __init__(
        self,
        model: nn.Module,
        units: Sequence[LayerUnits],
        inputs: Tuple[Tensor, ...],
        target: Any,
        metric: Callable,
        full_outputs: Tensor,
        perturbations_per_eval: int = 1,
        batch_size: Optional[int] = None,
        prefix: Tuple[Sequence[nn.Module], Sequence[Tensor]] = ((), ()),
    ) -> None:
        self.model = model
        self.prefix_modules, self.prefix_outputs = list(prefix[0]), list(prefix[1])
        self.units = list(units)
        self.inputs = inputs
        self.target = target
        self.metric = metric
        self.full_outputs = full_outputs
        self.perturbations_per_eval = perturbations_per_eval
        self.batch_size = batch_size
        self.n_examples = int(inputs[0].shape[0])
        sizes = [u.n_units for u in self.units]
        self.n_units = sum(sizes)
        self.offsets = [0] + list(torch.tensor(sizes).cumsum(0).tolist())
        self.device = inputs[0].device
        self.n_evaluations = 0
        self.n_forward = 0
        self._empty_outputs: Optional[Tensor] = None

    # -- metric ---------------------------------------------------------------
    def score(self, outputs: Tensor, idx: Optional[Tensor]) -> Tensor:
        r"""Metric of outputs ``(M, n, ...)``; returns float64 ``(M,)`` on CPU."""
        target = subset_target(self.target, idx, self.n_examples)
        batched = getattr(self.metric, "batched", None)
        if batched is not None:
            vals = batched(outputs, target).detach().to("cpu", torch.float64)
        else:
            vals = torch.tensor(
                [_as_float(self.metric(o, target)) for o in outputs],
                dtype=torch.float64,
            )
        if not bool(torch.isfinite(vals).all()):
            raise ValueError(f"`metric` returned a non-finite value: {vals.tolist()}")
        return vals

    # -- coalitions ----------------------------------------------------------
    def split(self, keep: Tensor) -> List[Tensor]:
        r"""Cut ``(M, n_units)`` masks into one ``(M, n_layer_units)`` per layer."""
        return [keep[:, a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def outputs(self, keep: Tensor, idx: Optional[Tensor] = None) -> Tensor:
        r"""Model outputs ``(M, n, ...)`` for ``M`` coalitions given as a boolean
        ``(M, n_units)`` mask of present units, on examples ``idx`` (all if None).
        The model runs in eval mode without gradients; its flags are restored."""

        def pick(xs: Sequence[Tensor]) -> List[Tensor]:
            return list(xs) if idx is None else [x[idx.to(x.device)] for x in xs]

        keep = keep.cpu()
        with model_guard(self.model):
            return self._outputs(keep, pick(self.inputs), pick(self.prefix_outputs))

    def _outputs(
        self, keep: Tensor, inputs: List[Tensor], cached: List[Tensor]
    ) -> Tensor:
        n = inputs[0].shape[0]
        chunks = []
        for a in range(0, keep.shape[0], self.perturbations_per_eval):
            k = keep[a : a + self.perturbations_per_eval]
            m = k.shape[0]
            # decide on the CPU which layers need a hook: no device sync per call
            per_layer = [
                None if bool(p.all()) else p.to(self.device) for p in self.split(k)
            ]
            cols = []
            for sl in _batches(n, self.batch_size):
                rep = [repeat_for(x[sl], m) for x in inputs]
                fixed = [repeat_for(c[sl], m) for c in cached]
                with replay(self.prefix_modules, fixed), ablate(self.units, per_layer):
                    out = _forward(self.model, rep)
                self.n_forward += 1
                cols.append(out.reshape(m, -1, *out.shape[1:]))
            chunks.append(torch.cat(cols, 1))
            self.n_evaluations += m
        return torch.cat(chunks, 0)

    def value(self, keep: Tensor, idx: Optional[Tensor] = None) -> Tensor:
        r"""``V`` of each coalition in the ``(M, n_units)`` mask, float64 on CPU.

        The outputs of the intact model and of the model with every unit removed are
        cached, so those two coalitions cost nothing after the first time.
        """
        keep = keep.bool()
        vals = torch.empty(keep.shape[0], dtype=torch.float64)
        full, empty = keep.all(1), ~keep.any(1)
        if bool(full.any()):
            vals[full] = self.full_value(idx)
        if bool(empty.any()):
            vals[empty] = self.empty_value(idx)
        rest = (~(full | empty)).nonzero().flatten()
        if rest.numel():
            vals[rest] = self.score(self.outputs(keep[rest], idx), idx)
        return vals

    def full_value(self, idx: Optional[Tensor] = None) -> float:
        out = self.full_outputs if idx is None else self.full_outputs[idx]
        return float(self.score(out.unsqueeze(0), idx)[0])

    def empty_value(self, idx: Optional[Tensor] = None) -> float:
        r"""``V`` with every unit removed (its outputs are computed once and cached)."""
        if self._empty_outputs is None:
            none = torch.zeros(1, self.n_units, dtype=torch.bool)
            self._empty_outputs = self.outputs(none)[0]
        out = self._empty_outputs if idx is None else self._empty_outputs[idx]
        return float(self.score(out.unsqueeze(0), idx)[0])


def _as_float(v: Any) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(
                f"`metric` must return a scalar, got a tensor of shape {tuple(v.shape)}"
            )
        v = v.item()
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(
            f"`metric` must return a float, got {type(v).__name__}"
        ) from None
    if not math.isfinite(f):
        raise ValueError(f"`metric` returned a non-finite value: {f}")
    return f
