r"""Figures of Neuron Shapley results (matplotlib; saliency maps are drawn with
:mod:`captum.attr.visualization`).

Every function returns the :class:`matplotlib.figure.Figure` and saves it when
``save_path`` is given.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn, Tensor

from ._inputs import resolve_layer
from .result import ShapleyResult

__all__ = [
    "plot_layer_distribution",
    "plot_values",
    "plot_removal_curves",
    "top_activating",
    "unit_saliency",
    "plot_unit_exemplars",
    "plot_unit_saliency",
    "feature_visualization",
    "plot_feature_visualization",
]


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, save_path: Optional[str]) -> Any:
    fig.tight_layout()
    if save_path is not None:
        fig.savefig(save_path, dpi=120, bbox_inches="tight")
    return fig


def plot_layer_distribution(
    result: ShapleyResult, k: int = 10, save_path: Optional[str] = None
) -> Any:
    r"""Where the top-``k`` units sit: count per layer, next to the layer's size.

    Args:
        result (ShapleyResult): A finished run.
        k (int): How many top units. Default: 10.
        save_path (str, optional): Save the figure there.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_layer_distribution(res, k=10, save_path="layers.png")
    """
    plt = _pyplot()
    top = result.top_units(k)
    names = [lay.name for lay in result.layers]
    counts = [sum(1 for n, _, _ in top if n == name) for name in names]
    sizes = [lay.n_units for lay in result.layers]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 2), 3.4))
    x = np.arange(len(names))
    bars = ax.bar(x, counts, color="tab:red", label=f"top-{len(top)} units")
    for b, c, s in zip(bars, counts, sizes):
        ax.annotate(
            f"{c} of {s}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(x)
    many = len(names) > 6
    ax.set_xticklabels(
        names, rotation=30 if many else 0, ha="right" if many else "center"
    )
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("units in the top-k")
    ax.set_ylim(0, max(counts + [1]) * 1.25)
    ax.set_title(f"Top-{len(top)} units by layer")
    return _finish(fig, save_path)


def plot_values(
    result: ShapleyResult,
    k: Optional[int] = 30,
    save_path: Optional[str] = None,
) -> Any:
    r"""Sorted Shapley values with their confidence intervals
    (``result.lower`` / ``result.upper``).

    Args:
        result (ShapleyResult): A finished run.
        k (int, optional): Show the ``k`` highest and the ``k`` lowest units
            (all when None or when there are fewer than ``2 k``). Default: 30.
        save_path (str, optional): Save the figure there.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_values(res, k=20)
    """
    plt = _pyplot()
    vals = result.flat_values.double()
    rad = result.flat_radius.double()
    order = torch.argsort(vals, descending=True)
    if k is not None and 2 * k < len(order):
        order = torch.cat([order[:k], order[-k:]])
    labels = ["{}[{}]".format(*result.unit(int(i))) for i in order]
    v, r = vals[order].numpy(), rad[order].numpy()
    se = result.flat_stderr.double()[order].numpy()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(order) + 1.5), 3.8))
    x = np.arange(len(order))
    colors = np.where(v >= 0, "tab:blue", "tab:orange")
    ax.bar(x, v, color=colors, alpha=0.8)
    ok = np.isfinite(r)
    if ok.any():
        ax.errorbar(
            x[ok],
            v[ok],
            yerr=r[ok],
            fmt="none",
            ecolor="black",
            elinewidth=0.8,
            capsize=2,
            label=f"{result.bound} interval",
        )
    fb = ~ok & np.isfinite(se)
    if fb.any():  # unbounded interval (e.g. fewer than min_samples): show 1.96 se
        ax.errorbar(
            x[fb],
            v[fb],
            yerr=1.96 * se[fb],
            fmt="none",
            ecolor="tab:gray",
            elinewidth=0.8,
            capsize=2,
            ls=":",
            label="±1.96 s.e. (interval not yet finite)",
        )
    if ok.any() or fb.any():
        ax.legend(fontsize=8)
    ax.axhline(0, color="gray", lw=0.8)
    if k is not None and 2 * k < result.n_units:
        ax.axvline(k - 0.5, color="gray", ls=":", lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel("Shapley value")
    ax.set_title(
        f"Sorted values with {result.bound} confidence intervals "
        f"({result.n_evaluations} evaluations)"
    )
    return _finish(fig, save_path)


def plot_removal_curves(
    curves: Dict[str, Tensor],
    metric_name: str = "accuracy",
    save_path: Optional[str] = None,
) -> Any:
    r"""Metric after removing the top-k, bottom-k and random k units.

    Args:
        curves (dict): As returned by
            :func:`captum_neuron_shapley.ablation.removal_curves` (``"ks"``,
            ``"top"``, ``"bottom"``, ``"random_mean"``, ``"random_std"``); other
            keys with ``(len(ks),)`` tensors are drawn as extra lines.
        metric_name (str): y-axis label. Default: ``"accuracy"``.
        save_path (str, optional): Save the figure there.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_removal_curves(removal_curves(model, res, x_test, y_test))
    """
    plt = _pyplot()
    ks = np.asarray(curves["ks"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {
        "top": ("tab:red", "top-k (highest value)"),
        "bottom": ("tab:green", "bottom-k (lowest value)"),
    }
    for key, (color, label) in styles.items():
        if key in curves:
            ax.plot(ks, np.asarray(curves[key]), "o-", color=color, label=label)
    if "random_mean" in curves:
        mean = np.asarray(curves["random_mean"])
        std = np.asarray(curves.get("random_std", np.zeros_like(mean)))
        n = len(curves["random"]) if "random" in curves else 1
        ax.plot(ks, mean, "s--", color="tab:gray", label=f"random ({n} seeds)")
        ax.fill_between(ks, mean - std, mean + std, color="tab:gray", alpha=0.25)
    skip = {"ks", "top", "bottom", "random", "random_mean", "random_std"}
    for key, val in curves.items():
        if key not in skip:
            ax.plot(ks, np.asarray(val), "^-", label=key)
    ax.set_xlabel("units removed (k)")
    ax.set_ylabel(metric_name)
    ax.set_title("Removal curves (held-out data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, save_path)


def _channel_activation(
    model: nn.Module, layer: nn.Module, channel: int, inputs: Tensor
) -> Tensor:
    acts: List[Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
        for m, f in flags:
            m.training = f
    out = acts[0]
    if out.dim() < 2 or not 0 <= channel < out.shape[1]:
        raise ValueError(
            f"`channel` {channel} is out of range for a layer output of shape "
            f"{tuple(out.shape)}"
        )
    return out[:, channel].flatten(1).mean(1)


def top_activating(
    model: nn.Module,
    layer: Union[nn.Module, str],
    channel: int,
    inputs: Tensor,
    n: int = 8,
) -> Tuple[Tensor, Tensor]:
    r"""Indices of the ``n`` inputs with the highest mean activation of a channel,
    and those activations.

    Args:
        model (nn.Module): The model.
        layer (nn.Module or str): The layer, or its qualified name in
            ``model`` (as in ``model.named_modules()``).
        channel (int): The channel (filter) of the layer output.
        inputs (Tensor): Candidate images.
        n (int): How many. Default: 8.

    Returns:
        (Tensor, Tensor): indices into ``inputs`` and mean activations.

    Examples::

        >>> idx, act = top_activating(model, model.conv3, 40, x_val)
    """
    layer = resolve_layer(model, layer)
    act = _channel_activation(model, layer, channel, inputs)
    top = torch.argsort(act, descending=True)[: min(n, len(act))]
    return top, act[top]


def unit_saliency(
    model: nn.Module,
    layer: Union[nn.Module, str],
    channel: int,
    inputs: Tensor,
    method: str = "guided_backprop",
) -> Tensor:
    r"""Saliency of one channel (the sum of its activations) with respect to the
    inputs, by Captum's ``NeuronGuidedBackprop`` or ``NeuronGradient``.

    Args:
        model (nn.Module): The model.
        layer (nn.Module or str): The layer, or its qualified name in
            ``model`` (as in ``model.named_modules()``).
        channel (int): The channel.
        inputs (Tensor): Images ``(N, C, H, W)``.
        method (str): ``"guided_backprop"`` or ``"gradient"``.

    Returns:
        Tensor: attributions shaped like ``inputs``.

    Examples::

        >>> sal = unit_saliency(model, model.conv3, 40, x_val[:4])
    """
    layer = resolve_layer(model, layer)
    from captum.attr import NeuronGradient, NeuronGuidedBackprop

    cls = {"guided_backprop": NeuronGuidedBackprop, "gradient": NeuronGradient}
    if method not in cls:
        raise ValueError(f"`method` must be one of {sorted(cls)}, got {method!r}")
    selector: Callable[[Tensor], Tensor] = lambda out: out[:, channel].flatten(1).sum(1)
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        attr = cls[method](model, layer).attribute(
            inputs.clone().requires_grad_(True), neuron_selector=selector
        )
    finally:
        for m, f in flags:
            m.training = f
    return attr.detach()


def _hwc(t: Tensor) -> np.ndarray:
    return t.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)


def plot_unit_exemplars(
    model: nn.Module,
    layer: Union[nn.Module, str],
    channel: int,
    inputs: Tensor,
    n: int = 6,
    method: str = "guided_backprop",
    title: Optional[str] = None,
    save_path: Optional[str] = None,
) -> Any:
    r"""The dataset images that excite a channel most (top row) and the channel's
    saliency map on each (bottom row, Captum's ``visualize_image_attr``).

    Args:
        model (nn.Module): The model.
        layer (nn.Module or str): The layer, or its qualified name in
            ``model`` (as in ``model.named_modules()``).
        channel (int): The channel (filter).
        inputs (Tensor): Candidate images ``(N, C, H, W)`` in ``[0, 1]``.
        n (int): Exemplars. Default: 6.
        method (str): ``"guided_backprop"`` or ``"gradient"``.
        title (str, optional): Figure title.
        save_path (str, optional): Save the figure there.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_unit_exemplars(model, model.conv3, 40, x_val)
    """
    layer = resolve_layer(model, layer)
    from captum.attr import visualization as viz

    plt = _pyplot()
    idx, act = top_activating(model, layer, channel, inputs, n)
    sal = unit_saliency(model, layer, channel, inputs[idx], method)
    fig, axes = plt.subplots(2, len(idx), figsize=(1.7 * len(idx) + 0.4, 3.9))
    axes = np.asarray(axes).reshape(2, -1)
    for j, i in enumerate(idx.tolist()):
        img = _hwc(inputs[i])
        ax = axes[0, j]
        ax.imshow(
            img.squeeze(-1) if img.shape[-1] == 1 else img,
            cmap="gray",
            interpolation="nearest",
        )
        ax.set_title(f"#{i}\nact {float(act[j]):.2f}", fontsize=8)
        ax.axis("off")
        attr = _hwc(sal[j])
        if not np.any(attr):  # Captum cannot normalise an all-zero map
            axes[1, j].imshow(np.zeros(attr.shape[:2]), cmap="Blues", vmin=0, vmax=1)
            axes[1, j].set_title("zero saliency", fontsize=8)
            axes[1, j].set_xticks([])
            axes[1, j].set_yticks([])
            continue
        viz.visualize_image_attr(
            attr,
            img,
            method="heat_map",
            sign="absolute_value",
            plt_fig_axis=(fig, axes[1, j]),
            use_pyplot=False,
        )
    axes[1, 0].set_ylabel(method)
    fig.suptitle(
        title
        or f"{_name(model, layer)}[{channel}]: top images and "
        f"{method.replace('_', ' ')} saliency",
        fontsize=10,
    )
    return _finish(fig, save_path)


def plot_unit_saliency(
    model: nn.Module,
    layer: Union[nn.Module, str],
    channel: int,
    image: Tensor,
    method: str = "guided_backprop",
    save_path: Optional[str] = None,
) -> Any:
    r"""One image and the channel's saliency on it, drawn with Captum's
    ``visualize_image_attr_multiple`` (original, heat map, blended).

    Args:
        model (nn.Module): The model.
        layer (nn.Module or str): The layer, or its qualified name in
            ``model`` (as in ``model.named_modules()``).
        channel (int): The channel.
        image (Tensor): One image ``(C, H, W)`` in ``[0, 1]``.
        method (str): ``"guided_backprop"`` or ``"gradient"``.
        save_path (str, optional): Save the figure there.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_unit_saliency(model, model.conv3, 40, x_val[0])
    """
    layer = resolve_layer(model, layer)
    from captum.attr import visualization as viz

    sal = unit_saliency(model, layer, channel, image.unsqueeze(0), method)[0]
    if not bool(sal.any()):
        raise ValueError(
            f"the {method} saliency of channel {channel} is zero everywhere on this "
            "`image` (the unit does not respond to it); pick an image that excites "
            "it (top_activating) or method='gradient'"
        )
    img = _hwc(image)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)  # so "original_image" draws in gray
    fig, _ = viz.visualize_image_attr_multiple(
        _hwc(sal),
        img,
        methods=["original_image", "heat_map", "blended_heat_map"],
        signs=["all", "absolute_value", "absolute_value"],
        titles=["image", f"|{method}|", "blended"],
        fig_size=(8, 3),
        use_pyplot=False,
    )
    return _finish(fig, save_path)


def _name(model: nn.Module, layer: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is layer:
            return n
    return type(layer).__name__


def feature_visualization(
    model: nn.Module,
    layer: Union[nn.Module, str],
    channel: int,
    input_shape: Sequence[int],
    steps: int = 128,
    lr: float = 0.05,
    jitter: int = 1,
    decay: float = 1.0,
    l2: float = 0.02,
    seed: int = 0,
) -> Tensor:
    r"""Activation maximization of one channel (Olah et al. 2017): optimize an
    image in a decorrelated Fourier parameterization (frequencies scaled by
    ``1 / f**decay``, which acts as a frequency penalty) under random jitter
    (transformation robustness), squashed to ``[0, 1]`` by a sigmoid.

    The model's weights, gradients and modes are left as they were.

    Args:
        model (nn.Module): The model.
        layer (nn.Module or str): The layer, or its qualified name in
            ``model`` (as in ``model.named_modules()``).
        channel (int): The channel to excite.
        input_shape (sequence of int): ``(C, H, W)`` of one input.
        steps (int): Adam steps. Default: 128.
        lr (float): Learning rate. Default: 0.05.
        jitter (int): Maximum random shift in pixels per step. Default: 1.
        decay (float): Spectrum decay exponent. Default: 1.
        l2 (float): Weight of a penalty on the image's distance from mid-gray,
            which keeps it from saturating. Default: 0.02.
        seed (int): Seed of a private generator.

    Returns:
        Tensor: the image ``(C, H, W)`` in ``[0, 1]``.

    Examples::

        >>> img = feature_visualization(model, model.conv3, 40, (1, 8, 8))
    """
    layer = resolve_layer(model, layer)
    c, h, w = (int(s) for s in input_shape)
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    scale = 1.0 / torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / max(h, w)) ** decay
    device = next(iter(model.parameters()), torch.zeros(())).device
    spec = (0.01 * torch.randn(c, h, w // 2 + 1, 2, generator=gen)).to(device)
    spec.requires_grad_(True)
    scale = scale.to(device)
    opt = torch.optim.Adam([spec], lr=lr)
    store: List[Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: store.append(o))
    flags = [(m, m.training) for m in model.modules()]
    req = [(p, p.requires_grad) for p in model.parameters()]

    def image() -> Tensor:
        z = torch.view_as_complex(spec) * scale
        return torch.sigmoid(torch.fft.irfft2(z, s=(h, w), norm="ortho"))

    try:
        model.eval()
        for p, _ in req:
            p.requires_grad_(False)
        for _ in range(steps):
            dy, dx = (
                int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen)
            )
            img = image()
            x = torch.roll(img, shifts=(dy, dx), dims=(1, 2)).unsqueeze(0)
            store.clear()
            model(x)
            if not store or store[0].dim() < 2 or channel >= store[0].shape[1]:
                raise ValueError(f"`channel` {channel} is not a channel of the layer")
            loss = -store[0][0, channel].mean() + l2 * ((img - 0.5) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        handle.remove()
        for m, f in flags:
            m.training = f
        for p, r in req:
            p.requires_grad_(r)
    return image().detach()


def plot_feature_visualization(
    model: nn.Module,
    units: Sequence[Tuple[Any, ...]],
    input_shape: Sequence[int],
    steps: int = 128,
    titles: Optional[Sequence[str]] = None,
    save_path: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    r"""Feature-visualization images of several channels side by side.

    Args:
        model (nn.Module): The model.
        units (sequence of tuples): ``(layer, channel)`` pairs, the layer as a
            module or by its qualified name, or the ``(layer name, unit,
            value)`` triples of :meth:`ShapleyResult.top_units`.
        input_shape (sequence of int): ``(C, H, W)`` of one input.
        steps (int): Optimization steps per image. Default: 128.
        titles (sequence of str, optional): One per unit.
        save_path (str, optional): Save the figure there.
        **kwargs: Passed to :func:`feature_visualization`.

    Returns:
        matplotlib.figure.Figure

    Examples::

        >>> fig = plot_feature_visualization(model, [(model.conv3, 40)], (1, 8, 8))
    """
    plt = _pyplot()
    n = len(units)
    if n == 0:
        raise ValueError("`units` must name at least one (layer, channel)")
    pairs = []
    for u in units:
        if not isinstance(u, (tuple, list)) or len(u) not in (2, 3):
            raise ValueError(
                "`units` entries must be (layer, channel) pairs or the (layer name, "
                f"unit, value) triples of top_units(), got {u!r}"
            )
        pairs.append((resolve_layer(model, u[0], "units"), int(u[1])))
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 0.3, 2.1 * rows + 0.3))
    axes = np.asarray(axes).reshape(-1)
    for j, (layer, ch) in enumerate(pairs):
        img = _hwc(
            feature_visualization(model, layer, ch, input_shape, steps, **kwargs)
        )
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
        axes[j].imshow(
            img.squeeze(-1) if img.shape[-1] == 1 else img,
            cmap="gray",
            interpolation="nearest",
        )
        axes[j].set_title(
            titles[j] if titles else f"{_name(model, layer)}[{ch}]", fontsize=9
        )
    for ax in axes:
        ax.axis("off")
    fig.suptitle(
        "Feature visualization (activation maximization, contrast stretched)",
        fontsize=10,
    )
    return _finish(fig, save_path)
