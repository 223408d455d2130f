r"""The report (``python -m comparisons``): which method, for which question, at
which ``k``.

Every method ranks the same units on the validation split; each ranking is
judged on the held-out test split by its removal curve, the metric after
removing its first ``k`` units for every ``k = 1..K`` (``K = 2 x`` the headline
``k`` by default). Three questions: the overall metric; one class's recall with
each method's global top 20% excluded; class A versus class B. Methods:
Shapley values (median over seeds), Shapley's greedy removal set, the full
greedy search (reference, when affordable), conductance, gradient x activation,
distributional influence (point mass and path), leave-one-out, activation
magnitude, and random removal.

Modules, in the order a run goes through them:

- :mod:`~comparisons.report.setup`: the model, layers and data (the embedded
  digits CNN, or a user's torchvision model and ``ImageFolder``).
- :mod:`~comparisons.report.options`: the settings and the time plan's stages.
- :mod:`~comparisons.report.questions`: the three questions.
- :mod:`~comparisons.report.question`: one question, stage by stage.
- :mod:`~comparisons.report.run`: the whole run, and rendering a saved one.
- :mod:`~comparisons.report.summary`: the typed summary (``results.json``).
- :mod:`~comparisons.report.verdict`: which method at which ``k``, from the
  numbers.
- :mod:`~comparisons.report.markdown` and :mod:`~comparisons.report.figures`:
  ``report.md`` and the PNG figures, from the summary alone.
"""

from .options import Options, QUICK_TIME_BUDGET
from .run import render_saved, run_report
from .summary import QuestionSummary, ReportSummary

__all__ = [
    "Options",
    "QUICK_TIME_BUDGET",
    "run_report",
    "render_saved",
    "ReportSummary",
    "QuestionSummary",
]
