r"""What the report runs on: the embedded default (the digits CNN and its
splits), or a user's torchvision model, weights file and ``ImageFolder`` data.
Nothing is downloaded; problems with the user's files raise :class:`SetupError`
with a message that says what to fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn, Tensor

__all__ = [
    "SetupError",
    "Setup",
    "digits_setup",
    "user_setup",
    "resolve_layers",
    "write_digits_imagefolder",
]


class SetupError(ValueError):
    r"""A problem with the user's model, weights, data or layer names."""


@dataclass
class Setup:
    r"""A model, the layers whose units are ranked, and validation / test data."""

    model: nn.Module
    layers: List[nn.Module]
    layer_names: List[str]
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: List[str]
    description: str


def resolve_layers(model: nn.Module, spec: Optional[str]) -> Tuple[List[str], list]:
    r"""Layer names and modules from ``spec``: ``None`` or ``"all-conv"`` (every
    ``nn.Conv2d``), or comma-separated qualified names.

    Raises:
        SetupError: for an unknown name, or a model without conv layers.
    """
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if spec is None or spec.strip() == "all-conv":
        if not convs:
            raise SetupError("the model has no nn.Conv2d layers; pass --layers names")
        return convs, [modules[n] for n in convs]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise SetupError("--layers is empty")
    for n in names:
        if n not in modules or n == "":
            hint = ", ".join(convs[:12]) + (" ..." if len(convs) > 12 else "")
            raise SetupError(
                f"--layers: the model has no layer named {n!r}. Conv layers: {hint}"
            )
    return names, [modules[n] for n in names]


def digits_setup(layers: Optional[str] = None, device: str = "cpu") -> Setup:
    r"""The embedded default: :func:`trained_digits_cnn` (160 conv filters) and
    :func:`load_digits_splits` (validation 397, test 400 digits)."""
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    data = load_digits_splits()
    model = trained_digits_cnn().to(device).eval()
    names, mods = resolve_layers(model, layers)
    return Setup(
        model,
        mods,
        names,
        data.x_val.to(device),
        data.y_val.to(device),
        data.x_test.to(device),
        data.y_test.to(device),
        [str(i) for i in range(10)],
        "digits CNN (scikit-learn digits, embedded)",
    )


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file clearly
        raise SetupError(
            f"--weights {path}: cannot read a state dict ({type(e).__name__}: {e})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SetupError(f"--weights {path}: expected a state dict, got {type(state)}")
    return state


def _load_images(
    root: Path, image_size: int, max_images: int, seed: int
) -> Tuple[Tensor, Tensor, List[str]]:
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    try:
        ds = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise SetupError(f"--data {root}: not an ImageFolder directory ({e})") from None
    if len(ds) < 4:
        raise SetupError(f"--data {root}: {len(ds)} images; need at least 4")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:max_images].tolist()
    xs, ys = zip(*(ds[i] for i in idx))
    return torch.stack(xs), torch.tensor(ys), list(ds.classes)


def user_setup(
    arch: str,
    weights: Optional[str],
    data: Optional[str],
    layers: Optional[str] = None,
    device: str = "cpu",
    image_size: int = 224,
    max_images: int = 1000,
    seed: int = 0,
) -> Setup:
    r"""A torchvision architecture (built with ``weights=None``, so nothing is
    downloaded) with the user's weights, and an ``ImageFolder`` split in half
    into validation and test data.

    Raises:
        SetupError: for a missing file, an unknown architecture or layer, or
        weights whose number of outputs differs from the number of classes.
    """
    import torchvision

    if weights is None:
        raise SetupError("--arch needs --weights (a state dict file of that model)")
    if data is None:
        raise SetupError("--arch needs --data (an ImageFolder directory)")
    wpath, dpath = Path(weights), Path(data)
    if not wpath.is_file():
        raise SetupError(f"--weights {wpath}: no such file")
    if not dpath.is_dir():
        raise SetupError(f"--data {dpath}: no such directory")
    if arch not in torchvision.models.list_models():
        raise SetupError(
            f"--arch {arch!r} is not a torchvision architecture (see "
            "torchvision.models.list_models())"
        )
    x, y, classes = _load_images(dpath, image_size, max_images, seed)
    state = _load_state(wpath)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(classes))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise SetupError(
            f"--weights {wpath} do not fit {arch} with {len(classes)} outputs, one per "
            f"class of --data ({len(classes)} classes: {', '.join(classes[:10])}). "
            f"Does the dataset have the classes the model was trained on? ({detail})"
        ) from None
    model = model.to(device).eval()
    with torch.no_grad():
        out = model(x[:1].to(device))
    if out.dim() != 2 or out.shape[1] != len(classes):
        raise SetupError(
            f"the model returns outputs of shape {tuple(out.shape)}; --data has "
            f"{len(classes)} classes"
        )
    names, mods = resolve_layers(model, layers)
    half = len(y) // 2
    return Setup(
        model,
        mods,
        names,
        x[:half].to(device),
        y[:half].to(device),
        x[half:].to(device),
        y[half:].to(device),
        classes,
        f"{arch} with {wpath.name} on {dpath} ({len(y)} images)",
    )


def check_classes(setup: Setup, classes: Sequence[int]) -> None:
    r"""Every class index must exist and have validation and test examples."""
    for c in classes:
        if not 0 <= c < len(setup.classes):
            raise SetupError(f"class {c} out of range (0..{len(setup.classes) - 1})")
        if not bool((setup.y_val == c).any()) or not bool((setup.y_test == c).any()):
            raise SetupError(f"class {c} has no validation or no test examples")


def write_digits_imagefolder(
    root: "Path | str",
    classes: Sequence[int] = (0, 1, 2, 3),
    per_class: int = 60,
    size: int = 64,
) -> Path:
    r"""Write scikit-learn's digits as an ``ImageFolder`` of RGB PNG files
    (``root/<digit>/<i>.png``, upsampled to ``size`` x ``size``): real images,
    made offline, to try the bring-your-own-model path (``--arch``, ``--data``)
    without a dataset of one's own.

    Args:
        root (Path or str): Folder to write into (created).
        classes (sequence of int): Digits to include, one folder each.
        per_class (int): Images per digit (at most about 180).
        size (int): Side of the written images in pixels.

    Returns:
        Path: ``root``.

    Examples::

        >>> write_digits_imagefolder("/tmp/digits_images")
        >>> # python -m comparisons --quick --arch resnet18 --weights w.pt \\
        >>> #     --data /tmp/digits_images --layers layer4.0.conv2,layer4.1.conv2
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if per_class < 1 or size < 1:
        raise ValueError(
            f"`per_class` and `size` must be positive, got {per_class}, {size}"
        )
    data = load_digits()
    root = Path(root)
    for c in classes:
        imgs = data.images[data.target == int(c)][:per_class]
        if len(imgs) == 0:
            raise ValueError(f"`classes`: no digit {c!r}")
        folder = root / str(int(c))
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            a = (img * (255.0 / 16.0)).clip(0, 255).astype("uint8")
            Image.fromarray(a, mode="L").convert("RGB").resize(
                (size, size), Image.Resampling.BILINEAR
            ).save(folder / f"{i}.png")
    return root
