r"""One command line for everything in :mod:`comparisons`:

    python -m comparisons [--quick] [--out DIR] [--seeds N] ...   the report
    python -m comparisons applications [--quick] [--out DIR]      case studies
    python -m comparisons bench [--quick] [--out DIR] ...         benchmarks
    python -m comparisons coverage [--seeds N] ...                interval coverage
    python -m comparisons transformers [--quick] [--out DIR]      heads, MLP neurons
    torchrun --nproc_per_node=2 -m comparisons distributed ...    several processes

Without a subcommand (or with ``report``) it runs the main job: which method,
for which question, at which k, on the embedded digits CNN or on your own
model (``--arch``, ``--weights``, ``--data``). Every job's flags are here; each
job's work is in its own subpackage (:mod:`comparisons.report`,
:mod:`comparisons.case_studies`, :mod:`comparisons.bench`,
:mod:`comparisons.coverage`, :mod:`comparisons.distributed`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TYPE_CHECKING,
    TypeVar,
)

import torch

if TYPE_CHECKING:
    from .report.setup import Setup

__all__ = ["main", "report_parser", "SUBCOMMANDS"]

REPORT_HELP = r"""Which method, for which question, at which k: Neuron Shapley against
neuron conductance, distributional influence and simpler baselines on the same
layers, judged by removal curves on held-out data.

