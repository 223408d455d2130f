r"""Which method, for which question, at which k: Neuron Shapley against neuron
conductance, distributional influence and simpler baselines on the same layers,
judged by removal curves on held-out data.

On the embedded default (the digits CNN, 160 conv filters) it ranks every filter
by each method for three questions (overall accuracy; one class's recall with
each method's globally most important units excluded; class A versus class B),
removes each method's first k filters on the test split for every k = 1..K
(K = 2 x --top-k), names the winner at each k with every method's cost and
budget beside it, and writes report.md, results.json and PNG figures to --out.

    python -m comparisons [--quick] [--out DIR] [--seeds N]
    python -m comparisons --applications [--quick] [--out DIR]
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
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from .report import Options, QUICK_TIME_BUDGET, run_report
from .setup import check_classes, digits_setup, Setup, SetupError, user_setup


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m comparisons",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one seed, small budgets and a time budget for the methods",
    )
    p.add_argument("--out", default="comparisons_out", help="output folder")
    p.add_argument(
        "--applications",
        action="store_true",
        help="the paper's four applications against targeted gradient rankings "
        "(writes applications.md; see comparisons/applications.py)",
    )
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
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the digits CNN is small, and more "
        "threads on a shared machine oversubscribe the cores)",
    )
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
    return p


def _check_args(args: argparse.Namespace) -> None:
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


def load_setup(args: argparse.Namespace) -> Tuple[Setup, int, Tuple[int, int]]:
    r"""The model, layers and data the flags name, and the classes of the
    recall and comparative questions. Raises :class:`SetupError`."""
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
) -> Options:
    r"""The report's :class:`Options` from the flags."""
    ppe = args.perturbations_per_eval
    if ppe is None:
        ppe = 1 if (args.arch is not None and args.device == "cpu") else 8
    budget = args.time_budget
    if budget is None and args.quick:
        budget = QUICK_TIME_BUDGET
    return Options(
        out=Path(args.out),
        quick=args.quick,
        seeds=args.seeds or (1 if args.quick else 3),
        top_k=args.top_k,
        max_k=args.max_k,
        metric=args.metric,
        recall_class=recall,
        pair=pair,
        random_seeds=5 if args.quick else 10,
        n_steps=10 if args.quick else 20,
        command=" ".join(["python -m comparisons", *map(shlex.quote, argv)]),
        time_budget=budget,
        refine_pool=args.refine_pool,
        full_greedy_max_evaluations=args.full_greedy_max_evaluations,
        perturbations_per_eval=ppe,
        max_evaluations=args.max_evaluations,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_args(args)
        if args.applications:
            from .applications import main_applications

            return main_applications(args, argv)
        setup, recall, pair = load_setup(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = report_options(args, argv, recall, pair)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        summary = run_report(setup, opts)
    finally:
        torch.set_num_threads(threads)
    print()
    print(summary["headline"])
    print()
    out = Path(args.out)
    print(f"total wall time {summary['total_wall_s']} s")
    print(f"wrote {out / 'report.md'}, {out / 'results.json'} and figures:")
    for name in summary["figures"].values():
        print(f"  {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
