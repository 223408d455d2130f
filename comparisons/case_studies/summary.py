r"""The case studies' typed summary, handed to the renderers
(:mod:`~comparisons.case_studies.markdown`,
:mod:`~comparisons.case_studies.figures`) and written to ``applications.json``.

:class:`CaseStudies` holds one :class:`CaseSummary` per application (overall,
class, fairness, adversarial). ``to_dict`` gives the ``applications.json``
layout (a case's optional fields only when it has them) and ``from_dict`` reads
it back, also from files written before the environment was recorded, so that
``python -m comparisons applications --render applications.json`` lays out a
saved run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..cost import Cost
from ..environment import Environment
from ..serial import decode, encode

__all__ = [
    "ShapleyInfo",
    "RandomCurves",
    "ClassRow",
    "Judged",
    "CaseSummary",
    "CaseStudies",
]

#: ``{method: {metric: [value at each k, None where the order is shorter]}}``
Curves = Dict[str, Dict[str, List[Optional[float]]]]
#: A unit as the JSON lists it: ``[layer name, unit id]``.
Unit = List[Any]


def _omit() -> Any:
    return field(default=None, metadata={"omit_none": True})


@dataclass
class ShapleyInfo:
    r"""The Shapley run of one case: what it used and how it stopped."""

    evaluations: int
    refine_evaluations: int
    permutations: int
    stop_reason: str
    converged: bool
    wall_s: float
    V_all: float
    V_none: float


@dataclass
class RandomCurves:
    r"""Random removal: every order's curve per metric, and their median, mean,
    minimum and maximum at each ``k``."""

    curves: Dict[str, List[List[float]]] = field(default_factory=dict)
    mean: Dict[str, List[float]] = field(default_factory=dict)
    median: Dict[str, List[float]] = field(default_factory=dict)
    min: Dict[str, List[float]] = field(default_factory=dict)
    max: Dict[str, List[float]] = field(default_factory=dict)


@dataclass
class ClassRow:
    r"""One class of the every-class table: recall and the other classes'
    accuracy before and after removing its removal set."""

    cls: int = field(metadata={"key": "class"})
    before: Dict[str, float] = field(default_factory=dict)
    after_set: Dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    wall_s: float = 0.0
    stop_reason: str = ""
    removed: List[Unit] = field(default_factory=list)


@dataclass
class Judged:
    r"""How every ranking did on the held-out split (filled by
    :func:`~comparisons.case_studies.protocol.judge`)."""

    curves: Curves
    before: Dict[str, float]
    random: RandomCurves
    orders: Dict[str, List[Unit]]
    random_orders: List[List[Unit]]
    winner_metric: str
    winners: Dict[str, List[str]]
    winners_primary: Dict[str, List[str]]
    cost_metric: Optional[str]
    primary: str
    goal: str
    metrics: List[str]


#: Fields of a case that only some cases have.
OPTIONAL = (
    "excluded",
    "cls",
    "library_report",
    "subgroup",
    "attack",
    "fresh_attack_success",
    "other_classes",
)


@dataclass
class CaseSummary:
    r"""One application: Shapley against the targeted gradient rankings.

    Attributes:
        key (str): ``"overall"``, ``"class"``, ``"fairness"``, ``"adversarial"``.
        title (str): In words.
        paper (str): What the paper found.
        k (int): Units removed in the headline.
        ks (list of int): Points of the removal curves.
        n_units (int): Players.
        n_evaluations (int): The case's Shapley evaluations.
        shapley (ShapleyInfo): Its Shapley run.
        costs (dict): ``{method: Cost}``, every ranking's cost in this run.
        quantity (str): The gradient methods' quantity of interest.
        baseline_data (str): Data of the removal baselines.
        model (str): Which model (a key of the run's models).
        judged (Judged): Curves, winners and orders on the held-out split.
        excluded (list, optional): Units no method may remove (class case).
        cls (int, optional): The class (class case).
        library_report (dict, optional): The library's own before / after.
        subgroup (dict, optional): Subgroup sizes (fairness case).
        attack (dict, optional): The attack's settings (adversarial case).
        fresh_attack_success (dict, optional): A fresh attack on each
            repaired model (adversarial case).
        other_classes (list of ClassRow, optional): Every other class.
    """

    key: str
    title: str
    paper: str
    k: int
    ks: List[int]
    n_units: int
    n_evaluations: int
    shapley: ShapleyInfo
    costs: Dict[str, Cost]
    quantity: str
    baseline_data: str
    model: str
    judged: Judged = field(metadata={"flatten": True})
    excluded: Optional[List[Unit]] = _omit()
    cls: Optional[int] = field(
        default=None, metadata={"key": "class", "omit_none": True}
    )
    library_report: Optional[Dict[str, Any]] = _omit()
    subgroup: Optional[Dict[str, int]] = _omit()
    attack: Optional[Dict[str, Any]] = _omit()
    fresh_attack_success: Optional[Dict[str, float]] = _omit()
    other_classes: Optional[List[ClassRow]] = _omit()

    # -- reading -------------------------------------------------------------------

    def at(self, method: str, metric: str, k: int) -> Optional[float]:
        return self.judged.curves[method][metric][self.ks.index(k)]

    def random_at(self, metric: str, k: int, stat: str = "median") -> float:
        return getattr(self.judged.random, stat)[metric][self.ks.index(k)]


@dataclass
class CaseStudies:
    r"""A run of the four applications.

    Attributes:
        command (str): The command line.
        quick (bool): ``--quick``.
        environment (Environment): Versions, threads, device, platform.
        models (dict): ``{key: {"description", "fingerprint"}}``: which weights
            the numbers belong to.
        data (dict): Examples per split.
        settings (dict): The options that shape the numbers.
        cases (dict): ``{key: CaseSummary}``.
        figures (dict): ``{key: file name}``.
        total_wall_s (float): Seconds for the whole run.
    """

    command: str
    quick: bool
    environment: Environment
    models: Dict[str, Dict[str, str]]
    data: Dict[str, Any]
    settings: Dict[str, Any]
    cases: Dict[str, CaseSummary] = field(metadata={"key": "apps"})
    figures: Dict[str, str] = field(default_factory=dict)
    total_wall_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        r"""The ``applications.json`` layout."""
        return encode(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaseStudies":
        r"""A run from its ``applications.json`` (also one written before the
        environment was recorded)."""
        d = dict(d)
        if "environment" not in d:
            d["environment"] = Environment.from_legacy(d).to_dict()
        return decode(cls, d)
