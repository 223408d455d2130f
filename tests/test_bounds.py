"""Confidence bounds: the anytime boundary holds under repeated looks, the
fixed-n one does not; bound modes and their checks."""

import math

import pytest
import torch

from captum_neuron_shapley.bounds import (
    anytime_factor,
    AnytimeBound,
    FixedBound,
    make_bound,
    StrictBound,
)
from captum_neuron_shapley.statistics import RunningStats


def test_anytime_boundary_is_time_uniform_on_gaussian_walks():
    # For Gaussian increments the normal-mixture boundary is exact (Ville's
    # inequality on a nonnegative martingale): P(a path ever leaves) <= alpha.
    # 4000 paths of 400 looks each; the standard error of a rate near 0.1 is
    # 0.005, so 0.1 + 3 * 0.005 bounds the observed rate unless the boundary is
    # wrong. A fixed-n interval with the same alpha, looked at after every
    # sample, is left by far more paths.
    alpha, n, paths = 0.1, 400, 4000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(paths, n, generator=g, dtype=torch.float64)
    t = torch.arange(1, n + 1, dtype=torch.float64)
    mean = x.cumsum(1) / t
    width = anytime_factor(t, alpha, horizon=50.0) / t.sqrt()
    anytime_rate = float((mean.abs() > width).any(1).double().mean())
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - alpha / 2)))
    fixed_rate = float((mean.abs() > z / t.sqrt()).any(1).double().mean())
    assert anytime_rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / paths)
    assert fixed_rate > 3 * alpha


def test_anytime_factor_closed_form():
    alpha, horizon = 0.05, 20.0
    log_a = -math.log(alpha)
    rho2 = (2 * log_a + math.log(2 * log_a + 1)) / horizon
    n = torch.tensor([5.0, 20.0, 80.0], dtype=torch.float64)
    r = n * rho2
    expected = (2 * (r + 1) / r * (log_a + 0.5 * torch.log1p(r))).sqrt()
    assert torch.allclose(anytime_factor(n, alpha, horizon), expected)
    # tightest near the horizon, and wider than the fixed-n normal quantile
    f = anytime_factor(torch.tensor([2.0, 20.0, 2000.0]), alpha, horizon)
    assert f[1] < f[0] and f[1] < f[2] and float(f.min()) > 1.96


def _stats(samples):
    s = RunningStats(samples.shape[1])
    for row in samples:
        s.update(torch.arange(samples.shape[1]), row)
    return s


def test_modes_order_their_widths():
    g = torch.Generator().manual_seed(1)
    stats = _stats(0.05 * torch.randn(30, 6, generator=g, dtype=torch.float64))
    rad = {
        b.name: b(min_samples=5).radius(stats, value_range=2.0)
        for b in (FixedBound, AnytimeBound, StrictBound)
    }
    assert (rad["fixed"] < rad["anytime"]).all()
    assert (rad["anytime"] < rad["strict"]).all()
    few = _stats(0.05 * torch.randn(10, 6, generator=g, dtype=torch.float64))
    # a run resolves min_samples from the sampler (20 chains by default)
    resolved = AnytimeBound().resolve(20)
    assert resolved.min_samples == 20 and AnytimeBound().min_samples is None
    assert torch.isinf(resolved.radius(few, 2.0)).all()  # n < 20
    assert torch.isfinite(AnytimeBound(min_samples=5).radius(few, 2.0)).all()


def test_bound_checks_and_deprecated_name():
    assert isinstance(make_bound(None), AnytimeBound)
    assert make_bound("anytime").level == 0.05 and make_bound("paper").level == 0.2
    with pytest.warns(DeprecationWarning, match="'fixed'"):
        assert isinstance(make_bound("normal"), FixedBound)
    with pytest.raises(ValueError, match="a bound must be one of"):
        make_bound("exact")
    with pytest.raises(ValueError, match="`delta` must lie in"):
        AnytimeBound(delta=1.5)
    with pytest.raises(ValueError, match="`min_samples` must be an integer of at"):
        AnytimeBound(min_samples=1)
