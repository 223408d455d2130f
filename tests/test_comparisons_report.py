r"""The comparison report on a 7-filter CNN: per-k winners recomputed from the
curves, every unconverged method marked in every table, the refined removal set
identical to ``refine="greedy"``, removal on held-out data through a cached
game identical to ``metric_after_removal``, and no crash when the bandit
completes no chain (the old report then asked for ``max_permutations=0``)."""

import dataclasses
import json
import re

import pytest
import torch

from captum_neuron_shapley import FilterShapley, GreedyRefine
from captum_neuron_shapley.ablation import metric_after_removal
from comparisons.methods import COMPETING
from comparisons.methods.greedy import greedy_sets
from comparisons.protocol import per_k_winners, prefix_curves, ranking, spread
from comparisons.report import Options, render_saved, ReportSummary, run_report
from comparisons.report.setup import Setup


def _setup(trained_tiny, tiny_data):
    from comparisons.games import TinyCNN

    model = TinyCNN()
    model.load_state_dict(trained_tiny.state_dict())
    model.eval()
    (xv, yv), (xt, yt) = tiny_data
    return Setup(
        model,
        [model.conv1, model.conv2],
        ["conv1", "conv2"],
        xv,
        yv,
        xt,
        yt,
        ["a", "b", "c"],
        "tiny CNN on blobs",
    )


@pytest.fixture
def tiny_setup(trained_tiny, tiny_data):
    return _setup(trained_tiny, tiny_data)


def _opts(out, **kw):
    base = dict(
        out=out,
        seeds=2,
        top_k=2,
        max_k=4,
        recall_class=0,
        pair=(1, 2),
        random_seeds=3,
        n_steps=4,
        full_greedy_max_evaluations=100,
    )
    base.update(kw)
    return Options(**base)


