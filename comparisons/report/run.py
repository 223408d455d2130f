r"""The report's run (:func:`run_report`): the three questions in turn, the
bandit against plain truncated Monte Carlo, the conductance picture, then the
summary handed to the renderers, which write
``report.md``, ``results.json`` and the figures. :func:`render_saved` lays a
saved ``results.json`` out again."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import torch

from ..cost import count_cost
from ..environment import Environment
from ..protocol import ranking
from . import figures, questions
from .markdown import render
from .options import metric_named, Options
from .question import Context, QuestionOutcome, QuestionRun
from .setup import Setup
from .summary import PlainTMC, ReportSummary, ShapleyValues

__all__ = ["run_report", "write_files", "render_saved"]

#: Test images in the conductance picture.
PICTURE_IMAGES = 6
#: Positions of a channel above which the picture is not drawn (one
#: ``NeuronConductance`` call per position).
PICTURE_MAX_POSITIONS = 256


def _logger(t0: float) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    return log


def _questions(ctx: Context) -> List[QuestionOutcome]:
    setup, opts = ctx.setup, ctx.opts
    first = QuestionRun(ctx, questions.overall(setup, opts), 0.5, True).run()
    base = first.base
    excl, per_seed = questions.recall_exclusions(first, opts.exclude_fraction)
    rec = QuestionRun(
        ctx, questions.recall(setup, opts), 0.5, False, base, excl, per_seed
    ).run()
    if bool((setup.y_test != opts.recall_class).any()):
        rec.summary.other_classes_accuracy = questions.other_classes_accuracy(
            ctx, rec, opts.recall_class, base
        )
    third = QuestionRun(ctx, questions.pair(setup, opts), 1.0, False, base).run()
    outcomes = [first, rec, third]
    names = questions.metric_names(setup, opts)
    for o in outcomes:
        o.summary.metric = names[o.summary.key]
    return outcomes


def _plain_tmc(ctx: Context, first: QuestionOutcome) -> PlainTMC:
    r"""Truncated Monte Carlo with the bandit off, for as many chains as the
    bandit walked (overall question, seed 0)."""
    opts, setup = ctx.opts, ctx.setup
    n_chains = first.runs[0].result.n_permutations
    if opts.quick or not opts.plain_tmc:
        return PlainTMC(False, "not run with --quick")
    if n_chains < 1:
        return PlainTMC(False, "the bandit completed no chain")
    with count_cost(ctx.model) as c:
        plain = ctx.fs.attribute(
            setup.x_val,
            target=setup.y_val,
            metric=metric_named(opts.metric),
            top_k=None,
            epsilon=0.0,
            seed=0,
            max_permutations=n_chains,
            perturbations_per_eval=opts.perturbations_per_eval,
            return_result=True,
        )
    ctx.log(f"plain TMC: {plain.n_evaluations} evaluations, {c.wall_s:.0f} s")
    return PlainTMC(
        ran=True,
        chains_requested=n_chains,
        chains=plain.n_permutations,
        evaluations=plain.n_evaluations,
        wall_s=round(c.wall_s, 2),
        bandit_evaluations=first.runs[0].result.n_evaluations,
    )


def _shapley_values(first: QuestionOutcome) -> ShapleyValues:
    res = first.runs[0].result

    def flat(x: Any) -> List[float]:
        t = torch.cat([v.flatten() for v in x]) if isinstance(x, tuple) else x
        return t.flatten().double().tolist()

    return ShapleyValues(
        values=res.flat_values.double().tolist(),
        lower=flat(res.lower),
        upper=flat(res.upper),
        layer_names=[lay.name for lay in res.layers],
        layer_sizes=[lay.n_units for lay in res.layers],
        top_k=res.top_k,
        epsilon=res.epsilon,
        converged=bool(res.converged),
        stop_reason=res.stop_reason,
        permutations=res.n_permutations,
    )


def _picture_fits(ctx: Context, first: QuestionOutcome, positions: int) -> bool:
    r"""Whether the picture's ``NeuronConductance`` calls fit what is left of
    the time budget (estimated from gradient x activation's cost per example)."""
    if positions > PICTURE_MAX_POSITIONS:
        return False
    if ctx.opts.time_budget is None:
        return True
    gxa = first.summary.costs.get("grad-x-act")
    if gxa is None or not gxa.forward_examples:
        return False
    per_example = gxa.wall_s / gxa.forward_examples
    estimate = per_example * positions * PICTURE_IMAGES * ctx.opts.n_steps
    left = ctx.plan.left()
    return left is None or estimate <= max(left, 0.0) + 0.5 * ctx.plan.reserve_s


def _conductance_picture(
    ctx: Context, first: QuestionOutcome, out: Path
) -> Optional[Tuple[Path, List[Any]]]:
    r"""Neuron conductance through the top Shapley unit for a few test images,
    when it fits."""
    from ..methods.baselines import neuron_conductance_map

    res, setup = first.runs[0].result, ctx.setup
    if res.n_permutations == 0:
        return None
    layer_name, channel = res.unit(int(ranking(res.flat_values)[0]))
    lay = res.layers[[la.name for la in res.layers].index(layer_name)]
    if not _picture_fits(ctx, first, int(torch.Size(lay.out_shape[1:]).numel())):
        return None
    n = PICTURE_IMAGES
    maps = neuron_conductance_map(
        ctx.model,
        ctx.model.get_submodule(layer_name),
        channel,
        setup.x_test[:n],
        setup.y_test[:n],
        n_steps=ctx.opts.n_steps,
    )
    path = figures.plot_conductance_map(
        setup.x_test[:n],
        maps,
        f"Neuron conductance through the top Shapley unit {layer_name}[{channel}]"
        " (red: raises the true class's score)",
        out / "conductance_top_unit.png",
        [f"label {setup.classes[int(t)]}" for t in setup.y_test[:n]],
    )
    return path, [layer_name, channel]


def run_report(setup: Setup, opts: Options) -> ReportSummary:
    r"""Run every method and question on ``setup``, write ``report.md``,
    ``results.json`` and the figures into ``opts.out``, and return the summary.

    Args:
        setup (Setup): Model, layers and data.
        opts (Options): Settings.

    Returns:
        ReportSummary: What ``results.json`` holds.
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.top_k < 1 or (opts.max_k is not None and opts.max_k < opts.top_k):
        raise ValueError(
            f"need top_k >= 1 and max_k >= top_k, got {opts.top_k}, {opts.max_k}"
        )
    ctx = Context(setup, opts, _logger(t0))
    outcomes = _questions(ctx)
    first = outcomes[0]
    plain = _plain_tmc(ctx, first)
    ctx.log("figures")
    picture = _conductance_picture(ctx, first, out)
    res0 = first.runs[0].result
    summary = ReportSummary(
        command=opts.command,
        setup=setup.description,
        environment=Environment.capture(opts.device),
        layers=setup.layer_names,
        layer_sizes=[lay.n_units for lay in res0.layers],
        n_units=res0.n_units,
        k=first.summary.k,
        K=first.summary.K,
        quick=opts.quick,
        seeds=opts.seeds,
        random_seeds=opts.random_seeds,
        n_steps=opts.n_steps,
        time_budget_s=opts.time_budget,
        perturbations_per_eval=opts.perturbations_per_eval,
        full_greedy_max_evaluations=opts.full_greedy_max_evaluations,
        recall_excluded_fraction=opts.exclude_fraction,
        questions={o.summary.key: o.summary for o in outcomes},
        plain_tmc=plain,
        shapley_values=_shapley_values(first),
    )
    if picture is not None:
        summary.figures["conductance_top_unit"] = picture[0].name
        summary.conductance_picture_unit = picture[1]
    summary.figures.update(figures.draw_all(summary, out))
    summary.total_wall_s = round(time.perf_counter() - t0, 1)
    write_files(summary, out)
    return summary


def write_files(summary: ReportSummary, out: Path) -> None:
    r"""Write ``report.md`` and ``results.json`` of ``summary`` into ``out``."""
    (out / "results.json").write_text(json.dumps(summary.to_dict(), indent=2))
    (out / "report.md").write_text(render(summary))


def render_saved(path: Path, out: Optional[Path] = None) -> ReportSummary:
    r"""Lay out a saved run again: read ``results.json`` at ``path``, redraw
    its figures and rewrite ``report.md`` and ``results.json`` in ``out``
    (default: beside it). A conductance picture is copied, not redrawn (it
    needs the model).

    Returns:
        ReportSummary: The saved run.
    """
    path = Path(path)
    summary = ReportSummary.from_dict(json.loads(path.read_text()))
    out = path.parent if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    picture = summary.figures.get("conductance_top_unit")
    if picture and (path.parent / picture).is_file():
        if (path.parent / picture).resolve() != (out / picture).resolve():
            shutil.copyfile(path.parent / picture, out / picture)
    elif picture:
        del summary.figures["conductance_top_unit"]
    summary.figures.update(figures.draw_all(summary, out))
    write_files(summary, out)
    return summary
