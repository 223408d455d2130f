r"""A run of the case studies (:func:`run_applications`): the models and data,
the four cases in turn (in the full run every other class too), the figures,
then ``applications.md`` and ``applications.json``; :func:`render_saved` lays
a saved ``applications.json`` out again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

from ..environment import Environment
from . import cases
from .data import CaseData, Context, fingerprint, load
from .figures import plot_case
from .markdown import render
from .options import AppOptions
from .summary import CaseStudies, ClassRow

__all__ = ["run_applications", "render_saved"]


def _models(opts: AppOptions, d: CaseData):
    return {
        "resnet": {
            "description": "DigitsResNet on the plain digits (trained_digits_resnet())",
            "fingerprint": fingerprint(d.model),
        },
        "resnet_bold": {
            "description": "DigitsResNet with bold digits at "
            f"{opts.bold_fraction:.0%} of training "
            f"(trained_digits_resnet(bold_fraction={opts.bold_fraction}))",
            "fingerprint": fingerprint(d.bold_model),
        },
        "transfer_source": {
            "description": "DigitsCNN (trained_digits_cnn())",
            "fingerprint": fingerprint(d.transfer_source),
        },
    }


def _settings(opts: AppOptions):
    return {
        "k": opts.k,
        "max_evaluations": opts.max_evaluations,
        "adversarial_max_evaluations": opts.adversarial_max_evaluations,
        "refine_pool": opts.pool,
        "random_seeds": opts.random_seeds,
        "n_steps": opts.n_steps,
        "bold_fraction": opts.bold_fraction,
        "eps": opts.eps,
        "step_num": opts.step_num,
        "refine_gradient": opts.refine_gradient,
        "oracle": opts.oracle,
    }


def draw(studies: CaseStudies, out: Path) -> None:
    r"""One figure per case into ``out`` (recorded in ``studies.figures``)."""
    for key, case in studies.cases.items():
        studies.figures[key] = plot_case(case, out / f"applications_{key}.png").name


def write_files(studies: CaseStudies, out: Path) -> None:
    r"""``applications.json`` and ``applications.md`` into ``out``."""
    (out / "applications.json").write_text(json.dumps(studies.to_dict(), indent=1))
    (out / "applications.md").write_text(render(studies))


def run_applications(opts: AppOptions) -> CaseStudies:
    r"""Run the four applications, write ``applications.md``,
    ``applications.json`` and the figures into ``opts.out``, and return the
    summary.

    Args:
        opts (AppOptions): Settings.

    Returns:
        CaseStudies: What ``applications.json`` holds.
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    log("models (trained once, then cached) and data")
    ctx = Context(opts, log, load(opts))
    d = ctx.data
    overall, acc = cases.overall(ctx)
    cls = cases.class_case(ctx, acc, opts.recall_class)
    rows: List[ClassRow] = []
    if opts.all_classes:
        rows = [
            cases.class_row(ctx, acc, c) for c in range(10) if c != opts.recall_class
        ]
    cls.other_classes = rows
    found = {
        "overall": overall,
        "class": cls,
        "fairness": cases.fairness(ctx),
        "adversarial": cases.adversarial(ctx),
    }
    studies = CaseStudies(
        command=opts.command,
        quick=opts.quick,
        environment=Environment.capture("cpu"),
        models=_models(opts, d),
        data={
            "val": len(d.y_val),
            "test": len(d.y_test),
            "bold_val": len(d.bold.y_val),
            "bold_test": len(d.bold.y_test),
            "max_val": opts.max_val,
            "max_test": opts.max_test,
        },
        settings=_settings(opts),
        cases=found,
    )
    log("figures")
    draw(studies, out)
    studies.total_wall_s = round(time.perf_counter() - t0, 1)
    write_files(studies, out)
    return studies


def render_saved(path: Path, out: Optional[Path] = None) -> CaseStudies:
    r"""Read a saved ``applications.json``, redraw its figures and rewrite
    ``applications.md`` and ``applications.json`` in ``out`` (default: beside
    it)."""
    path = Path(path)
    studies = CaseStudies.from_dict(json.loads(path.read_text()))
    out = path.parent if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw(studies, out)
    write_files(studies, out)
    return studies
