r"""Attention heads and MLP neurons (``python -m comparisons transformers``):
Shapley values against gradient and removal baselines on transformers whose
mechanism is known, with the protocol of the main report (rankings estimated on
one split, judged by removal curves on a held-out split, per-k winners, costs
measured in the same run).

Studies (:mod:`~comparisons.transformers.studies`):

1. the 8 heads of :class:`~captum_neuron_shapley.recall.RecallTransformer`
   (shipped training seeds 0-2) for the induction task's accuracy, whose
   circuit (previous-token and induction heads) is read from the attention
   patterns: where each method ranks it;
2. the same heads for the mean accuracy over the model's four tasks;
3. the 128 MLP neurons of
   :class:`~captum_neuron_shapley.modular.ModularTransformer` (seeds 0-2), for
   the accuracy of modular addition on held-out pairs (the recall model's MLP
   neurons carry almost nothing; the report gives the number).

Methods: Shapley by value (``HeadShapley`` / ``NeuronShapley`` with
``feature_mask``), its removal set (``refine="greedy"``), the full greedy
search and the exact Shapley values (references), leave-one-out, the head
importance of Michel et al. (2019), attribution patching, Captum's
``LayerConductance`` and ``LayerGradientXActivation`` summed per unit
(:mod:`comparisons.methods.transformer`), and random removal.

Writes ``report.md``, ``results.json`` and the figures into ``--out``
(``--render`` lays a saved run out again). Modules:
:mod:`~comparisons.transformers.options` (settings),
:mod:`~comparisons.transformers.studies` (models, data, mechanisms),
:mod:`~comparisons.transformers.run` (a run),
:mod:`~comparisons.transformers.summary` (the typed summary),
:mod:`~comparisons.transformers.markdown` and
:mod:`~comparisons.transformers.figures` (rendering).
"""

from .options import TransformerOptions
from .run import render_saved, run_study, run_transformers
from .summary import StudySummary, TransformerSummary

__all__ = [
    "TransformerOptions",
    "run_transformers",
    "run_study",
    "render_saved",
    "TransformerSummary",
    "StudySummary",
]
