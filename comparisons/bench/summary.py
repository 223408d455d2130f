r"""The benchmark's typed results, handed to the renderers
(:mod:`~comparisons.bench.markdown`, :mod:`~comparisons.bench.figures`) and
written to ``bench.json``.

:class:`BenchReport` holds the top-k part (:class:`TopkResults`: one
:class:`CellResult` per cell, one :class:`RowResult` per estimator row), the
throughput and scale rows. ``to_dict`` gives the ``bench.json`` layout and
``from_dict`` reads it back, also from files written before the environment was
recorded, so that ``python -m comparisons bench --render bench.json`` lays out
any run again. The targets and winners are derived from the cells
(:func:`~comparisons.bench.topk.targets`, :func:`~comparisons.bench.topk.wins`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional

from ..environment import Environment

__all__ = [
    "RowResult",
    "CellResult",
    "TargetRow",
    "CellWin",
    "Wins",
    "TopkResults",
    "BenchReport",
]


def _known(cls: Any, d: Mapping[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class RowResult:
    r"""One estimator row of one cell.

    Attributes:
        target (str): ``"truncated"`` or ``"untruncated"`` (its reference).
        per_k (bool): One run per ``k``.
        summary (dict): ``{k: {"first0.9": evaluations, "stays0.9": ..., ...}}``,
            medians over seeds (``inf``: not reached by the median seed).
        per_seed (dict): ``{k: {"first0.9": [per seed], ...}}`` (None: not
            reached).
        trajectories (dict): ``{k: [[[evaluations, precision], ...] per seed]}``.
        runs (list of dict): Each run's ``converged``, ``evaluations``,
            ``chains``, ``wall_s``, ``seed`` (and ``k``).
    """

    target: str
    per_k: bool
    summary: Dict[str, Dict[str, float]]
    per_seed: Dict[str, Dict[str, List[Optional[int]]]]
    trajectories: Dict[str, List[List[List[float]]]]
    runs: List[Dict[str, Any]]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RowResult":
        return cls(**_known(cls, d))

    def runs_at(self, k: int) -> List[Dict[str, Any]]:
        r"""The runs scored at ``k`` (a run without ``k`` is scored at every k)."""
        return [r for r in self.runs if r.get("k", k) == k]


@dataclass
class CellResult:
    r"""Every row of one cell (a game, its ``k``, a budget).

    Attributes:
        game (str): The game's name.
        ks (list of int): The ``k`` of the top-k.
        budget (int): Evaluations per run.
        eps (float): The precision's tolerance.
        n_units (int): Players of the game.
        reference (dict): ``{"truncated" | "untruncated": {k: {"kth",
            "acceptable"}}}``: the reference k-th value and how many units
            count as correct.
        rows (dict): ``{row name: RowResult}``.
        reference_chains (list, optional): Chains behind the reference values.
        reference_evaluations (int, optional): Their evaluations.
    """

    game: str
    ks: List[int]
    budget: int
    eps: float
    n_units: int
    reference: Dict[str, Dict[str, Dict[str, float]]]
    rows: Dict[str, RowResult]
    reference_chains: Optional[List[Any]] = None
    reference_evaluations: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["rows"] = {n: r.to_dict() for n, r in self.rows.items()}
        if self.reference_chains is None:
            del d["reference_chains"], d["reference_evaluations"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CellResult":
        kw = _known(cls, d)
        kw["rows"] = {n: RowResult.from_dict(r) for n, r in d["rows"].items()}
        return cls(**kw)


@dataclass
class TargetRow:
    r"""Per cell and ``k``: the default's evaluations to a top-k that stays at
    each precision against plain truncated MC's and Captum's, the best row,
    and what bounds the ratio (the default's first estimate, plain MC's
    evaluations per chain)."""

    game: str
    k: int
    budget: int
    default: Dict[float, float]
    plain: Dict[float, float]
    captum: Dict[float, float]
    best_row: str
    best: float
    default_first_estimate: float
    plain_evaluations_per_chain: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class CellWin:
    r"""The rows with the smallest median evaluations to a top-k that stays at
    ``level`` on one cell and ``k`` (none when no row reached it)."""

    game: str
    k: int
    level: float
    winners: List[str]
    evaluations: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Wins:
    r"""Every cell's winners, and the cells each row won."""

    cells: List[CellWin]
    by_row: Dict[str, List[str]]

    def to_dict(self) -> Dict[str, Any]:
        return {"cells": [c.to_dict() for c in self.cells], "by_row": self.by_row}


@dataclass
class TopkResults:
    r"""The top-k part of a benchmark run."""

    seeds: List[int]
    wall_s: float
    cells: List[CellResult]
    wins: Optional[Wins] = None
    targets: List[TargetRow] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "seeds": self.seeds,
            "wall_s": self.wall_s,
            "cells": [c.to_dict() for c in self.cells],
            "wins": None if self.wins is None else self.wins.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TopkResults":
        wall = d.get("wall_s")
        return cls(
            seeds=list(d["seeds"]),
            wall_s=math.nan if wall is None else float(wall),
            cells=[CellResult.from_dict(c) for c in d["cells"]],
        )


@dataclass
class BenchReport:
    r"""A benchmark run: its command, environment and parts (each None when
    skipped).

    Attributes:
        command (str): The command line.
        environment (Environment): Versions, threads, device, platform.
        jobs (int): Processes of the top-k part (one thread each).
        topk (TopkResults, optional): Evaluations to the top-k.
        throughput (list of dict, optional): Coalition evaluations per second
            against plain forward passes.
        scale (list of dict, optional): ResNet-18 and Inception-v3 rows.
    """

    command: str
    environment: Environment
    jobs: int
    topk: Optional[TopkResults] = None
    throughput: Optional[List[Dict[str, Any]]] = None
    scale: Optional[List[Dict[str, Any]]] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "command": self.command,
            "environment": self.environment.to_dict(),
            "jobs": self.jobs,
        }
        if self.topk is not None:
            d["evaluations_to_topk"] = self.topk.to_dict()
        if self.throughput is not None:
            d["throughput"] = self.throughput
        if self.scale is not None:
            d["scale"] = self.scale
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchReport":
        env = d.get("environment")
        topk = d.get("evaluations_to_topk")
        return cls(
            command=d["command"],
            environment=(
                Environment.from_dict(env) if env else Environment.from_legacy(d)
            ),
            jobs=int(d.get("jobs", 1)),
            topk=None if topk is None else TopkResults.from_dict(topk),
            throughput=d.get("throughput"),
            scale=d.get("scale"),
        )
