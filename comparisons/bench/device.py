r"""The GPU measurements, in one run (``python -m comparisons device --out DIR``):

1. ``throughput``: coalition evaluations per second against plain forward passes
   per second of the same examples, at ``perturbations_per_eval`` 1 to 64, on the
   digits CNN (160 filters, chains on all 397 validation digits) and on ResNet-18's
   ``layer4`` (2,560 filters, chains on batches of 64), with the default removal
   hooks and the replayed prefix.
2. ``inception``: Inception-v3 with random weights, its 17,216 conv filters in one
   game, batches of 128 images of 299 x 299: evaluations per second, the plain
   forward rate, peak memory, and what one chain over every filter costs.
3. ``transformer``: torchvision's ViT-B/16 (random weights, 224 x 224): its 144
   attention heads in one game, and its 36,864 MLP neurons (one unit per hidden
   feature of the 12 blocks): evaluations per second against forwards, memory.
4. ``big_layer``: the reference values of the ResNet-18 ``layer4`` game (a long
   run), then the default top-10 run for a short budget with three seeds: its
   precision against the reference over time.

Every part has a time budget; ``--quick`` shrinks them all (a smoke test on a
CPU). The results go to ``DIR/device.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from captum_neuron_shapley import FilterShapley, PermutationSampler
from torch import nn

from ..environment import Environment
from . import big_layer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rate(fn: Callable[[], Any], device: str, seconds: float, per_call: int) -> float:
    r"""Calls of ``fn`` per second (times ``per_call``), median of 5 blocks."""
    fn()
    _sync(device)
    rates = []
    for _ in range(5):
        n, t = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            _sync(device)
            if time.perf_counter() - t >= seconds / 5:
                break
        rates.append(n * per_call / (time.perf_counter() - t))
    return sorted(rates)[2]


def throughput(device: str, seconds: float, ppes: List[int]) -> List[Dict[str, Any]]:
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    data = load_digits_splits()
    rows = []
    cnn = trained_digits_cnn().to(device)
    r18, fs18, x18, y18 = big_layer.game_data(device)
    setups = (
        (
            "digits CNN, 160 filters, all 397 examples",
            cnn,
            cnn.conv_layers,
            data.x_val.to(device),
            data.y_val.to(device),
            None,
        ),
        (
            "ResNet-18 layer4, 2,560 filters, batches of 64",
            r18,
            big_layer.layer4_convs(r18),
            x18,
            y18,
            64,
        ),
    )
    for name, model, layers, x, y, batch in setups:
        for ppe in ppes:
            game = FilterShapley(model, layers).game(
                x, target=y, perturbations_per_eval=ppe
            )
            g = torch.Generator().manual_seed(0)
            keep = torch.rand(ppe, game.n_units, generator=g) > 0.5
            rows_x = x if batch is None else x[:batch]
            if batch is None:
                evals = _rate(lambda: game.value(keep), device, seconds, ppe)
            else:
                batches = [game.draw(g, batch) for _ in range(ppe)]
                evals = _rate(lambda: game.value(keep, batches), device, seconds, ppe)
            with torch.no_grad():
                fwd = _rate(lambda: model(rows_x), device, seconds, 1)
            rows.append(
                {
                    "game": name,
                    "perturbations_per_eval": ppe,
                    "evals_per_s": evals,
                    "forwards_per_s": fwd,
                    "ratio": evals / fwd,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _peak(device: str) -> Dict[str, float]:
    if device != "cuda":
        return {}
    return {"peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}


def inception(device: str, seconds: float, batch: int) -> List[Dict[str, Any]]:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model = model.to(device).eval()
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not n.startswith("AuxLogits")
    ]
    x = torch.randn(batch, 3, 299, 299, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    rows = []
    for ppe in (1, 4, 16):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        game = FilterShapley(model, convs).game(x, target=y, perturbations_per_eval=ppe)
        setup = time.perf_counter() - t
        g = torch.Generator().manual_seed(0)
        keep = torch.rand(ppe, game.n_units, generator=g) > 0.5
        evals = _rate(lambda: game.value(keep), device, seconds, ppe)
        with torch.no_grad():
            fwd = _rate(lambda: model(x), device, seconds, 1)
        rows.append(
            {
                "n_units": game.n_units,
                "batch": batch,
                "perturbations_per_eval": ppe,
                "setup_s": setup,
                "evals_per_s": evals,
                "forwards_per_s": fwd,
                "ratio": evals / fwd,
                "seconds_per_full_chain": game.n_units / evals,
                **_peak(device),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def transformer(
    device: str, seconds: float, batch: int, small: bool
) -> List[Dict[str, Any]]:
    r"""ViT-B/16 (random weights; torchvision zeroes the classifier, so it gets
    random weights too), labels its own predictions: the 144 heads of its 12
    blocks in one game, and the 36,864 MLP neurons (one unit per hidden feature of
    every block, shared by the positions), against plain forwards."""
    from captum_neuron_shapley import feature_mask, HeadShapley, NeuronShapley
    from torchvision.models import VisionTransformer, vit_b_16

    torch.manual_seed(0)
    if small:  # a smoke test: the same architecture, tiny
        size = 32
        vit: Any = VisionTransformer(size, 8, 12, 12, 96, 384, num_classes=1000)
    else:
        size = 224
        vit = vit_b_16(weights=None)
    nn.init.normal_(vit.heads.head.weight, std=0.02)
    vit = vit.to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        y = vit(x).argmax(1)
    blocks = list(vit.encoder.layers)
    hidden = blocks[0].mlp[0].out_features
    games = {
        "heads": lambda ppe: HeadShapley(vit, [b.self_attention for b in blocks]).game(
            x, target=y, perturbations_per_eval=ppe
        ),
        "MLP neurons": lambda ppe: NeuronShapley(vit, [b.mlp[3] for b in blocks]).game(
            x,
            target=y,
            layer_mask=feature_mask(hidden),
            layer_baselines="mean",
            attribute_to_layer_input=True,
            perturbations_per_eval=ppe,
        ),
    }
    with torch.no_grad():
        fwd = _rate(lambda: vit(x), device, seconds, 1)
    rows = []
    for name, make in games.items():
        for ppe in (1, 8, 32):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            game = make(ppe)
            g = torch.Generator().manual_seed(0)
            keep = torch.rand(ppe, game.n_units, generator=g) > 0.5
            evals = _rate(lambda: game.value(keep), device, seconds, ppe)
            rows.append(
                {
                    "units": name,
                    "n_units": game.n_units,
                    "batch": batch,
                    "image_size": size,
                    "perturbations_per_eval": ppe,
                    "evals_per_s": evals,
                    "forwards_per_s": fwd,
                    "ratio": evals / fwd,
                    **_peak(device),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def big_layer_part(
    device: str, ref_seconds: float, run_seconds: float, seeds: int
) -> Dict[str, Any]:
    ref = big_layer.reference(device, max_time=ref_seconds)
    print(json.dumps({k: v for k, v in ref.items() if k not in ("values", "stderr")}))
    # GPU settings: many chains walked together, 64 coalitions per pass
    runs = [
        big_layer.trajectory(
            ref["values"],
            run_seconds,
            seed,
            device,
            perturbations_per_eval=64,
            sampler=PermutationSampler(chains_per_round=16),
        )
        for seed in range(seeds)
    ]
    return {
        "reference": {
            **{k: v for k, v in ref.items() if k not in ("values", "stderr")},
            "values": ref["values"].tolist(),
            "stderr": ref["stderr"].tolist(),
        },
        "runs": runs,
    }


def main(argv: Any = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="device_out")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    p.add_argument(
        "--parts",
        nargs="*",
        default=["throughput", "inception", "transformer", "big_layer"],
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    report: Dict[str, Any] = {
        "command": "python -m comparisons device",
        "environment": Environment.capture(args.device).to_dict(),
    }
    started = time.perf_counter()

    def save() -> None:
        report["wall_s"] = time.perf_counter() - started
        (out / "device.json").write_text(json.dumps(report, indent=1))

    if "throughput" in args.parts:
        ppes = [1, 4] if q else [1, 2, 4, 8, 16, 32, 64]
        report["throughput"] = throughput(args.device, 1.0 if q else 2.0, ppes)
        save()
    if "inception" in args.parts:
        report["inception"] = inception(args.device, 1.0 if q else 4.0, 4 if q else 128)
        save()
    if "transformer" in args.parts:
        report["transformer"] = transformer(
            args.device, 1.0 if q else 3.0, 4 if q else 64, q
        )
        save()
    if "big_layer" in args.parts:
        report["big_layer"] = big_layer_part(
            args.device, 20.0 if q else 180.0, 10.0 if q else 40.0, 1 if q else 3
        )
        save()
    save()


if __name__ == "__main__":
    main()
