"""Every tutorial runs top to bottom (quick budgets), so that none can rot."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def _run(path: Path, timeout: int = 600) -> None:
    nb = nbformat.read(str(path), as_version=4)
    old = os.environ.get("CNS_TUTORIAL_QUICK")
    os.environ["CNS_TUTORIAL_QUICK"] = "1"  # the kernel inherits it
    try:
        nbclient.NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        if old is None:
            os.environ.pop("CNS_TUTORIAL_QUICK", None)
        else:
            os.environ["CNS_TUTORIAL_QUICK"] = old


def test_quickstart_runs():
    _run(TUTORIALS / "01_quickstart.ipynb")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs(path):
    _run(path)
