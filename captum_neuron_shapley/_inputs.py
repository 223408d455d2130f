r"""Checking and formatting what users pass to ``attribute``."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum._utils.common import (
    _format_additional_forward_args,
    _format_tensor_into_tuples,
)
from torch import nn, Tensor
from torch.utils.data import DataLoader

__all__ = [
    "format_eval_data",
    "layer_names",
    "check_positive_int",
    "check_not_scripted",
]


def check_positive_int(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def check_not_scripted(model: Optional[nn.Module], layers: Sequence[nn.Module]) -> None:
    r"""TorchScript modules (``torch.jit.trace`` or ``torch.jit.script``) run
    their compiled graph: Python forward hooks on their submodules never run
    (traced) or cannot be registered (scripted), and the units are removed by
    such hooks."""
    scripted = [
        m
        for m in ([model] if model is not None else []) + list(layers)
        if isinstance(m, torch.jit.ScriptModule)
    ]
    if scripted:
        raise ValueError(
            f"the model or `layer` is a TorchScript module "
            f"({type(scripted[0]).__name__}): Neuron Shapley removes units with "
            "forward hooks, which TorchScript modules do not run. Pass the "
            "original (eager) nn.Module and its layers instead of the "
            "torch.jit.trace/torch.jit.script result"
        )


def layer_names(
    forward_func: Callable, layers: Sequence[nn.Module], model: Optional[nn.Module]
) -> List[str]:
    r"""Qualified names of ``layers`` in ``model`` (the module behind
    ``forward_func``, if any); errors for foreign layers."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise ValueError(
                f"`layer` must be an nn.Module or a list of them; entry {i} is "
                f"{type(layer).__name__}"
            )
    if len(set(map(id, layers))) != len(layers):
        raise ValueError("`layer` lists the same module more than once")
    if model is None:
        return [f"{type(m).__name__}_{i}" for i, m in enumerate(layers)]
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for i, layer in enumerate(layers):
        if id(layer) not in names:
            raise ValueError(
                f"`layer` entry {i} ({type(layer).__name__}) is not a submodule of "
                "the model"
            )
        out.append(names[id(layer)] or type(layer).__name__)
    return out


def _as_inputs(x: Any) -> Tuple[Tensor, ...]:
    xs = x if isinstance(x, tuple) else (x,)
    if not xs or not all(isinstance(t, Tensor) for t in xs):
        raise ValueError(
            "`inputs` must be a Tensor, a tuple of Tensors or a DataLoader, got "
            f"{type(x).__name__}"
        )
    return _format_tensor_into_tuples(x)


def format_eval_data(
    inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
    target: Any,
    additional_forward_args: Any = None,
) -> Tuple[Tuple[Tensor, ...], Any, Optional[Tuple[Any, ...]]]:
    r"""Evaluation inputs as a tuple of tensors, the matching target and the
    additional forward arguments as a tuple (Captum's formats).

    A DataLoader is read once: each batch is a Tensor, or a tuple/list whose last
    element is the target when ``target`` is None (all elements are inputs
    otherwise). As in Captum, a tensor among ``additional_forward_args`` must
    have one entry per example along dimension 0 (of all the examples, for a
    DataLoader); other arguments are passed as they are.
    """
    if isinstance(inputs, DataLoader):
        parts: List[Tuple[Tensor, ...]] = []
        targets: List[Tensor] = []
        for batch in inputs:
            if isinstance(batch, Tensor):
                parts.append((batch,))
            elif isinstance(batch, (tuple, list)):
                if target is None:
                    if len(batch) < 2:
                        raise ValueError(
                            "`inputs` DataLoader batches must be (inputs..., target) "
                            "when `target` is None"
                        )
                    parts.append(_as_inputs(tuple(batch[:-1])))
                    targets.append(torch.as_tensor(batch[-1]))
                else:
                    parts.append(_as_inputs(tuple(batch)))
            else:
                raise ValueError(
                    f"`inputs` DataLoader yielded {type(batch).__name__}; expected a "
                    "Tensor or a tuple (inputs..., target)"
                )
        if not parts:
            raise ValueError("`inputs` is empty: the DataLoader yielded no batch")
        xs = tuple(torch.cat(col) for col in zip(*parts))
        if targets:
            target = torch.cat(targets)
    else:
        xs = _as_inputs(inputs)
    n = xs[0].shape[0] if xs[0].dim() else 0
    if n == 0:
        raise ValueError("`inputs` is empty: it holds no example")
    for i, x in enumerate(xs):
        if x.dim() == 0 or x.shape[0] != n:
            raise ValueError(
                f"`inputs` tensors must share their first (example) dimension; "
                f"tensor {i} has shape {tuple(x.shape)}, expected {n} examples"
            )
    _check_target(target, n)
    args = _format_additional_forward_args(additional_forward_args)
    for i, a in enumerate(args or ()):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != n:
            raise ValueError(
                f"`additional_forward_args` tensor {i} has shape {tuple(a.shape)}; "
                f"a tensor argument must have one entry per example ({n}) along "
                "dimension 0, as in Captum (pass other values as non-tensors or "
                "wrap the model)"
            )
    return xs, target, args


def _check_target(target: Any, n: int) -> None:
    items = target if isinstance(target, (tuple, list)) else [target]
    for t in items:
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] != n:
            raise ValueError(
                f"`target` has {t.shape[0]} entries but `inputs` has {n} examples"
            )
