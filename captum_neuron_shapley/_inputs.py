r"""Checking and formatting what users pass to ``attribute`` and the other
public functions: evaluation data, finiteness, layers given by module or by
name, and the model's dtype and device against the inputs'."""

from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

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
    "check_finite",
    "resolve_layer",
    "resolve_layers",
    "explain_forward_errors",
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


def check_finite(name: str, value: Any, where: str = "") -> None:
    r"""Raise a ``ValueError`` naming ``name`` (and ``where``) and the count of
    non-finite entries if the number or floating tensor ``value`` holds NaN or
    infinity. Other values pass."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"`{name}`{where} is {value!r}; it must be finite")
        return
    if not isinstance(value, Tensor):
        return
    if not (value.is_floating_point() or value.is_complex()):
        return
    bad = int((~torch.isfinite(value.detach())).sum())
    if bad:
        nan = int(torch.isnan(value.detach()).sum())
        raise ValueError(
            f"`{name}`{where} has {bad} non-finite value{'s' * (bad != 1)} "
            f"({nan} NaN, {bad - nan} infinite) among its {value.numel()}; "
            "they must be finite. Remove or replace those entries first"
        )


def _unknown_layer(name: str, model: nn.Module, arg: str) -> ValueError:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=3)
    hint = (
        f"; did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else f"; its layers are named like {', '.join(map(repr, names[:6]))}"
        + (", ..." if len(names) > 6 else "")
    )
    return ValueError(
        f"`{arg}`: the model has no layer named {name!r}{hint} (qualified names "
        "as in model.named_modules(), e.g. 'layer1.0.conv1')"
    )


def resolve_layer(model: Optional[nn.Module], layer: Any, arg: str = "layer") -> Any:
    r"""The module of ``layer``: a qualified module name (as in
    ``model.named_modules()``, e.g. ``"layer1.0.conv1"``) is looked up in
    ``model``; a module is checked to be a submodule of ``model``; anything else
    is returned as it is (the caller's checks name it)."""
    if isinstance(layer, str):
        if model is None:
            raise ValueError(
                f"`{arg}` {layer!r} is a layer name, which needs the model: pass "
                "the nn.Module (or its bound forward) as the model, or the layer "
                "module itself"
            )
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise _unknown_layer(layer, model, arg) from None
    if (
        isinstance(layer, nn.Module)
        and model is not None
        and not any(m is layer for m in model.modules())
    ):
        raise ValueError(
            f"`{arg}` ({type(layer).__name__}) is not a submodule of the model"
        )
    return layer


def resolve_layers(model: Optional[nn.Module], layer: Any, arg: str = "layer") -> Any:
    r"""``layer`` with every layer name replaced by its module (a single layer,
    or a list or tuple of them, as the classes' ``layer`` argument takes)."""
    if isinstance(layer, (list, tuple)):
        return type(layer)(resolve_layer(model, x, arg) for x in layer)
    return resolve_layer(model, layer, arg)


def _tensors_of(model: nn.Module) -> List[Tensor]:
    return [t for t in list(model.parameters()) + list(model.buffers())]


@contextlib.contextmanager
def explain_forward_errors(
    model: Optional[nn.Module], xs: Sequence[Tensor], name: str = "inputs"
) -> Iterator[None]:
    r"""Turn the ``RuntimeError`` of a forward pass whose inputs do not match
    the model's dtype or device into a ``ValueError`` that names both and says
    what to do. Other errors pass unchanged."""
    try:
        yield
    except RuntimeError as err:
        if model is None:
            raise
        params = _tensors_of(model)
        devices = sorted({str(t.device) for t in params})
        dtypes = sorted({str(t.dtype) for t in params if t.is_floating_point()})
        x_devices = sorted({str(x.device) for x in xs})
        x_dtypes = sorted({str(x.dtype) for x in xs if x.is_floating_point()})
        if devices and any(d not in devices for d in x_devices):
            raise ValueError(
                f"the model is on {', '.join(devices)} but `{name}` "
                f"{'is' if len(xs) == 1 else 'are'} on {', '.join(x_devices)}: "
                f"move them to the model's device (x.to({devices[0]!r})) or the "
                f"model to theirs (model.to({x_devices[0]!r}))"
            ) from err
        if dtypes and any(d not in dtypes for d in x_dtypes):
            want = dtypes[0].replace("torch.", "")
            have = x_dtypes[0].replace("torch.", "")
            raise ValueError(
                f"the model's parameters are {', '.join(dtypes)} but `{name}` "
                f"{'is' if len(xs) == 1 else 'are'} {', '.join(x_dtypes)}: "
                f"convert the inputs (x.to(torch.{want})) or the model "
                f"(model.to(torch.{have}))"
            ) from err
        raise


def layer_names(
    forward_func: Callable, layers: Sequence[nn.Module], model: Optional[nn.Module]
) -> List[str]:
    r"""Qualified names of ``layers`` in ``model`` (the module behind
    ``forward_func``, if any); errors for foreign layers."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Module):
            raise ValueError(
                "`layer` must be an nn.Module, a layer name or a list of them; "
                f"entry {i} is {type(layer).__name__}"
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
    for i, x in enumerate(xs):
        check_finite("inputs", x, f" (tensor {i})" if len(xs) > 1 else "")
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
