r"""Settings of the transformer comparison (:class:`TransformerOptions`) and the
names of its methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "TransformerOptions",
    "METHODS",
    "COMPETING",
    "GRADIENT",
    "REFERENCES",
    "STUDIES",
    "study_key",
    "parse_study_key",
]

#: Every method, in the order of the tables.
METHODS = (
    "shapley",
    "shapley-greedy",
    "full-greedy",
    "exact-shapley",
    "leave-one-out",
    "michel",
    "atp",
    "conductance",
    "grad-x-act",
    "random",
)

#: The gradient methods (one or ``n_steps`` backward passes per example).
GRADIENT = ("michel", "atp", "conductance", "grad-x-act")

#: References shown beside the methods, not competing for the per-k winners:
#: the full greedy search (what a greedy removal set can reach at most) and the
#: exact Shapley values (the estimates without sampling error).
REFERENCES = ("full-greedy", "exact-shapley")

#: Methods that compete for the per-k winners.
COMPETING = tuple(m for m in METHODS if m not in REFERENCES)

#: The studies: ``(model, training seed, units, question)``.
STUDIES: Tuple[Tuple[str, int, str, str], ...] = tuple(
    [("recall", s, "heads", q) for s in (0, 1, 2) for q in ("induction", "overall")]
    + [("modular", s, "mlp", "modular") for s in (0, 1, 2)]
)


@dataclass
class TransformerOptions:
    r"""Settings of :func:`~comparisons.transformers.run_transformers`.

    Attributes:
        out (Path): Output folder.
        quick (bool): Smaller data, fewer seeds and budgets (minutes).
        studies (list of str): Keys of the studies to run (default: all of
            :data:`STUDIES`; a key is ``"recall0-induction"``,
            ``"recall1-overall"``, ``"modular2-mlp"``, ...).
        seeds (int): Shapley estimator seeds per study.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of conductance.
        head_max_evaluations (int): Budget of a Shapley run on heads.
        mlp_top_k (int): The MLP studies' ``k``.
        mlp_max_k (int): Their curves run to this ``k``.
        mlp_max_evaluations (int): Budget of a Shapley run on MLP neurons.
        recall_est (int): Estimation sequences of the recall model.
        recall_test (int): Its test sequences.
        max_modular (int, optional): Use at most this many estimation and test
            pairs of the modular model.
        command (str): The command line, for the report.
    """

    out: Path
    quick: bool = False
    studies: List[str] = field(default_factory=list)
    seeds: int = 3
    random_seeds: int = 10
    n_steps: int = 20
    head_max_evaluations: int = 20000
    mlp_top_k: int = 10
    mlp_max_k: int = 20
    mlp_max_evaluations: int = 30000
    recall_est: int = 400
    recall_test: int = 1000
    max_modular: Optional[int] = None
    command: str = "python -m comparisons transformers"

    @classmethod
    def quick_defaults(cls, out: Path, **kw: Any) -> "TransformerOptions":
        r"""The ``--quick`` settings."""
        base: Dict[str, Any] = dict(
            quick=True,
            seeds=1,
            random_seeds=5,
            n_steps=10,
            head_max_evaluations=3000,
            mlp_max_evaluations=3000,
            recall_est=200,
            recall_test=400,
            max_modular=300,
            command="python -m comparisons transformers --quick",
        )
        base.update(kw)
        return cls(out=out, **base)


def study_key(model: str, seed: int, units: str, question: str) -> str:
    r"""``"recall0-induction"``, ``"recall0-overall"``, ``"modular0-mlp"``."""
    return f"{model}{seed}-{question if units == 'heads' else units}"


def parse_study_key(key: str) -> Tuple[str, int, str]:
    r"""``(model, training seed, question)`` of a study's key; a clear error
    for anything else."""
    name, _, question = str(key).partition("-")
    for model, questions in (
        ("recall", ("induction", "overall")),
        ("modular", ("mlp",)),
    ):
        digits = name[len(model) :]
        if name.startswith(model) and digits.isdigit() and question in questions:
            return model, int(digits), question
    raise ValueError(
        f"unknown study {key!r}: expected recall<seed>-induction, "
        "recall<seed>-overall or modular<seed>-mlp (e.g. recall0-induction)"
    )