On the embedded default (the digits CNN, 160 conv filters) it ranks every filter
by each method for three questions (overall accuracy; one class's recall with
each method's globally most important units excluded; class A versus class B),
removes each method's first k filters on the test split for every k = 1..K
(K = 2 x --top-k), opens report.md with a verdict per question (which method at
which k, and why), and writes report.md, results.json and PNG figures to --out.

    python -m comparisons [--quick] [--out DIR] [--seeds N]
    python -m comparisons --render comparisons_out/results.json
    python -m comparisons --quick --arch resnet18 --weights model.pt \
        --data images/ --layers layer4.0.conv2,layer4.1.conv2

--quick gives the methods of all three questions a time budget (--time-budget,
default 130 s; loading the data and model and writing the figures come on top):
Shapley runs with max_time, the gradient methods average over as many examples
as fit, and leave-one-out and the greedy searches run only when their estimated
cost fits (the report says which were skipped or stopped early, and why). With
--arch, --quick also reads at most 96 images (--max-images).

Nothing is downloaded: --arch builds a torchvision architecture with random
weights and loads --weights into it.

Other jobs: python -m comparisons
{applications,bench,coverage,distributed,device,transformers} -h
"""


#: The report's and the case studies' output folder.
DEFAULT_OUT = "comparisons_out"

T = TypeVar("T")


def _command(argv: Sequence[str]) -> str:
    return " ".join(["python -m comparisons", *map(shlex.quote, argv)])


# -- the report ----------------------------------------------------------------------


def _report_budget_flags(p: argparse.ArgumentParser) -> None:
    from .report import QUICK_TIME_BUDGET

    p.add_argument("--seeds", type=int, default=None, help="Shapley seeds (default 3)")
    p.add_argument("--top-k", type=int, default=10, help="the bandit's k (10)")
    p.add_argument(
        "--max-k", type=int, default=None, help="curves run to this k (2 x --top-k)"
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help=f"seconds for the methods of all questions (--quick: "
        f"{QUICK_TIME_BUDGET:.0f}; default: no limit)",
    )
    p.add_argument(
        "--max-evaluations",
        type=int,
        default=None,
        help="each Shapley run's evaluation budget (default: scaled to the units, "
        "see comparisons.budget.shapley_budget)",
    )
    p.add_argument(
        "--refine-pool",
        type=int,
        default=None,
        help="pool of the greedy refinement (default min(n_units, 6 k))",
    )
    p.add_argument(
        "--full-greedy-max-evaluations",
        type=int,
        default=5000,
        help="run the full greedy search when it needs at most this many (5000)",
    )
    p.add_argument(
        "--perturbations-per-eval",
        type=int,
        default=None,
        help="coalitions per forward pass (8 for the digits CNN or on a GPU, "
        "1 for --arch on the CPU)",
    )


def _report_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", help="torchvision architecture name (own model)")
    p.add_argument("--weights", help="state dict file for --arch")
    p.add_argument("--data", help="ImageFolder directory (own data)")
    p.add_argument(
        "--layers",
        default="all-conv",
        help="comma-separated layer names, or 'all-conv' (default)",
    )
    p.add_argument(
        "--metric",
        default="accuracy",
        choices=["accuracy", "cross-entropy"],
        help="overall metric (default accuracy)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--image-size", type=int, default=224, help="for --data")
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="images read from --data (1000; --quick: 96)",
    )
    p.add_argument(
        "--recall-class",
        type=int,
        default=None,
        help="class of the recall question (3 on digits, else 0)",
    )
    p.add_argument(
        "--pair",
        type=int,
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="classes of the comparative question (3 8 on digits, else 0 1)",
    )


def _threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the models are small, and more "
        "threads on a shared machine oversubscribe the cores)",
    )


def report_parser() -> argparse.ArgumentParser:
    r"""The flags of the report (``python -m comparisons``)."""
    p = argparse.ArgumentParser(
        prog="python -m comparisons",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one seed, small budgets and a time budget for the methods",
    )
    p.add_argument("--out", default=None, help=f"output folder ({DEFAULT_OUT})")
    p.add_argument(
        "--applications",
        action="store_true",
        help="the paper's four applications against targeted gradient rankings "
        "(the same as the 'applications' subcommand; writes applications.md)",
    )
    p.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="lay a saved run out again: report.md and the figures from its "
        "results.json (into --out if given, else beside it)",
    )
    _report_budget_flags(p)
    _report_model_flags(p)
    _threads_flag(p)
    return p


def _check_report_args(args: argparse.Namespace) -> None:
    from .report.setup import SetupError

    for name in (
        "seeds",
        "top_k",
        "max_k",
        "refine_pool",
        "max_images",
        "perturbations_per_eval",
        "full_greedy_max_evaluations",
        "max_evaluations",
    ):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise SetupError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.time_budget is not None and not args.time_budget > 0:
        raise SetupError(f"--time-budget must be positive, got {args.time_budget}")
    if args.max_k is not None and args.max_k < args.top_k:
        raise SetupError(
            f"--max-k ({args.max_k}) must be at least --top-k ({args.top_k})"
        )
    try:
        torch.device(args.device)
    except RuntimeError as e:
        raise SetupError(f"--device {args.device!r}: {e}") from None


def load_setup(args: argparse.Namespace) -> Tuple["Setup", int, Tuple[int, int]]:
    r"""The model, layers and data the flags name, and the classes of the
    recall and comparative questions. Raises
    :class:`~comparisons.report.setup.SetupError`."""
    from .report.setup import check_classes, digits_setup, SetupError, user_setup

    if args.arch is None:
        if args.weights or args.data:
            raise SetupError("--weights and --data need --arch")
        setup = digits_setup(args.layers, args.device)
        recall, pair = 3, (3, 8)
    else:
        max_images = args.max_images or (96 if args.quick else 1000)
        setup = user_setup(
            args.arch,
            args.weights,
            args.data,
            args.layers,
            args.device,
            args.image_size,
            max_images,
        )
        recall, pair = 0, (0, 1)
    recall = recall if args.recall_class is None else args.recall_class
    pair = pair if args.pair is None else (args.pair[0], args.pair[1])
    if len(setup.classes) < 2 or pair[0] == pair[1]:
        raise SetupError("the comparative question needs two different classes")
    check_classes(setup, [recall, *pair])
    return setup, recall, pair


def report_options(
    args: argparse.Namespace, argv: Sequence[str], recall: int, pair: Tuple[int, int]
):
    r"""The report's :class:`~comparisons.report.Options` from the flags."""
    from .report import Options, QUICK_TIME_BUDGET

    ppe = args.perturbations_per_eval
    if ppe is None:
        ppe = 1 if (args.arch is not None and args.device == "cpu") else 8
    budget = args.time_budget
    if budget is None and args.quick:
        budget = QUICK_TIME_BUDGET
    return Options(
        out=Path(args.out or DEFAULT_OUT),
        quick=args.quick,
        seeds=args.seeds or (1 if args.quick else 3),
        top_k=args.top_k,
        max_k=args.max_k,
        metric=args.metric,
        recall_class=recall,
        pair=pair,
        random_seeds=5 if args.quick else 10,
        n_steps=10 if args.quick else 20,
        command=_command(argv),
        time_budget=budget,
        refine_pool=args.refine_pool,
        full_greedy_max_evaluations=args.full_greedy_max_evaluations,
        perturbations_per_eval=ppe,
        max_evaluations=args.max_evaluations,
        device=args.device,
    )


def _with_threads(n: int, fn: Callable[[], T]) -> T:
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _print_outputs(out: Path, files: Sequence[str], figures: Iterable[str]) -> None:
    print(f"wrote {', '.join(str(out / f) for f in files)} and figures:")
    for name in figures:
        print(f"  {out / name}")


def run_report_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons [report] ...``."""
    from .report import render_saved, run_report
    from .report.setup import SetupError
    from .report.verdict import headline

    args = report_parser().parse_args(rest)
    if args.applications:
        return _applications(args.quick, args.out, args.threads, args.render, argv)
    if args.render:
        summary = render_saved(Path(args.render), Path(args.out) if args.out else None)
        print(headline(summary))
        return 0
    try:
        _check_report_args(args)
        setup, recall, pair = load_setup(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = report_options(args, argv, recall, pair)
    summary = _with_threads(args.threads, lambda: run_report(setup, opts))
    print()
    print(headline(summary))
    print()
    print(f"total wall time {summary.total_wall_s} s")
    _print_outputs(opts.out, ["report.md", "results.json"], summary.figures.values())
    return 0


# -- case studies ------------------------------------------------------------------


def applications_parser() -> argparse.ArgumentParser:
    r"""The flags of ``python -m comparisons applications``."""
    from . import case_studies

    p = argparse.ArgumentParser(
        prog="python -m comparisons applications",
        description=case_studies.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small budgets (minutes)")
    p.add_argument("--out", default=None, help=f"output folder ({DEFAULT_OUT})")
    p.add_argument(
        "--render",
        metavar="APPLICATIONS_JSON",
        help="lay a saved run out again (into --out if given, else beside it)",
    )
    _threads_flag(p)
    return p


def _applications(
    quick: bool,
    out_dir: Optional[str],
    threads: int,
    render: Optional[str],
    argv: List[str],
) -> int:
    from .case_studies import AppOptions, render_saved, run_applications
    from .case_studies.markdown import headline_table

    if render:
        studies = render_saved(Path(render), Path(out_dir) if out_dir else None)
        print("\n".join(headline_table(studies)))
        return 0
    out = Path(out_dir or DEFAULT_OUT)
    command = _command(argv)
    opts = (
        AppOptions.quick_defaults(out, command=command)
        if quick
        else AppOptions(out=out, command=command)
    )
    studies = _with_threads(threads, lambda: run_applications(opts))
    print()
    print("\n".join(headline_table(studies)))
    print()
    print(f"total wall time {studies.total_wall_s} s")
    _print_outputs(
        out, ["applications.md", "applications.json"], studies.figures.values()
    )
    sys.stdout.flush()
    return 0


def run_applications_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons applications ...``."""
    args = applications_parser().parse_args(rest)
    return _applications(args.quick, args.out, args.threads, args.render, argv)


# -- benchmarks --------------------------------------------------------------------


def bench_parser() -> argparse.ArgumentParser:
    r"""The flags of ``python -m comparisons bench``."""
    from . import bench

    p = argparse.ArgumentParser(
        prog="python -m comparisons bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="comparisons_out/bench")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="processes for the top-k runs (1 thread each)",
    )
    p.add_argument("--games", nargs="*", help="only these cells (default: all)")
    p.add_argument(
        "--rows", nargs="*", help="only these estimator rows (and the baselines)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long top-k run on the tests' 7-filter CNN with exact values",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["topk", "throughput", "scale"]
    )
    p.add_argument(
        "--render",
        metavar="BENCH_JSON",
        help="only rewrite the top-k markdown (into --out) from a run's bench.json "
        "(or the partial_runs.json of a run cut short)",
    )
    big = p.add_argument_group(
        "the big layer (ResNet-18 layer4, 2,560 filters; methods against CPU time)"
    )
    big.add_argument(
        "--big-layer",
        action="store_true",
        help="instead of the parts above: compare the methods on the big layer "
        "(big_layer.json, .md, .png in --out)",
    )
    big.add_argument(
        "--reference",
        type=Path,
        help="the big layer's reference values: the device.json of python -m "
        "comparisons device, or a file written with --make-reference",
    )
    big.add_argument(
        "--make-reference",
        type=float,
        metavar="CPU_SECONDS",
        help="first write a CPU reference to --reference: two independent runs "
        "of this many CPU seconds each (in --jobs processes), pooled",
    )
    big.add_argument(
        "--max-time",
        type=float,
        default=600.0,
        help="CPU seconds (one thread) per big-layer method (default 600)",
    )
    big.add_argument(
        "--methods", nargs="*", help="only these big-layer methods (default: all)"
    )
    p.add_argument(
        "--inception-cpu",
        action="store_true",
        help="instead: what Inception-v3's 17,216 filters cost per evaluation "
        "and per chain at --batch images on --device (inception_cost.json in --out)",
    )
    p.add_argument("--scale-child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=112, help=argparse.SUPPRESS)
    return p


def run_bench_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons bench ...``."""
    import json

    from .bench import BenchOptions, render_saved, run_bench
    from .bench.scale import scale_child

    args = bench_parser().parse_args(rest)
    if args.scale_child:
        row = scale_child(args.scale_child, args.device, args.batch, args.size)
        print(json.dumps(row))
        return 0
    if args.render:
        render_saved(Path(args.render), Path(args.out))
        return 0
    if args.big_layer or args.make_reference is not None:
        from .bench.big_layer_compare import METHODS, run_big_layer

        methods = args.methods or list(METHODS)
        for m in methods:
            if m not in METHODS:
                bench_parser().error(
                    f"--methods: unknown method {m!r} (choose from "
                    f"{', '.join(METHODS)})"
                )
        try:
            return run_big_layer(
                Path(args.out),
                args.reference,
                args.make_reference,
                args.max_time,
                methods,
                args.jobs,
                _command(argv),
                compare_methods=args.big_layer,
            )
        except (ValueError, FileNotFoundError) as e:
            bench_parser().error(str(e))
    if args.inception_cpu:
        from .bench.scale import inception_cost

        row = inception_cost(args.device, args.batch)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "inception_cost.json").write_text(
            json.dumps({"command": _command(argv), **row}, indent=1)
        )
        print(json.dumps(row, indent=1))
        return 0
    run_bench(
        BenchOptions(
            out=Path(args.out),
            command=_command(argv),
            seeds=args.seeds,
            jobs=args.jobs,
            games=args.games,
            rows=args.rows,
            quick=args.quick,
            device=args.device,
            batch=args.batch,
            skip=list(args.skip),
        )
    )
    return 0


# -- coverage ----------------------------------------------------------------------


def coverage_parser() -> argparse.ArgumentParser:
    r"""The flags of ``python -m comparisons coverage``."""
    from . import coverage

    p = argparse.ArgumentParser(
        prog="python -m comparisons coverage",
        description=coverage.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument(
        "--bounds", default="anytime,fixed", help="comma-separated bound modes"
    )
    p.add_argument(
        "--truncation", default="none,auto", help="comma-separated: none, auto"
    )
    p.add_argument(
        "--games", default="tiny-cnn,mlp", help="comma-separated: tiny-cnn, mlp"
    )
    p.add_argument(
        "--metrics",
        default="accuracy,cross-entropy",
        help="comma-separated: accuracy, cross-entropy",
    )
    p.add_argument(
        "--max-evaluations",
        type=int,
        default=200_000,
        help="evaluation budget of each run (a run that reaches it stops there: "
        "a stopping time too, so the intervals must still hold)",
    )
    p.add_argument(
        "--digits-cost",
        action="store_true",
        help="instead: evaluations each bound needs to stop on the digits CNN",
    )
    p.add_argument(
        "--batch-size",
        default="auto",
        help="examples per chain: auto (the default sampler's), all, or a number",
    )
    p.add_argument(
        "--selector",
        choices=["lucb", "border", "prior", "screening"],
        help="a selection policy on the chains (comparisons/bench/selection.py)",
    )
    return p


def _split(text: str) -> List[str]:
    return [t for t in text.split(",") if t]


def run_coverage_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons coverage ...``."""
    from .coverage import CoverageOptions, METRICS, run_coverage

    p = coverage_parser()
    args = p.parse_args(rest)
    games, metrics = _split(args.games), _split(args.metrics)
    for g in games:
        if g not in ("tiny-cnn", "mlp"):
            p.error(f"--games: unknown game {g!r} (choose from tiny-cnn, mlp)")
    for m in metrics:
        if m not in METRICS:
            p.error(
                f"--metrics: unknown metric {m!r} (choose from {', '.join(METRICS)})"
            )
    batch: Any = args.batch_size
    if batch == "all":
        batch = None
    elif batch != "auto":
        try:
            batch = int(batch)
        except ValueError:
            p.error(f"--batch-size: expected auto, all or a number, got {batch!r}")
        if batch < 1:
            p.error(f"--batch-size: expected a positive number, got {batch}")
    return run_coverage(
        CoverageOptions(
            seeds=args.seeds,
            bounds=_split(args.bounds),
            truncation=[None if t == "none" else t for t in _split(args.truncation)],
            games=games,
            metrics=metrics,
            max_evaluations=args.max_evaluations,
            digits_cost=args.digits_cost,
            batch_size=batch,
            selector=args.selector,
        )
    )


# -- several processes -------------------------------------------------------------


def distributed_parser() -> argparse.ArgumentParser:
    r"""The flags of ``torchrun ... -m comparisons distributed``."""
    from . import distributed

    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m comparisons distributed",
        description=distributed.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--max-evaluations", type=int, default=None)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--checkpoint", default=None)
    return p


def run_distributed_command(rest: List[str], argv: List[str]) -> int:
    r"""``torchrun ... -m comparisons distributed ...``."""
    from .distributed import DistributedOptions, run_distributed

    args = distributed_parser().parse_args(rest)
    return run_distributed(
        DistributedOptions(args.max_evaluations, args.top_k, args.checkpoint)
    )


def run_device_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons device ...``: the GPU measurements."""
    from .bench.device import main as device_main

    device_main(rest)
    return 0


# -- transformers ------------------------------------------------------------------


def transformers_parser() -> argparse.ArgumentParser:
    r"""The flags of ``python -m comparisons transformers``."""
    from . import transformers

    p = argparse.ArgumentParser(
        prog="python -m comparisons transformers",
        description=transformers.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one estimator seed, smaller splits and budgets (a few minutes)",
    )
    p.add_argument(
        "--out", default=None, help=f"output folder ({DEFAULT_OUT}/transformers)"
    )
    p.add_argument(
        "--studies",
        nargs="*",
        default=None,
        help="only these studies (recall<seed>-induction, recall<seed>-overall, "
        "modular<seed>-mlp; default: seeds 0-2 of each)",
    )
    p.add_argument("--seeds", type=int, default=None, help="Shapley seeds (3)")
    p.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="lay a saved run out again (into --out if given, else beside it)",
    )
    _threads_flag(p)
    return p


def run_transformers_command(rest: List[str], argv: List[str]) -> int:
    r"""``python -m comparisons transformers ...``."""
    from .transformers import render_saved, run_transformers, TransformerOptions
    from .transformers.options import parse_study_key

    p = transformers_parser()
    args = p.parse_args(rest)
    if args.render:
        render_saved(Path(args.render), Path(args.out) if args.out else None)
        return 0
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds must be positive, got {args.seeds}")
    out = Path(args.out or f"{DEFAULT_OUT}/transformers")
    extra = {} if args.seeds is None else {"seeds": args.seeds}
    opts = (
        TransformerOptions.quick_defaults(out, command=_command(argv), **extra)
        if args.quick
        else TransformerOptions(out=out, command=_command(argv), **extra)
    )
    for key in args.studies or []:
        try:
            parse_study_key(key)
        except ValueError as e:
            p.error(str(e))
    opts.studies = list(args.studies or [])
    summary = _with_threads(args.threads, lambda: run_transformers(opts))
    print()
    print(f"total wall time {summary.total_wall_s} s")
    _print_outputs(out, ["report.md", "results.json"], summary.figures.values())
    return 0


#: ``{subcommand: run(arguments after it, the whole argv)}``.
SUBCOMMANDS: Dict[str, Callable[[List[str], List[str]], int]] = {
    "report": run_report_command,
    "applications": run_applications_command,
    "bench": run_bench_command,
    "coverage": run_coverage_command,
    "distributed": run_distributed_command,
    "device": run_device_command,
    "transformers": run_transformers_command,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    r"""``python -m comparisons [subcommand] [flags]``: the report without a
    subcommand, else the subcommand's job. Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:], args)
    return run_report_command(args, args)
