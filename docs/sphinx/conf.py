# Configuration of the Sphinx API reference of captum-neuron-shapley, shaped on
# Captum's (sphinx/source/conf.py): autodoc with Google-style docstrings
# (napoleon) and type hints (sphinx_autodoc_typehints), the class and __init__
# docstrings together, signature defaults as written.
#
# Build (warnings are errors, as in CI):
#   pip install -e ".[docs]"
#   sphinx-build -W --keep-going -b html docs/sphinx docs/sphinx/_build/html

import os
import re
import sys
import warnings
from typing import Any, List

from sphinx.deprecation import RemovedInSphinx10Warning

# document the source tree, not an installed copy
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import captum_neuron_shapley  # noqa: E402

# sphinx_autodoc_typehints 3.6 calls a Sphinx API that Sphinx 9 deprecates: a
# Python DeprecationWarning of the extension's internals, printed once per
# docstring. It is no documentation warning (those stay errors with -W).
warnings.filterwarnings("ignore", category=RemovedInSphinx10Warning)

# -- Project information -----------------------------------------------------

project = "captum-neuron-shapley"
author = "captum-neuron-shapley contributors"
copyright = "captum-neuron-shapley contributors"
version = captum_neuron_shapley.__version__
release = version

# -- General configuration ---------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext"}
master_doc = "index"
language = "en"
exclude_patterns = ["_build"]
pygments_style = "sphinx"

# Captum's autodoc settings
autodoc_default_options: dict = {}
autoclass_content = "both"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
# type hints come from the signatures; the docstrings' "Args:" keep Captum's
# "name (type): text" form
typehints_use_signature = False
typehints_use_signature_return = False
always_document_param_types = False
# no network at build time: nothing is fetched (no intersphinx inventories)
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- Options for HTML output -------------------------------------------------

html_theme = "alabaster"
html_static_path: List[str] = []
html_show_sphinx = False
html_show_copyright = False
htmlhelp_basename = "captum_neuron_shapley_doc"

# -- Docstring improvements (as Captum's conf) -------------------------------

_rt = [r"(?<![\.])(\b", r"\b)"]


def autodoc_process_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: List[str]
) -> None:
    r"""Qualify the bare type names of ``:type`` lines, as Captum's conf does."""
    for i in range(len(lines)):
        if not lines[i].startswith(":type"):
            continue
        if ":py:data:" in lines[i]:
            continue
        lines[i] = re.sub(_rt[0] + r"Any" + _rt[1], "~typing.Any", lines[i])
        lines[i] = re.sub(_rt[0] + r"Callable" + _rt[1], "~typing.Callable", lines[i])
        lines[i] = re.sub(_rt[0] + r"Tensor" + _rt[1], "~torch.Tensor", lines[i])


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", autodoc_process_docstring)
