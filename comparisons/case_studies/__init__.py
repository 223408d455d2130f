r"""The paper's four applications as case studies, against gradient rankings of
the same target quantity (``python -m comparisons applications``, or
``python -m comparisons --applications``), on the embedded digits (nothing
downloaded):

1. **overall accuracy** (:class:`~captum_neuron_shapley.examples.DigitsResNet`,
   336 filters): Shapley values for accuracy with the top-``k`` rule and the
   greedy removal set, against random removal;
2. **class-specific**: the recall game of one class, the global top 20% of
   units for accuracy excluded; in the full run every class, so that the
   headline class is not a lucky pick;
3. **fairness**: a ResNet trained with bold digits (a thick-marker rendering)
   at 1% of training, whose held-out bold digits are recognised far worse;
   removing the units that hurt them;
4. **adversarial**: targeted PGD towards random classes crafted against the
   intact model; removing the units the attack relies on, then a fresh attack
   on the repaired model and a transfer attack crafted on another architecture
   (the digits CNN).

For each, the same units are ranked by conductance, gradient x activation and
distributional influence *of the same target quantity* (class score, subgroup
log-likelihood, adversarial log-likelihood), the same numbers of units are
removed on the held-out split, and the winner at each ``k`` is reported. In
the full run the best gradient ranking is also given the same greedy set
search over its own candidates, to tell what the Shapley values contribute
from what the search does.

Writes ``applications.md``, ``applications.json`` and one figure per
application into the output folder (beside ``report.md``).

Modules: :mod:`~comparisons.case_studies.options` (settings),
:mod:`~comparisons.case_studies.data` (models and data),
:mod:`~comparisons.case_studies.cases` (the four cases),
:mod:`~comparisons.case_studies.protocol` (judging a ranking on held-out
data), :mod:`~comparisons.case_studies.searches` (the extra greedy searches),
:mod:`~comparisons.case_studies.run` (a run, and rendering a saved one),
:mod:`~comparisons.case_studies.summary` (the typed summary),
:mod:`~comparisons.case_studies.markdown` and
:mod:`~comparisons.case_studies.figures` (rendering).
"""

from .data import fingerprint
from .options import AppOptions, GRADIENT_METHODS, ORACLE, SHAPLEY_SET, SHAPLEY_VALUE
from .run import render_saved, run_applications
from .summary import CaseStudies, CaseSummary

__all__ = [
    "AppOptions",
    "run_applications",
    "render_saved",
    "CaseStudies",
    "CaseSummary",
    "fingerprint",
    "GRADIENT_METHODS",
    "SHAPLEY_SET",
    "SHAPLEY_VALUE",
    "ORACLE",
]
