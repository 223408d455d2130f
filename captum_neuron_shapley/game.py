r"""The unit game: the set function ``V(coalition)`` of a model, some of its layers'
units, a removal rule, evaluation data and a metric. It knows nothing of Shapley
values; it evaluates coalitions (many per forward pass) and counts what it did."""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from captum._utils.common import (
    _expand_additional_forward_args,
    _run_forward,
    _sort_key_list,
)
from captum._utils.gradient import (
    _extract_device_ids,
    _forward_layer_distributed_eval,
    _gather_distributed_tensors,
)
from torch import nn, Tensor
from torch.utils.hooks import RemovableHandle

from .prefix import capture_hooks, repeat_for, replay
from .removal import ablate, layer_tensors, LayerUnits

__all__ = [
    "UnitGame",
    "Batch",
    "LayerEval",
    "reference_pass",
    "model_guard",
    "module_of",
    "subset_target",
]


def module_of(forward_func: Callable) -> Optional[nn.Module]:
    r"""The ``nn.Module`` behind ``forward_func``: the function itself, or the
    module a bound method (such as ``model.forward``) belongs to."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@contextlib.contextmanager
def model_guard(model: Callable) -> Iterator[None]:
    r"""Evaluate in ``eval`` mode without gradients; restore every module's
    ``training`` flag on exit, also after an exception. A plain callable is only
    run without gradients."""
    module = module_of(model)
    modules = list(module.modules()) if module is not None else []
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
    r"""Restrict a per-example target to the examples ``idx``: a tensor with
    ``n`` entries, a list of ``n`` per-example indices (Captum's list target), or
    a tuple/list of per-example tensors. Anything else is returned as it is."""
    if idx is None:
        return target
    if isinstance(target, Tensor) and target.dim() > 0 and target.shape[0] == n:
        return target[idx.to(target.device)]
    if (
        isinstance(target, list)
        and len(target) == n
        and not any(isinstance(t, Tensor) for t in target)
    ):
        return [target[i] for i in idx.tolist()]
    if isinstance(target, (tuple, list)):
        return type(target)(subset_target(t, idx, n) for t in target)
    return target


def subset_args(
    args: Optional[Tuple[Any, ...]], idx: Any, n: int
) -> Optional[Tuple[Any, ...]]:
    r"""Index the per-example tensors of ``additional_forward_args`` (those with
    ``n`` entries along dimension 0) with ``idx`` (a slice or index tensor)."""
    if args is None:
        return None
    return tuple(
        (
            a[idx if isinstance(idx, slice) else idx.to(a.device)]
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n
            else a
        )
        for a in args
    )


def _forward(
    model: Callable, inputs: Sequence[Tensor], args: Optional[Tuple[Any, ...]]
) -> Tensor:
    out = _run_forward(model, tuple(inputs), additional_forward_args=args)
    return _check_output(out)


def _check_output(out: Any) -> Tensor:
    if not isinstance(out, Tensor):
        raise ValueError(
            f"the model returned {type(out).__name__}; the metric needs a Tensor of "
            "outputs (wrap the model so that forward returns one)"
        )
    return out


def _batches(n: int, batch_size: Optional[int]) -> List[slice]:
    step = n if batch_size is None else batch_size
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


@dataclass
class LayerEval:
    r"""What the reference pass saw of one layer.

    Attributes:
        shapes (list of torch.Size): Each tensor's shape without the batch
            dimension (one tensor, or one per element of a tuple).
        means (list of Tensor): Each tensor averaged over the examples (float64).
        dtypes (list of torch.dtype): Each tensor's dtype.
        is_tuple (bool): Whether the layer gave several tensors (attributed as a
            tuple, as Captum's layer methods do; a tuple of one tensor is
            attributed as that tensor).
    """

    shapes: List[torch.Size]
    means: List[Tensor]
    dtypes: List[torch.dtype]
    is_tuple: bool


def reference_pass(
    forward_func: Callable,
    layers: Sequence[nn.Module],
    names: Sequence[str],
    inputs: Tuple[Tensor, ...],
    additional_forward_args: Optional[Tuple[Any, ...]] = None,
    batch_size: Optional[int] = None,
    capture: Sequence[nn.Module] = (),
    attribute_to_layer_input: bool = False,
    device_ids: Optional[List[int]] = None,
    chunks: Optional[Iterable[Tuple[Tuple[Tensor, ...], Any]]] = None,
) -> Tuple[Tensor, List[LayerEval], List[Tensor]]:
    r"""One pass of the intact model over the evaluation inputs.

    The layer tensors come from Captum's ``_forward_layer_distributed_eval`` (which
    also gathers the slices of a ``DataParallel`` model in device order), one batch
    of ``batch_size`` examples at a time; only their sums are kept. Hooks of our
    own, registered before Captum's, check that every layer gives Tensors and runs
    exactly once per forward pass (a layer shared between two places of the
    model cannot be ablated at one of them), and record the outputs of the
    ``capture`` modules (the prefix that :mod:`.prefix` replays).

    ``chunks``, when given, yields ``(inputs, additional_forward_args)`` of
    successive batches (read from a DataLoader) instead of ``inputs`` cut into
    ``batch_size`` slices.

    Returns:
        The model outputs for all examples, a :class:`LayerEval` per layer, and
        the outputs of the ``capture`` modules for all examples.
    """
    n = inputs[0].shape[0] if inputs else 0

    def slices() -> Iterator[Tuple[Tuple[Tensor, ...], Any]]:
        for sl in _batches(n, batch_size):
            yield tuple(x[sl] for x in inputs), subset_args(
                additional_forward_args, sl, n
            )

    where = "takes" if attribute_to_layer_input else "returned"
    rows, expected, batch = [0] * len(layers), [0], [0]

    lock = threading.Lock()  # DataParallel runs its replicas in threads

    def make_check(i: int) -> Callable[..., None]:
        def check(module: nn.Module, args: Any, out: Any = None) -> None:
            value = args if attribute_to_layer_input else out
            seen = layer_tensors(value, names[i], where)[0].shape[0]
            with lock:
                rows[i] += seen
                too_many = rows[i] > expected[0]
            if seen > batch[0]:
                raise _rows_error(names[i], seen, batch[0])
            if too_many:
                raise ValueError(
                    f"`layer` {names[i]!r} is called more than once per forward "
                    "pass (a shared module, such as a ReLU reused in a residual "
                    "block); removing its units would tie every call together. "
                    "Choose layers that run once (e.g. the conv or norm layers)"
                )

        return check

    def check_called() -> None:
        for i, r in enumerate(rows):
            if r == 0:
                raise ValueError(
                    f"`layer` {names[i]!r} was not called in the model's forward "
                    f"pass ({_not_called_hint(layers[i])})"
                )

    def check_rows() -> None:
        for i, r in enumerate(rows):
            if r < expected[0]:
                raise _rows_error(names[i], r - expected[0] + batch[0], batch[0])

    outs: List[Tensor] = []
    sums: List[List[Tensor]] = []
    evals: List[LayerEval] = []
    captured: List[List[Tensor]] = [[] for _ in capture]
    handles: List[RemovableHandle] = []
    try:
        for i, m in enumerate(layers):
            if attribute_to_layer_input:
                handles.append(m.register_forward_pre_hook(make_check(i)))
            else:
                handles.append(m.register_forward_hook(make_check(i)))
        for m, h in zip(capture, capture_hooks(capture, captured)):
            handles.append(m.register_forward_hook(h))
        seen = 0
        for xs, args in slices() if chunks is None else chunks:
            expected[0] += xs[0].shape[0]
            batch[0] = int(xs[0].shape[0])
            seen += xs[0].shape[0]
            try:
                saved, out = _forward_layer_distributed_eval(
                    forward_func,
                    xs,
                    list(layers),
                    additional_forward_args=args,
                    attribute_to_layer_input=attribute_to_layer_input,
                    forward_hook_with_return=True,
                )
            except AssertionError:  # Captum's "did not obtain any outputs"
                check_called()
                raise
            check_called()
            check_rows()
            outs.append(_check_output(out))
            ids = _extract_device_ids(forward_func, saved, device_ids)
            for i, layer in enumerate(layers):
                keys = _sort_key_list(list(saved[layer].keys()), ids)
                tensors = _gather_distributed_tensors(saved[layer], key_list=keys)
                batch_sums = [t.detach().to(torch.float64).sum(0) for t in tensors]
                if len(sums) <= i:
                    sums.append(batch_sums)
                    evals.append(
                        LayerEval(
                            [t.shape[1:] for t in tensors],
                            [],
                            [t.dtype for t in tensors],
                            len(tensors) > 1,
                        )
                    )
                else:
                    sums[i] = [a + b.to(a.device) for a, b in zip(sums[i], batch_sums)]
    finally:
        for h in handles:
            h.remove()
    for ev, s in zip(evals, sums):
        ev.means = [t / seen for t in s]
    prefix = [torch.cat(c) for c in captured]
    return torch.cat(outs), evals, prefix


def _rows_error(name: str, seen: int, given: int) -> ValueError:
    return ValueError(
        f"`layer` {name!r} saw {seen} rows where the model was given {given} "
        "examples: its tensors must hold the examples along dimension 0, one row "
        "per example (a sequence-first layer, such as "
        "nn.TransformerEncoderLayer(batch_first=False), holds positions there)"
    )


def _not_called_hint(layer: nn.Module) -> str:
    if isinstance(layer, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return (
            "it is the out_proj of an nn.MultiheadAttention, which uses its weights "
            "without calling it: HeadShapley(model, attention) takes the heads, "
            "whose outputs are out_proj's input, as units"
        )
    return (
        "a TorchScript model, such as a torch.jit.trace result, runs no forward "
        "hooks: pass the eager nn.Module"
    )


class Batch:
    r"""Examples a chain is evaluated on: their inputs, target and per-example
    arguments, the outputs of the replayed prefix modules and of the intact
    model on them.

    Attributes:
        inputs (tuple of Tensor): The model inputs, examples along dimension 0.
        target (Any): The metric's target for these examples.
        args (tuple, optional): The additional forward arguments for them.
        prefix (list of Tensor): The replayed prefix modules' outputs on them.
        full_outputs (Tensor): The intact model's outputs on them.
        idx (Tensor, optional): Their rows in the game's examples (None for a
            batch read from a DataLoader).
    """

    def __init__(
        self,
        inputs: Sequence[Tensor],
        target: Any,
        args: Optional[Tuple[Any, ...]],
        prefix: Sequence[Tensor],
        full_outputs: Tensor,
        idx: Optional[Tensor] = None,
    ) -> None:
        self.inputs: Tuple[Tensor, ...] = tuple(inputs)
        self.target = target
        self.args = args
        self.prefix: List[Tensor] = list(prefix)
        self.full_outputs = full_outputs
        self.idx = idx

    @property
    def n(self) -> int:
        return int(self.inputs[0].shape[0])


Rows = Union[None, Tensor, Batch, Sequence[Batch]]


def _cat_args(
    args: Sequence[Optional[Tuple[Any, ...]]],
) -> Optional[Tuple[Any, ...]]:
    r"""The additional forward arguments of coalitions on different batches, in
    one pass: tensors concatenated (as Captum repeats them for one batch), other
    arguments as they are."""
    if args[0] is None:
        return None
    return tuple(
        (
            torch.cat([a[i] for a in args])  # type: ignore[index]
            if isinstance(first, Tensor) and first.dim() > 0
            else first
        )
        for i, first in enumerate(args[0])
    )


class UnitGame:
    r"""The set function ``V(S)``: the metric of the model with only the units in
    ``S`` present.

    Args:
        model (nn.Module or Callable): The model, or its forward function
            (evaluated in eval mode, without gradients).
        units (sequence of LayerUnits): The players, tensor by tensor.
        inputs (tuple of Tensor): The evaluation inputs, examples along dim 0.
        target (Any): Passed to the metric (subset along with the examples when it
            is a per-example tensor, a list of per-example indices or a tuple of
            per-example tensors).
        metric (Callable): ``metric(outputs, target) -> float``, higher is better.
        full_outputs (Tensor): The intact model's outputs on ``inputs``.
        perturbations_per_eval (int): Coalitions evaluated in one forward pass.
        batch_size (int, optional): Examples per forward pass (times coalitions).
        prefix (tuple, optional): Modules that run before every ablated layer and
            their outputs on all ``inputs`` (see :mod:`.prefix`): replayed instead
            of recomputed.
        additional_forward_args (tuple, optional): Passed to the model after the
            inputs, as in Captum; tensors with one entry per example follow the
            examples (subsets, batches) and are repeated for every coalition of
            a forward pass (Captum's ``_expand_additional_forward_args``).
        device_ids (list of int, optional): The devices a ``DataParallel`` model
            scatters its batch to (see :func:`.removal.ablate`).

    Attributes:
        n_evaluations (int): Coalitions evaluated by running the model.
        n_forward (int): Forward passes made.
        examples_evaluated (int): Examples pushed through the model (an example
            evaluated for ``M`` coalitions counts ``M`` times; the replayed
            prefix is not run, but its examples count).
    """

    def __init__(
        self,
        model: Callable,
        units: Sequence[LayerUnits],
        inputs: Tuple[Tensor, ...],
        target: Any,
        metric: Callable,
        full_outputs: Tensor,
        perturbations_per_eval: int = 1,
        batch_size: Optional[int] = None,
        prefix: Tuple[Sequence[nn.Module], Sequence[Tensor]] = ((), ()),
        additional_forward_args: Optional[Tuple[Any, ...]] = None,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        self.model: Callable = model
        self.additional_forward_args: Optional[Tuple[Any, ...]] = (
            additional_forward_args
        )
        self.device_ids: Optional[List[int]] = device_ids
        self.prefix_modules: List[nn.Module] = list(prefix[0])
        self.prefix_outputs: List[Tensor] = list(prefix[1])
        self.units: List[LayerUnits] = list(units)
        self.inputs: Tuple[Tensor, ...] = inputs
        self.target: Any = target
        self.metric: Callable = metric
        self.full_outputs: Tensor = full_outputs
        self.perturbations_per_eval: int = perturbations_per_eval
        self.batch_size: Optional[int] = batch_size
        self.n_examples: int = int(inputs[0].shape[0]) if inputs else 0
        sizes = [u.n_units for u in self.units]
        self.n_units: int = sum(sizes)
        self.offsets: List[int] = [0] + list(torch.tensor(sizes).cumsum(0).tolist())
        self.device: torch.device = inputs[0].device if inputs else torch.device("cpu")
        self.n_evaluations: int = 0
        self.n_forward: int = 0
        self.examples_evaluated: int = 0
        self._empty_outputs: Optional[Tensor] = None
        self._whole: Optional[Batch] = None
        # one-coalition passes fold removal into conv/linear weights, except
        # under DataParallel, whose replicas copy the patched instances
        owner = getattr(model, "__self__", model)
        self._fold: bool = device_ids is None and not (
            isinstance(owner, nn.Module)
            and any(isinstance(m, nn.DataParallel) for m in owner.modules())
        )

    # -- examples ---------------------------------------------------------------
    @property
    def streamed(self) -> bool:
        r"""Whether the examples are read from a DataLoader pass by pass (not
        held in memory)."""
        return False

    def whole(self) -> Batch:
        r"""All the examples, as one :class:`Batch` (no copy)."""
        if self._whole is None:
            self._whole = Batch(
                self.inputs,
                self.target,
                self.additional_forward_args,
                self.prefix_outputs,
                self.full_outputs,
            )
        return self._whole

    def batch(self, idx: Tensor) -> Batch:
        r"""The examples ``idx`` (a 1-d index tensor) as a :class:`Batch`."""
        n = self.n_examples
        dev = [x.device for x in self.inputs]
        return Batch(
            [x[idx.to(d)] for x, d in zip(self.inputs, dev)],
            subset_target(self.target, idx, n),
            subset_args(self.additional_forward_args, idx, n),
            [c[idx.to(c.device)] for c in self.prefix_outputs],
            self.full_outputs[idx.to(self.full_outputs.device)],
            idx,
        )

    def draw(self, generator: torch.Generator, size: int) -> Batch:
        r"""``size`` examples drawn uniformly at random without replacement."""
        idx = torch.randperm(self.n_examples, generator=generator)[:size]
        return self.batch(idx)

    def _rows(self, rows: Rows) -> Union[Batch, List[Batch]]:
        if rows is None:
            return self.whole()
        if isinstance(rows, Tensor):
            return self.batch(rows)
        if isinstance(rows, Batch):
            return rows
        return list(rows)

    # -- metric ---------------------------------------------------------------
    def score(self, outputs: Tensor, rows: Rows = None) -> Tensor:
        r"""Metric of outputs ``(M, n, ...)`` on the examples ``rows`` (all, an
        index tensor, a :class:`Batch`, or one batch per coalition); returns
        float64 ``(M,)`` on CPU."""
        rows = self._rows(rows)
        if isinstance(rows, Batch):
            return self._score(outputs, rows.target)
        vals = torch.empty(outputs.shape[0], dtype=torch.float64)
        start = 0
        for end in _runs(rows):
            vals[start:end] = self._score(outputs[start:end], rows[start].target)
            start = end
        return vals

    def _score(self, outputs: Tensor, target: Any) -> Tensor:
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

    def outputs(self, keep: Tensor, rows: Rows = None) -> Tensor:
        r"""Model outputs ``(M, n, ...)`` for ``M`` coalitions given as a boolean
        ``(M, n_units)`` mask of present units, on the examples ``rows`` (all, an
        index tensor, a :class:`Batch`, or one batch of equal size per
        coalition). The model runs in eval mode without gradients; its flags are
        restored."""
        with model_guard(self.model):
            return self._outputs(keep.cpu(), self._rows(rows))

    def _outputs(self, keep: Tensor, rows: Union[Batch, List[Batch]]) -> Tensor:
        n = rows.n if isinstance(rows, Batch) else rows[0].n
        chunks = []
        for a in range(0, keep.shape[0], self.perturbations_per_eval):
            k = keep[a : a + self.perturbations_per_eval]
            m = k.shape[0]
            # decide on the CPU which layers need a hook: no device sync per call
            per_layer = [
                None if bool(p.all()) else p.to(self.device) for p in self.split(k)
            ]
            part = rows if isinstance(rows, Batch) else rows[a : a + m]
            cols = []
            for sl in _batches(n, self.batch_size):
                rep, fixed, rep_args = _stack(part, sl, m)
                hooks = ablate(
                    self.units,
                    per_layer,
                    sl.stop - sl.start,
                    self.device_ids,
                    fold=self._fold,
                )
                with replay(self.prefix_modules, fixed), hooks:
                    out = _forward(self.model, rep, rep_args)
                self.n_forward += 1
                self.examples_evaluated += m * (sl.stop - sl.start)
                cols.append(out.reshape(m, -1, *out.shape[1:]))
            chunks.append(torch.cat(cols, 1))
            self.n_evaluations += m
        return torch.cat(chunks, 0)

    def value(self, keep: Tensor, rows: Rows = None) -> Tensor:
        r"""``V`` of each coalition in the ``(M, n_units)`` mask, float64 on CPU,
        on the examples ``rows`` (all, an index tensor, a :class:`Batch`, or one
        batch of equal size per coalition).

        The outputs of the intact model and of the model with every unit removed are
        cached, so those two coalitions cost nothing after the first time.
        """
        keep = keep.bool()
        rows = self._rows(rows)
        per_row = [rows] * keep.shape[0] if isinstance(rows, Batch) else rows
        vals = torch.empty(keep.shape[0], dtype=torch.float64)
        full, empty = keep.all(1), ~keep.any(1)
        for i in (full | empty).nonzero().flatten().tolist():
            b = per_row[i]
            vals[i] = self.full_value(b) if bool(full[i]) else self.empty_value(b)
        rest = (~(full | empty)).nonzero().flatten()
        if rest.numel():
            part: Union[Batch, List[Batch]] = (
                rows if isinstance(rows, Batch) else [rows[i] for i in rest.tolist()]
            )
            vals[rest] = self.score(self.outputs(keep[rest], part), part)
        return vals

    def full_value(self, rows: Rows = None) -> float:
        r"""``V`` of the intact model on ``rows`` (default: all examples)."""
        b = self._rows(rows)
        assert isinstance(b, Batch), "one batch"
        return float(self.score(b.full_outputs.unsqueeze(0), b)[0])

    def empty_value(self, rows: Rows = None) -> float:
        r"""``V`` with every unit removed (its outputs on all examples are
        computed once and cached)."""
        if self._empty_outputs is None:
            none = torch.zeros(1, self.n_units, dtype=torch.bool)
            self._empty_outputs = self.outputs(none)[0]
        b = self._rows(rows)
        assert isinstance(b, Batch), "one batch"
        if b is self._whole:
            out = self._empty_outputs
        elif b.idx is not None:
            out = self._empty_outputs[b.idx.to(self._empty_outputs.device)]
        else:
            none = torch.zeros(1, self.n_units, dtype=torch.bool)
            out = self.outputs(none, b)[0]
        return float(self.score(out.unsqueeze(0), b)[0])


def _runs(rows: Sequence[Batch]) -> List[int]:
    r"""Ends of the runs of consecutive coalitions on the same batch."""
    ends = [i for i in range(1, len(rows)) if rows[i] is not rows[i - 1]]
    return ends + [len(rows)]


def _stack(
    part: Union[Batch, Sequence[Batch]], sl: slice, m: int
) -> Tuple[List[Tensor], List[Tensor], Optional[Tuple[Any, ...]]]:
    r"""The inputs, replayed prefix outputs and arguments of a pass over ``m``
    coalitions, coalition-major, on the examples ``sl`` of ``part`` (one batch
    repeated, or one batch per coalition)."""
    if isinstance(part, Batch):
        n = part.n
        return (
            [repeat_for(x[sl], m) for x in part.inputs],
            [repeat_for(c[sl], m) for c in part.prefix],
            _expand_additional_forward_args(subset_args(part.args, sl, n), m),
        )
    n = part[0].n
    if any(b.n != n for b in part):
        raise ValueError("coalitions evaluated together need batches of one size")
    return (
        [
            torch.cat([b.inputs[i][sl] for b in part])
            for i in range(len(part[0].inputs))
        ],
        [
            torch.cat([b.prefix[i][sl] for b in part])
            for i in range(len(part[0].prefix))
        ],
        _cat_args([subset_args(b.args, sl, n) for b in part]),
    )


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
