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
        target (str): The reference it is scored against (``"truncated"``,
            ``"truncated_b64"``: truncated chains on batches of 64,
            ``"untruncated"``: the Shapley values).
        per_k (bool): One run per ``k``.
        batch (int, optional): Examples per chain (or per coalition) it ran
            with; None: all examples.
        summary (dict): ``{k: {key: median over seeds}}``; keys
            ``"first0.9@AXIS"`` / ``"stays0.9@AXIS"`` (and 1.0): the cost on
            ``AXIS`` until the precision is first reached / stays (``inf``: not
            reached by the median seed), and ``"prec@AXIS=C"``: the precision
            at cost ``C`` (see :data:`~comparisons.bench.topk.SUMMARY_AXES`).
        per_seed (dict): ``{k: {key: [per seed]}}`` (None: not reached).
        trajectories (dict): ``{k: [[[evaluations, examples, cpu_s, wall_s,
            precision], ...] per seed]}``.
        runs (list of dict): Each run's ``converged``, ``evaluations``,
            ``examples``, ``chains``, ``wall_s``, ``seed`` (and ``k``), and the
            CPU and wall seconds of the plain forward passes on all examples
            timed just before it in the same process (``forward_cpu_s``,
            ``forward_wall_s``, for ``forwards`` passes).
    """

    target: str
    per_k: bool
    summary: Dict[str, Dict[str, float]]
    per_seed: Dict[str, Dict[str, List[Optional[float]]]]
    trajectories: Dict[str, List[List[List[float]]]]
    runs: List[Dict[str, Any]]
    batch: Optional[int] = None

    def runs_at(self, k: int) -> List[Dict[str, Any]]:
        r"""The runs scored at ``k`` (a run without ``k`` is scored at every k)."""
        return [r for r in self.runs if r.get("k", k) == k]


@dataclass
class CellResult:
    r"""Every row of one cell (a game, its ``k``, a budget).

    Attributes:
        game (str): The game's name.
        ks (list of int): The ``k`` of the top-k.
        budget (int): Examples per run, in full-set evaluations (one coalition
            on all ``n_examples``).
        eps (float): The precision's tolerance.
        n_units (int): Players of the game.
        n_examples (int): Examples of the game's evaluation set.
        reference (dict): ``{target: {k: {"kth", "acceptable"}}}``: the
            reference k-th value and how many units count as correct, for every
            target a row is scored against.
        rows (dict): ``{row name: RowResult}``.
        reference_chains (list, optional): Chains behind the reference values.
        reference_evaluations (int, optional): Their evaluations.
        target_gaps (dict, optional): ``{target: largest difference}`` between
            each batched truncated target and the truncated target on all
            examples.
    """

    game: str
    ks: List[int]
    budget: int
    eps: float
    n_units: int
    reference: Dict[str, Dict[str, Dict[str, Any]]]
    rows: Dict[str, RowResult]
    n_examples: int = 0
    reference_chains: Optional[List[Any]] = _omit()
    reference_evaluations: Optional[int] = _omit()
    target_gaps: Optional[Dict[str, float]] = _omit()


@dataclass
class TargetRow:
    r"""Per cell and ``k``: the cost until the default's top-k stays at
    precision 0.9 against plain truncated MC's on all examples, on each cost
    axis (``{axis: median}``), the ratios, the best row by examples, and the
    default's precision at the time of 200 forward passes on all examples."""

    game: str
    k: int
    budget: int
    default: Dict[str, float]
    plain: Dict[str, float]
    captum: Dict[str, float]
    best_row: str
    best: float
    default_batch: Optional[int]
    default_at_200_forwards: List[float]
    forward_200_cpu_s: float
    forward_200_wall_s: float


@dataclass
class CellWin:
    r"""The rows with the smallest median cost (on ``axis``) to a top-k that
    stays at ``level`` on one cell and ``k`` (none when no row reached it)."""

    game: str
    k: int
    level: float
    axis: str
    winners: List[str]
    cost: float


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
        topk (TopkResults, optional): Cost to the top-k.
        throughput (list of dict, optional): Coalition evaluations per second
            against plain forward passes.
        scale (list of dict, optional): ResNet-18 and Inception-v3 rows.
    """

    command: str
    environment: Environment
    jobs: int = 1
    topk: Optional[TopkResults] = _omit(key="cost_to_topk")
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
