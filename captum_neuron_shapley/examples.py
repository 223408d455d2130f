r"""The embedded default: scikit-learn's handwritten digits and a small CNN
trained on them. Nothing is downloaded.

For the paper's applications there is also a larger model,
:class:`DigitsResNet` (a residual CNN with batch norm, 336 conv filters), trained
either on the plain digits or on digits among which a recognisable subgroup,
digits written with a thick marker (:func:`render_bold`), is under-represented
(:func:`bold_minority_splits`).

The trained weights of the default models (seed 0: :func:`trained_digits_cnn`,
:func:`trained_digits_resnet` and ``trained_digits_resnet(bold_fraction=0.01)``)
ship with the package, so every machine loads the same models and the documented
numbers can be checked anywhere. Other seeds or fractions are trained on first
use (a message is logged to the ``captum_neuron_shapley`` logger) and cached on
disk; :func:`train_digits_cnn` and :func:`train_digits_resnet` retrain from
scratch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn, Tensor

__all__ = [
    "DigitsSplits",
    "load_digits_splits",
    "DigitsCNN",
    "trained_digits_cnn",
    "SubgroupSplits",
    "render_bold",
    "bold_minority_splits",
    "DigitsResNet",
    "train_digits_resnet",
    "trained_digits_resnet",
    "train_digits_cnn",
    "shipped_weights",
]

CACHE_ENV = "CAPTUM_NEURON_SHAPLEY_CACHE"
_VERSION = 1
#: Where the shipped weights live (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

logger = logging.getLogger(__name__)


@dataclass
class DigitsSplits:
    r"""Train / validation / test splits of the digits (8 x 8 images).

    The validation split is where Shapley values are estimated; the test split is
    held out for removal checks.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_splits(
    n_train: int = 1000, n_val: int = 397, seed: int = 0
) -> DigitsSplits:
    r"""Load scikit-learn's 1,797 digits as float tensors ``(N, 1, 8, 8)`` in
    ``[0, 1]`` and split them at random (fixed by ``seed``)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, va, te = (
        perm[:n_train],
        perm[n_train : n_train + n_val],
        perm[n_train + n_val :],
    )
    return DigitsSplits(x[tr], y[tr], x[va], y[va], x[te], y[te])


class DigitsCNN(nn.Module):
    r"""Four 3 x 3 conv layers (16, 32, 48 and 64 filters: 160 in all) on 8 x 8
    digits, and a linear head. About 0.4 million multiply-adds per image, so that
    thousands of coalitions can be evaluated per minute on a laptop CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 48, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(48, 64, 3, padding=1)
        self.relu4 = nn.ReLU()
        self.fc = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        x = self.pool3(self.relu3(self.conv3(x)))
        x = self.relu4(self.conv4(x))
        return self.fc(x.flatten(1))

    @property
    def conv_layers(self) -> List[nn.Module]:
        return [self.conv1, self.conv2, self.conv3, self.conv4]


def _cache_dir(cache_dir: Optional[Union[str, Path]]) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "captum_neuron_shapley"


def shipped_weights(name: str) -> Optional[Path]:
    r"""The path of a state dict that ships with the package, or None.

    Args:
        name (str): ``"digits_cnn_seed0"``, ``"digits_resnet_seed0"`` or
            ``"digits_resnet_bold0.01_seed0"``.

    Returns:
        Path or None: The file, if the package holds it.
    """
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def _load_or_train(
    model: nn.Module,
    name: str,
    cache_dir: Optional[Union[str, Path]],
    train: Callable[[], nn.Module],
    what: str,
    duration: str,
) -> nn.Module:
    r"""Load ``name``'s weights into ``model``: the shipped file if there is
    one, else the cached file; else train (with a logged message) and cache."""
    path = shipped_weights(name)
    if path is None:
        stem = name.replace("_seed", f"_v{_VERSION}_seed")  # as cached before
        path = _cache_dir(cache_dir) / f"{stem}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()
    logger.warning(
        "no shipped or cached weights for %s: training it now (%s); "
        "it is then cached in %s",
        what,
        duration,
        path.parent,
    )
    trained = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(trained.state_dict(), tmp)
    os.replace(tmp, path)
    return trained


