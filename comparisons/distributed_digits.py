r"""Neuron Shapley over several processes, launched by ``torchrun``:

    torchrun --nproc_per_node=2 -m comparisons.distributed_digits --max-evaluations 4000

Every rank samples its own chains; statistics are merged every round, all ranks
stop together and return the same result; ``--max-evaluations`` is the budget of
the whole run. Rank 0 prints the result and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="torchrun ... -m comparisons.distributed_digits")
    p.add_argument("--max-evaluations", type=int, default=None)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args(argv)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
        data = load_digits_splits()
        model = trained_digits_cnn()  # every rank loads the same cached weights
        t = time.perf_counter()
        res = FilterShapley(model, model.conv_layers).attribute(
            data.x_val,
            target=data.y_val,
            top_k=args.top_k,
            bound="fixed",
            perturbations_per_eval=8,
            seed=0,
            max_evaluations=args.max_evaluations,
            checkpoint=args.checkpoint,
            return_result=True,
        )
        if rank == 0:
            print(f"{world} processes ({backend}), {time.perf_counter() - t:.1f}s")
            print(res)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
