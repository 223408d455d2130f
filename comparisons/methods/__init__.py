r"""The methods compared: each gives one dataset-level score (or an ordering) per
unit of the same layers, in the flat order of ``ShapleyResult.flat_values``.

- :mod:`~comparisons.methods.shapley`: Neuron Shapley, one run per seed, timed
  and counted (:func:`run_shapley`), with its status (converged or not).
- :mod:`~comparisons.methods.greedy`: greedy removal-set searches on the same
  game (Shapley's ``refine="greedy"`` continued past ``k``, and the full greedy
  search over every unit).
- :mod:`~comparisons.methods.baselines`: Captum-based scores (conductance,
  distributional influence, gradient x activation, activation) and
  leave-one-out.
- :mod:`~comparisons.methods.transformer`: attention heads and MLP neurons
  (Michel et al.'s head importance, attribution patching, Captum's
  conductance and gradient x activation summed per unit).
- :mod:`~comparisons.methods.scoring`: every baseline on a question, each timed,
  counted and held to its share of a time budget.
- :mod:`~comparisons.methods.status`: what budget a method had and whether it
  finished (:class:`MethodStatus`).
"""

from .status import MethodStatus

__all__ = ["METHODS", "BASELINES", "GRADIENT", "COMPETING", "MethodStatus"]

#: Every method of the report, in the order of its tables.
METHODS = (
    "shapley",
    "shapley-greedy",
    "full-greedy",
    "leave-one-out",
    "influence",
    "influence-path",
    "conductance",
    "grad-x-act",
    "activation",
    "random",
)

#: The methods :func:`~comparisons.methods.scoring.score_baselines` computes.
BASELINES = (
    "leave-one-out",
    "influence",
    "influence-path",
    "conductance",
    "grad-x-act",
    "activation",
)

#: The gradient methods (one backward pass per example, or per path point).
GRADIENT = ("conductance", "grad-x-act", "influence", "influence-path")

#: Methods that compete for the per-k winners (the full greedy search is the
#: reference they are measured against, shown beside them).
COMPETING = tuple(m for m in METHODS if m != "full-greedy")