def train_digits_cnn(
    splits: DigitsSplits, epochs: int = 20, seed: int = 0, lr: float = 3e-3
) -> DigitsCNN:
    r"""Train :class:`DigitsCNN` on the training split: Adam, batches of 64.
    Deterministic on a given machine (the global RNG state is left as it was);
    other CPUs may round differently, which is why the default weights ship with
    the package.

    Args:
        splits (DigitsSplits): Its ``x_train`` and ``y_train`` are used.
        epochs (int, optional): Passes over the data. Default: 20
        seed (int, optional): Seed of the weights and the batch order. Default: 0
        lr (float, optional): Learning rate. Default: 3e-3

    Returns:
        DigitsCNN: In eval mode, without gradients.

    Examples::

        >>> model = train_digits_cnn(load_digits_splits(), seed=1)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n = len(splits.y_train)
        for _ in range(epochs):
            for idx in torch.randperm(n).split(64):
                opt.zero_grad()
                loss = F.cross_entropy(model(splits.x_train[idx]), splits.y_train[idx])
                loss.backward()
                opt.step()
    model.zero_grad(set_to_none=True)  # hand over a model like a loaded one
    return model.eval()


def trained_digits_cnn(
    cache_dir: Optional[Union[str, Path]] = None, seed: int = 0
) -> DigitsCNN:
    r"""The embedded default model, :class:`DigitsCNN` trained on the training
    split of :func:`load_digits_splits`.

    Seed 0 ships with the package: it is loaded, never trained. Another seed is
    trained on first use (a few seconds on a CPU; a message is logged to the
    ``captum_neuron_shapley`` logger) and then loaded from ``cache_dir``.

    Args:
        cache_dir (str or Path, optional): Where weights trained here are
            cached. Default: ``$CAPTUM_NEURON_SHAPLEY_CACHE`` or
            ``~/.cache/captum_neuron_shapley``
        seed (int, optional): Seed of the training run. Default: 0

    Returns:
        DigitsCNN: In eval mode.

    Examples::

        >>> model = trained_digits_cnn()
        >>> fs = FilterShapley(model, model.conv_layers)
    """
    with torch.random.fork_rng(devices=[]):  # initial weights, then overwritten
        model = DigitsCNN()
    return cast(
        DigitsCNN,
        _load_or_train(
            model,
            f"digits_cnn_seed{seed}",
            cache_dir,
            lambda: train_digits_cnn(load_digits_splits(), seed=seed),
            f"DigitsCNN (seed {seed})",
            "a few seconds",
        ),
    )


# -- a larger model and an under-represented subgroup for the applications -------


def render_bold(images: Tensor) -> Tensor:
    r"""The same digits written with a thicker marker: every stroke grows by one
    pixel (a 2 x 2 maximum filter, i.e. a grey-scale dilation), so the digits stay
    legible but carry more ink.

    Args:
        images (Tensor): ``(N, 1, H, W)`` images in ``[0, 1]``.

    Returns:
        Tensor: The bold rendering, same shape and range.

    Examples::

        >>> s = load_digits_splits()
        >>> bold = render_bold(s.x_test)
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(
            "`images` must be a (N, C, H, W) tensor, got "
            + (
                f"shape {tuple(images.shape)}"
                if isinstance(images, Tensor)
                else type(images).__name__
            )
        )
    return F.max_pool2d(F.pad(images, (0, 1, 0, 1)), 2, stride=1)


@dataclass
class SubgroupSplits(DigitsSplits):
    r""":class:`DigitsSplits` with a subgroup mask per split (``g_*``: True for
    members), from :func:`bold_minority_splits`."""

    g_train: Optional[Tensor] = None
    g_val: Optional[Tensor] = None
    g_test: Optional[Tensor] = None


def bold_minority_splits(fraction: float = 0.01, seed: int = 0) -> SubgroupSplits:
    r"""Digits among which the bold ones (:func:`render_bold`) are a minority in
    training and half of the evaluation data.

    Training: the training split of :func:`load_digits_splits` with a random
    ``fraction`` of its images (fixed by ``seed``) rendered bold. Validation and
    test: every digit twice, first as written, then rendered bold (``g_val`` /
    ``g_test`` mark the bold copies), so that the subgroup and the rest hold the
    same digits and differ only in the rendering.

    Args:
        fraction (float): Share of bold images in training, in ``[0, 1]``.
            Default: 0.01 (10 of 1,000).
        seed (int): Seed of the splits and of the choice of bold training images.

    Returns:
        SubgroupSplits: With the masks ``g_train``, ``g_val``, ``g_test``.

    Examples::

        >>> s = bold_minority_splits()
        >>> int(s.g_train.sum()), int(s.g_test.sum()), len(s.y_test)
        (10, 400, 800)
    """
    if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"`fraction` must lie in [0, 1], got {fraction!r}")
    base = load_digits_splits(seed=seed)
    n = len(base.y_train)
    g = torch.Generator().manual_seed(seed + 1)
    chosen = torch.randperm(n, generator=g)[: int(round(float(fraction) * n))]
    g_train = torch.zeros(n, dtype=torch.bool)
    g_train[chosen] = True
    x_train = base.x_train.clone()
    x_train[g_train] = render_bold(base.x_train[g_train])

    def paired(x: Tensor, y: Tensor):
        flag = torch.arange(2 * len(y)) >= len(y)
        return torch.cat([x, render_bold(x)]), torch.cat([y, y]), flag

    x_val, y_val, g_val = paired(base.x_val, base.y_val)
    x_test, y_test, g_test = paired(base.x_test, base.y_test)
    return SubgroupSplits(
        x_train, base.y_train, x_val, y_val, x_test, y_test, g_train, g_val, g_test
    )


