"""The tutorials run top to bottom, so that none can rot: 01 with quick budgets in the
default suite, all four in full under ``-m slow``. Both runs fail on a
DeprecationWarning of this package (a tutorial calling a moved keyword), and the
default suite also checks every tutorial's code for moved keywords and its saved
outputs for errors, quick-mode runs and machine paths."""

import ast
import inspect
import os
import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest
from captum_neuron_shapley import applications
from captum_neuron_shapley._deprecated import MOVED_KEYS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

# Run first in the kernel: a DeprecationWarning raised by this package's code, or by
# a tutorial's own calls (module __main__), is an error; scripts a tutorial starts
# (torchrun) inherit the same rule for their own calls.
GUARD = """\
import os, warnings
for _module in ("__main__", "captum_neuron_shapley", "comparisons"):
    warnings.filterwarnings("error", category=DeprecationWarning, module=_module)
os.environ["PYTHONWARNINGS"] = "error::DeprecationWarning:__main__"
"""


def _run(path: Path, quick: bool, monkeypatch, timeout: int = 600) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    if quick:
        monkeypatch.setenv("CNS_TUTORIAL_QUICK", "1")  # the kernel inherits it
    else:
        monkeypatch.delenv("CNS_TUTORIAL_QUICK", raising=False)
    # the kernel imports this checkout's library, not another installed copy
    path_env = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", str(ROOT) + (os.pathsep + path_env if path_env else "")
    )
    nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()


def test_quickstart_runs(monkeypatch):
    _run(TUTORIALS / "01_quickstart.ipynb", quick=True, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs_in_full(path, monkeypatch):
    _run(path, quick=False, monkeypatch=monkeypatch, timeout=1200)


# -- static checks of the saved notebooks ----------------------------------------------

#: Calls that take ``attribute``'s keywords: the methods, and the applications'
#: functions (which pass the keywords they do not name on to ``attribute``).
_ATTRIBUTE_LIKE = {"attribute", "estimate_cost", "compute_convergence_delta"}
_APPLICATIONS = {
    name: set(inspect.signature(fn).parameters)
    for name, fn in inspect.getmembers(applications, inspect.isfunction)
    if fn.__module__ == applications.__name__
}


def _trees(source: str) -> Iterator[ast.AST]:
    r"""The cell's syntax tree, and those of its string constants that are Python
    programs (a script a tutorial writes and runs)."""
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith("%")]
    tree = ast.parse("\n".join(lines))
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "\n" in node.value:
                try:
                    yield ast.parse(node.value)
                except SyntaxError:
                    pass


def _moved_keywords(source: str) -> List[Tuple[str, str]]:
    r"""``(function, keyword)`` for every moved keyword the code passes to
    ``attribute`` or to something that hands keywords on to it (including the
    ``dict(...)`` bundles a tutorial unpacks into such calls)."""
    found = []
    for tree in _trees(source):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else None
            if isinstance(func, ast.Name):
                name = func.id
            own: Set[str] = set()
            if name in _APPLICATIONS:
                own = _APPLICATIONS[name]
            elif name not in _ATTRIBUTE_LIKE and name != "dict":
                continue
            for kw in node.keywords:
                if kw.arg in MOVED_KEYS and kw.arg not in own:
                    found.append((str(name), kw.arg))
    return found


def test_moved_keyword_check_finds_them():
    code = (
        "res = fs.attribute(x, target=y, subset_size=64, checkpoint='a.pt')\n"
        "KW = dict(seed=0, refine_pool=30)\n"
        "rep = adversarial_repair(m, l, x, y, x, y, refine_pool=30, strata=2)\n"
        "script = '''\nimport sys\nfs.estimate_cost(x, antithetic=True)\n'''\n"
        "s = PermutationSampler(strata=2, batch_size=64)\n"
    )
    assert sorted(_moved_keywords(code)) == [
        ("adversarial_repair", "strata"),
        ("attribute", "checkpoint"),
        ("attribute", "subset_size"),
        ("dict", "refine_pool"),
        ("estimate_cost", "antithetic"),
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_moved_keywords(path):
    nb = nbformat.read(str(path), as_version=4)
    found = [
        (i, *hit)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for hit in _moved_keywords(cell.source)
    ]
    assert not found, f"moved keywords (cell, call, keyword): {found}"


_MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|ipykernel_)")


def _output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return f"{output.ename}: {output.evalue}"
    return str(output.get("data", {}).get("text/plain", ""))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_saved_outputs(path):
    r"""The committed notebook was executed in full, top to bottom, without errors,
    and its outputs name no machine's paths."""
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    text = "\n".join(_output_text(o) for c in code for o in c.outputs)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "full" in _output_text(code[0].outputs[0])  # the mode the first cell prints
    assert "quick" not in _output_text(code[0].outputs[0])
    assert not _MACHINE_PATH.findall(text), _MACHINE_PATH.findall(text)
