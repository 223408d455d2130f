"""Two CPU processes (gloo) give one consistent run that agrees with one process."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from captum_neuron_shapley import (
    Checkpoint,
    FilterShapley,
    NegativeCrossEntropy,
    ShapleyResult,
)
from torch import nn

from .conftest import _blobs, exact_shapley, train_tiny, Z_TOL

ARGS = dict(
    metric=NegativeCrossEntropy(),
    truncation=None,
    perturbations_per_eval=7,
    epsilon=0.0,
    seed=0,
    return_result=True,
)


def _model_and_data():
    x, y = _blobs(80, torch.Generator().manual_seed(0))
    return train_tiny(x, y), x, y


def _worker(rank, world, init_file, out_dir, budget):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        model, x, y = _model_and_data()
        fs = FilterShapley(model, [model.conv1, model.conv2])
        res = fs.attribute(
            x,
            target=y,
            stop=Checkpoint(os.path.join(out_dir, "ckpt.pt"), interval=0),
            **budget,
            **ARGS,
        )
        res.save(os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _launch(tmp_path, budget, world=2):
    mp.start_processes(
        _worker,
        args=(world, str(tmp_path / "init"), str(tmp_path), budget),
        nprocs=world,
        start_method="spawn",
    )
    return [ShapleyResult.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def test_two_processes_agree_with_one(tmp_path):
    r0, r1 = _launch(tmp_path, dict(max_permutations=200))
    # all ranks return the same result, for the whole run
    assert torch.equal(r0.flat_values, r1.flat_values)
    assert r0.n_evaluations == r1.n_evaluations and r0.n_permutations == 200
    assert int(r0.counts.min()) == 50  # one sample per cycle of 4 chains
    # 2 ranks x (1 evaluation of V(none) + 100 chains x 6 states: the 7th state,
    # every unit removed, is V(none) again, cached)
    assert r0.n_evaluations == 2 * (1 + 100 * 6)
    model, x, y = _model_and_data()
    fs = FilterShapley(model, [model.conv1, model.conv2])
    single = fs.attribute(x, target=y, max_permutations=200, **ARGS)
    assert not torch.equal(single.flat_values, r0.flat_values)  # other chains...
    se = (single.flat_stderr**2 + r0.flat_stderr**2).sqrt()
    assert ((single.flat_values - r0.flat_values).abs() <= Z_TOL * se).all()
    exact = exact_shapley(fs.game(x, target=y, metric=ARGS["metric"]))
    assert ((r0.flat_values - exact).abs() <= Z_TOL * r0.flat_stderr).all()


def test_evaluation_budget_is_for_the_whole_run(tmp_path):
    r0, r1 = _launch(tmp_path, dict(max_evaluations=101))
    assert r0.n_evaluations == r1.n_evaluations == 101
    assert torch.equal(r0.counts, r1.counts)


def test_distributed_data_parallel_runs_its_batch_on_its_own_device():
    # DistributedDataParallel keeps `device_ids` (its one device, [rank] on a GPU)
    # but runs its whole batch there: it is not a DataParallel split, so
    # HeadShapley accepts nn.MultiheadAttention in it and the values are those
    # of the plain model
    from captum_neuron_shapley import HeadShapley
    from captum_neuron_shapley._attr_utils import device_ids_of

    started = not dist.is_initialized()
    if started:  # a group of one process, in memory
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
            nn.Flatten(),
            nn.Linear(24, 3),
        ).eval()
        x = torch.randn(10, 3, 8)
        y = torch.arange(10) % 3
        kwargs = dict(target=y, max_permutations=6, seed=0)
        plain = HeadShapley(model, model[0].self_attn).attribute(x, **kwargs)
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp.device_ids = [0]  # as for a module on cuda:0
        hs = HeadShapley(ddp, model[0].self_attn)
        assert device_ids_of(hs) is None
        torch.testing.assert_close(hs.attribute(x, **kwargs), plain)
        # DataParallel's rule is unchanged: the forward's `device_ids` count
        dp = nn.DataParallel(model)
        dp.device_ids = [0, 1]
        assert device_ids_of(HeadShapley(dp, model[0].self_attn)) == [0, 1]
    finally:
        if started:
            dist.destroy_process_group()