class ResidualBlock(nn.Module):
    r"""Two 3 x 3 convolutions with batch norm and a shortcut (a 1 x 1
    convolution with batch norm when the shape changes), as in ResNet."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


class DigitsResNet(nn.Module):
    r"""A residual CNN with batch norm for 8 x 8 digits: a 3 x 3 stem and three
    residual blocks (widths 16, 32 and 64; the last two halve the resolution),
    global average pooling and a linear head. Nine conv layers with 336 filters
    in all (shortcut convolutions included), about 2 million multiply-adds per
    image: twice the filters of :class:`DigitsCNN` and five times its compute,
    still trained in about ten seconds on one CPU core. The convolutions keep
    their biases (although a batch norm follows), so that
    :func:`~captum_neuron_shapley.repair.export_repaired` can bake a removed
    filter's mean activation into its bias.

    Args:
        widths (tuple of int): Channels of the stem / first block, the second and
            the third block. Default: ``(16, 32, 64)``.
    """

    def __init__(self, widths: Tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        a, b, c = widths
        self.stem = nn.Conv2d(1, a, 3, 1, 1)
        self.bn = nn.BatchNorm2d(a)
        self.relu = nn.ReLU()
        self.block1 = ResidualBlock(a, a)
        self.block2 = ResidualBlock(a, b, 2)
        self.block3 = ResidualBlock(b, c, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(self.pool(x).flatten(1))

    @property
    def conv_layers(self) -> List[nn.Module]:
        r"""Every ``nn.Conv2d``, in the order of the forward pass (the players of
        the paper's experiments: every filter of every conv layer)."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]


def train_digits_resnet(
    x: Tensor, y: Tensor, epochs: int = 30, seed: int = 0, lr: float = 3e-3
) -> DigitsResNet:
    r"""Train :class:`DigitsResNet` on ``(x, y)``: Adam with weight decay 1e-4
    and a one-cycle learning-rate schedule, batches of 64. Deterministic: one CPU
    thread during training (restored after) and a private RNG stream (the global
    RNG state is left as it was).

    Args:
        x (Tensor): ``(N, 1, 8, 8)`` training images.
        y (Tensor): Their labels.
        epochs (int): Passes over the data. Default: 30.
        seed (int): Seed of the weights and the batch order.
        lr (float): Peak learning rate. Default: 3e-3.

    Returns:
        DigitsResNet: In eval mode, without gradients.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsResNet()
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
            n = len(y)
            steps = epochs * -(-n // 64)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
            model.train()
            for _ in range(epochs):
                for idx in torch.randperm(n).split(64):
                    opt.zero_grad()
                    F.cross_entropy(model(x[idx]), y[idx]).backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    model.zero_grad(set_to_none=True)
    return model.eval()


def trained_digits_resnet(
    cache_dir: Optional[Union[str, Path]] = None,
    seed: int = 0,
    bold_fraction: Optional[float] = None,
) -> DigitsResNet:
    r"""The applications' model, :class:`DigitsResNet`.

    Seed 0 ships with the package, trained on the plain digits and with
    ``bold_fraction=0.01``: those are loaded, never trained. Other seeds or
    fractions are trained on first use (about ten seconds on a CPU core; a
    message is logged to the ``captum_neuron_shapley`` logger) and then loaded
    from ``cache_dir``.

    Args:
        cache_dir (str or Path, optional): Where weights trained here are
            cached. Default: ``$CAPTUM_NEURON_SHAPLEY_CACHE`` or
            ``~/.cache/captum_neuron_shapley``
        seed (int, optional): Seed of the training run (the splits use seed 0).
            Default: 0
        bold_fraction (float, optional): None: trained on the plain training
            split of :func:`load_digits_splits`. A float: trained on the training
            split of :func:`bold_minority_splits` with this share of bold digits
            (the fairness application's model). Default: None

    Returns:
        DigitsResNet: In eval mode.

    Examples::

        >>> model = trained_digits_resnet()                    # plain digits
        >>> biased = trained_digits_resnet(bold_fraction=0.01)  # 1% bold digits
    """
    tag = "" if bold_fraction is None else f"_bold{float(bold_fraction):g}"
    with torch.random.fork_rng(devices=[]):  # the init draws: keep the global RNG
        model = DigitsResNet()

    def train() -> DigitsResNet:
        if bold_fraction is None:
            data: DigitsSplits = load_digits_splits()
        else:
            data = bold_minority_splits(bold_fraction)
        return train_digits_resnet(data.x_train, data.y_train, seed=seed)

    what = "DigitsResNet (seed {}{})".format(
        seed, "" if bold_fraction is None else f", bold_fraction={bold_fraction:g}"
    )
    return cast(
        DigitsResNet,
        _load_or_train(
            model,
            f"digits_resnet{tag}_seed{seed}",
            cache_dir,
            train,
            what,
            "about ten seconds",
        ),
    )
