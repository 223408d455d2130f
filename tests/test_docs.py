"""The API reference (docs/sphinx) documents every public name, and the
README's links lead to files that exist. The Sphinx build itself (warnings as
errors) is `.ci/docs`."""

import importlib
import inspect
import re
from pathlib import Path

import captum_neuron_shapley

ROOT = Path(__file__).resolve().parents[1]
SPHINX = ROOT / "docs" / "sphinx"
#: Modules whose public functions and classes users call directly.
MODULES = [
    "ablation",
    "repair",
    "refine",
    "metrics",
    "visualization",
    "examples",
    "exact",
    "applications",
    "cost",
    "heads",
    "recall",
]


def _documented():
    names = set()
    for rst in SPHINX.glob("*.rst"):
        names |= set(
            re.findall(r"^\.\. auto(?:class|function):: (\S+)", rst.read_text(), re.M)
        )
    return names


def _paths(module, name, obj):
    # the package alias or the defining module's path
    out = {f"captum_neuron_shapley.{name}", f"{module}.{name}"}
    if getattr(obj, "__module__", "").startswith("captum_neuron_shapley"):
        out.add(f"{obj.__module__}.{name}")
    return out


def test_every_public_name_has_an_api_entry():
    documented = _documented()
    missing = []
    pkg = "captum_neuron_shapley"
    for name in captum_neuron_shapley.__all__:
        obj = getattr(captum_neuron_shapley, name)
        if not _paths(pkg, name, obj) & documented:
            missing.append(f"{pkg}.{name}")
    for short in MODULES:
        mod = importlib.import_module(f"{pkg}.{short}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants
            if not _paths(mod.__name__, name, obj) & documented:
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"no autodoc entry in docs/sphinx/*.rst for {missing}"


def test_every_documented_name_exists():
    for path in _documented():
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_every_page_is_in_the_index():
    index = (SPHINX / "index.rst").read_text()
    for rst in SPHINX.glob("*.rst"):
        if rst.stem != "index":
            assert re.search(rf"^   {rst.stem}$", index, re.M), rst.name


def test_links_of_the_readme_and_the_docs_pages_lead_to_files():
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for page in pages:
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        local = [x for x in links if not re.match(r"[a-z]+://", x)]
        for link in local:
            assert (page.parent / link).exists(), (page.name, link)
    readme = (ROOT / "README.md").read_text()
    for page in pages[1:]:
        assert f"(docs/{page.name})" in readme, f"the README does not link {page.name}"
