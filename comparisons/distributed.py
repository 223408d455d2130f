r"""Neuron Shapley over several processes, launched by ``torchrun``:

    torchrun --nproc_per_node=2 -m comparisons distributed --max-evaluations 4000

Every rank samples its own chains; statistics are merged every round, all ranks
stop together and return the same result; ``--max-evaluations`` is the budget of
the whole run. Rank 0 prints the result and writes the checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from captum_neuron_shapley import Checkpoint, FilterShapley, TopKSeparated
from captum_neuron_shapley.bounds import make_bound
from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

__all__ = ["DistributedOptions", "run_distributed"]


@dataclass
class DistributedOptions:
    r"""Settings of :func:`run_distributed` (the flags of ``python -m
    comparisons distributed``).

    Attributes:
        max_evaluations (int, optional): The whole run's budget.
        top_k (int): The bandit's ``k``.
        checkpoint (str, optional): Checkpoint file (resumed when present).
    """

    max_evaluations: Optional[int] = None
    top_k: int = 10
    checkpoint: Optional[str] = None


def run_distributed(opts: DistributedOptions) -> int:
    r"""The digits CNN's top-k with the fixed-sample bound, on every rank."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.set_num_threads(max(1, torch.get_num_threads() // world))
        data = load_digits_splits()
        model = trained_digits_cnn()  # every rank loads the same cached weights
        stop = TopKSeparated(opts.top_k, None, make_bound("fixed"))
        if opts.checkpoint is not None:
            stop = stop | Checkpoint(opts.checkpoint)
        t = time.perf_counter()
        res = FilterShapley(model, model.conv_layers).attribute(
            data.x_val,
            target=data.y_val,
            top_k=opts.top_k,
            stop=stop,
            perturbations_per_eval=8,
            seed=0,
            max_evaluations=opts.max_evaluations,
            return_result=True,
        )
        if rank == 0:
            print(f"{world} processes ({backend}), {time.perf_counter() - t:.1f}s")
            print(res)
    finally:
        dist.destroy_process_group()
    return 0
