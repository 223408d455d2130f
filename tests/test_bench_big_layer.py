"""The big-layer comparison (comparisons/bench/big_layer_compare.py) at small
scale: references written and read in the layout of ``device.json``, and the
methods run against a reference from a longer CPU run."""

import json

import pytest
import torch

from captum_neuron_shapley import FilterShapley
from comparisons.bench import big_layer_compare as C


@pytest.fixture
def tiny_layer(trained_tiny, tiny_data):
    (x, y), (xt, yt) = tiny_data
    fs = FilterShapley(trained_tiny, [trained_tiny.conv1, trained_tiny.conv2])
    return C.LayerData(trained_tiny, fs, x, y, xt, yt, "tiny CNN")


def test_reference_is_written_and_read_as_device_json(tiny_layer, tmp_path):
    parts = [C.make_reference(tiny_layer, 0.2, seed, 1) for seed in (1, 2)]
    for p in parts:
        assert p["chains"] > 0 and len(p["values"]) == 7
    pooled = C.combine_references(parts)
    # pooled by samples: between the two parts, weighted
    v = torch.tensor([p["values"] for p in parts], dtype=torch.float64)
    assert bool(
        (
            (pooled["values"] >= v.min(0).values - 1e-12)
            & (pooled["values"] <= v.max(0).values + 1e-12)
        ).all()
    )
    assert pooled["chains"] == parts[0]["chains"] + parts[1]["chains"]
    path = tmp_path / "ref.json"
    C.save_reference(pooled, path, "test")
    loaded = C.load_reference(path)
    assert torch.allclose(loaded["values"], pooled["values"])
    assert json.loads(path.read_text())["big_layer"]["reference"]["parts"] == 2
    # a device.json with its other parts is read the same way
    device = tmp_path / "device.json"
    device.write_text(
        json.dumps(
            {
                "throughput": [],
                "big_layer": {"reference": {"values": [0.1, 0.2], "stderr": [0, 0]}},
            }
        )
    )
    assert C.load_reference(device)["values"].tolist() == [0.1, 0.2]
    # a device reference without per-unit samples: one per cycle of 4 chains
    ref = {"values": [0.1, 0.2], "stderr": [0, 0], "chains": 509}
    device.write_text(json.dumps({"big_layer": {"reference": ref}}))
    assert C.load_reference(device)["samples"] == [127, 127]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inception": []}))
    with pytest.raises(ValueError, match="big_layer.reference.values"):
        C.load_reference(bad)


@pytest.mark.slow
def test_methods_against_a_longer_cpu_reference(tmp_path):
    # the digits CNN (160 filters) stands in for the big layer: a reference
    # from two longer runs, then methods for a short CPU budget each
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn
    from comparisons.environment import Environment

    d, m = load_digits_splits(), trained_digits_cnn()
    data = C.LayerData(
        m, FilterShapley(m, m.conv_layers), d.x_val, d.y_val, d.x_test, d.y_test
    )
    parts = [C.make_reference(data, 6.0, seed, 1) for seed in (1, 2)]
    ref = C.combine_references(parts)
    ref["samples"] = sum(torch.tensor(p["samples"]) for p in parts)
    methods = ["default", "default + prior screening", "gradient x activation"]
    res = C.compare(data, ref, 2.0, methods, snapshots=(1.0,))
    for name in methods:
        run = res["runs"][name]
        cpu = [p[0] for p in run["points"]]
        assert cpu == sorted(cpu) and 0.0 <= run["final_precision"] <= 1.0
        q = res["removal"][name]
        # removing a greedy set chosen on the estimation split hurts the test
        # split more than removing nothing
        assert q["removal_set"] < q["intact"] - 0.1
        assert q["search_evaluations"] > 0
    # the default's first rounds sample every unit: chains cost about as much
    # as a full chain, and the needed chains follow from noise and gap
    g = res["noise_vs_gaps"]
    assert g["correct_units"] >= 10 and g["sample_sd"] > 0
    assert g["chains_needed"] == pytest.approx(
        (g["z_max_wrong"] * g["sample_sd"] / g["gap"]) ** 2 / g["samples_per_chain"]
    )
    # resolving the boundary to epsilon is set by the contenders' noise
    assert g["sample_sd_top"] >= g["sample_sd"] > 0
    assert g["chains_for_epsilon"] == pytest.approx(
        (2 * g["sample_sd_top"] / g["epsilon"]) ** 2 / g["samples_per_chain"]
    )
    text = "\n".join(C.render(res, "cmd", Environment.capture()))
    for name in methods:
        assert f"| {name} |" in text
