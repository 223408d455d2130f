r"""The case studies' models and data (:func:`load`): the digits ResNet, the
same ResNet trained with bold digits under-represented (fairness), and the
digits CNN (the transfer attack's source), all trained once and cached, on the
embedded digits; and each model's weights :func:`fingerprint`, so that a
report's numbers can be traced to the weights they belong to."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch
from torch import nn, Tensor

from .options import AppOptions

__all__ = ["CaseData", "Context", "load", "fingerprint"]


@dataclass
class CaseData:
    r"""Models and splits of the case studies."""

    model: nn.Module
    layers: List[nn.Module]
    bold_model: nn.Module
    bold_layers: List[nn.Module]
    transfer_source: nn.Module
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    bold: Any  # captum_neuron_shapley.examples.BoldSplits


@dataclass
class Context:
    r"""What every case shares: the options, the log and the data."""

    opts: AppOptions
    log: Callable[[str], None]
    data: CaseData


def fingerprint(model: nn.Module) -> str:
    r"""SHA-256 (first 16 hex digits) of the model's state dict: which weights a
    report's numbers belong to."""
    h = hashlib.sha256()
    for key, val in model.state_dict().items():
        h.update(key.encode())
        h.update(val.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cut_paired(b: Any, nv: Optional[int], nt: Optional[int]) -> Any:
    r"""The first ``nv`` / ``nt`` digits of the bold splits, keeping the pairing
    (first the digits as written, then the same digits bold)."""

    def cut(x, y, g, n):
        if not n:
            return x, y, g
        half = len(y) // 2
        idx = torch.cat([torch.arange(n), half + torch.arange(n)])
        return x[idx], y[idx], g[idx]

    xv, yv, gv = cut(b.x_val, b.y_val, b.g_val, nv)
    xt, yt, gt = cut(b.x_test, b.y_test, b.g_test, nt)
    return dataclasses.replace(
        b, x_val=xv, y_val=yv, g_val=gv, x_test=xt, y_test=yt, g_test=gt
    )


def load(opts: AppOptions) -> CaseData:
    r"""The models (trained once, then cached) and the splits."""
    from captum_neuron_shapley.examples import (
        bold_minority_splits,
        load_digits_splits,
        trained_digits_cnn,
        trained_digits_resnet,
    )

    s = load_digits_splits()
    b = bold_minority_splits(opts.bold_fraction)
    nv, nt = opts.max_val, opts.max_test
    if nv or nt:
        b = _cut_paired(b, nv, nt)
    model = trained_digits_resnet()
    bold_model = trained_digits_resnet(bold_fraction=opts.bold_fraction)
    return CaseData(
        model=model,
        layers=model.conv_layers,
        bold_model=bold_model,
        bold_layers=bold_model.conv_layers,
        transfer_source=trained_digits_cnn(),
        x_val=s.x_val[:nv],
        y_val=s.y_val[:nv],
        x_test=s.x_test[:nt],
        y_test=s.y_test[:nt],
        bold=b,
    )
