"""Chains walked together give exactly what they give walked one by one."""

from types import SimpleNamespace
from typing import List

import pytest
import torch

from captum_neuron_shapley import FilterShapley, PaperBound
from captum_neuron_shapley.sampler import PermutationSampler
from captum_neuron_shapley.stopping import Limits

from .conftest import exact_shapley, Z_TOL


def _game(tiny, x, y, ppe):
    return FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(
        x, target=y, perturbations_per_eval=ppe
    )


def test_lockstep_equals_sequential(tiny, tiny_data):
    (x, y), _ = tiny_data
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(7, generator=g) for _ in range(5)]
    active = torch.tensor([True, False, True, True, False, True, True])
    for thr in (None, 0.6):
        game = _game(tiny, x, y, ppe=6)
        sampler = PermutationSampler(strata=1).bind(game, torch.Generator(), thr)
        together = sampler.walk(perms, active)
        one_by_one = [sampler.chain(p, active) for p in perms]
        for (u1, m1), (u2, m2) in zip(together, one_by_one):
            assert torch.equal(u1, u2) and torch.allclose(m1, m2, atol=1e-12)
    # the states of several chains shared forward passes
    game1, game5 = _game(tiny, x, y, ppe=32), _game(tiny, x, y, ppe=32)
    PermutationSampler(strata=1).bind(game5, torch.Generator()).walk(perms, active)
    for p in perms:
        PermutationSampler(strata=1).bind(game1, torch.Generator()).chain(p, active)
    assert game5.n_evaluations == game1.n_evaluations
    assert game5.n_forward < game1.n_forward


