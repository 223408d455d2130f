r"""The report's typed summary: what a run measured, handed to the renderers
(:mod:`~comparisons.report.markdown`, :mod:`~comparisons.report.figures`,
:mod:`~comparisons.report.verdict`) and written to ``results.json``.

:class:`ReportSummary` holds one :class:`QuestionSummary` per question; each
method's removal curve is a :class:`Curve`, its cost a :class:`CostSummary` and
its budget and completion a :class:`~comparisons.methods.MethodStatus`.
:meth:`ReportSummary.to_dict` gives the ``results.json`` layout (``nan`` written
as ``null``) and :meth:`ReportSummary.from_dict` reads it back (also files
written before the environment was recorded), through
:mod:`comparisons.serial`, so that a saved run can be rendered again
(``python -m comparisons --render results.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..cost import Cost
from ..environment import Environment
from ..methods import GRADIENT, MethodStatus
from ..serial import decode, encode
from ..text import finite

__all__ = [
    "CostSummary",
    "Curve",
    "KWinners",
    "RefineInfo",
    "ShapleyRunInfo",
    "Agreement",
    "OtherClasses",
    "QuestionSummary",
    "ShapleyValues",
    "PlainTMC",
    "ReportSummary",
    "MARK",
]

#: Marks a method that stopped on its budget or gave no result.
MARK = "†"


def _omit(**kw: Any) -> Any:
    return field(default=None, metadata={"omit_none": True}, **kw)


@dataclass
class CostSummary:
    r"""What a method cost in the run (a median over seeds for Shapley).

    Attributes:
        wall_s (float): Wall-clock seconds.
        forward_calls (float): Forward passes of the model.
        forward_examples (float): Examples pushed through them.
        backward_calls (float): Backward passes that reached the output.
        backward_examples (float): Examples in those.
        model_evaluations (float): Coalitions evaluated (removal methods).
        aggregate (str, optional): How seeds were combined.
        continuation_evaluations (float, optional): A greedy search's
            evaluations past ``k``.
        continuation_wall_s (float, optional): Their seconds.
    """

    wall_s: float = 0.0
    forward_calls: float = 0
    forward_examples: float = 0
    backward_calls: float = 0
    backward_examples: float = 0
    model_evaluations: float = 0
    aggregate: Optional[str] = _omit()
    continuation_evaluations: Optional[float] = _omit()
    continuation_wall_s: Optional[float] = _omit()

    @classmethod
    def of(cls, cost: Cost) -> "CostSummary":
        return cls(**cost.as_dict())


@dataclass
class Curve:
    r"""A method's removal curve on the test split: the metric after removing its
    first ``k`` units, at each ``k`` of the question (``nan`` where the ordering
    is shorter).

    Attributes:
        runs (list of list of float): One curve per seed (or random order).
        curve (list of float): The aggregate shown (median; mean for random).
        aggregate (str): ``"median of 3"``, ``"mean of 10"``, ``"single run"``.
        min (list of float): Lowest of the runs at each ``k``.
        max (list of float): Highest.
        std (list of float): Standard deviation of the runs.
        auc (float): Normalized area under ``curve``.
    """

    runs: List[List[float]]
    curve: List[float]
    aggregate: str
    min: List[float]
    max: List[float]
    std: List[float]
    auc: float

    @classmethod
    def of_runs(
        cls, runs: List[List[float]], ks: List[int], random: bool = False
    ) -> "Curve":
        r"""The curve of ``runs`` (one per seed or order, over ``ks``): their
        median, or their mean for random orders, with the spread and the area
        over the ``k`` where the aggregate is defined."""
        from ..protocol import area_under_curve, spread

        sp = spread(runs)
        agg = "mean" if random else "median"
        curve = sp[agg]
        kept = [(k, v) for k, v in zip(ks, curve) if v == v]
        return cls(
            runs=runs,
            curve=curve,
            aggregate=f"{agg} of {len(runs)}" if len(runs) > 1 else "single run",
            min=sp["min"],
            max=sp["max"],
            std=sp["std"],
            auc=area_under_curve([k for k, _ in kept], [v for _, v in kept]),
        )


@dataclass
class KWinners:
    r"""Which methods leave the lowest metric at one ``k`` (ties shown)."""

    k: int
    value: float
    winners: List[str]


@dataclass
class RefineInfo:
    r"""The greedy refinement of one Shapley seed (its removal set)."""

    evaluations: int
    continuation_evaluations: int
    pool: int
    continued_to: int
    wall_s: float


@dataclass
class ShapleyRunInfo:
    r"""One Shapley seed on a question: its budget, what it used, and whether it
    converged (``boundary_crowding``: units within ``epsilon`` of the top-``k``
    boundary, which the stopping rule treats as tied)."""

    seed: int
    evaluations: int
    permutations: int
    converged: bool
    stop_reason: str
    budget: Dict[str, Any]
    wall_s: float
    boundary_crowding: Optional[int] = None
    epsilon: Optional[float] = None
    refine: Optional[RefineInfo] = None


@dataclass
class Agreement:
    r"""Top-``k`` overlap and Spearman correlation of every pair of methods'
    scores (row ``i``, column ``j``)."""

    methods: List[str]
    k: int
    overlap: List[List[float]]
    spearman: List[List[float]]


@dataclass
class OtherClasses:
    r"""The other classes' accuracy (test) after removing each method's first
    ``k`` units of the recall question (``after``, one entry per method, laid
    out beside ``k`` and ``intact``): how specific the removed units are."""

    k: int
    intact: float
    after: Dict[str, float] = field(metadata={"flatten": True})


@dataclass
class QuestionSummary:
    r"""Every method's ranking on one question, judged on the test split.

    Attributes:
        key (str): ``"overall"``, ``"recall_<c>"`` or ``"pair_<a>_<b>"``.
        title (str): The question in words.
        metric (str): The metric's name (as the tables say it).
        n_val (int): Validation examples (scores).
        n_test (int): Test examples the curves were measured on.
        n_test_available (int): Test examples the question has.
        k (int): The headline ``k`` (the bandit's).
        K (int): Curves run to this ``k``.
        ks (list of int): The ``k`` of every curve point (``0``: intact).
        intact (float): The metric of the intact model (test).
        excluded (int): Units no method may remove (recall question).
        resolution (float): The metric's step: one test example's worth for
            a fraction of examples (accuracy, recall), 0 for a continuous
            metric. The verdict counts values this close as tied.
        methods (dict): ``{method: Curve}``.
        winners (list of KWinners): Per ``k`` (from 1).
        costs (dict): ``{method: CostSummary}``.
        status (dict): ``{method: MethodStatus}`` (skipped methods too).
        agreement (Agreement): Between the methods' scores.
        top_units (dict): ``{method: [[layer, unit], ...]}``, its first ``k``.
        shapley_runs (list of ShapleyRunInfo): One per seed.
        full_greedy_rule (str): When the full greedy search runs.
        seconds_per_evaluation (dict): ``{"validation": s, "test": s}``.
        setup_cost (dict): Building the validation and test games.
        time_s (float, optional): Seconds the question had (time budget).
        wall_s (float): Seconds it took.
        other_classes_accuracy (OtherClasses, optional): Recall question only.
    """

    title: str
    metric: str
    n_val: int
    n_test: int
    n_test_available: int
    k: int
    K: int
    ks: List[int]
    intact: float
    excluded: int
    methods: Dict[str, Curve]
    winners: List[KWinners]
    costs: Dict[str, CostSummary]
    status: Dict[str, MethodStatus]
    agreement: Agreement
    top_units: Dict[str, List[List[Any]]]
    shapley_runs: List[ShapleyRunInfo]
    full_greedy_rule: str
    seconds_per_evaluation: Dict[str, float]
    setup_cost: Dict[str, CostSummary]
    time_s: Optional[float]
    wall_s: float
    resolution: float = 0.0
    other_classes_accuracy: Optional[OtherClasses] = _omit()
    key: str = ""

    # -- reading ---------------------------------------------------------------

    def finished(self, method: str) -> bool:
        r"""The method ran to its own criterion (no dagger)."""
        st = self.status.get(method)
        return not st or st.complete

    def incomplete(self, method: str) -> bool:
        r"""It ran but stopped on a budget (a dagger and a footnote)."""
        st = self.status.get(method)
        return st is not None and not st.complete and not st.skipped

    def label(self, method: str) -> str:
        r"""The method's name, with a dagger when it did not finish within its
        budget or gave no result."""
        return method + ("" if self.finished(method) else MARK)

    def at(self, method: str, k: int) -> float:
        r"""The method's aggregate curve at ``k`` (``nan`` without one)."""
        c = self.methods.get(method)
        if c is None or k not in self.ks:
            return math.nan
        return c.curve[self.ks.index(k)]

    def best_gradient(self, k: int) -> Optional[str]:
        r"""The gradient method with the lowest value at ``k``."""
        vals = [(self.at(m, k), m) for m in GRADIENT if self.at(m, k) == self.at(m, k)]
        return min(vals)[1] if vals else None


@dataclass
class ShapleyValues:
    r"""The overall question's Shapley values (seed 0), as the values figure
    draws them: every unit's value and interval, the top-``k`` boundary and
    ``epsilon``."""

    values: List[float]
    lower: List[float]
    upper: List[float]
    layer_names: List[str]
    layer_sizes: List[int]
    top_k: Optional[int]
    epsilon: Optional[float]
    converged: bool
    stop_reason: str
    permutations: int

    def boundary(self) -> Optional[float]:
        r"""Midpoint between the ``k``-th and ``(k+1)``-th values (None without
        a ``k`` below the number of units)."""
        if self.top_k is None or self.top_k >= len(self.values):
            return None
        top = sorted(self.values, reverse=True)
        return 0.5 * (top[self.top_k - 1] + top[self.top_k])


@dataclass
class PlainTMC:
    r"""Truncated Monte Carlo with the bandit off for as many chains as the
    bandit walked (overall question, seed 0), or why it did not run."""

    ran: bool
    reason: Optional[str] = _omit()
    chains_requested: Optional[int] = _omit()
    chains: Optional[int] = _omit()
    evaluations: Optional[int] = _omit()
    wall_s: Optional[float] = _omit()
    bandit_evaluations: Optional[int] = _omit()


@dataclass
class ReportSummary:
    r"""Everything ``report.md``, the figures and ``results.json`` show.

    Attributes:
        command (str): The command line.
        setup (str): The model and data, in words.
        environment (Environment): Versions, threads, device, platform.
        layers (list of str): The layers whose units are ranked.
        layer_sizes (list of int): Units per layer.
        n_units (int): All units.
        k (int): The headline ``k``.
        K (int): Curves run to this ``k``.
        quick (bool): ``--quick``.
        seeds (int): Shapley seeds per question.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of the path methods.
        time_budget_s (float, optional): Seconds the methods shared.
        perturbations_per_eval (int): Coalitions per forward pass.
        full_greedy_max_evaluations (int): When the full greedy search runs.
        recall_excluded_fraction (float): Recall question's exclusion.
        questions (dict): ``{key: QuestionSummary}``.
        plain_tmc (PlainTMC): The bandit against plain truncated Monte Carlo.
        shapley_values (ShapleyValues, optional): For the values figure.
        conductance_picture_unit (list, optional): ``[layer, unit]`` pictured.
        figures (dict): ``{name: file name}``.
        total_wall_s (float): Seconds for the whole run.
    """

    command: str
    setup: str
    environment: Environment
    layers: List[str]
    n_units: int
    k: int
    K: int
    quick: bool
    seeds: int
    random_seeds: int
    n_steps: int
    time_budget_s: Optional[float]
    perturbations_per_eval: int
    full_greedy_max_evaluations: int
    recall_excluded_fraction: float
    questions: Dict[str, QuestionSummary]
    plain_tmc: PlainTMC
    layer_sizes: List[int] = field(default_factory=list)
    shapley_values: Optional[ShapleyValues] = None
    conductance_picture_unit: Optional[List[Any]] = None
    figures: Dict[str, str] = field(default_factory=dict)
    total_wall_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        r"""The ``results.json`` layout (``nan`` and infinities as null)."""
        return finite(encode(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReportSummary":
        r"""A summary from its ``results.json`` (also one written before the
        environment was recorded)."""
        d = dict(d)
        if "environment" not in d:
            d["environment"] = Environment.from_legacy(d).to_dict()
        summary: ReportSummary = decode(cls, d)
        for key, q in summary.questions.items():
            q.key = key
        return summary
