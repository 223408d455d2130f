r"""Skip what does not change: the part of the forward pass that runs before the
first ablated layer gives the same result for every coalition, so its outputs are
computed once and replayed.

The modules that can be replayed are found by tracing one forward pass with hooks:
a module qualifies when it finishes before any ablated layer starts, is called
exactly once per forward pass and returns a Tensor; only the outermost such modules
are kept. During evaluation their ``forward`` is replaced (on the instance, restored
afterwards) by a function returning the cached output, so their computation is
skipped while the rest of the model's ``forward`` runs unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from captum._utils.common import _run_forward
from torch import nn, Tensor

from .removal import Probe

__all__ = ["trace_prefix", "replay"]


def trace_prefix(
    model: nn.Module,
    layers: Sequence[nn.Module],
    inputs: Tuple[Tensor, ...],
    additional_forward_args: Optional[Tuple[Any, ...]] = None,
    forward_func: Optional[Callable] = None,
) -> List[nn.Module]:
    r"""Outermost modules whose outputs do not depend on the ablated ``layers``.

    Args:
        model (nn.Module): The model.
        layers (sequence of nn.Module): The layers whose units are ablated
            (for a :class:`~captum_neuron_shapley.removal.Probe`, its site).
        inputs (tuple of Tensor): A small batch to trace the forward pass with.
        additional_forward_args (tuple, optional): Passed after the inputs.
        forward_func (Callable, optional): What to call (default: ``model``),
            such as ``model.forward``.

    Returns:
        list of nn.Module: In call order; empty when nothing can be skipped.
    """
    events: List[Tuple[str, nn.Module, Any]] = []
    calls: Dict[int, int] = {}
    # a probe's tensor is computed inside its site: the site's start is the stop
    ablated = {id(m.site if isinstance(m, Probe) else m) for m in layers}
    first: Dict[str, Optional[int]] = {"t": None}

    def pre(module: nn.Module, args: Any) -> None:
        calls[id(module)] = calls.get(id(module), 0) + 1
        if id(module) in ablated and first["t"] is None:
            first["t"] = len(events)
        events.append(("start", module, None))

    def post(module: nn.Module, args: Any, out: Any) -> None:
        events.append(("end", module, out))

    modules = [m for m in model.modules() if m is not model]
    handles = [m.register_forward_pre_hook(pre) for m in modules]
    handles += [m.register_forward_hook(post) for m in modules]
    try:
        with torch.no_grad():
            _run_forward(
                model if forward_func is None else forward_func,
                inputs,
                additional_forward_args=additional_forward_args,
            )
    finally:
        for h in handles:
            h.remove()
    stop = first["t"]
    if stop is None:
        return []
    done = [
        m
        for kind, m, out in events[:stop]
        if kind == "end" and isinstance(out, Tensor) and calls[id(m)] == 1
    ]
    done_ids = {id(m) for m in done}
    inner = {id(c) for m in done for c in m.modules() if c is not m}
    return [m for m in done if id(m) not in inner and id(m) in done_ids]


_MISSING = object()


class _Replay:
    def __init__(self, value: Tensor) -> None:
        self.value = value

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.value


@contextlib.contextmanager
def replay(modules: Sequence[nn.Module], outputs: Sequence[Tensor]) -> Iterator[None]:
    r"""Make each module return the given output instead of computing it."""
    patched: List[Tuple[nn.Module, Any]] = []
    try:
        for m, out in zip(modules, outputs):
            patched.append((m, m.__dict__.get("forward", _MISSING)))
            m.forward = _Replay(out)  # type: ignore[method-assign]
        yield
    finally:
        for m, previous in patched:
            if previous is _MISSING:
                del m.forward
            else:  # a forward the user (or a library) had set on the instance
                m.forward = previous


def repeat_for(x: Tensor, m: int) -> Tensor:
    r"""``m`` copies of a batch, coalition-major: ``(m * B, ...)``. Always a new
    tensor, so that in-place operations in the model cannot alter the source."""
    return x.repeat(m, *([1] * (x.dim() - 1)))


def capture_hooks(
    modules: Sequence[nn.Module], store: List[List[Tensor]]
) -> List[Callable]:
    r"""Hooks that append each module's output (detached) to ``store[i]``."""

    def make(i: int) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(module: nn.Module, args: Any, out: Tensor) -> None:
            store[i].append(out.detach().clone())  # later in-place ops

        return hook

    return [make(i) for i in range(len(modules))]
