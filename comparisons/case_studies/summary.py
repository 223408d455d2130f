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

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional

from ..cost import Cost
from ..environment import Environment

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


def _known(cls: Any, d: Mapping[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


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

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShapleyInfo":
        return cls(**_known(cls, d))


@dataclass
class RandomCurves:
    r"""Random removal: every order's curve per metric, and their median, mean,
    minimum and maximum at each ``k``."""

    curves: Dict[str, List[List[float]]] = field(default_factory=dict)
    mean: Dict[str, List[float]] = field(default_factory=dict)
    median: Dict[str, List[float]] = field(default_factory=dict)
    min: Dict[str, List[float]] = field(default_factory=dict)
    max: Dict[str, List[float]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RandomCurves":
        return cls(**_known(cls, d))


@dataclass
class ClassRow:
    r"""One class of the every-class table: recall and the other classes'
    accuracy before and after removing its removal set."""

    cls: int
    before: Dict[str, float]
    after_set: Dict[str, float]
    evaluations: int
    wall_s: float
    stop_reason: str = ""
    removed: List[Unit] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        return {"class": d.pop("cls"), **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClassRow":
        kw = _known(cls, d)
        kw["cls"] = int(d["class"])
        return cls(**kw)


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
    judged: Judged
    excluded: Optional[List[Unit]] = None
    cls: Optional[int] = None
    library_report: Optional[Dict[str, Any]] = None
    subgroup: Optional[Dict[str, int]] = None
    attack: Optional[Dict[str, Any]] = None
    fresh_attack_success: Optional[Dict[str, float]] = None
    other_classes: Optional[List[ClassRow]] = None

    # -- reading -------------------------------------------------------------------

    def at(self, method: str, metric: str, k: int) -> Optional[float]:
        return self.judged.curves[method][metric][self.ks.index(k)]

    def random_at(self, metric: str, k: int, stat: str = "median") -> float:
        return getattr(self.judged.random, stat)[metric][self.ks.index(k)]

    # -- files ---------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "key": self.key,
            "title": self.title,
            "paper": self.paper,
            "k": self.k,
            "ks": self.ks,
            "n_units": self.n_units,
            "n_evaluations": self.n_evaluations,
            "shapley": self.shapley.to_dict(),
            "costs": {m: c.as_dict() for m, c in self.costs.items()},
            "quantity": self.quantity,
            "baseline_data": self.baseline_data,
            "model": self.model,
        }
        j = self.judged
        d.update(
            curves=j.curves,
            before=j.before,
            random=j.random.to_dict(),
            orders=j.orders,
            random_orders=j.random_orders,
            winner_metric=j.winner_metric,
            winners=j.winners,
            winners_primary=j.winners_primary,
            cost_metric=j.cost_metric,
            primary=j.primary,
            goal=j.goal,
            metrics=j.metrics,
        )
        for name in OPTIONAL:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "other_classes":
                value = [r.to_dict() for r in value]
            d["class" if name == "cls" else name] = value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaseSummary":
        judged = Judged(
            curves=d["curves"],
            before=d["before"],
            random=RandomCurves.from_dict(d["random"]),
            orders=d["orders"],
            random_orders=d["random_orders"],
            winner_metric=d["winner_metric"],
            winners=d["winners"],
            winners_primary=d["winners_primary"],
            cost_metric=d.get("cost_metric"),
            primary=d["primary"],
            goal=d["goal"],
            metrics=list(d["metrics"]),
        )
        others = d.get("other_classes")
        return cls(
            key=d["key"],
            title=d["title"],
            paper=d["paper"],
            k=int(d["k"]),
            ks=[int(k) for k in d["ks"]],
            n_units=int(d["n_units"]),
            n_evaluations=int(d["n_evaluations"]),
            shapley=ShapleyInfo.from_dict(d["shapley"]),
            costs={m: Cost.from_dict(c) for m, c in d["costs"].items()},
            quantity=d.get("quantity", ""),
            baseline_data=d.get("baseline_data", ""),
            model=d.get("model", ""),
            judged=judged,
            excluded=d.get("excluded"),
            cls=d.get("class"),
            library_report=d.get("library_report"),
            subgroup=d.get("subgroup"),
            attack=d.get("attack"),
            fresh_attack_success=d.get("fresh_attack_success"),
            other_classes=(
                None if others is None else [ClassRow.from_dict(r) for r in others]
            ),
        )


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
    cases: Dict[str, CaseSummary]
    figures: Dict[str, str] = field(default_factory=dict)
    total_wall_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "command": self.command,
            "quick": self.quick,
            "environment": self.environment.to_dict(),
            "models": self.models,
            "data": self.data,
            "settings": self.settings,
            "apps": {key: c.to_dict() for key, c in self.cases.items()},
            "figures": self.figures,
            "total_wall_s": self.total_wall_s,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaseStudies":
        env = d.get("environment")
        return cls(
            command=d["command"],
            quick=bool(d["quick"]),
            environment=(
                Environment.from_dict(env) if env else Environment.from_legacy(d)
            ),
            models=d["models"],
            data=d["data"],
            settings=d["settings"],
            cases={key: CaseSummary.from_dict(c) for key, c in d["apps"].items()},
            figures=dict(d.get("figures", {})),
            total_wall_s=float(d.get("total_wall_s") or 0.0),
        )
