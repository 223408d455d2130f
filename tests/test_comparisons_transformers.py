"""End to end: ``python -m comparisons transformers`` on one study with quick
budgets, its files and numbers, rendering a saved run again, bad input; and one
MLP-neuron study with a tiny budget."""

import json

import pytest

from comparisons.cli import main
from comparisons.transformers import run_study, TransformerOptions
from comparisons.transformers.options import COMPETING, METHODS
from comparisons.transformers.studies import build_study


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transformers_quick")
    argv = ["transformers", "--quick", "--studies", "recall0-induction", "--out"]
    return main(argv + [str(out)]), out


def test_quick_run_files_and_numbers(quick_run):
    rc, out = quick_run
    assert rc == 0
    for name in ("report.md", "results.json", "removal_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    s = json.loads((out / "results.json").read_text())
    assert s["quick"] and list(s["studies"]) == ["recall0-induction"]
    st = s["studies"]["recall0-induction"]
    assert st["n_units"] == 8 and st["K"] == 8 and st["ks"] == list(range(9))
    assert set(st["methods"]) == set(METHODS)
    for name, m in st["methods"].items():
        assert len(m["curve"]) == 9 and m["curve"][0] == st["intact"], name
        assert all(0.0 <= v <= 1.0 for v in m["curve"]), name
    # every method removes 8 of 8 heads at k = 8: the same model
    assert len({round(m["curve"][8], 9) for m in st["methods"].values()}) == 1
    for w in st["winners"]:
        assert w["winners"] and set(w["winners"]) <= set(COMPETING)
    # the induction head is the first unit every method removes (it alone
    # takes the task to chance), and Shapley's top 3 are the circuit
    mech = st["mechanism"]
    assert mech["names"] and mech["roles"][-1] == "induction"
    for name, ranks in mech["ranks"].items():
        assert ranks[-1] == 1, name
    assert mech["found"]["shapley"] == 1.0 and mech["found"]["exact-shapley"] == 1.0
    costs = st["costs"]
    for name in ("michel", "atp", "conductance", "grad-x-act"):
        assert costs[name]["backward_calls"] >= 1, name
    for name in ("shapley", "leave-one-out", "exact-shapley", "full-greedy"):
        assert (
            costs[name]["backward_calls"] == 0 and costs[name]["model_evaluations"] > 0
        )
    assert costs["exact-shapley"]["model_evaluations"] <= 256
    text = (out / "report.md").read_text()
    assert "## Verdict" in text and "Where each method ranks the induction" in text
    assert "michel" in text and "atp" in text


def test_render_again(quick_run, tmp_path):
    _, out = quick_run
    assert (
        main(
            [
                "transformers",
                "--render",
                str(out / "results.json"),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()


def test_bad_study_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["transformers", "--studies", "recall0-everything"])
    assert e.value.code == 2
    assert "unknown study 'recall0-everything'" in capsys.readouterr().err


def test_mlp_study_tiny(tmp_path):
    opts = TransformerOptions.quick_defaults(
        tmp_path, mlp_max_evaluations=300, mlp_top_k=3, mlp_max_k=4, max_modular=120
    )
    st = run_study(build_study("modular0-mlp", opts), opts, log=lambda m: None)
    assert st.n_units == 128 and st.ks == [0, 1, 2, 3, 4]
    assert "exact-shapley" not in st.methods and st.mechanism is None
    assert not st.status["shapley"].complete  # 300 evaluations: not converged
    assert st.label("shapley").endswith("†")
    assert st.all_mlp_removed["modular"] < 0.1 and st.intact > 0.95
