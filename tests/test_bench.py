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


def test_cost_to_precision_on_every_axis():
    from comparisons.bench.precision import at_cost, first_reached, stays_reached

    # (evaluations, examples, cpu_s, wall_s, precision)
    traj = [
        (10, 640, 0.1, 0.2, 0.5),
        (20, 1280, 0.2, 0.4, 0.9),
        (30, 1920, 0.3, 0.6, 0.8),
        (40, 2560, 0.4, 0.8, 1.0),
        (50, 3200, 0.5, 1.0, 1.0),
    ]
    assert first_reached(traj, 0.9) == 20
    assert first_reached(traj, 0.9, "examples") == 1280
    assert stays_reached(traj, 0.9) == 40  # the dip at 30 breaks the first run
    assert stays_reached(traj, 0.9, "wall_s") == 0.8
    assert stays_reached(traj, 1.0, 2) == 0.4
    assert stays_reached(traj[:3], 0.9) is None  # ends below
    assert at_cost(traj, 5) == 0.0  # before the first estimate
    assert at_cost(traj, 1300) == 0.9 and at_cost(traj, 1919) == 0.9
    assert at_cost(traj, 1920) == 0.8
    assert at_cost(traj, 0.45, "cpu_s") == 1.0
    try:
        first_reached(traj, 0.9, "minutes")
    except ValueError as e:
        assert "axis" in str(e)
    else:
        raise AssertionError("an unknown axis must be refused")


def test_recorder_counts_offsets_and_time():
    from comparisons.bench.precision import Recorder

    ref = torch.arange(20, dtype=torch.float64)
    rec = Recorder(ref, (3, 10), 0.5, offset=(3.0, 1200.0))
    rec.start()
    rec(5, 640, ref)
    rec(9, 900, ref)  # same precision: kept as the last point only
    traj = rec.trajectory(3)
    assert [p[:2] for p in traj] == [(8.0, 1840.0), (12.0, 2100.0)]
    assert all(p[-1] == 1.0 for p in traj)
    assert traj[1][2] >= traj[0][2] >= 0.0 and traj[1][3] >= traj[0][3]
