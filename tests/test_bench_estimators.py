"""The benchmark's estimators (comparisons/bench/estimators.py) against exact
enumeration
on the tests' 7-filter CNN, and a seconds-long run of ``python -m comparisons bench
--quick`` (no reference caches needed: the quick cell's reference is exact)."""

import json

import pytest
import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.exact import exact_values
from comparisons.bench import estimators as E


@pytest.fixture
def game_and_exact(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    game = fs.game(x, target=y, perturbations_per_eval=32)
    return game, exact_values(game)


@pytest.mark.parametrize(
    "fn, budget, tol",
    [
        (E.msr, 4000, 0.03),  # the library's sampler="msr": tests/test_msr.py
        (E.kernel_shap, 4000, 0.02),
        (E.stratified_svarm, 4000, 0.02),
    ],
)
def test_untruncated_estimators_match_enumeration(game_and_exact, fn, budget, tol):
    game, exact = game_and_exact
    seen = []
    est = fn(game, budget, 1, lambda e, v: seen.append((e, v.clone())))
    assert seen and seen[-1][0] <= budget
    assert torch.allclose(seen[-1][1], est)
    err = (est - exact).abs().max()
    assert err < tol, (est, exact)


def test_cmcs_ranks_the_top_units_like_enumeration(game_and_exact):
    game, exact = game_and_exact
    est = E.cmcs_greedy(game, 3000, 0, lambda e, v: None, top_k=3)
    # it samples the units near the boundary: their means are unbiased marginals
    top = set(torch.topk(exact, 3).indices.tolist())
    assert set(torch.topk(est, 3).indices.tolist()) == top
    assert (est - exact).abs()[list(top)].max() < 0.02


def test_kernel_shap_is_efficient(game_and_exact):
    game, _ = game_and_exact
    est = E.kernel_shap(game, 200, 1, lambda e, v: None)
    gap = game.full_value() - game.empty_value()
    assert abs(float(est.sum()) - gap) < 1e-6


def test_quick_bench_runs_in_seconds(tmp_path):
    from comparisons.cli import main

    assert (
        main(
            [
                "bench",
                "--quick",
                "--jobs",
                "1",
                "--seeds",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "bench.json").read_text())
    cell = report["cost_to_topk"]["cells"][0]
    rows, n = cell["rows"], cell["n_examples"]
    assert n == 200 and "default" in rows and "plain truncated MC" in rows
    # each row is scored against its own target: chains on batches against the
    # truncated target on batches of their size
    assert rows["plain truncated MC, batches of 64"]["target"] == "truncated_b64"
    assert rows["plain truncated MC, batches of 64"]["batch"] == 64
    assert rows["plain truncated MC"]["target"] == "truncated"
    assert rows["Captum ShapleyValueSampling"]["target"] == "untruncated"
    # examples are counted as paid: the setup's intact pass and V(none) on all
    # examples, then 64 per evaluation on a batch (a batch's V(all) and V(none)
    # come from the setup's outputs)
    run = rows["plain truncated MC, batches of 64"]["runs"][0]
    assert run["examples"] == 2 * n + 64 * (run["evaluations"] - 1)
    run = rows["plain truncated MC"]["runs"][0]
    assert run["examples"] == n * (run["evaluations"] + 1)
    # every run spent the example budget (up to its last round, at most 64
    # coalitions of all examples for kernel SHAP) unless its own rule stopped it
    for row in rows.values():
        for r in row["runs"]:
            assert r["converged"] or r["examples"] >= (cell["budget"] - 64) * n
            assert r["forward_cpu_s"] > 0 and r["forwards"] == 200
        for traj in row["trajectories"]["3"]:
            cols = list(zip(*traj))
            assert len(cols) == 5  # evaluations, examples, cpu, wall, precision
            for col in cols[:4]:
                assert list(col) == sorted(col)
    assert (tmp_path / "precision.png").exists()
    text = (tmp_path / "bench.md").read_text()
    assert "Cost to a top-k that stays at precision 0.9" in text
    assert "precision at 200 fwd" in text
    # the markdown can be laid out again from the JSON alone
    again = tmp_path / "again"
    assert (
        main(["bench", "--render", str(tmp_path / "bench.json"), "--out", str(again)])
        == 0
    )
    assert "Cost to a top-k" in (again / "topk.md").read_text()


def test_no_state_is_evaluated_after_truncation_at_one_coalition_per_pass(
    tiny, tiny_data
):
    # on all examples, perturbations_per_eval=1 checks every state against the
    # threshold before evaluating the next: a chain costs exactly the states up
    # to the first one at or below it (on batches, a pass holds several states;
    # tests/test_sampler.py checks what that costs)
    from captum_neuron_shapley.sampler import PermutationSampler, truncation_threshold

    (x, y), _ = tiny_data
    game = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).game(x, target=y)
    n = game.n_units
    thr = truncation_threshold(0.5, game.full_value(), game.empty_value())
    smp = PermutationSampler(strata=4, batch_size=None).bind(
        game, torch.Generator().manual_seed(0), thr
    )
    active = torch.ones(n, dtype=torch.bool)
    cut = 0
    for _ in range(8):
        perms = smp._draw_set(4)
        cost = 0
        for perm in perms:
            rank = torch.empty(n, dtype=torch.long)
            rank[perm] = torch.arange(n)
            values = game.value(
                rank.unsqueeze(0) >= torch.arange(1, n + 1).unsqueeze(1)
            )
            below = (values <= thr).nonzero()
            cost += int(below[0]) + 1 if below.numel() else n
            cut += int(below.numel() > 0 and int(below[0]) + 1 < n)
        before = game.n_evaluations
        smp.walk(perms, active)
        assert game.n_evaluations - before == cost
    assert cut > 0  # some chains were truncated before their last state


def test_committed_run_renders_the_same_tables(tmp_path):
    # the committed bench.json read back by the current code gives every table
    # row of the committed topk.md
    from pathlib import Path

    from comparisons.cli import main

    docs = Path(__file__).resolve().parent.parent / "docs" / "bench"
    if not (docs / "bench.json").exists():
        pytest.skip("no committed benchmark run")
    assert (
        main(["bench", "--render", str(docs / "bench.json"), "--out", str(tmp_path)])
        == 0
    )

    def rows(text):
        return [line for line in text.splitlines() if line.startswith("|")]

    want = rows((docs / "topk.md").read_text())
    assert len(want) > 20
    assert rows((tmp_path / "topk.md").read_text()) == want