def test_chains_per_round_is_unbiased(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    exact = exact_shapley(fs.game(x, target=y))
    res = fs.attribute(
        x,
        target=y,
        truncation=None,
        epsilon=0.0,
        sampler=PermutationSampler(chains_per_round=4, batch_size=None),
        max_permutations=400,
        perturbations_per_eval=16,
        seed=3,
        return_result=True,
    )
    assert res.n_permutations == 400
    assert ((res.flat_values - exact).abs() <= Z_TOL * res.flat_stderr + 1e-9).all()


@pytest.mark.parametrize("strata", [1, None])
def test_normal_bound_does_not_freeze_a_unit_whose_first_samples_agree(
    tiny, tiny_data, strata
):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    exact = exact_shapley(fs.game(x, target=y))
    # conv1 filter 1 matters only in small coalitions: its first 20 marginals are
    # nearly all 0 (sample variance ~0). Without variance shrinkage the normal bound
    # declared it done at 20 samples with an estimate of 0.004 (exact: 0.037).
    res = fs.attribute(
        x,
        target=y,
        truncation=None,
        max_permutations=400,
        perturbations_per_eval=16,
        seed=3,
        sampler=PermutationSampler(strata=strata, batch_size=None),
        return_result=True,
    )
    # independent chains: over 100 of them; cycles of 4 (default): active to the end
    assert exact[1] > 0.03 and res.counts[1] > (100 if strata == 1 else 99)
    assert (res.flat_values[1] - exact[1]).abs() <= Z_TOL * res.flat_stderr[1]


def test_max_permutations_is_exact(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, tiny.conv1)
    for kw, n in [
        (dict(antithetic=True), 1),
        (dict(antithetic=True), 5),
        (dict(chains_per_round=4), 5),
        (dict(chains_per_round=3, antithetic=True), 7),
        (dict(strata=4), 3),
        (dict(chains_per_round=2, strata=3), 8),
    ]:
        res = fs.attribute(
            x,
            target=y,
            max_permutations=n,
            epsilon=0.0,
            seed=0,
            return_result=True,
            sampler=PermutationSampler(batch_size=None, **kw),
        )
        assert res.n_permutations == n, (kw, n)


def test_strata_cycle_visits_every_band():
    for n, strata in ((12, 4), (160, 8), (9, 3)):
        game = SimpleNamespace(n_units=n)
        sampler = PermutationSampler(strata=strata, batch_size=None).bind(
            game, torch.Generator().manual_seed(0)
        )
        perms = sampler._draw_set(strata)
        assert all((p.sort().values == torch.arange(n)).all() for p in perms)
        ranks = torch.stack([torch.argsort(p) for p in perms])  # (strata, n)
        bands = ranks * strata // n
        # each unit is removed once in each band of n / strata positions
        want = torch.arange(strata).unsqueeze(1)
        assert (bands.sort(0).values == want).all(), (n, strata)


def test_stratified_cycles_reduce_variance():
    # A game whose marginals depend only on the position: a unit removed while
    # more than half of the units are present adds nothing, later it adds 1.
    # Independent chains have per-sample variance 1/4; a cycle of 2 half-shifts
    # puts each unit once in each half, so every cycle mean is exactly 1/2.
    class HalfGame:
        n_units, n_examples, n_evaluations, perturbations_per_eval = 8, 1, 0, 8

        def full_value(self, idx=None):
            return 4.0

        def value(self, keep, idx=None):
            self.n_evaluations += keep.shape[0]
            return keep.sum(1).double().clamp(max=4.0)

    for strata, exact_half in ((1, False), (2, True)):
        sampler = PermutationSampler(strata=strata, batch_size=None).bind(
            HalfGame(), torch.Generator().manual_seed(1)
        )
        active = torch.ones(8, dtype=torch.bool)
        means = [m for _ in range(50) for _, m in sampler.sample(active, Limits())[0]]
        spread = torch.stack(means).std()
        assert (spread == 0) == exact_half, (strata, spread)


def test_default_strata(tiny, tiny_data):
    # cycles of 4 by default (one sample per cycle); independent chains in paper
    # mode (the original code) and with antithetic pairs (one sample per pair)
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    for kw, samples in (
        (dict(), 3),
        (dict(stop=PaperBound()), 12),
        (dict(sampler=PermutationSampler(antithetic=True, batch_size=None)), 6),
    ):
        res = fs.attribute(
            x,
            target=y,
            max_permutations=12,
            epsilon=0.0,
            seed=0,
            return_result=True,
            **kw,
        )
        assert res.n_permutations == 12 and (res.counts == samples).all(), kw


def test_a_small_budget_still_completes_chains_of_a_cycle(tiny, tiny_data):
    # 20 evaluations cannot finish a cycle of 4 chains over 7 units (6 paid
    # states each): the chains are then served in order, 3 complete, and their
    # mean is one sample (before, fair sharing left every chain cut and the run
    # returned nothing)
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    for ppe in (1, 8):
        res = fs.attribute(
            x,
            target=y,
            truncation=None,
            sampler=PermutationSampler(batch_size=None),  # chains on all examples
            max_evaluations=20,
            perturbations_per_eval=ppe,
            seed=0,
            return_result=True,
        )
        assert res.n_evaluations == 20 and res.n_permutations == 3
        assert (res.counts == 1).all()
        # no truncation: each completed chain's marginals sum to V(all) - V(none)
        assert abs(float(res.convergence_delta)) < 1e-9


def test_a_pass_on_batches_holds_several_chains_within_ppe_copies_of_the_set(
    tiny, tiny_data
):
    # Captum bounds a forward pass by perturbations_per_eval copies of the
    # inputs; chains on batches of b of N examples fill a pass with the states
    # of up to ppe * N // b chains. The chains' marginals are those of each
    # chain walked alone (only the grouping into passes differs), and a chain
    # evaluates at most share - 1 states past its truncation point.
    from captum_neuron_shapley.sampler import truncation_threshold

    (x, y), _ = tiny_data
    n_examples, b = x.shape[0], 40
    for ppe in (1, 2):
        game = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(
            x, target=y, perturbations_per_eval=ppe
        )
        thr = truncation_threshold(0.5, game.full_value(), game.empty_value())
        smp = PermutationSampler(strata=4, batch_size=b).bind(
            game, torch.Generator().manual_seed(0), thr
        )
        assert smp.pass_size() == ppe * n_examples // b
        # rounds of enough cycles of 4 chains to fill one copy of the set
        assert smp.chains_per_round == -(-(n_examples // b) // 4)
        rows: List[int] = []
        handle = tiny.register_forward_pre_hook(
            lambda m, inp: rows.append(inp[0].shape[0])
        )
        perms = [smp._draw_set(4) for _ in range(3)]
        batches = [smp._subset() for _ in perms]
        flat = [p for ps in perms for p in ps]
        per_chain = [bt for bt, ps in zip(batches, perms) for _ in ps]
        active = torch.ones(game.n_units, dtype=torch.bool)
        try:
            before = game.n_evaluations
            together = smp.walk(flat, active, per_chain)
            cost_together = game.n_evaluations - before
        finally:
            handle.remove()
        assert max(rows) <= ppe * n_examples and max(rows) > ppe * b
        # alone and one state per pass: each chain costs exactly its states up
        # to truncation
        size = smp.pass_size()
        smp.pass_size = lambda: 1  # type: ignore[method-assign]
        before = game.n_evaluations
        alone = [smp.walk([p], active, [bt])[0] for p, bt in zip(flat, per_chain)]
        cost_alone = game.n_evaluations - before
        for t, a in zip(together, alone):
            assert torch.equal(t[0], a[0]) and torch.allclose(t[1], a[1])
        assert cost_alone <= cost_together <= cost_alone + len(flat) * (size - 1)
