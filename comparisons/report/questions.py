r"""The report's three questions, built from the setup and the options:

1. the overall metric (:func:`overall`);
2. one class's recall, each method barred from its own top units for the
   overall metric so that what it finds is specific to the class
   (:func:`recall`, :func:`recall_exclusions`), with the other classes'
   accuracy after removal beside (:func:`other_classes_accuracy`);
3. class ``a`` versus class ``b`` (:func:`pair`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from captum_neuron_shapley.metrics import ClassRecall

from ..protocol import PairAccuracy, prefix_curves, top_fraction
from ..scenario import QuantityPart, Scenario
from .options import metric_named, Options
from .question import Context, QuestionOutcome
from .setup import Setup
from .summary import OtherClasses

__all__ = [
    "overall",
    "recall",
    "pair",
    "recall_exclusions",
    "other_classes_accuracy",
    "metric_names",
]

#: Methods whose exclusion random removal and the greedy searches take when
#: Shapley has no estimate (the first one that has scores).
FALLBACK_EXCLUSION = ("shapley", "grad-x-act", "influence", "conductance")


def overall(setup: Setup, opts: Options) -> Scenario:
    r"""The overall metric on all validation and test examples."""
    return Scenario(
        "overall",
        f"overall {opts.metric}",
        metric_named(opts.metric),
        setup.x_val,
        setup.y_val,
        [QuantityPart(setup.x_val, setup.y_val)],
        setup.x_test,
        setup.y_test,
    )


def recall(setup: Setup, opts: Options) -> Scenario:
    r"""The recall of ``opts.recall_class`` on its own examples."""
    c = opts.recall_class
    vsel, tsel = setup.y_val == c, setup.y_test == c
    return Scenario(
        f"recall_{c}",
        f"recall of class {setup.classes[c]}",
        ClassRecall(c),
        setup.x_val[vsel],
        setup.y_val[vsel],
        [QuantityPart(setup.x_val[vsel], c)],
        setup.x_test[tsel],
        setup.y_test[tsel],
        exclude_top_fraction=opts.exclude_fraction,
    )


def pair(setup: Setup, opts: Options) -> Scenario:
    r"""Class ``a`` versus class ``b`` on the examples of both."""
    a, b = opts.pair
    vpair = (setup.y_val == a) | (setup.y_val == b)
    tpair = (setup.y_test == a) | (setup.y_test == b)
    return Scenario(
        f"pair_{a}_{b}",
        f"class {setup.classes[a]} versus {setup.classes[b]}",
        PairAccuracy(a, b),
        setup.x_val[vpair],
        setup.y_val[vpair],
        [
            QuantityPart(setup.x_val[setup.y_val == a], contrast=(a, b)),
            QuantityPart(setup.x_val[setup.y_val == b], contrast=(b, a)),
        ],
        setup.x_test[tpair],
        setup.y_test[tpair],
    )


def metric_names(setup: Setup, opts: Options) -> Dict[str, str]:
    r"""``{question key: its metric's name}``."""
    c, (a, b) = opts.recall_class, opts.pair
    return {
        "overall": opts.metric,
        f"recall_{c}": f"recall of {setup.classes[c]}",
        f"pair_{a}_{b}": f"{setup.classes[a]}-vs-{setup.classes[b]} accuracy",
    }


def recall_exclusions(
    first: QuestionOutcome, fraction: float
) -> Tuple[Dict[str, List[int]], List[List[int]]]:
    r"""What each method may not remove in the recall question: its own top
    ``fraction`` of units for the overall metric (per Shapley seed for the
    Shapley runs); random removal and the greedy searches take Shapley's
    (seed 0), or, without a Shapley estimate, the first method that has one.

    Returns:
        tuple: ``({method: units}, [units per Shapley seed])``.
    """
    excl = {m: top_fraction(s, fraction) for m, s in first.scores.items()}
    per_seed = [
        top_fraction(r.result.flat_values.double(), fraction) for r in first.runs
    ]
    shared = next((m for m in FALLBACK_EXCLUSION if m in excl), None)
    excl["shapley"] = excl[shared] if shared else []
    per_seed = [
        ex if r.result.n_permutations > 0 else excl["shapley"]
        for r, ex in zip(first.runs, per_seed)
    ]
    return excl, per_seed


def other_classes_accuracy(
    ctx: Context, outcome: QuestionOutcome, cls: int, base: Tuple[Any, ...]
) -> OtherClasses:
    r"""The accuracy on the test examples of every other class after removing
    each method's first ``k`` units of the recall question: how specific the
    removed units are to the class."""
    setup, q = ctx.setup, outcome.summary
    others = setup.y_test != cls
    game = ctx.fs.game(
        setup.x_test[others],
        target=setup.y_test[others],
        layer_baselines=base,
        perturbations_per_eval=ctx.opts.perturbations_per_eval,
    )
    first = {m: os_[0] for m, os_ in outcome.orders.items()}
    vals = prefix_curves(game, first, [0, q.k])
    intact = next(iter(vals.values()))[0]
    return OtherClasses(q.k, intact, {m: v[1] for m, v in vals.items()})
