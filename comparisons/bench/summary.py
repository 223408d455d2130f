r"""The benchmark's typed results, handed to the renderers
(:mod:`~comparisons.bench.markdown`, :mod:`~comparisons.bench.figures`) and
written to ``bench.json``.

:class:`BenchReport` holds the top-k part (:class:`TopkResults`: one
:class:`CellResult` per cell, one :class:`RowResult` per estimator row), the
throughput and scale rows. ``to_dict`` gives the ``bench.json`` layout and
``from_dict`` reads it back, also from files written before the environment was
recorded (through :mod:`comparisons.serial`), so that ``python -m comparisons
bench --render bench.json`` lays out any run again. The targets and winners are
derived from the cells (:func:`~comparisons.bench.topk.targets`,
:func:`~comparisons.bench.topk.wins`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..environment import Environment
from ..serial import decode, encode

__all__ = [
    "RowResult",
    "CellResult",
    "TargetRow",
    "CellWin",
    "Wins",
    "TopkResults",
    "BenchReport",
]


def _omit(**metadata: Any) -> Any:
    return field(default=None, metadata={"omit_none": True, **metadata})


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
    reference: Dict[str, Dict[str, Dict[str, Any]]]
    rows: Dict[str, RowResult]
    reference_chains: Optional[List[Any]] = _omit()
    reference_evaluations: Optional[int] = _omit()


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


@dataclass
class CellWin:
    r"""The rows with the smallest median evaluations to a top-k that stays at
    ``level`` on one cell and ``k`` (none when no row reached it)."""

    game: str
    k: int
    level: float
    winners: List[str]
    evaluations: float


@dataclass
class Wins:
    r"""Every cell's winners, and the cells each row won."""

    cells: List[CellWin]
    by_row: Dict[str, List[str]]


@dataclass
class TopkResults:
    r"""The top-k part of a benchmark run."""

    seeds: List[int]
    wall_s: float
    cells: List[CellResult]
    wins: Optional[Wins] = None
    targets: List[TargetRow] = field(default_factory=list)


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
    jobs: int = 1
    topk: Optional[TopkResults] = _omit(key="evaluations_to_topk")
    throughput: Optional[List[Dict[str, Any]]] = _omit()
    scale: Optional[List[Dict[str, Any]]] = _omit()

    def to_dict(self) -> Dict[str, Any]:
        r"""The ``bench.json`` layout."""
        return encode(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchReport":
        r"""A run from its ``bench.json`` (also one written before the
        environment was recorded)."""
        d = dict(d)
        if "environment" not in d:
            d["environment"] = Environment.from_legacy(d).to_dict()
        return decode(cls, d)
