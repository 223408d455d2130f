r"""The result of a Neuron Shapley run, laid out per layer the Captum way."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .removal import LayerUnits, filter_groups

__all__ = ["ShapleyResult", "LayerLayout", "atomic_save", "safe_load"]

Formatted = Union[Tensor, Tuple[Tensor, ...]]


@dataclass
class LayerLayout:
    r"""How one layer's units map to its reported tensor.

    Attributes:
        name (str): The layer's qualified name in the model.
        kind (str): ``"filter"`` (values of shape ``(C,)``) or ``"neuron"`` (values
            at the layer output's shape, each element carrying its unit's value).
        groups (Tensor): Unit index of each reported element.
        unit_ids (Tensor): The user-facing id of each unit.
    """

    name: str
    kind: str
    groups: Tensor
    unit_ids: Tensor
    out_shape: List[int] = field(default_factory=list)
    baseline: Optional[Tensor] = None

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.numel())

    def to_units(self, model: nn.Module) -> LayerUnits:
        r"""The :class:`LayerUnits` of this layer in ``model`` (found by name)."""
        try:
            layer = model.get_submodule(self.name)
        except AttributeError:
            raise ValueError(f"the model has no layer named {self.name!r}") from None
        shape = torch.Size(self.out_shape)
        groups = (
            filter_groups(shape, self.name) if self.kind == "filter" else self.groups
        )
        base = torch.zeros(()) if self.baseline is None else self.baseline
        return LayerUnits(
            layer, self.name, shape, groups, self.unit_ids, self.kind, base
        )

    def format(self, flat: Tensor) -> Tensor:
        return flat[self.groups]


@dataclass
class ShapleyResult:
    r"""Estimated Shapley values of units for a dataset-level metric.

    Per-unit quantities are kept flat (``flat_values`` etc., units of all layers in
    order); ``values``, ``stderr``, ``lower`` and ``upper`` lay them out like the
    attributions: a tensor for one layer, a tuple of tensors for several.

    Attributes:
        flat_values (Tensor): Mean sampled marginal contribution of each unit.
        flat_stderr (Tensor): Its standard error (``inf`` with fewer than 2 samples).
        flat_radius (Tensor): Half-width of its confidence interval (see ``bound``).
        counts (Tensor): Number of samples of each unit (one per chain, or per
            antithetic pair or cycle of ``strata`` chains).
        n_evaluations (int): Coalitions evaluated by running the model.
        n_permutations (int): Permutation chains drawn.
        converged (bool): Whether the stopping rule was met (not a budget).
        top_k (int or None): The ``k`` of the top-k rule.
        full_value (float): ``V`` of the intact model on all evaluation examples.
        empty_value (float): ``V`` with every unit removed.
        truncation (float or None): The truncation threshold used.
        bound (str): The confidence-bound mode.
        layers (list of LayerLayout): How units map to layers.
        history (Tensor): One row per round: permutations, evaluations, active units.
        single_layer (bool): Whether a single layer (not a list) was given.
    """

    flat_values: Tensor
    flat_stderr: Tensor
    flat_radius: Tensor
    counts: Tensor
    n_evaluations: int
    n_permutations: int
    converged: bool
    top_k: Optional[int]
    full_value: float
    empty_value: float
    truncation: Optional[float]
    bound: str
    layers: List[LayerLayout]
    history: Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    single_layer: bool = True

    # -- layout ------------------------------------------------------------
    def _format(self, flat: Tensor) -> Formatted:
        out, start = [], 0
        for lay in self.layers:
            out.append(lay.format(flat[start : start + lay.n_units]))
            start += lay.n_units
        return out[0] if self.single_layer else tuple(out)

    @property
    def n_units(self) -> int:
        return int(self.flat_values.numel())

    @property
    def values(self) -> Formatted:
        return self._format(self.flat_values)

    @property
    def stderr(self) -> Formatted:
        return self._format(self.flat_stderr)

    @property
    def lower(self) -> Formatted:
        return self._format(self.flat_values - self.flat_radius)

    @property
    def upper(self) -> Formatted:
        return self._format(self.flat_values + self.flat_radius)

    @property
    def convergence_delta(self) -> float:
        r"""Efficiency gap ``V(all) - V(none) - sum(values)`` (0 in expectation
        without truncation; what truncated chain tails left out otherwise)."""
        return self.full_value - self.empty_value - float(self.flat_values.sum())

    def unit(self, flat_index: int) -> Tuple[str, int]:
        r"""``(layer name, unit id)`` of a flat unit index."""
        start = 0
        for lay in self.layers:
            if flat_index < start + lay.n_units:
                return lay.name, int(lay.unit_ids[flat_index - start])
            start += lay.n_units
        raise IndexError(f"unit {flat_index} out of range for {self.n_units} units")

    def top_units(self, k: Optional[int] = None) -> List[Tuple[str, int, float]]:
        r"""The ``k`` highest-valued units as ``(layer name, unit id, value)``;
        ``k`` defaults to ``top_k`` (or 10)."""
        k = min(k or self.top_k or 10, self.n_units)
        order = torch.argsort(self.flat_values, descending=True)[:k]
        return [(*self.unit(int(i)), float(self.flat_values[i])) for i in order]

    def __repr__(self) -> str:
        status = "converged" if self.converged else "stopped by budget"
        lines = [
            f"ShapleyResult({self.n_units} units in {len(self.layers)} layer(s), "
            f"{self.n_permutations} permutations, {self.n_evaluations} evaluations, "
            f"{status}; V(all)={self.full_value:.4g}, V(none)={self.empty_value:.4g})"
        ]
        for name, uid, val in self.top_units(min(self.top_k or 5, 10)):
            i = self._flat_index(name, uid)
            lines.append(
                f"  {name}[{uid}]: {val:+.4f} ± {float(self.flat_stderr[i]):.4f} "
                f"(n={int(self.counts[i])})"
            )
        return "\n".join(lines)

    def _flat_index(self, name: str, uid: int) -> int:
        start = 0
        for lay in self.layers:
            if lay.name == name:
                hit = (lay.unit_ids == uid).nonzero().flatten()
                if hit.numel():
                    return start + int(hit[0])
            start += lay.n_units
        raise KeyError(f"no unit {uid} in layer {name!r}")

    # -- persistence ---------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        r"""Plain tensors, numbers and strings only (loadable with weights_only)."""
        state: Dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "flat_values",
                "flat_stderr",
                "flat_radius",
                "counts",
                "n_evaluations",
                "n_permutations",
                "converged",
                "top_k",
                "full_value",
                "empty_value",
                "truncation",
                "bound",
                "history",
                "single_layer",
            )
        }
        state["layers"] = [
            {
                "name": lay.name,
                "kind": lay.kind,
                "groups": lay.groups,
                "unit_ids": lay.unit_ids,
                "out_shape": list(lay.out_shape),
                "baseline": lay.baseline,
            }
            for lay in self.layers
        ]
        return state

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "ShapleyResult":
        state = dict(state)
        state["layers"] = [LayerLayout(**lay) for lay in state["layers"]]
        return cls(**state)

    def save(self, path: Union[str, os.PathLike]) -> None:
        r"""Save atomically (a temporary file renamed over ``path``)."""
        atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ShapleyResult":
        r"""Load a saved result without unpickling arbitrary objects."""
        return cls.from_state_dict(safe_load(path))


def atomic_save(obj: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    r"""``torch.save`` to a temporary file in the same folder, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safe_load(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    r"""``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
