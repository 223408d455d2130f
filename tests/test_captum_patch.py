"""docs/upstream/captum.patch is generated from the library by
scripts/captum_patch.py: regenerated here, it must equal the committed file."""

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "captum_patch.py"

# the patch is formatted with the pinned lint tools (pyproject.toml, [lint])
PINS = {"black": "26.10.1", "usort": "1.0.2", "ufmt": "2.9.1"}


def _load():
    spec = importlib.util.spec_from_file_location("captum_patch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    for name, version in PINS.items():
        tool = pytest.importorskip(name)
        if getattr(tool, "__version__", version) != version:
            pytest.skip(f"{name}=={version} formats the patch (pip install -e .[lint])")
    return _load()


@pytest.fixture(scope="module")
def patch(script):
    return script.build_patch()


def test_patch_is_current(script, patch):
    committed = script.PATCH_PATH.read_text()
    assert committed == patch, (
        f"{script.PATCH_PATH.relative_to(ROOT)} is stale: run " f"`{script.REGENERATE}`"
    )


def test_check_reports_a_stale_patch(script, patch, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "build_patch", functools.partial(str, patch))
    current = tmp_path / "captum.patch"
    current.write_text(patch)
    assert script.main(["--check", "--output", str(current)]) == 0
    current.write_text(patch.replace("+class NeuronShapley(", "+class Stale(", 1))
    assert script.main(["--check", "--output", str(current)]) == 1
    assert "is stale" in capsys.readouterr().err


def test_patch_adds_the_methods_tests_and_docs(patch):
    added = {
        line[len("+++ b/") :] for line in patch.splitlines() if line[:6] == "+++ b/"
    }
    for path in (
        "captum/attr/__init__.py",
        "captum/attr/_core/layer/neuron_shapley.py",
        "captum/attr/_core/layer/filter_shapley.py",
        "captum/attr/_core/layer/head_shapley.py",
        "captum/testing/attr/helpers/test_config.py",
        "tests/attr/layer/test_neuron_shapley.py",
        "tests/attr/layer/test_filter_shapley.py",
        "tests/attr/layer/test_head_shapley.py",
        "sphinx/source/layer.rst",
        "docs/attribution_algorithms.md",
    ):
        assert path in added
    assert "captum_neuron_shapley" not in patch


def test_every_library_module_is_placed(script):
    modules = {p.stem for p in (ROOT / script.PACKAGE).glob("*.py")} - {"__init__"}
    assert modules == set(script.MODULES) | set(script.LEFT_OUT)
    assert not set(script.MODULES) & set(script.LEFT_OUT)


def test_a_rule_that_no_longer_matches_is_reported(script):
    with pytest.raises(script.PatchError, match="DOC_EDITS"):
        script.rewrite_library("exact", "no such sentence\n")
    with pytest.raises(script.PatchError, match="not in MODULES"):
        script.rewrite_library("attr", "from .ablation import ablated\n")


def test_every_public_name_has_an_api_entry(script):
    pages = script.parts_rst() + script.layer_rst() + "\n"
    for name, module in script._public_names().items():
        if module in script.MODULES:
            assert f".{name}\n" in pages, name


def test_a_module_without_an_api_section_is_reported(script, monkeypatch):
    monkeypatch.setattr(script, "RST_SECTIONS", script.RST_SECTIONS[:-1])
    with pytest.raises(script.PatchError, match="RST_SECTIONS"):
        script.parts_rst()
