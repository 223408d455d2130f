r"""Settings of the case studies (:class:`AppOptions`), the paper's figures they
are set beside (:data:`PAPER`), and the names of the rankings compared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

__all__ = [
    "AppOptions",
    "PAPER",
    "GRADIENT_METHODS",
    "SHAPLEY_VALUE",
    "SHAPLEY_SET",
    "ORACLE",
]

#: The paper's figures (Ghorbani & Zou 2020), for the table's paper column.
PAPER = {
    "overall": "Inception-v3 (17,216 filters): top-10 filters 74% -> 38%, "
    "top-20 -> 8%; random removal changes nothing",
    "class": "removing the top 40 filters of one class (global top 20% "
    "excluded) collapses its recall; overall accuracy intact",
    "fairness": "SqueezeNet (2,976 filters): black-female accuracy 54.7% -> "
    "81.9% by removing the most negative filters; males and CelebA drop a "
    "little",
    "adversarial": "Inception-v3: targeted PGD success ~100% -> 0.1% with the "
    "top 16 removed, clean 74% -> 67%; a fresh attack still works; black-box "
    "transfer success -37% on average",
}

#: Gradient rankings of the target quantity (Captum-based,
#: :mod:`comparisons.methods.baselines`).
GRADIENT_METHODS = ("conductance", "grad-x-act", "influence")

SHAPLEY_VALUE = "shapley (by value)"
SHAPLEY_SET = "shapley (removal set)"
#: Not a method: the greedy set search run on the *test* split itself, the best
#: k-unit removal it finds with the test labels (how much room the setup leaves).
ORACLE = "oracle (greedy on test)"


@dataclass
class AppOptions:
    r"""Settings of :func:`~comparisons.case_studies.run_applications`.

    Attributes:
        out (Path): Output folder.
        quick (bool): Small budgets (a few minutes on 2 cores).
        k (int): Units removed in the headline (the removal set's size).
        ks (tuple of int): Points of the removal curves.
        max_evaluations (int): Shapley budget per game (coalitions).
        adversarial_max_evaluations (int): The adversarial game's budget (its
            chains are not truncated: each is a full pass over the units).
        refine_pool_factor (int): Candidates of the greedy set searches, in
            multiples of ``k``.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of conductance.
        recall_class (int): The headline class.
        all_classes (bool): Also run the class question for every class.
        bold_fraction (float): Share of bold digits in the fairness model's
            training data.
        eps (float): L-inf radius of the attacks.
        step_num (int): PGD steps.
        adversarial_subset (int or None): Examples per chain in the adversarial
            game (clean + adversarial estimation examples are 794).
        refine_gradient (bool): Give the best gradient ranking the same greedy
            search over its own candidates.
        oracle (bool): For the class and fairness questions, run the greedy
            search on the test split itself over every candidate unit: not a
            method (it uses the test labels) but the room the setup leaves.
        max_test (int or None): Use only the first ``max_test`` test digits
            (tests use it to stay fast).
        max_val (int or None): Likewise for the validation digits.
        command (str): The command line, for the report.
    """

    out: Path
    quick: bool = False
    k: int = 10
    ks: Tuple[int, ...] = (1, 2, 5, 10, 20)
    max_evaluations: int = 4000
    adversarial_max_evaluations: int = 6000
    refine_pool_factor: int = 6
    random_seeds: int = 10
    n_steps: int = 20
    recall_class: int = 8
    all_classes: bool = True
    bold_fraction: float = 0.01
    eps: float = 0.3
    step_num: int = 20
    adversarial_subset: Optional[int] = 128
    refine_gradient: bool = True
    oracle: bool = True
    max_test: Optional[int] = None
    max_val: Optional[int] = None
    command: str = "python -m comparisons applications"

    @classmethod
    def quick_defaults(cls, out: Path, **kw: Any) -> "AppOptions":
        r"""The ``--quick`` settings."""
        base: Dict[str, Any] = dict(
            quick=True,
            max_evaluations=1000,
            adversarial_max_evaluations=2000,
            refine_pool_factor=3,
            random_seeds=5,
            n_steps=10,
            all_classes=False,
            adversarial_subset=64,
            refine_gradient=False,
            oracle=False,
            command="python -m comparisons applications --quick",
        )
        base.update(kw)
        return cls(out=out, **base)

    @property
    def pool(self) -> int:
        r"""Candidates of the greedy set searches."""
        return self.refine_pool_factor * self.k