@pytest.fixture(scope="module")
def unconverged(trained_tiny, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_tiny")
    s = run_report(_setup(trained_tiny, tiny_data), _opts(out, max_evaluations=30))
    return s, json.loads((out / "results.json").read_text()), out


def test_per_k_winners_are_the_lowest_curves(unconverged):
    _, js, _ = unconverged
    assert set(js["questions"]) == {"overall", "recall_0", "pair_1_2"}
    for q in js["questions"].values():
        ks = q["ks"]
        assert ks == [0, 1, 2, 3, 4]
        assert [w["k"] for w in q["winners"]] == ks[1:]
        for w in q["winners"]:
            i = ks.index(w["k"])
            vals = {
                m: q["methods"][m]["curve"][i]
                for m in COMPETING
                if m in q["methods"] and q["methods"][m]["curve"][i] is not None
            }
            best = min(vals.values())
            assert w["value"] == pytest.approx(best)
            assert sorted(w["winners"]) == sorted(
                m for m, v in vals.items() if v <= best + 1e-9
            )
        # the full greedy search is shown beside, not a competitor
        assert "full-greedy" in q["methods"]
        assert all("full-greedy" not in w["winners"] for w in q["winners"])
        # Shapley rows are medians of the seeds' curves
        sh = q["methods"]["shapley"]
        assert len(sh["runs"]) == 2
        assert sh["curve"] == pytest.approx(spread(sh["runs"])["median"])
        # random: mean over orders, std beside
        assert len(q["methods"]["random"]["runs"]) == 3
        # every curve starts at the intact model
        for m in q["methods"].values():
            assert m["curve"][0] == pytest.approx(q["intact"])
        assert q["costs"]["leave-one-out"]["model_evaluations"] == 7
        assert q["costs"]["full-greedy"]["model_evaluations"] > 0


def test_unconverged_shapley_is_marked_in_every_table(unconverged):
    _, js, out = unconverged
    for q in js["questions"].values():
        for r in q["shapley_runs"]:
            assert r["stop_reason"] == "max_evaluations" and not r["converged"]
            assert r["budget"]["max_evaluations"] == 30
        st = q["status"]["shapley"]
        assert not st["complete"] and not st["skipped"]
        assert "max_evaluations 30" in st["budget"]
        # the refinement inherits its Shapley run's status
        assert not q["status"]["shapley-greedy"]["complete"]
    text = (out / "report.md").read_text()
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert sum("shapley" in line for line in tables) > 20
    for line in tables:
        for m in re.finditer(r"shapley(-greedy)?", line):
            assert line[m.end()] == "†", line
    # the footnote says chains, evaluations, stop reason and budget
    assert re.search(
        r"† \*\*shapley\*\* did not finish: seed 0 stopped by max_evaluations "
        r"after \d+ chains and 30 evaluations.*Budget: max_evaluations 30",
        text,
    )
    # the summary line marks it too
    assert "shapley†" in text.split("## Where each method wins")[1].split("##")[0]


def test_zero_chains_do_not_crash(tiny_setup, tmp_path):
    # two evaluations complete no chain of the 7-unit game: the old report then
    # called attribute(max_permutations=0) for its truncated Monte Carlo row
    s = run_report(tiny_setup, _opts(tmp_path, seeds=1, max_evaluations=2))
    for q in s.questions.values():
        assert q.shapley_runs[0].permutations == 0
        st = q.status["shapley"]
        assert st.skipped and "completed no permutation chain" in st.reason
        assert "shapley" not in q.methods  # zeros are no ranking
        assert q.status["shapley-greedy"].skipped
        assert "conductance" in q.methods
    assert s.to_dict()["plain_tmc"] == {
        "ran": False,
        "reason": "the bandit completed no chain",
    }
    text = (tmp_path / "report.md").read_text()
    assert "completed no permutation chain" in text
    summary = text.split("## Where each method wins")[1].split("\n## ")[0]
    assert summary.count("No result: shapley†") == 3  # one per question
    rows = [line for line in text.splitlines() if line.startswith("| shapley")]
    assert len(rows) == 6  # shapley and shapley-greedy in each cost table
    assert all(re.match(r"\| shapley(-greedy)?† \|", line) for line in rows)


def test_label_marks_only_incomplete_methods(unconverged):
    from comparisons.methods import MethodStatus

    status = {
        "shapley": MethodStatus(complete=True),
        "conductance": MethodStatus(complete=False),
        "leave-one-out": MethodStatus(complete=False, skipped=True),
    }
    q = dataclasses.replace(unconverged[0].questions["overall"], status=status)
    assert q.label("shapley") == "shapley"
    assert q.label("conductance") == "conductance†"
    assert q.label("leave-one-out") == "leave-one-out†"  # skipped: no result
    assert q.incomplete("conductance") and not q.incomplete("leave-one-out")


def test_refined_set_is_refine_greedy(tiny, tiny_data):
    (xv, yv), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(
        xv,
        target=yv,
        top_k=2,
        refine=GreedyRefine(5),
        seed=3,
        max_evaluations=150,
        return_result=True,
    )
    game = fs.game(xv, target=yv, perturbations_per_eval=8)
    order = torch.argsort(res.flat_values, descending=True).tolist()
    g = greedy_sets(game, order, 2, 4, 5)
    assert g.order[:2] == res.removal_set
    assert g.curve[:3] == pytest.approx(res.removal_curve.tolist())
    assert g.evaluations == res.refine_evaluations
    assert g.continued_to == 4 and len(g.order) == 4
    # continuing over the same pool = a search for 4 from the start
    from captum_neuron_shapley.refine import greedy_removal

    units, _ = greedy_removal(game, order, 4, pool_size=5)
    assert g.order == units
    # no time for the continuation: the set stops at k
    g2 = greedy_sets(game, order, 2, 4, 5, continue_seconds=0.0, seconds_per_eval=1.0)
    assert g2.continued_to == 2 and g2.continuation_evaluations == 0


def test_prefix_curves_match_metric_after_removal(tiny, tiny_data):
    (xv, yv), (xt, yt) = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(
        xv, target=yv, top_k=2, seed=0, max_evaluations=100, return_result=True
    )
    base = tuple(lay.baseline for lay in res.layers)
    game = fs.game(xt, target=yt, layer_baselines=base)
    orders = {"top": ranking(res.flat_values).tolist(), "rev": [6, 5, 4, 3, 2, 1, 0]}
    ks = [0, 1, 3, 7]
    got = prefix_curves(game, orders, ks)
    for name, order in orders.items():
        want = metric_after_removal(tiny, res, [order[:k] for k in ks], xt, yt)
        assert got[name] == pytest.approx(want.tolist())
    # the shared empty and full sets are evaluated once
    assert game.n_evaluations <= 2 * (len(ks) - 2) + 1
    assert prefix_curves(game, {"short": [0]}, [0, 2])["short"][1] != (
        prefix_curves(game, {"short": [0]}, [0, 2])["short"][1]
    )  # nan beyond the ordering


def test_per_k_winners_ties_and_nan():
    w = per_k_winners({"a": [0.5, 0.2, float("nan")], "b": [0.4, 0.2, 0.9]}, [1, 2, 3])
    assert [x["winners"] for x in w] == [["b"], ["a", "b"], ["b"]]
    assert w[0]["value"] == 0.4


def test_saved_run_renders_the_same_report(unconverged, tmp_path):
    # the renderers read only the summary: results.json laid out again gives
    # the same report.md and the same JSON, and redraws every figure
    s, js, out = unconverged
    again = render_saved(out / "results.json", tmp_path)
    assert isinstance(again, ReportSummary)
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text()) == js
    for name in s.figures.values():
        assert (tmp_path / name).stat().st_size > 0, name


def test_report_opens_with_a_verdict_and_records_its_environment(unconverged):
    s, js, out = unconverged
    text = (out / "report.md").read_text()
    head = text.split("## How this was measured")[0]
    assert head.index("## Verdict") < head.index("**overall accuracy**")
    # every question has its verdict, and the unconverged runs are marked there
    for q in s.questions.values():
        block = head.split(f"**{q.title}**")[1].split("\n\n**")[0]
        assert "- k = " in block and "Provisional: the Shapley runs did not" in block
    env = js["environment"]
    assert env["threads"] == 1 and "1 thread on" in text and "1 threads" not in text
    for pkg in ("torch", "torchvision", "captum", "captum-neuron-shapley"):
        assert env["packages"][pkg] and f"{pkg} {env['packages'][pkg]}" in text
    # a value and its range over seeds have the same decimals
    spreads = re.findall(r"(-?\d+\.(\d+)) \[(-?\d+\.(\d+)), (-?\d+\.(\d+))\]", text)
    assert spreads
    for value, a, lo, b, hi, c in spreads:
        assert len(a) == len(b) == len(c) and float(lo) <= float(value) <= float(hi)
