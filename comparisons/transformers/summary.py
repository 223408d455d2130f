r"""The transformer comparison's typed summary, handed to the renderers
(:mod:`~comparisons.transformers.markdown`,
:mod:`~comparisons.transformers.figures`) and written to ``results.json``
through :mod:`comparisons.serial`, so that a saved run can be laid out again
(``python -m comparisons transformers --render results.json``).

:class:`TransformerSummary` holds one :class:`StudySummary` per study; a
method's removal curve is the report's :class:`~comparisons.report.summary.Curve`,
its cost a :class:`~comparisons.report.summary.CostSummary`, its budget and
completion a :class:`~comparisons.methods.MethodStatus`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..environment import Environment
from ..methods import MethodStatus
from ..report.summary import CostSummary, Curve, KWinners, MARK, ShapleyRunInfo
from ..serial import decode, encode
from ..text import finite

__all__ = ["MechanismRanks", "StudySummary", "TransformerSummary"]


def _omit() -> Any:
    return field(default=None, metadata={"omit_none": True})


@dataclass
class MechanismRanks:
    r"""Where each method ranks the units of the known mechanism.

    Attributes:
        units (list of int): The mechanism's flat units.
        names (list of str): Their names (``"L0.3"``).
        roles (list of str): Their roles, from the attention patterns.
        ranks (dict): ``{method: [rank of each unit]}``, 1 = removed first
            (Shapley: the median over seeds; removal sets rank the units they
            hold in removal order, the others after them).
        found (dict): ``{method: fraction}``: how often the method's first
            ``len(units)`` units are exactly the mechanism (over seeds for
            Shapley, 0 or 1 otherwise).
    """

    units: List[int]
    names: List[str]
    roles: List[str]
    ranks: Dict[str, List[float]]
    found: Dict[str, float]


@dataclass
class StudySummary:
    r"""Every method's ranking of one study's units, judged on its test split.

    Attributes:
        key (str): ``"recall0-induction"``, ``"modular0-mlp"``, ...
        title (str): The study in words.
        model (str): The model.
        units (str): ``"heads"`` or ``"MLP neurons"``.
        question (str): ``"induction"``, ``"overall"`` or ``"modular"``.
        metric (str): The metric's name.
        n_units (int): Units ranked.
        unit_names (list of str): Their names, in flat order.
        n_est (int): Estimation examples (scores, Shapley games).
        n_test (int): Test examples (removal curves).
        k (int): The headline ``k`` (the bandit's ``top_k``).
        K (int): Curves run to this ``k``.
        ks (list of int): The ``k`` of every curve point (0: intact).
        intact (float): The metric of the intact model (test).
        resolution (float): One test example's worth of the metric.
        methods (dict): ``{method: Curve}``.
        winners (list of KWinners): Per ``k`` (from 1), exact ties.
        costs (dict): ``{method: CostSummary}``.
        status (dict): ``{method: MethodStatus}``.
        shapley_runs (list of ShapleyRunInfo): One per estimator seed.
        scores (dict): ``{method: [score per unit]}`` (Shapley: seed 0).
        orders (dict): ``{method: [first K units]}`` (Shapley: seed 0).
        shapley_lower (list of float): Seed 0's confidence interval, lower end.
        shapley_upper (list of float): Its upper end.
        exact (list of float, optional): Exact Shapley values (heads).
        roles (list of str, optional): Each head's roles.
        mechanism (MechanismRanks, optional): The known mechanism's ranks.
        all_mlp_removed (dict): The metric with every MLP neuron removed.
        wall_s (float): Seconds the study took.
    """

    key: str
    title: str
    model: str
    units: str
    question: str
    metric: str
    n_units: int
    unit_names: List[str]
    n_est: int
    n_test: int
    k: int
    K: int
    ks: List[int]
    intact: float
    resolution: float
    methods: Dict[str, Curve]
    winners: List[KWinners]
    costs: Dict[str, CostSummary]
    status: Dict[str, MethodStatus]
    shapley_runs: List[ShapleyRunInfo]
    scores: Dict[str, List[float]]
    orders: Dict[str, List[int]]
    shapley_lower: List[float] = field(default_factory=list)
    shapley_upper: List[float] = field(default_factory=list)
    exact: Optional[List[float]] = _omit()
    roles: Optional[List[str]] = _omit()
    mechanism: Optional[MechanismRanks] = _omit()
    all_mlp_removed: Dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def finished(self, method: str) -> bool:
        r"""The method ran to its own criterion."""
        st = self.status.get(method)
        return not st or st.complete

    def incomplete(self, method: str) -> bool:
        r"""It ran but stopped on a budget (a dagger and a footnote)."""
        st = self.status.get(method)
        return st is not None and not st.complete and not st.skipped

    def label(self, method: str) -> str:
        r"""The method's name, with a dagger when it did not finish."""
        return method + ("" if self.finished(method) else MARK)

    def at(self, method: str, k: int) -> float:
        r"""The method's aggregate curve at ``k`` (``nan`` without one)."""
        c = self.methods.get(method)
        if c is None or k not in self.ks:
            return math.nan
        return c.curve[self.ks.index(k)]


@dataclass
class TransformerSummary:
    r"""Everything ``report.md``, its figures and ``results.json``
    show.

    Attributes:
        command (str): The command line.
        environment (Environment): Versions, threads, device, platform.
        quick (bool): ``--quick``.
        seeds (int): Shapley estimator seeds per study.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of conductance.
        studies (dict): ``{key: StudySummary}``.
        figures (dict): ``{name: file name}``.
        total_wall_s (float): Seconds for the whole run.
    """

    command: str
    environment: Environment
    quick: bool
    seeds: int
    random_seeds: int
    n_steps: int
    studies: Dict[str, StudySummary]
    figures: Dict[str, str] = field(default_factory=dict)
    total_wall_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        r"""The ``results.json`` layout (``nan`` written as null)."""
        return finite(encode(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TransformerSummary":
        r"""A summary from its ``results.json``."""
        return decode(cls, dict(d))
