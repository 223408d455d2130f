r"""Counting what a method costs: wall time, forward and backward passes of the
model, measured with hooks in the same run as the method itself."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterator, Mapping

from torch import nn, Tensor

__all__ = ["Cost", "count_cost"]


@dataclass
class Cost:
    r"""What one method cost.

    Attributes:
        wall_s (float): Wall-clock seconds.
        forward_calls (int): Calls of the model's ``forward`` (batched passes).
        forward_examples (int): Examples pushed through those calls (a call on a
            batch of 8 coalitions times 100 examples counts 800).
        backward_calls (int): Backward passes that reached the model's output.
        backward_examples (int): Examples in those backward passes.
        model_evaluations (int): Coalitions evaluated (removal-based methods only).
    """

    wall_s: float = 0.0
    forward_calls: int = 0
    forward_examples: int = 0
    backward_calls: int = 0
    backward_examples: int = 0
    model_evaluations: int = 0

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["wall_s"] = round(self.wall_s, 3)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cost":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _batch(x: Any) -> int:
    if isinstance(x, Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, (tuple, list)) and x:
        return _batch(x[0])
    return 0


@contextlib.contextmanager
def count_cost(model: nn.Module) -> Iterator[Cost]:
    r"""Count the forward and backward passes of ``model`` and the wall time
    inside a ``with`` block.

    A forward hook on ``model`` (the root module) counts every call and its batch
    size; when the output requires a gradient, a hook on the output tensor counts
    the backward pass that flows through it. Passes of sub-modules alone (or of
    cached prefixes replayed instead of recomputed) are not counted twice.

    Args:
        model (nn.Module): The model whose passes are counted.

    Returns:
        Cost: Filled in when the block exits.

    Examples::

        >>> with count_cost(model) as cost:
        ...     model(x).sum().backward()
        >>> cost.forward_calls, cost.backward_calls
        (1, 1)
    """
    cost = Cost()

    def on_backward(grad: Tensor) -> None:
        cost.backward_calls += 1
        cost.backward_examples += _batch(grad)

    def on_forward(module: nn.Module, inputs: Any, output: Any) -> None:
        cost.forward_calls += 1
        cost.forward_examples += _batch(inputs)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.wall_s = time.perf_counter() - start
        handle.remove()
