"""The default against 200 plain forwards: docs/bench/done_when_resnet.json is
what ``python -m comparisons.bench.done_when`` computes from the committed
cost-axis run, and the computation itself on a hand-made trajectory."""

import json
from pathlib import Path

import pytest

from comparisons.bench.done_when import done_when

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench"


def test_committed_figures_are_those_of_the_committed_run():
    bench = json.loads((DOCS / "bench.json").read_text())
    committed = json.loads((DOCS / "done_when_resnet.json").read_text())
    assert done_when(bench) == pytest.approx(committed)


def test_first_stays_and_precision_at_the_forward_budget():
    # one seed: 200 forwards take 1 s; precision 0.9 at 0.5 s, 0.8 at 1.5 s,
    # 0.9 for good from 2 s on
    points = [
        [10, 640, 0.2, 0.2, 0.5],
        [20, 1280, 0.5, 0.5, 0.9],
        [30, 1920, 1.5, 1.5, 0.8],
        [40, 2560, 2.0, 2.0, 0.9],
        [50, 3200, 3.0, 3.0, 1.0],
    ]
    run = {"k": 10, "seed": 1, "batch_size": 64, "forward_wall_s": 0.5}
    run["forwards"] = 100
    bench = {
        "command": "c",
        "cost_to_topk": {
            "cells": [
                {
                    "game": "g",
                    "rows": {
                        "default": {"runs": [run], "trajectories": {"10": [points]}}
                    },
                }
            ]
        },
    }
    out = done_when(bench)
    assert out["first_wall_s"] == [0.5] and out["stays_wall_s"] == [2.0]
    assert out["first_in_forwards"] == [100.0] and out["stays_in_forwards"] == [400.0]
    assert out["precision_at_200_forwards"] == [0.9]
    assert out["ratio_first_to_200_forwards"] == 0.5
