r"""A *question* to compare the methods on (:class:`Scenario`): the metric that the
Shapley game and the removal check measure, the validation data the units are
scored on, the held-out test data the rankings are judged on, and the quantity
of interest of the gradient methods (:class:`QuantityPart`: the target class,
or a contrast between two classes, over one or more parts of the data; the
comparative question "``a`` versus ``b``" averages ``q = z_a - z_b`` over the
``a`` examples and ``q = z_b - z_a`` over the ``b`` examples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import Tensor

__all__ = ["QuantityPart", "Scenario"]


@dataclass
class QuantityPart:
    r"""Examples and the quantity of interest on them: ``target`` (class index or
    per-example labels) or ``contrast=(a, b)``."""

    inputs: Tensor
    target: Any = None
    contrast: Optional[Tuple[int, int]] = None


@dataclass
class Scenario:
    r"""One question to compare the methods on.

    Attributes:
        name (str): Short key (``"overall"``, ``"recall_3"``, ``"pair_3_8"``).
        title (str): Human-readable description.
        metric (Callable): ``metric(outputs, target)``, higher is better.
        val_inputs (Tensor): Data of the Shapley game and of leave-one-out.
        val_target (Any): Its labels.
        parts (list of QuantityPart): Data and quantity for the gradient methods.
        test_inputs (Tensor): Held-out data of the removal check.
        test_target (Any): Its labels.
        exclude_top_fraction (float): Each method may not pick its own top
            fraction of units for overall accuracy (0: none).
    """

    name: str
    title: str
    metric: Callable
    val_inputs: Tensor
    val_target: Any
    parts: List[QuantityPart]
    test_inputs: Tensor
    test_target: Any
    exclude_top_fraction: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)
