r"""End to end: ``python -m comparisons --quick`` into a temporary folder, and the
command's errors for bad user input (which must come before any heavy work)."""

import json

import pytest
import torch

from comparisons.__main__ import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("comparisons_quick")
    rc = main(["--quick", "--out", str(out)])
    return rc, out


def test_quick_report_files_and_numbers(quick_run):
    rc, out = quick_run
    assert rc == 0
    for name in (
        "report.md",
        "results.json",
        "removal_curves.png",
        "top_units_by_layer.png",
        "shapley_values.png",
        "conductance_top_unit.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    s = json.loads((out / "results.json").read_text())
    assert s["n_units"] == 160 and s["k"] == 10 and s["quick"]
    assert 0.9 < s["intact"] <= 1.0
    assert s["total_wall_s"] < 240
    run = s["shapley_runs"][0]
    assert 0 < run["evaluations"] <= 600
    # removing the top 10 by Shapley hurts more than the median random 10
    assert run["without_top_k"] < s["random_k"]["median"] <= 1.0
    for key, sc in s["scenarios"].items():
        ev = sc["evaluation"]
        assert set(ev["methods"]) == {
            "shapley",
            "leave-one-out",
            "influence",
            "influence-path",
            "conductance",
            "grad-x-act",
            "activation",
            "random",
        }
        for name, m in ev["methods"].items():
            assert len(m["top"]) == len(ev["ks"]) == len(m["bottom"])
            assert all(0.0 <= v <= 1.0 for v in m["top"] + m["bottom"]), (key, name)
            assert 0.0 <= m["auc_top"] <= 1.0 and 0.0 <= m["auc_bottom"] <= 1.0
            assert sc["costs"][name]["wall_s"] >= 0
        assert len(ev["random"]["curves"]) == 5
        assert all(s_ >= 0 for s_ in ev["random"]["std"])
        costs = sc["costs"]
        assert costs["shapley"]["model_evaluations"] > 0
        assert costs["leave-one-out"]["model_evaluations"] == 160
        assert costs["influence"]["backward_calls"] >= 1
        assert costs["activation"]["backward_calls"] == 0
        ag = sc["agreement"]
        assert all(
            -1.0 - 1e-9 <= v <= 1.0 + 1e-9 for row in ag["spearman"] for v in row
        )
        assert all(0.0 <= v <= 1.0 for row in ag["overlap"] for v in row)
    text = (out / "report.md").read_text()
    assert "| shapley |" in text and "conductance" in text and "influence" in text


def test_error_unknown_layer(capsys, tmp_path):
    assert main(["--layers", "conv9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no layer named 'conv9'" in err and "conv1" in err


def test_error_missing_weights(capsys, tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    rc = main(
        [
            "--arch",
            "resnet18",
            "--weights",
            str(tmp_path / "nope.pt"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--weights", "x.pt"]) == 2  # --weights without --arch
    assert (
        main(["--arch", "not_a_net", "--weights", __file__, "--data", str(tmp_path)])
        == 2
    )
    assert "not a torchvision architecture" in capsys.readouterr().err


def test_error_classes_do_not_match_outputs(capsys, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    model = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    rc = main(
        [
            "--arch",
            "squeezenet1_1",
            "--weights",
            str(tmp_path / "w.pt"),
            "--data",
            str(tmp_path / "data"),
            "--image-size",
            "32",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "2 classes" in err and "do not fit squeezenet1_1" in err
