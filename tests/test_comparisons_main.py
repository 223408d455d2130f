r"""End to end: ``python -m comparisons --quick`` into a temporary folder, and the
command's errors for bad user input (which must come before any heavy work)."""

import json

import pytest
import torch

from comparisons.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("comparisons_quick")
    rc = main(["--quick", "--time-budget", "25", "--out", str(out)])
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
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    s = json.loads((out / "results.json").read_text())
    assert s["n_units"] == 160 and s["k"] == 10 and s["K"] == 20 and s["quick"]
    assert s["time_budget_s"] == 25
    # the methods' time budget holds (loading and figures come on top)
    assert sum(q["wall_s"] for q in s["questions"].values()) < 25 + 20
    assert s["plain_tmc"]["ran"] is False
    for key, q in s["questions"].items():
        assert 0.9 < q["intact"] <= 1.0
        run = q["shapley_runs"][0]
        # budgets scaled to the units, never zero, with a time limit
        assert run["budget"]["max_evaluations"] == (640 if key == "overall" else 320)
        assert run["budget"]["max_time"] > 0
        assert 0 < run["evaluations"] <= run["budget"]["max_evaluations"] + 8
        assert q["ks"][0] == 0 and q["ks"][-1] == 20 and 10 in q["ks"]
        for name, m in q["methods"].items():
            assert len(m["curve"]) == len(q["ks"])
            assert all(v is None or 0.0 <= v <= 1.0 for v in m["curve"]), name
        for name, st in q["status"].items():
            assert st["budget"], name  # every method states its budget
            if st["skipped"]:
                assert name not in q["methods"] and st["reason"]
            else:
                assert name in q["methods"], name
            if not st["complete"] and not st["skipped"]:
                assert st["reason"], name
        assert q["costs"]["influence"]["backward_calls"] >= 1
        assert q["costs"]["activation"]["backward_calls"] == 0
    ov = s["questions"]["overall"]
    # removing the gradient methods' top 10 hurts more than random removal; so
    # does Shapley's greedy removal set, when its share of the time sufficed
    i = ov["ks"].index(10)
    rand = ov["methods"]["random"]["curve"][i]
    assert ov["methods"]["grad-x-act"]["curve"][i] < rand - 0.1
    if "shapley-greedy" in ov["methods"]:
        assert ov["methods"]["shapley-greedy"]["curve"][i] < rand - 0.1
    else:
        assert "its share of the time" in ov["status"]["shapley-greedy"]["reason"]
    text = (out / "report.md").read_text()
    assert "## Where each method wins" in text and "### Per-k winners" in text
    assert "shapley-greedy" in text and "conductance" in text


def _digits_folder(root, size):
    from comparisons.report.setup import write_digits_imagefolder

    return write_digits_imagefolder(root, classes=(0, 1, 2, 3), per_class=12, size=size)


def test_user_model_many_units_quick(tmp_path, capsys):
    r"""The bring-your-own-model path on 1,024 filters of a random-weight
    resnet18 (small images, so that it runs in seconds): finishes within its
    time budget with every budget positive, and marks or skips (with the
    reason) every method that did not finish."""
    torchvision = pytest.importorskip("torchvision")
    data = _digits_folder(tmp_path / "images", 32)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out"
    rc = main(
        [
            "--quick",
            "--arch",
            "resnet18",
            "--weights",
            str(tmp_path / "w.pt"),
            "--data",
            str(data),
            "--image-size",
            "32",
            "--layers",
            "layer4.0.conv2,layer4.1.conv2",
            "--time-budget",
            "12",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "results.json").read_text())
    assert s["n_units"] == 1024 and s["perturbations_per_eval"] == 1
    assert sum(q["wall_s"] for q in s["questions"].values()) < 12 + 15
    text = (out / "report.md").read_text()
    for key, q in s["questions"].items():
        run = q["shapley_runs"][0]
        assert run["budget"]["max_evaluations"] == (4096 if key == "overall" else 2048)
        assert run["budget"]["max_time"] >= 1.0
        for name, st in q["status"].items():
            if st["skipped"]:
                assert st["reason"] and name not in q["methods"]
            elif not st["complete"]:
                assert f"{name}†" in text
        # at most 24 validation examples: 1,024 leave-one-out evaluations and
        # a full greedy search (20,290) are estimated before they run
        fg = q["status"]["full-greedy"]
        assert fg["skipped"] and "20290" in fg["budget"] or key == "recall_0"


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
