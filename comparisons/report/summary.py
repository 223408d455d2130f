r"""The report's typed summary: what a run measured, handed to the renderers
(:mod:`~comparisons.report.markdown`, :mod:`~comparisons.report.figures`,
:mod:`~comparisons.report.verdict`) and written to ``results.json``.

:class:`ReportSummary` holds one :class:`QuestionSummary` per question; each
method's removal curve is a :class:`Curve`, its cost a :class:`CostSummary` and
its budget and completion a :class:`~comparisons.methods.MethodStatus`. Every
class has ``to_dict`` (the ``results.json`` layout; ``nan`` is written as
``null``) and ``from_dict`` (which also reads files written before the
environment was recorded), so that a saved run can be rendered again
(``python -m comparisons --render results.json``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..cost import Cost
from ..environment import Environment
from ..methods import GRADIENT, MethodStatus
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


def _floats(xs: Sequence[Optional[float]]) -> List[float]:
    r"""JSON's nulls back to ``nan``."""
    return [math.nan if x is None else float(x) for x in xs]


def _known(cls: Any, d: Mapping[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


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
    aggregate: Optional[str] = None
    continuation_evaluations: Optional[float] = None
    continuation_wall_s: Optional[float] = None

    @classmethod
    def of(cls, cost: Cost) -> "CostSummary":
        return cls(**cost.as_dict())

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CostSummary":
        return cls(**_known(cls, d))


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

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Curve":
        auc = d.get("auc")
        return cls(
            runs=[_floats(r) for r in d["runs"]],
            curve=_floats(d["curve"]),
            aggregate=d.get("aggregate", ""),
            min=_floats(d["min"]),
            max=_floats(d["max"]),
            std=_floats(d["std"]),
            auc=math.nan if auc is None else float(auc),
        )


@dataclass
class KWinners:
    r"""Which methods leave the lowest metric at one ``k`` (ties shown)."""

    k: int
    value: float
    winners: List[str]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KWinners":
        v = d.get("value")
        return cls(int(d["k"]), math.nan if v is None else float(v), list(d["winners"]))


@dataclass
class RefineInfo:
    r"""The greedy refinement of one Shapley seed (its removal set)."""

    evaluations: int
    continuation_evaluations: int
    pool: int
    continued_to: int
    wall_s: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RefineInfo":
        return cls(**_known(cls, d))


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

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["refine"] = None if self.refine is None else self.refine.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShapleyRunInfo":
        kw = _known(cls, d)
        kw["refine"] = (
            None if d.get("refine") is None else RefineInfo.from_dict(d["refine"])
        )
        return cls(**kw)


@dataclass
class Agreement:
    r"""Top-``k`` overlap and Spearman correlation of every pair of methods'
    scores (row ``i``, column ``j``)."""

    methods: List[str]
    k: int
    overlap: List[List[float]]
    spearman: List[List[float]]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Agreement":
        return cls(
            list(d["methods"]),
            int(d["k"]),
            [_floats(r) for r in d["overlap"]],
            [_floats(r) for r in d["spearman"]],
        )


@dataclass
class OtherClasses:
    r"""The other classes' accuracy (test) after removing each method's first
    ``k`` units of the recall question: how specific the removed units are."""

    k: int
    intact: float
    after: Dict[str, float]

    def to_dict(self) -> Dict[str, Any]:
        return {"k": self.k, "intact": self.intact, **self.after}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OtherClasses":
        after = {m: v for m, v in d.items() if m not in ("k", "intact")}
        return cls(int(d["k"]), float(d["intact"]), after)


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

    key: str
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
    other_classes_accuracy: Optional[OtherClasses] = None

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

    # -- files -----------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "title": self.title,
            "metric": self.metric,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "n_test_available": self.n_test_available,
            "k": self.k,
            "K": self.K,
            "ks": self.ks,
            "intact": self.intact,
            "excluded": self.excluded,
            "resolution": self.resolution,
            "methods": {m: c.to_dict() for m, c in self.methods.items()},
            "winners": [w.to_dict() for w in self.winners],
            "costs": {m: c.to_dict() for m, c in self.costs.items()},
            "status": {m: s.as_dict() for m, s in self.status.items()},
            "agreement": self.agreement.to_dict(),
            "top_units": self.top_units,
            "shapley_runs": [r.to_dict() for r in self.shapley_runs],
            "full_greedy_rule": self.full_greedy_rule,
            "seconds_per_evaluation": self.seconds_per_evaluation,
            "setup_cost": {m: c.to_dict() for m, c in self.setup_cost.items()},
            "time_s": self.time_s,
            "wall_s": self.wall_s,
        }
        if self.other_classes_accuracy is not None:
            d["other_classes_accuracy"] = self.other_classes_accuracy.to_dict()
        return d

    @classmethod
    def from_dict(cls, key: str, d: Mapping[str, Any]) -> "QuestionSummary":
        other = d.get("other_classes_accuracy")
        return cls(
            key=key,
            title=d["title"],
            metric=d.get("metric", ""),
            n_val=int(d["n_val"]),
            n_test=int(d["n_test"]),
            n_test_available=int(d.get("n_test_available", d["n_test"])),
            k=int(d["k"]),
            K=int(d["K"]),
            ks=[int(k) for k in d["ks"]],
            intact=float(d["intact"]),
            excluded=int(d.get("excluded", 0)),
            resolution=float(d.get("resolution") or 0.0),
            methods={m: Curve.from_dict(c) for m, c in d["methods"].items()},
            winners=[KWinners.from_dict(w) for w in d["winners"]],
            costs={m: CostSummary.from_dict(c) for m, c in d["costs"].items()},
            status={m: MethodStatus.from_dict(s) for m, s in d["status"].items()},
            agreement=Agreement.from_dict(d["agreement"]),
            top_units={m: [list(u) for u in us] for m, us in d["top_units"].items()},
            shapley_runs=[ShapleyRunInfo.from_dict(r) for r in d["shapley_runs"]],
            full_greedy_rule=d.get("full_greedy_rule", ""),
            seconds_per_evaluation=dict(d.get("seconds_per_evaluation", {})),
            setup_cost={
                m: CostSummary.from_dict(c) for m, c in d.get("setup_cost", {}).items()
            },
            time_s=d.get("time_s"),
            wall_s=float(d.get("wall_s") or 0.0),
            other_classes_accuracy=(
                None if other is None else OtherClasses.from_dict(other)
            ),
        )


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

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShapleyValues":
        kw = _known(cls, d)
        for key in ("values", "lower", "upper"):
            kw[key] = _floats(d[key])
        return cls(**kw)

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
    reason: str = ""
    chains_requested: Optional[int] = None
    chains: Optional[int] = None
    evaluations: Optional[int] = None
    wall_s: Optional[float] = None
    bandit_evaluations: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        if not self.ran:
            return {"ran": False, "reason": self.reason}
        return {k: v for k, v in asdict(self).items() if k != "reason"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PlainTMC":
        return cls(**_known(cls, d))


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
        d = {
            "command": self.command,
            "setup": self.setup,
            "environment": self.environment.to_dict(),
            "layers": self.layers,
            "layer_sizes": self.layer_sizes,
            "n_units": self.n_units,
            "k": self.k,
            "K": self.K,
            "quick": self.quick,
            "seeds": self.seeds,
            "random_seeds": self.random_seeds,
            "n_steps": self.n_steps,
            "time_budget_s": self.time_budget_s,
            "perturbations_per_eval": self.perturbations_per_eval,
            "full_greedy_max_evaluations": self.full_greedy_max_evaluations,
            "recall_excluded_fraction": self.recall_excluded_fraction,
            "questions": {key: q.to_dict() for key, q in self.questions.items()},
            "plain_tmc": self.plain_tmc.to_dict(),
            "shapley_values": (
                None if self.shapley_values is None else self.shapley_values.to_dict()
            ),
            "conductance_picture_unit": self.conductance_picture_unit,
            "figures": self.figures,
            "total_wall_s": self.total_wall_s,
        }
        return finite(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReportSummary":
        env = d.get("environment")
        sv = d.get("shapley_values")
        return cls(
            command=d["command"],
            setup=d["setup"],
            environment=(
                Environment.from_dict(env) if env else Environment.from_legacy(d)
            ),
            layers=list(d["layers"]),
            layer_sizes=list(d.get("layer_sizes", [])),
            n_units=int(d["n_units"]),
            k=int(d["k"]),
            K=int(d["K"]),
            quick=bool(d["quick"]),
            seeds=int(d["seeds"]),
            random_seeds=int(d["random_seeds"]),
            n_steps=int(d["n_steps"]),
            time_budget_s=d.get("time_budget_s"),
            perturbations_per_eval=int(d["perturbations_per_eval"]),
            full_greedy_max_evaluations=int(d["full_greedy_max_evaluations"]),
            recall_excluded_fraction=float(d["recall_excluded_fraction"]),
            questions={
                key: QuestionSummary.from_dict(key, q)
                for key, q in d["questions"].items()
            },
            plain_tmc=PlainTMC.from_dict(d["plain_tmc"]),
            shapley_values=None if sv is None else ShapleyValues.from_dict(sv),
            conductance_picture_unit=d.get("conductance_picture_unit"),
            figures=dict(d.get("figures", {})),
            total_wall_s=float(d.get("total_wall_s") or 0.0),
        )
