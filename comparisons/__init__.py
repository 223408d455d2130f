r"""Comparisons, benchmarks and the main report of captum-neuron-shapley, run from
a checkout (``python -m comparisons``; not installed with the library).

Where each idea lives:

- :mod:`~comparisons.cli`: the one command line (the report without a
  subcommand; ``applications``, ``bench``, ``coverage``, ``distributed``, ``device``,
  ``transformers``).
- :mod:`~comparisons.methods`: the methods compared, each scoring the same
  units (Shapley runs, greedy removal sets, Captum-based baselines).
- :mod:`~comparisons.protocol`: the evaluation protocol (rankings judged by
  removal curves on held-out data, winners per ``k``, agreement).
- :mod:`~comparisons.scenario`: a question to compare the methods on.
- :mod:`~comparisons.budget` and :mod:`~comparisons.cost`: budgets, the time
  plan of ``--quick``, and what each method cost, counted with hooks.
- :mod:`~comparisons.report`: the main job (``report.md``: which method, for
  which question, at which ``k``).
- :mod:`~comparisons.case_studies`: the paper's four applications against
  targeted gradient rankings (``applications.md``).
- :mod:`~comparisons.transformers`: attention heads and MLP neurons of
  transformers with a known mechanism against gradient and removal baselines
  (``python -m comparisons transformers``).
- :mod:`~comparisons.bench`: speed and scale benchmarks (``bench.md``).
- :mod:`~comparisons.coverage`: do the confidence intervals hold where the
  bandit stops.
- :mod:`~comparisons.distributed`: the estimator over several processes.
- :mod:`~comparisons.games`: small games with exact values (tests, coverage,
  the quick benchmark).
- :mod:`~comparisons.environment` and :mod:`~comparisons.text`: what every
  report records about its run, and the formatting the renderers share.

Each job runs into a typed summary (dataclasses with ``to_dict`` /
``from_dict``) that its renderers read, so a saved run can be laid out again
(``--render``).
"""
