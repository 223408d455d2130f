r"""Scale: ResNet-18 (4,800 filters) and Inception-v3 (17,216 filters) with
random weights, every conv layer's filters as players: evaluations per second
and peak memory, on the GPU when available. Each model runs in a fresh process
(``python -m comparisons bench --scale-child NAME``) so that peak memory is its
own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from captum_neuron_shapley import FilterShapley

from .precision import Clock

__all__ = ["scale", "scale_child", "inception_cost", "MODELS"]

#: ``(model, image size)``.
MODELS = (("resnet18", 112), ("inception_v3", 299))


def scale_child(name: str, device: str, batch: int, size: int) -> Dict[str, Any]:
    r"""One model's row (run in its own process); printed as JSON."""
    from torch import nn
    from torchvision import models

    torch.manual_seed(0)
    if name == "resnet18":
        model, skip = models.resnet18(weights=None), ()
    else:
        model = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        skip = ("AuxLogits",)
    model = model.to(device).eval()
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not n.startswith(skip)
    ]
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    fs = FilterShapley(model, convs)
    t = time.perf_counter()
    res = fs.attribute(
        x,
        target=y,
        truncation=None,
        max_evaluations=24,
        perturbations_per_eval=4,
        seed=0,
        return_result=True,
    )
    wall = time.perf_counter() - t
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    with torch.no_grad():
        for _ in range(6):
            model(x)
    if device == "cuda":
        torch.cuda.synchronize()
    fwd = 6 / (time.perf_counter() - t2)
    out = {
        "model": name,
        "device": device,
        "n_units": res.n_units,
        "batch": batch,
        "image_size": size,
        "evaluations": res.n_evaluations,
        "wall_s_incl_setup": wall,
        "evals_per_s_incl_setup": res.n_evaluations / wall,
        "plain_forwards_per_s": fwd,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    return out


def scale(device: str, batch: int) -> List[Dict[str, Any]]:
    r"""Every model of :data:`MODELS`, each in a fresh process."""
    root = Path(__file__).resolve().parents[2]
    rows = []
    for name, size in MODELS:
        cmd = [
            sys.executable,
            "-m",
            "comparisons",
            "bench",
            "--scale-child",
            name,
            "--device",
            device,
            "--batch",
            str(batch),
            "--size",
            str(size),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def inception_cost(
    device: str, batch: int, evaluations: int = 3, threads: int = 1
) -> Dict[str, Any]:
    r"""What Inception-v3's 17,216 filters (random weights, every conv filter
    but the auxiliary head's, 299 x 299 images) cost on ``device``: the game's
    setup (the intact pass and ``V(none)``), seconds per evaluation of one
    random coalition on ``batch`` images (the median of ``evaluations``), the
    plain forward pass on the same images (the faster of 2), in CPU and wall
    seconds, peak memory, and what
    one chain over every filter costs (with random weights and labels the
    metric does not fall between ``V(all)`` and ``V(none)``, so nothing is
    truncated: one evaluation per filter)."""
    from torch import nn
    from torchvision import models

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    model = model.to(device).eval()
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not n.startswith("AuxLogits")
    ]
    x = torch.randn(batch, 3, 299, 299, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    clock = Clock()
    game = FilterShapley(model, convs).game(x, target=y)
    v_all, v_none = game.full_value(), game.empty_value()
    setup = clock.read()
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(evaluations, game.n_units, generator=g) > 0.5
    per_eval = []
    for i in range(evaluations):
        clock.start()
        game.value(keep[i : i + 1])
        per_eval.append(clock.read())
    fwd = []
    with torch.no_grad():
        for _ in range(2):
            clock.start()
            model(x)
            fwd.append(clock.read())
    s_cpu = sorted(c for c, _ in per_eval)[len(per_eval) // 2]
    s_eval = sorted(w for _, w in per_eval)[len(per_eval) // 2]
    return {
        "model": "inception_v3",
        "device": device,
        "threads": threads,
        "n_units": game.n_units,
        "batch": batch,
        "image_size": 299,
        "setup_cpu_s": setup[0],
        "setup_s": setup[1],
        "v_all": v_all,
        "v_none": v_none,
        "cpu_seconds_per_evaluation": s_cpu,
        "seconds_per_evaluation": s_eval,
        "evaluations_timed": per_eval,
        "cpu_seconds_per_plain_forward": min(c for c, _ in fwd),
        "seconds_per_plain_forward": min(w for _, w in fwd),
        "chain_evaluations": game.n_units,
        "cpu_seconds_per_chain": game.n_units * s_cpu,
        "seconds_per_chain": game.n_units * s_eval,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
