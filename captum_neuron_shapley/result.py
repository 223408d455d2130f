r"""The result of a Neuron Shapley run, laid out per layer the Captum way."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn, Tensor

from ._inputs import resolve_layer
from .removal import filter_groups, LayerUnits

__all__ = ["ShapleyResult", "LayerLayout", "RunCost", "atomic_save", "safe_load"]

Formatted = Union[
    Tensor, Tuple[Tensor, ...], Tuple[Union[Tensor, Tuple[Tensor, ...]], ...]
]


@dataclass
class LayerLayout:
    r"""How one layer's units map to its reported tensor.

    Attributes:
        name (str): The layer's qualified name in the model.
        kind (str): ``"filter"`` (values of shape ``(C,)``), ``"head"`` (values
            of shape ``(num_heads,)``; ``name`` is the attention module or output
            projection, ``out_shape`` the shape of its heads' concatenated
            outputs) or ``"neuron"`` (values at the layer output's shape, each
            element carrying its unit's value).
        groups (Tensor): Unit index of each reported element.
        unit_ids (Tensor): The user-facing id of each unit.
        out_shape (list of int): The tensor's shape without the batch dimension.
        baseline (Tensor or None): What a removed unit was replaced with.
        layer_name (str or None): The module's qualified name when it differs
            from ``name``: a layer with several tensors has one layout per
            tensor, named ``"{layer_name}[{index}]"``.
        index (int or None): Position of the tensor in the layer's tuple of
            tensors (None for a layer with a single tensor).
        layer_input (bool): Whether the units are elements of the layer's input
            (``attribute_to_layer_input``) rather than of its output.
    """

    name: str
    kind: str
    groups: Tensor
    unit_ids: Tensor
    out_shape: List[int] = field(default_factory=list)
    baseline: Optional[Tensor] = None
    layer_name: Optional[str] = None
    index: Optional[int] = None
    layer_input: bool = False

    @property
    def n_units(self) -> int:
        return int(self.unit_ids.numel())

    @property
    def module_name(self) -> str:
        r"""The qualified name of the module whose tensor this is."""
        return self.name if self.layer_name is None else self.layer_name

    def to_units(self, model: nn.Module) -> LayerUnits:
        r"""The :class:`LayerUnits` of this layer in ``model`` (found by name)."""
        if self.kind == "head":
            from .heads import head_units  # heads builds on this module

            return head_units(model, self)
        layer = resolve_layer(model, self.module_name, "result")
        shape = torch.Size(self.out_shape)
        groups = (
            filter_groups(shape, self.name) if self.kind == "filter" else self.groups
        )
        base = torch.zeros(()) if self.baseline is None else self.baseline
        return LayerUnits(
            layer,
            self.name,
            shape,
            groups,
            self.unit_ids,
            self.kind,
            base,
            self.index,
            self.layer_input,
        )

    def format(self, flat: Tensor) -> Tensor:
        return flat[self.groups]


@dataclass
class RunCost:
    r"""What a run cost, and what it measured of the model's speed.

    Attributes:
        examples (int): Examples pushed through the model, setup and refinement
            included (an example evaluated for ``M`` coalitions counts ``M``
            times): the run's forward work.
        seconds (float): Wall time, setup and refinement included.
        setup_seconds (float): Seconds before sampling started (the intact
            model's pass, the baselines, ``V(none)``).
        setup_evaluations (int): Coalitions evaluated before sampling started.
        refine_seconds (float): Seconds of the removal-set search.
        evaluations_per_chain (float, optional): Coalitions a permutation chain
            took: the mean over the completed chains; with none completed, what
            the most advanced chain would have needed (projected from how fast
            the metric fell); 1 per coalition for ``MSRSampler``.
        batch_size (int, optional): Examples each chain was evaluated on (a
            random batch per chain); None: all the examples.
    """

    examples: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    setup_evaluations: int = 0
    refine_seconds: float = 0.0
    evaluations_per_chain: Optional[float] = None
    batch_size: Optional[int] = None


@dataclass
class ShapleyResult:
    r"""Estimated Shapley values of units for a dataset-level metric.

    Per-unit quantities are kept flat (``flat_values`` etc., units of all layers in
    order); ``values``, ``stderr``, ``lower`` and ``upper`` lay them out like the
    attributions (in float64): a tensor for one layer, a tuple of tensors for
    several; a layer with several tensors (a tuple of outputs) gives a tuple with
    one tensor per tensor in place of its tensor.

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
        layers (list of LayerLayout): How units map to layers (one layout per
            tensor of a layer).
        history (Tensor): One row per round: permutations, evaluations, active units.
        single_layer (bool): Whether a single layer (not a list) was given.
        stop_reason (str): Why sampling stopped: ``"converged"`` (the stopping
            rule), ``"max_evaluations"``, ``"max_permutations"``, ``"max_time"``
            or ``"callback"``.
        epsilon (float or None): The tolerance of the stopping rule used.
        removal_set (list of int or None): With ``refine="greedy"``: the ``top_k``
            flat unit indices whose joint removal hurt the metric most in the
            greedy search, in removal order (a set answer, unlike the top values).
        removal_curve (Tensor or None): With ``refine``: the metric on the
            evaluation data of the intact model, then after removing the first
            ``j`` units of ``removal_set`` (length ``top_k + 1``).
        refine_evaluations (int): Coalitions the refinement evaluated (included
            in ``n_evaluations``).
        cost (RunCost): What the run cost (examples pushed through the model,
            seconds) and what it measured of the model's speed.
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
    stop_reason: str = "converged"
    epsilon: Optional[float] = None
    removal_set: Optional[List[int]] = None
    removal_curve: Optional[Tensor] = None
    refine_evaluations: int = 0
    cost: "RunCost" = field(default_factory=lambda: RunCost())

    # -- layout ------------------------------------------------------------
    def _format(self, flat: Tensor) -> Formatted:
        out: List[Union[Tensor, Tuple[Tensor, ...]]] = []
        start = 0
        for lay in self.layers:
            t = lay.format(flat[start : start + lay.n_units])
            start += lay.n_units
            last = out[-1] if out else None
            if lay.index is None:
                out.append(t)
            elif lay.index == 0 or not isinstance(last, tuple):
                out.append((t,))  # the first tensor of a layer with several
            else:
                out[-1] = (*last, t)
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
    def unestimated(self) -> Tensor:
        r"""Boolean mask (flat) of the units without a single sample: no
        completed chain reached them (their value is 0 and their interval
        infinite; a larger budget is needed)."""
        return self.counts == 0

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
        ``k`` defaults to ``top_k`` (or 10). Every helper that removes units
        (:func:`~captum_neuron_shapley.ablation.metric_after_removal`,
        :func:`~captum_neuron_shapley.ablation.ablated`,
        :func:`~captum_neuron_shapley.repair.export_repaired`) accepts this list
        as it is."""
        k = min(k or self.top_k or 10, self.n_units)
        order = torch.argsort(self.flat_values, descending=True)[:k]
        return [(*self.unit(int(i)), float(self.flat_values[i])) for i in order]

    def flat_indices(self, units: Any) -> List[int]:
        r"""Flat unit indices (positions in ``flat_values``) of ``units``, given as
        flat indices (ints or a 1-d Tensor, e.g. ``removal_set``), as
        ``(layer name, unit id)`` pairs or as the ``(layer name, unit id, value)``
        triples of :meth:`top_units`.

        Examples::

            >>> result.flat_indices(result.top_units(3))
            [17, 4, 120]
        """
        if isinstance(units, Tensor):
            if units.dim() > 1 or units.is_floating_point():
                raise ValueError(
                    "`units` as a Tensor must be a 1-d integer tensor of flat unit "
                    f"indices, got dtype {units.dtype} and shape {tuple(units.shape)}"
                )
            units = units.tolist()
        out = []
        for u in units:
            if isinstance(u, Tensor) and u.numel() == 1 and not u.is_floating_point():
                u = int(u)
            if isinstance(u, int) and not isinstance(u, bool):
                if not 0 <= u < self.n_units:
                    raise ValueError(
                        f"`units` must be flat unit indices in [0, {self.n_units}), "
                        f"got {u}"
                    )
                out.append(u)
            elif (
                isinstance(u, (tuple, list))
                and len(u) in (2, 3)
                and isinstance(u[0], str)
            ):
                out.append(self._flat_index(u[0], int(u[1])))
            else:
                raise ValueError(
                    "`units` entries must be flat unit indices or (layer name, unit "
                    f"id[, value]) tuples as top_units() gives, got {u!r}"
                )
        return out

    def boundary_crowding(self) -> Optional[int]:
        r"""How many units lie within ``epsilon`` of the top-``k`` boundary (the
        midpoint between the k-th and (k+1)-th values): the units the stopping
        rule treats as tied. A large number means that which of them are "in" the
        top-k is not a meaningful distinction at this tolerance. ``None`` without
        ``top_k``."""
        if self.top_k is None or self.top_k >= self.n_units:
            return None
        top = torch.topk(self.flat_values, self.top_k + 1).values
        boundary = 0.5 * (top[-2] + top[-1])
        eps = self.epsilon or 0.0
        return int(((self.flat_values - boundary).abs() <= eps).sum())

    def __repr__(self) -> str:
        status = (
            "converged"
            if self.stop_reason == "converged"
            else f"not converged: stopped by {self.stop_reason}"
        )
        lines = [
            f"ShapleyResult({self.n_units} units in {len(self.layers)} layer(s), "
            f"{self.n_permutations} permutations, {self.n_evaluations} evaluations, "
            f"{status}; V(all)={self.full_value:.4g}, V(none)={self.empty_value:.4g})"
        ]
        c = self.cost
        if c.examples:
            per = (
                "all examples"
                if c.batch_size is None
                else f"batches of {c.batch_size} examples"
            )
            lines.append(
                f"  cost: {c.examples:,} examples through the model in "
                f"{c.seconds:.1f} s; chains on {per}"
            )
        missing = int(self.unestimated.sum())
        if missing:
            lines.append(
                f"  {missing} of {self.n_units} unit(s) UNESTIMATED: no completed "
                "chain reached them (value 0, interval infinite); raise the budget"
            )
        crowd = self.boundary_crowding()
        if crowd is not None:
            lines.append(
                f"  top-{self.top_k} boundary: {crowd} unit(s) within "
                f"epsilon={self.epsilon:.3g} of it"
            )
        for name, uid, val in self.top_units(min(self.top_k or 5, 10)):
            i = self._flat_index(name, uid)
            lines.append(
                f"  {name}[{uid}]: {val:+.4f} ± {float(self.flat_stderr[i]):.4f} "
                f"(n={int(self.counts[i])})"
            )
        if self.removal_set is not None and self.removal_curve is not None:
            names = ", ".join(
                "{}[{}]".format(*self.unit(i)) for i in self.removal_set[:10]
            )
            lines.append(
                f"  removal set ({len(self.removal_set)} units, "
                f"{self.refine_evaluations} evaluations): {names}"
                + (" ..." if len(self.removal_set) > 10 else "")
                + f"; metric {float(self.removal_curve[0]):.4g} -> "
                f"{float(self.removal_curve[-1]):.4g}"
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
        raise ValueError(f"`units`: no unit {uid} in layer {name!r}")

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
                "stop_reason",
                "epsilon",
                "removal_set",
                "removal_curve",
                "refine_evaluations",
            )
        }
        state["cost"] = dataclasses.asdict(self.cost)
        state["layers"] = [
            {
                "name": lay.name,
                "kind": lay.kind,
                "groups": lay.groups,
                "unit_ids": lay.unit_ids,
                "out_shape": list(lay.out_shape),
                "baseline": lay.baseline,
                "layer_name": lay.layer_name,
                "index": lay.index,
                "layer_input": lay.layer_input,
            }
            for lay in self.layers
        ]
        return state

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "ShapleyResult":
        state = dict(state)
        state["layers"] = [LayerLayout(**lay) for lay in state["layers"]]
        state["cost"] = RunCost(**state.get("cost", {}))
        return cls(**state)

    def save(self, path: Union[str, os.PathLike]) -> None:
        r"""Save atomically (a temporary file renamed over ``path``)."""
        atomic_save(self.state_dict(), path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ShapleyResult":
        r"""Load a result saved by :meth:`save`, without unpickling arbitrary
        objects (``torch.load(..., weights_only=True)``).

        Args:
            path (str or os.PathLike): The file :meth:`save` wrote.

        Returns:
            ShapleyResult: The result.

        Examples::

            >>> res.save("filters.pt")
            >>> res = ShapleyResult.load("filters.pt")
        """
        try:
            state = safe_load(path)
        except OSError:
            raise
        except Exception as err:  # not a torch file, or objects beyond tensors
            raise ValueError(
                f"{os.fspath(path)!r} cannot be read as a ShapleyResult saved by "
                f".save(): {err}"
            ) from err
        if isinstance(state, dict) and "layers" not in state:
            if state.get("kind") == "captum_neuron_shapley.checkpoint":
                raise ValueError(
                    f"{os.fspath(path)!r} is a checkpoint of a run "
                    f"({int(state['n_evaluations'])} evaluations), written by "
                    "Checkpoint, not a ShapleyResult saved by .save(). To get its "
                    "result, call attribute again with that run's arguments and "
                    f"stop=Checkpoint({os.fspath(path)!r}), return_result=True: "
                    "it resumes from the file (add "
                    f"max_evaluations={int(state['n_evaluations'])} to stop at once "
                    "instead of sampling on)"
                )
            raise ValueError(
                f"{os.fspath(path)!r} is not a ShapleyResult saved by .save(): it "
                f"holds {', '.join(map(repr, list(state)[:5]))}"
                + (", ..." if len(state) > 5 else "")
            )
        if not isinstance(state, dict):
            raise ValueError(
                f"{os.fspath(path)!r} is not a ShapleyResult saved by .save(): it "
                f"holds a {type(state).__name__}"
            )
        return cls.from_state_dict(state)


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
