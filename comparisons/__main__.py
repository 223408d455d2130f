r"""Neuron Shapley against neuron conductance, distributional influence and
simpler baselines on the same layers, judged by removal on held-out data.

On the embedded default (the digits CNN, 160 conv filters) it ranks every filter
by each method for three questions (overall accuracy; one class's recall with the
globally most important units excluded; class A versus class B), removes each
method's top-k and bottom-k filters on the test split, and writes report.md,
results.json and PNG figures to --out.

    python -m comparisons [--quick] [--out DIR] [--seeds N]
    python -m comparisons --applications [--quick] [--out DIR]
    python -m comparisons --arch resnet18 --weights model.pt --data images/ \
        --layers layer4.0.conv1,layer4.1.conv2 --device cuda

Nothing is downloaded: --arch builds a torchvision architecture with random
weights and loads --weights into it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from .report import Options, run_report
from .setup import SetupError, check_classes, digits_setup, user_setup


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m comparisons",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="one seed, small budgets (< 2 min)"
    )
    p.add_argument("--out", default="comparisons_out", help="output folder")
    p.add_argument(
        "--applications",
        action="store_true",
        help="the paper's four applications against targeted gradient rankings "
        "(writes applications.md; see comparisons/applications.py)",
    )
    p.add_argument("--seeds", type=int, default=None, help="Shapley seeds (default 3)")
    p.add_argument("--top-k", type=int, default=10, help="k of the headline (10)")
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
        "--max-images", type=int, default=1000, help="images read from --data"
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        torch.device(args.device)
    except RuntimeError as e:
        print(f"error: --device {args.device!r}: {e}", file=sys.stderr)
        return 2
    if args.applications:
        from .applications import main_applications

        return main_applications(args, argv)
    try:
        if args.arch is None:
            if args.weights or args.data:
                raise SetupError("--weights and --data need --arch")
            setup = digits_setup(args.layers, args.device)
            recall, pair = 3, (3, 8)
        else:
            setup = user_setup(
                args.arch,
                args.weights,
                args.data,
                args.layers,
                args.device,
                args.image_size,
                args.max_images,
            )
            recall, pair = 0, (0, 1)
        recall = recall if args.recall_class is None else args.recall_class
        pair = pair if args.pair is None else tuple(args.pair)
        if len(setup.classes) < 2 or pair[0] == pair[1]:
            raise SetupError("the comparative question needs two different classes")
        check_classes(setup, [recall, *pair])
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = Options(
        out=Path(args.out),
        quick=args.quick,
        seeds=args.seeds or (1 if args.quick else 3),
        top_k=args.top_k,
        metric=args.metric,
        recall_class=recall,
        pair=pair,  # type: ignore[arg-type]
        random_seeds=5 if args.quick else 10,
        n_steps=10 if args.quick else 20,
        command=" ".join(["python -m comparisons", *map(shlex.quote, argv)]),
    )
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
