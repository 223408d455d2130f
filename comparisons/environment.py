r"""Where a run ran: package versions, threads, device and platform, recorded in
every report (``report.md``, ``applications.md``, ``bench.md``, the coverage
table) so that its numbers can be traced to the software and machine that
produced them."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .text import plural

__all__ = ["Environment"]

#: Distributions whose versions every report records.
PACKAGES = ("torch", "torchvision", "captum", "captum-neuron-shapley")


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> Optional[str]:
    r"""The checkout's commit (short hash, ``+changes`` when the tree differs from
    it), or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


@dataclass
class Environment:
    r"""The software and machine of one run.

    Attributes:
        packages (dict): ``{distribution: version}`` for :data:`PACKAGES`
            (``captum-neuron-shapley`` is the version of the imported package).
        commit (str, optional): The checkout's git commit, when run from one.
        python (str): Python version.
        platform (str): ``platform.platform()``.
        processor (str): ``platform.processor()`` (may be empty).
        cpus (int): CPU cores the machine reports.
        threads (int): torch intra-op threads during the run.
        device (str): The torch device the model ran on.
        gpu (str, optional): The GPU's name when ``device`` is a CUDA device.

    Examples::

        >>> env = Environment.capture("cpu")
        >>> env.line()
        'torch 2.14.1, torchvision 0.29.1, captum 0.9.0, ... 1 thread on 2 CPUs, cpu'
    """

    packages: Dict[str, str] = field(default_factory=dict)
    commit: Optional[str] = None
    python: str = ""
    platform: str = ""
    processor: str = ""
    cpus: int = 0
    threads: int = 0
    device: str = ""
    gpu: Optional[str] = None

    @classmethod
    def capture(cls, device: Any = "cpu") -> "Environment":
        r"""The environment now (call it while the run's thread setting holds)."""
        import captum_neuron_shapley

        packages = {name: _version(name) or "not installed" for name in PACKAGES}
        packages["torch"] = torch.__version__
        packages["captum-neuron-shapley"] = captum_neuron_shapley.__version__
        dev = torch.device(device)
        gpu = None
        if dev.type == "cuda" and torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(dev)
        return cls(
            packages=packages,
            commit=_git_commit(),
            python=platform.python_version(),
            platform=platform.platform(),
            processor=platform.processor(),
            cpus=os.cpu_count() or 0,
            threads=torch.get_num_threads(),
            device=str(dev),
            gpu=gpu,
        )

    def line(self) -> str:
        r"""One line for a report's header (what is known of it)."""
        pkgs = ", ".join(f"{n} {v}" for n, v in self.packages.items() if v)
        parts = [pkgs + (f" (git {self.commit})" if self.commit else "")]
        if self.python:
            parts.append(f"Python {self.python}")
        machine = plural(self.threads, "thread") if self.threads else ""
        if self.cpus:
            machine += f" on {plural(self.cpus, 'CPU')}"
        if self.device:
            machine += (", " if machine else "") + f"device {self.device}"
            machine += f" ({self.gpu})" if self.gpu else ""
        parts.append(machine)
        if self.platform:
            parts.append(self.platform)
        return "; ".join(p for p in parts if p)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_legacy(cls, d: Mapping[str, Any]) -> "Environment":
        r"""What a summary written before environments were recorded says
        (``machine``, ``torch``, ``threads``, ``captum``, ``cpus``)."""
        packages = {k: d[k] for k in ("torch", "captum") if d.get(k)}
        return cls(
            packages=packages,
            platform=d.get("machine", ""),
            processor=d.get("processor", ""),
            cpus=int(d.get("cpus") or 0),
            threads=int(d.get("threads") or 0),
        )
