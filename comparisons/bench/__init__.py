r"""Speed and scale benchmarks (``python -m comparisons bench``).

Three measurements, each side by side in one run, written as markdown tables
and JSON (with the command and environment) to ``--out``:

1. *Evaluations to the top-k* (:mod:`~comparisons.bench.topk`). On five games
   (:mod:`~comparisons.bench.nets`: the embedded digits CNN with mean and zero
   removal, a residual CNN with batch norm whose top channels stand out, with
   zero and mean removal, and a 128-neuron MLP whose top-k needs hundreds of
   chains), the model evaluations each estimator needs until its estimated
   top-k (k = 3 and 10) first reaches, and until it stays at,
   epsilon-precision 0.9 and 1.0 against reference values from long
   independent runs (:mod:`~comparisons.bench.precision`). Rows
   (:mod:`~comparisons.bench.rows`): the library's default, plain truncated
   Monte Carlo, Captum's ``ShapleyValueSampling`` through a mask wrapper over
   the same game, and the alternatives of :mod:`~comparisons.bench.estimators`
   and :mod:`~comparisons.bench.selection`. ``--quick``: one seconds-long cell
   on the tests' 7-filter CNN with exact values. ``--render``: lay the
   markdown out again from a run's ``bench.json``.
2. *Throughput* (:mod:`~comparisons.bench.throughput`): coalition evaluations
   per second against plain forward passes per second.
3. *Scale* (:mod:`~comparisons.bench.scale`): ResNet-18 (4,800 filters) and
   Inception-v3 (17,216 filters) with random weights.

:mod:`~comparisons.bench.run` runs them; :mod:`~comparisons.bench.summary`
holds the typed results; :mod:`~comparisons.bench.markdown` and
:mod:`~comparisons.bench.figures` render them; :mod:`~comparisons.bench.cells`
says which games, ``k``, budgets and rows.
"""

from .precision import EPS, precision
from .run import BenchOptions, render_saved, run_bench

__all__ = ["BenchOptions", "run_bench", "render_saved", "precision", "EPS"]
