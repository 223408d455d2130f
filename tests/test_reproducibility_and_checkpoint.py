"""Seeds, global RNG state, and checkpoint / resume."""

import pytest
import torch

from captum_neuron_shapley import (
    accuracy,
    Checkpoint,
    FilterShapley,
    PermutationSampler,
    ShapleyResult,
)


def _run(model, x, y, **kw):
    fs = FilterShapley(model, [model.conv1, model.conv2])
    args = dict(
        target=y,
        max_permutations=12,
        seed=0,
        return_result=True,
        perturbations_per_eval=3,
    )
    args.update(kw)
    return fs.attribute(x, **args)


def test_same_seed_same_result_other_seed_differs(tiny, tiny_data):
    (x, y), _ = tiny_data
    a, b = _run(tiny, x, y), _run(tiny, x, y)
    assert torch.equal(a.flat_values, b.flat_values)
    assert torch.equal(a.counts, b.counts) and a.n_evaluations == b.n_evaluations
    c = _run(tiny, x, y, seed=1)
    assert not torch.equal(a.flat_values, c.flat_values)


def test_global_rng_untouched(tiny, tiny_data):
    (x, y), _ = tiny_data
    state = torch.get_rng_state()
    _run(tiny, x, y, sampler=PermutationSampler(batch_size=50))
    _run(tiny, x, y, seed=None)
    assert torch.equal(state, torch.get_rng_state())


def test_resume_continues_exactly(tiny, tiny_data, tmp_path):
    # rounds of one cycle of 4 chains, so that the first run's 8 chains are the
    # full run's first two rounds, passes and all
    (x, y), _ = tiny_data
    full = _run(
        tiny,
        x,
        y,
        max_permutations=20,
        sampler=PermutationSampler(batch_size=60, chains_per_round=1),
    )
    ckpt = tmp_path / "run.pt"
    first = _run(
        tiny,
        x,
        y,
        max_permutations=8,
        sampler=PermutationSampler(batch_size=60, chains_per_round=1),
        stop=Checkpoint(ckpt, interval=0),
    )
    assert first.n_permutations == 8 and ckpt.exists()
    resumed = _run(
        tiny,
        x,
        y,
        max_permutations=20,
        sampler=PermutationSampler(batch_size=60, chains_per_round=1),
        stop=Checkpoint(ckpt, interval=0),
    )
    assert torch.equal(resumed.flat_values, full.flat_values)
    assert torch.equal(resumed.counts, full.counts)
    assert resumed.n_evaluations == full.n_evaluations
    assert torch.equal(resumed.history, full.history)


class Interrupt(Exception):
    pass


def test_resume_after_a_crash(tiny, tiny_data, tmp_path):
    # rounds of one cycle of 4 chains: a checkpoint is written before the crash
    (x, y), _ = tiny_data
    one = PermutationSampler(chains_per_round=1)
    full = _run(tiny, x, y, max_permutations=15, sampler=one)
    calls = {"n": 0, "armed": True}

    def flaky(outputs, target):
        calls["n"] += 1
        if calls["n"] == 40 and calls["armed"]:  # dies in the middle of a chain
            raise Interrupt
        return accuracy(outputs, target)

    flaky.decomposable = True  # a mean over examples, as accuracy: same batches
    ckpt = tmp_path / "crash.pt"
    with pytest.raises(Interrupt):
        _run(
            tiny,
            x,
            y,
            max_permutations=15,
            metric=flaky,
            stop=Checkpoint(ckpt, interval=0),
            sampler=one,
        )
    state = torch.load(ckpt, weights_only=True)  # plain tensors and containers only
    assert 0 < state["n_permutations"] < 15
    calls["armed"] = False  # the same metric, now healthy
    resumed = _run(
        tiny,
        x,
        y,
        max_permutations=15,
        metric=flaky,
        stop=Checkpoint(ckpt, interval=0),
        sampler=one,
    )
    # resuming with another metric is refused: it would mix two games
    with pytest.raises(ValueError, match="other settings .*metric: .*flaky"):
        _run(tiny, x, y, max_permutations=16, stop=Checkpoint(ckpt), sampler=one)
    assert torch.equal(resumed.flat_values, full.flat_values)
    assert resumed.n_evaluations == full.n_evaluations


def test_checkpoint_from_other_settings_is_refused(tiny, tiny_data, tmp_path):
    (x, y), _ = tiny_data
    ckpt = tmp_path / "a.pt"
    _run(tiny, x, y, stop=Checkpoint(ckpt))
    # the message names the setting that differs, and only that one
    with pytest.raises(
        ValueError, match=r"other settings \(seed: 0 in the file, 7 now\)"
    ):
        _run(tiny, x, y, stop=Checkpoint(ckpt), seed=7)
    # a saved result is not a checkpoint
    res = _run(tiny, x, y)
    res.save(tmp_path / "result.pt")
    with pytest.raises(ValueError, match="not a checkpoint .*ShapleyResult.load"):
        _run(tiny, x, y, stop=Checkpoint(tmp_path / "result.pt"))
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        _run(tiny, x, y, stop=Checkpoint(ckpt))


def test_result_save_load_roundtrip(tiny, tiny_data, tmp_path):
    (x, y), _ = tiny_data
    res = _run(tiny, x, y, top_k=2)
    res.save(tmp_path / "r.pt")
    back = ShapleyResult.load(tmp_path / "r.pt")
    assert torch.equal(back.flat_values, res.flat_values)
    for a, b in zip(back.values, res.values):
        assert torch.equal(a, b)
    assert back.top_units() == res.top_units()
    assert repr(back) == repr(res)
    assert "ShapleyResult(7 units in 2 layer(s)" in repr(res)
