r"""A benchmark run (:func:`run_bench`): the top-k part, throughput and scale,
each side by side in one run, written as ``bench.md`` and ``bench.json`` (with
the command and environment); :func:`render_saved` lays the top-k tables of a
saved run out again (``topk.md``), from ``bench.json`` or from the
``partial_runs.json`` of a run cut short."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from ..environment import Environment
from .markdown import header, render_topk, scale_lines, throughput_lines
from .summary import BenchReport, TopkResults
from .throughput import digits_throughput
from .topk import from_partial, targets, topk_benchmark, TopkOptions, wins

__all__ = ["BenchOptions", "run_bench", "render_saved"]

PARTS = ("topk", "throughput", "scale")


@dataclass
class BenchOptions:
    r"""Settings of a benchmark run (the flags of ``python -m comparisons bench``).

    Attributes:
        out (Path): Output folder.
        command (str): The command line, for the report.
        seeds (int): Seeds per top-k row.
        jobs (int): Processes of the top-k part (one thread each).
        games (list of str, optional): Only these top-k cells.
        rows (list of str, optional): Only these rows (and the base rows).
        quick (bool): A seconds-long top-k run on the tests' CNN (no
            throughput or scale).
        device (str): Device of the scale part.
        batch (int): Images per evaluation in the scale part.
        skip (list of str): Parts not to run (``topk``, ``throughput``, ``scale``).
    """

    out: Path
    command: str = "python -m comparisons bench"
    seeds: int = 5
    jobs: int = 2
    games: Optional[List[str]] = None
    rows: Optional[List[str]] = None
    quick: bool = False
    device: str = "cpu"
    batch: int = 8
    skip: List[str] = field(default_factory=list)


def run_bench(opts: BenchOptions) -> BenchReport:
    r"""Run the parts not skipped, write ``bench.md`` and ``bench.json`` into
    ``opts.out`` and return the report."""
    from .scale import scale

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    report = BenchReport(opts.command, Environment.capture(opts.device), opts.jobs)
    lines: List[str] = []
    if "topk" not in opts.skip:
        report.topk = topk_benchmark(
            TopkOptions(out, opts.seeds, opts.jobs, opts.games, opts.rows, opts.quick)
        )
        lines += render_topk(report.topk, out)
    if "throughput" not in opts.skip and not opts.quick:
        report.throughput = digits_throughput()
        lines += throughput_lines(report.throughput)
    if "scale" not in opts.skip and not opts.quick:
        report.scale = scale(opts.device, opts.batch)
        lines += scale_lines(report.scale)
    text = "\n".join(["# Benchmarks", "", header(report), ""] + lines)
    (out / "bench.json").write_text(
        json.dumps(report.to_dict(), indent=2, default=float)
    )
    (out / "bench.md").write_text(text)
    print(text)
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return report


def render_saved(path: Path, out: Path) -> BenchReport:
    r"""Rewrite ``topk.md`` (and the figure) in ``out`` from a run's
    ``bench.json``, or from the ``partial_runs.json`` of a run cut short: the
    same numbers as that run's ``bench.md``, laid out by the current code."""
    path, out = Path(path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if path.name == "partial_runs.json":
        report = BenchReport(
            f"python -m comparisons bench (cut short; {path.name})",
            Environment.capture(),
            2,
            from_partial(path),
        )
    else:
        report = BenchReport.from_dict(json.loads(path.read_text()))
    if report.topk is None:
        raise ValueError(f"{path}: no top-k part to lay out")
    topk: TopkResults = report.topk
    topk.targets, topk.wins = targets(topk.cells), wins(topk.cells)
    text = "\n".join([header(report), ""] + render_topk(topk, out))
    (out / "topk.md").write_text(text)
    print(text)
    return report
