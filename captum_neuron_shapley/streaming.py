r"""Evaluation sets read from a ``DataLoader``, batch by batch, never held in
memory whole.

With a ``DataLoader`` as ``inputs``, a pass over all the examples (the intact
model's metric, the removal baselines, a greedy removal search) reads the
dataset batch by batch, and a permutation chain evaluated on its own random batch
(the default for large sets) reads just those examples. Only the model's
outputs on all examples are kept (``N x classes`` numbers), for metrics that are
not an average over examples.

For a map-style dataset (one with ``__len__`` and ``__getitem__``, such as
torchvision's datasets or a ``TensorDataset``), examples are read in the
dataset's own order with the loader's ``collate_fn`` and ``batch_size``, and a
chain's random batch is drawn with the run's seeded generator: the result is
reproducible by ``seed`` whatever the loader's ``shuffle``, and a per-example
tensor in ``target`` or ``additional_forward_args`` covers the dataset in its
order. The loader's sampler and worker processes are not used. For an
``IterableDataset`` the loader is iterated as it is: a chain takes the next
examples it yields, and ``target`` and ``additional_forward_args`` may not hold
per-example tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
from torch import nn, Tensor
from torch.utils.data import DataLoader, IterableDataset

from .game import (
    _forward,
    Batch,
    model_guard,
    Rows,
    subset_args,
    subset_target,
    UnitGame,
)
from .prefix import capture_hooks

__all__ = ["LoaderSource", "StreamedGame", "cat_targets"]

#: Rows of a pass when the loader has no ``batch_size`` (a custom batch sampler).
DEFAULT_ROWS = 64

Chunk = Tuple[Tuple[Tensor, ...], Any, Optional[Tuple[Any, ...]], Optional[Tensor]]


def _is_per_example(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.dim() > 0
    if isinstance(value, (list, tuple)):
        return any(_is_per_example(v) for v in value) or (
            isinstance(value, list) and len(value) > 1
        )
    return False


class LoaderSource:
    r"""The examples of a ``DataLoader`` (see the module's docstring).

    Args:
        loader (DataLoader): Batches ``(inputs..., target)`` when ``target`` is
            None, otherwise batches of inputs (a tensor, or a tuple of them).
        target (Any): The target, unless the batches carry it.
        args (tuple, optional): The additional forward arguments.
        device (torch.device, optional): Where to move the batches (the model's
            device).
    """

    def __init__(
        self,
        loader: DataLoader,
        target: Any,
        args: Optional[Tuple[Any, ...]],
        device: Optional[torch.device] = None,
    ) -> None:
        self.loader = loader
        self.target = target
        self.args = args
        self.device = device
        self.mapped = not isinstance(loader.dataset, IterableDataset) and hasattr(
            loader.dataset, "__len__"
        )
        self.rows = int(loader.batch_size or DEFAULT_ROWS)
        self.n: Optional[int] = len(loader.dataset) if self.mapped else None  # type: ignore[arg-type]  # noqa: E501
        if self.n == 0:
            raise ValueError(
                "`inputs` is empty: the DataLoader's dataset has no example"
            )
        if not self.mapped and (_is_per_example(target) or _is_per_example(args)):
            raise ValueError(
                "with a DataLoader over an IterableDataset, per-example targets must "
                "come in its batches ((inputs..., target)) and `additional_forward_"
                "args` may not hold per-example tensors (the examples' order is not "
                "known in advance)"
            )
        self._stream: Optional[Iterator[Any]] = None
        self._left: Optional[Chunk] = None

    # -- reading ---------------------------------------------------------------
    def _split(self, batch: Any) -> Tuple[Tuple[Tensor, ...], Any]:
        r"""``(inputs, target)`` of a collated batch."""
        if isinstance(batch, Tensor):
            parts: Tuple[Any, ...] = (batch,)
        elif isinstance(batch, (tuple, list)):
            parts = tuple(batch)
        else:
            raise ValueError(
                f"`inputs` DataLoader yielded {type(batch).__name__}; expected a "
                "Tensor or a tuple (inputs..., target)"
            )
        target = self.target
        if target is None:
            if len(parts) < 2:
                raise ValueError(
                    "`inputs` DataLoader batches must be (inputs..., target) when "
                    "`target` is None"
                )
            parts, target = parts[:-1], torch.as_tensor(parts[-1])
        if not parts or not all(isinstance(p, Tensor) for p in parts):
            raise ValueError(
                "`inputs` DataLoader batches must hold Tensors, got "
                + ", ".join(type(p).__name__ for p in parts)
            )
        return tuple(self._to(p) for p in parts), self._to(target)

    def _to(self, value: Any) -> Any:
        if self.device is not None and isinstance(value, Tensor):
            return value.to(self.device)
        return value

    def _collate(self, idx: Tensor) -> Chunk:
        dataset = self.loader.dataset
        items = [dataset[i] for i in idx.tolist()]
        inputs, target = self._split(self.loader.collate_fn(items))
        if self.target is not None:
            target = subset_target(self.target, idx, int(self.n or 0))
        return inputs, target, subset_args(self.args, idx, int(self.n or 0)), idx

    def passes(self) -> Iterator[Chunk]:
        r"""All the examples, batch by batch: ``(inputs, target, args, idx)``
        (``idx``: their positions in the dataset, None for an iterable one)."""
        if self.mapped:
            n = int(self.n or 0)
            for start in range(0, n, self.rows):
                yield self._collate(torch.arange(start, min(start + self.rows, n)))
            return
        for batch in self.loader:
            inputs, target = self._split(batch)
            yield inputs, target, self.args, None

    def draw(self, generator: torch.Generator, size: int) -> Chunk:
        r"""``size`` examples: uniformly at random without replacement (a
        map-style dataset), or the next ones the loader yields."""
        if self.mapped:
            n = int(self.n or 0)
            return self._collate(torch.randperm(n, generator=generator)[:size])
        parts: List[Chunk] = []
        got = 0
        while got < size:
            chunk = self._left if self._left is not None else self._next()
            self._left = None
            take = min(size - got, chunk[0][0].shape[0])
            if take < chunk[0][0].shape[0]:
                self._left = _rows(chunk, slice(take, None))
                chunk = _rows(chunk, slice(0, take))
            parts.append(chunk)
            got += take
        return _join(parts)

    def _next(self) -> Chunk:
        for _ in range(2):
            if self._stream is None:
                self._stream = iter(self.loader)
            try:
                inputs, target = self._split(next(self._stream))
                return inputs, target, self.args, None
            except StopIteration:
                self._stream = None
        raise ValueError("`inputs` is empty: the DataLoader yielded no batch")


def _rows(chunk: Chunk, sl: slice) -> Chunk:
    inputs, target, args, _ = chunk
    n = inputs[0].shape[0]
    idx = torch.arange(n)[sl]
    return (
        tuple(x[sl] for x in inputs),
        subset_target(target, idx, n),
        args,
        None,
    )


def _join(parts: List[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    inputs = tuple(torch.cat(col) for col in zip(*(p[0] for p in parts)))
    targets = [p[1] for p in parts]
    target = torch.cat(targets) if isinstance(targets[0], Tensor) else targets[0]
    return inputs, target, parts[0][2], None


def cat_targets(targets: List[Any]) -> Any:
    r"""Per-chunk targets joined: tensors concatenated, tuples of tensors joined
    element by element; anything else (the same for every chunk) as it is."""
    first = targets[0]
    if isinstance(first, Tensor) and first.dim() > 0:
        return torch.cat(targets)
    if isinstance(first, tuple) and all(isinstance(t, Tensor) for t in first):
        return tuple(torch.cat(col) for col in zip(*targets))
    if isinstance(first, list):
        return [t for part in targets for t in part]
    return first


class StreamedGame(UnitGame):
    r"""A :class:`~captum_neuron_shapley.game.UnitGame` whose examples are read
    from a ``DataLoader`` (:class:`LoaderSource`) pass by pass.

    Args:
        model (Callable): The model.
        units (sequence of LayerUnits): The players.
        source (LoaderSource): The examples.
        target (Any): The target of all examples, in the order of
            :meth:`LoaderSource.passes` (the metric of the whole set scores the
            intact model's ``full_outputs`` against it).
        metric (Callable): The metric.
        full_outputs (Tensor): The intact model's outputs on all examples.
        perturbations_per_eval (int): Coalitions per forward pass.
        batch_size (int, optional): Examples per forward pass.
        prefix_modules (list of nn.Module): Modules computed once per drawn
            batch and replayed for its coalitions.
        device_ids (list of int, optional): See :class:`UnitGame`.
    """

    def __init__(
        self,
        model: Callable,
        units: Any,
        source: LoaderSource,
        target: Any,
        metric: Callable,
        full_outputs: Tensor,
        perturbations_per_eval: int = 1,
        batch_size: Optional[int] = None,
        prefix_modules: Optional[List[nn.Module]] = None,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        super().__init__(
            model,
            units,
            (),
            target,
            metric,
            full_outputs,
            perturbations_per_eval,
            batch_size,
            (list(prefix_modules or []), []),
            source.args,
            device_ids,
        )
        self.source = source
        self._empty_target: Any = None
        self.n_examples = int(full_outputs.shape[0])
        self.device = full_outputs.device

    @property
    def streamed(self) -> bool:
        return True

    @property
    def decomposable(self) -> bool:
        r"""Whether the metric of all examples is the size-weighted mean of its
        values on the passes' batches (no need to keep the outputs)."""
        return bool(getattr(self.metric, "decomposable", False))

    def draw(self, generator: torch.Generator, size: int) -> Batch:
        r"""``size`` examples (see :meth:`LoaderSource.draw`), with the intact
        model's outputs and the replayed prefix on them (one forward pass)."""
        inputs, target, args, idx = self.source.draw(generator, size)
        store: List[List[Tensor]] = [[] for _ in self.prefix_modules]
        handles = [
            m.register_forward_hook(h)
            for m, h in zip(
                self.prefix_modules, capture_hooks(self.prefix_modules, store)
            )
        ]
        try:
            with model_guard(self.model):
                full = _forward(self.model, inputs, args)
        finally:
            for h in handles:
                h.remove()
        self.n_evaluations += 1
        self.n_forward += 1
        self.examples_evaluated += int(inputs[0].shape[0])
        return Batch(inputs, target, args, [s[0] for s in store], full, idx)

    def value(self, keep: Tensor, rows: Rows = None) -> Tensor:
        if rows is not None:
            return super().value(keep, rows)
        keep = keep.bool()
        vals = torch.empty(keep.shape[0], dtype=torch.float64)
        full, empty = keep.all(1), ~keep.any(1)
        if bool(full.any()):
            vals[full] = self.full_value()
        if bool(empty.any()):
            vals[empty] = self.empty_value()
        rest = (~(full | empty)).nonzero().flatten()
        if rest.numel():
            vals[rest] = self._stream_value(keep[rest])
        return vals

    def _stream_value(self, keep: Tensor, store_empty: bool = False) -> Tensor:
        r"""``V`` of the coalitions ``keep`` on all examples, pass by pass."""
        total = torch.zeros(keep.shape[0], dtype=torch.float64)
        outs: List[Tensor] = []
        targets: List[Any] = []
        before = self.n_evaluations
        for inputs, target, args, idx in self.source.passes():
            b = Batch(inputs, target, args, [], torch.empty(0), idx)
            out = self.outputs(keep, b)
            self.n_evaluations = before  # a coalition counts once for all passes
            if self.decomposable and not store_empty:
                total += self.score(out, b) * b.n
            else:
                outs.append(out)
                targets.append(target)
        self.n_evaluations = before + keep.shape[0]
        if self.decomposable and not store_empty:
            return total / self.n_examples
        joined, target = torch.cat(outs, 1), cat_targets(targets)
        if store_empty:
            self._empty_outputs, self._empty_target = joined[0], target
        return self._score(joined, target)

    def full_value(self, rows: Rows = None) -> float:
        if rows is None:
            return float(self._score(self.full_outputs.unsqueeze(0), self.target)[0])
        return super().full_value(rows)

    def empty_value(self, rows: Rows = None) -> float:
        none = torch.zeros(1, self.n_units, dtype=torch.bool)
        if self._empty_outputs is None:
            self._stream_value(none, store_empty=True)
        assert self._empty_outputs is not None
        if rows is None:
            out = self._empty_outputs.unsqueeze(0)
            return float(self._score(out, self._empty_target)[0])
        b = self._rows(rows)
        assert isinstance(b, Batch), "one batch"
        if b.idx is not None:  # dataset order: the stored outputs are in it
            out = self._empty_outputs[b.idx.to(self._empty_outputs.device)]
        else:
            out = self.outputs(none, b)[0]
        return float(self.score(out.unsqueeze(0), b)[0])

    def whole(self) -> Batch:
        raise ValueError(
            "the examples are read from a DataLoader: evaluate all of them with "
            "value(keep) or a batch of them with draw()"
        )
