"""The benchmark's precision measure and the estimator callback it relies on."""

import torch

from captum_neuron_shapley import Callback, FilterShapley, PermutationSampler
from comparisons.bench import EPS, precision


def test_epsilon_precision():
    ref = torch.arange(20, dtype=torch.float64) / 100  # top-10: 0.10 .. 0.19
    assert precision(ref, ref) == 1.0
    assert precision(-ref, ref) == 0.0  # the bottom 10 are all wrong
    est = ref.clone()
    est[9] = 1.0  # unit 9 (0.09) is pushed in; 0.10 - 0.09 > EPS -> wrong
    assert EPS < 0.01 and precision(est, ref) == 0.9
    near = ref.clone()
    near[9] = 0.1 - EPS / 2
    assert precision(torch.where(torch.arange(20) == 9, 1.0, ref.double()), near) == 1.0


def test_callback_sees_every_round_and_can_stop(tiny, tiny_data):
    (x, y), _ = tiny_data
    seen = []

    def cb(est):
        seen.append((est.n_permutations, est.n_evaluations))
        return est.n_permutations >= 3

    res = FilterShapley(tiny, tiny.conv1).attribute(
        x,
        target=y,
        max_permutations=50,
        stop=Callback(cb),
        seed=0,
        sampler=PermutationSampler(strata=1, batch_size=None),
        return_result=True,
    )
    assert [p for p, _ in seen] == [1, 2, 3]  # one chain per round
    assert res.n_permutations == 3 and not res.converged
    assert seen[-1][1] == res.n_evaluations
