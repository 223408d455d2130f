#!/usr/bin/env python3
r"""Generate ``docs/upstream/captum.patch``: NeuronShapley, FilterShapley and
HeadShapley as Captum layer methods, with their estimator parts, tests and
documentation, as a patch against Captum's repository (meta-pytorch/captum at
:data:`CAPTUM_COMMIT`).

The patch is generated from this repository and never edited by hand:

- the library modules of :data:`MODULES` are copied into Captum's tree with
  mechanical rewrites (:func:`rewrite_library`): relative imports become
  Captum's absolute ones, ``captum_neuron_shapley.X`` references in docstrings
  become Captum paths, ``# pyre-strict`` headers are added, Captum's
  ``@log_usage(part_of_slo=True)`` is used, the deprecated-keyword shim (for
  users of this package's earlier keywords; Captum has none) is dropped, and
  the few sentences about helpers that stay in this package (:data:`DOC_EDITS`)
  are cut; then ufmt (usort + black) formats each file with Captum's settings;
- the tests are ``tests/upstream/test_*.py`` of this repository (unittest,
  on ``captum.testing.helpers.BaseTest`` and Captum's tiny models; they run in
  this repository's suite too), with their imports rewritten the same way;
- Captum's files that the method joins (``captum/attr/__init__.py``, the
  test configuration, the generated harnesses, Sphinx sources and
  ``docs/attribution_algorithms.md``) get the insertions of :data:`EDITS`, each
  anchored on the lines around it at :data:`CAPTUM_COMMIT`, so that no Captum
  file is needed to generate the patch.

Regenerate after any change to the library or to ``tests/upstream/``::

    python scripts/captum_patch.py           # writes docs/upstream/captum.patch
    python scripts/captum_patch.py --check   # exit status 1 if it is stale

Check the patch against a checkout of Captum at :data:`CAPTUM_COMMIT`::

    python scripts/captum_patch.py --verify /path/to/captum

(every anchor of :data:`EDITS` is compared with the checkout, then
``git apply --check``). The default test suite regenerates the patch in memory
and compares it with the committed file (``tests/test_captum_patch.py``).
Formatting needs the pinned lint tools (``pip install -e ".[lint]"``).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "captum_neuron_shapley"
PATCH_PATH = ROOT / "docs" / "upstream" / "captum.patch"
UPSTREAM_TESTS = ROOT / "tests" / "upstream"

#: The Captum commit the patch applies to (meta-pytorch/captum, 2025-10-02).
CAPTUM_COMMIT = "faac0877"

REGENERATE = "python scripts/captum_patch.py"

LAYER = "captum.attr._core.layer"
PARTS = "captum.attr._utils.neuron_shapley"

#: Every module of the library that goes into Captum, and where. The layer
#: methods join Captum's layer methods; the estimator parts form one private
#: package beside Captum's other attribution utilities.
MODULES: Dict[str, str] = {
    "attr": f"{LAYER}.neuron_shapley",
    "filter_shapley": f"{LAYER}.filter_shapley",
    "heads": f"{LAYER}.head_shapley",
    **{
        m: f"{PARTS}.{m}"
        for m in (
            "_attr_utils",
            "_inputs",
            "_run",
            "bounds",
            "cost",
            "distributed",
            "estimator",
            "exact",
            "game",
            "metrics",
            "msr",
            "prefix",
            "refine",
            "removal",
            "result",
            "sampler",
            "statistics",
            "stopping",
            "streaming",
        )
    },
}

#: Every module of the library that stays in this package, and why.
LEFT_OUT: Dict[str, str] = {
    "_deprecated": "keywords of this package's earlier interface (Captum has no "
    "users of them)",
    "ablation": "removal curves and ablated models: evaluation of a ranking",
    "applications": "repair scenarios (class, fairness, adversarial)",
    "examples": "the embedded digits models and their weights",
    "modular": "the modular-addition transformer and its weights",
    "recall": "the recall transformers and their circuits",
    "repair": "exporting removals into a model's weights",
    "visualization": "figures",
}

#: Names exported from ``captum.attr`` (the rest of the package's public names
#: that live in :data:`MODULES` are exported from :data:`PARTS`).
ATTR_EXPORTS = ("NeuronShapley", "FilterShapley", "HeadShapley", "ShapleyResult")

#: Names of ``captum.attr`` that a module inside ``captum.attr`` imports from
#: where they are defined (importing ``captum.attr`` itself would be circular).
CAPTUM_ATTR_DEFS = {
    "LayerAttribution": "captum.attr._utils.attribution",
    "PerturbationAttribution": "captum.attr._utils.attribution",
}

#: Sentences about helpers that stay in this package: (module, regular
#: expression matched once, replacement).
DOC_EDITS: List[Tuple[str, str, str]] = [
    (
        "exact",
        r" It is the ground truth\s+of the tests and of ``python -m comparisons "
        r"coverage``\.",
        " It is the ground\ntruth of the tests.",
    ),
    (
        "result",
        r" Every helper that removes units\s+\(:func:`~captum_neuron_shapley\."
        r"ablation\.metric_after_removal`,.*?accepts this list\s+as it is\.",
        "",
    ),
    (
        "heads",
        r" Everything that takes a result\s+\(``ablated``, ``metric_after_removal``,"
        r" ``removal_curves``,\s+``export_repaired``, ``refine``\) works on heads\.",
        " ``refine`` works on heads.",
    ),
]

#: What must not appear in a generated file: references to what stays here.
FORBIDDEN = (
    PACKAGE,
    "comparisons",
    "removal_curve(",
    "removal_curves",
    "metric_after_removal",
    "export_repaired",
    "accepts_moved_keywords",
    "_deprecated",
    "docs/",
)

HEADER = "#!/usr/bin/env python3\n\n# pyre-strict\n\n"
TEST_HEADER = "#!/usr/bin/env python3\n\n# pyre-unsafe\n\n"


class PatchError(RuntimeError):
    r"""A rewrite rule no longer matches the library: the rule needs updating."""


# -- the library ------------------------------------------------------------------


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _public_names() -> Dict[str, str]:
    r"""The package's public names (its ``__init__`` imports) -> their module."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    names: Dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _public_target(name: str, module: str) -> Optional[str]:
    r"""Where the public ``name`` of the package's ``module`` lives in Captum."""
    if module not in MODULES:
        return None
    if name in ATTR_EXPORTS:
        return f"captum.attr.{name}"
    if MODULES[module].startswith(PARTS):
        return f"{PARTS}.{name}"
    return f"{MODULES[module]}.{name}"


def _reference(dotted: str, where: str) -> str:
    r"""The Captum path of ``captum_neuron_shapley<dotted>`` (``dotted`` starts
    with a dot, or is empty)."""
    parts = dotted.lstrip(".").split(".") if dotted else []
    if not parts:
        raise PatchError(f"{where}: a bare `{PACKAGE}` has no place in Captum")
    head, rest = parts[0], parts[1:]
    if head in MODULES:
        return ".".join([MODULES[head], *rest])
    public = _public_names()
    if head in public:
        target = _public_target(head, public[head])
        if target is not None:
            return ".".join([target, *rest])
    raise PatchError(
        f"{where}: `{PACKAGE}.{'.'.join(parts)}` refers to something that stays in "
        f"this package; add a rule to {DOC_EDITS_NAME} in scripts/captum_patch.py"
    )


DOC_EDITS_NAME = "DOC_EDITS"


def _rewrite_imports(src: str, where: str) -> str:
    def relative(m: "re.Match[str]") -> str:
        indent, module = m.group(1), m.group(2)
        if module not in MODULES:
            raise PatchError(
                f"{where} imports .{module}, which is not in MODULES: classify the "
                "module in scripts/captum_patch.py (MODULES or LEFT_OUT)"
            )
        return f"{indent}from {MODULES[module]} import"

    src = re.sub(r"^(\s*)from \.(\w+) import", relative, src, flags=re.M)
    # a comment after an import that no longer fits goes on the line above
    src = re.sub(
        r"^([ \t]*)(from captum\.[\w.]+ import [\w, ]+?)[ \t]+# ([^\n]*)$",
        lambda m: (
            f"{m.group(1)}# {m.group(3)}\n{m.group(1)}{m.group(2)}"
            if len(m.group(0)) > 88
            else m.group(0)
        ),
        src,
        flags=re.M,
    )
    if re.search(r"^\s*from \. import", src, flags=re.M):
        raise PatchError(f"{where}: `from . import` is not rewritten")

    def absolute(m: "re.Match[str]") -> str:
        dotted = m.group(2)
        target = _reference(dotted, where)
        module, _, name = target.rpartition(".")
        if target in MODULES.values():
            return f"{m.group(1)}from {target} import"
        raise PatchError(f"{where}: cannot rewrite `from {PACKAGE}{dotted} import`")

    src = re.sub(rf"^(\s*)from {PACKAGE}((?:\.\w+)+) import", absolute, src, flags=re.M)
    return src


def _rewrite_top_imports(src: str, where: str) -> str:
    r"""``from captum_neuron_shapley import A, B`` -> one import per Captum module."""
    public = _public_names()
    pattern = re.compile(
        rf"^from {PACKAGE} import (\((?:[^)]*)\)|[^\n]*)\n", flags=re.M
    )

    def repl(m: "re.Match[str]") -> str:
        names = [
            n.strip() for n in m.group(1).strip("()").replace("\n", " ").split(",")
        ]
        by_module: Dict[str, List[str]] = {}
        for n in filter(None, names):
            if n not in public or public[n] not in MODULES:
                raise PatchError(f"{where}: `{n}` of {PACKAGE} is not shipped")
            target = _public_target(n, public[n])
            assert target is not None
            by_module.setdefault(target.rpartition(".")[0], []).append(n)
        return "".join(
            f"from {mod} import {', '.join(ns)}\n" for mod, ns in by_module.items()
        )

    return pattern.sub(repl, src)


def _rewrite_doc_references(src: str, where: str) -> str:
    r"""References in docstrings. Sphinx roles name their target by a suffix
    (``:class:`~.sampler.PermutationSampler```: Sphinx looks the name up as a
    suffix of the documented ones), which keeps lines as short as they were;
    the classes exported from ``captum.attr`` are named in full; code examples
    import from the public modules."""

    def relative(m: "re.Match[str]") -> str:
        if m.group(2) not in MODULES:
            raise PatchError(f"{where}: reference to .{m.group(2)}, which stays here")
        return m.group(0)

    for m in re.finditer(r":\w+:`(~?)\.(\w+)((?:\.\w+)*)`", src):
        relative(m)

    def role(m: "re.Match[str]") -> str:
        parts = m.group(2).lstrip(".").split(".")
        if parts[0] in ATTR_EXPORTS:
            return f"`{m.group(1)}captum.attr.{'.'.join(parts)}`"
        _reference(m.group(2), where)  # it must exist in Captum
        return f"`~.{'.'.join(parts)}`"

    src = re.sub(rf"`(~?){PACKAGE}((?:\.\w+)+)`", role, src)

    def example(m: "re.Match[str]") -> str:
        public = _public_names()
        names = [n.strip() for n in m.group(2).split(",")]
        targets = set()
        for n in names:
            target = _public_target(n, public.get(n, ""))
            if target is None:
                raise PatchError(f"{where}: `{n}` is not a public name in Captum")
            targets.add(target.rpartition(".")[0])
        if len(targets) != 1:
            raise PatchError(f"{where}: split the import of {names}")
        return f"{m.group(1)}from {targets.pop()} import {m.group(2)}"

    src = re.sub(rf"(>>> )from {PACKAGE}(?:\.\w+)? import ([\w, ]+)", example, src)
    return src.replace(
        f'"{PACKAGE}.checkpoint"', '"captum.attr.neuron_shapley.checkpoint"'
    )


def _apply_doc_edits(name: str, src: str) -> str:
    for module, pattern, replacement in DOC_EDITS:
        if module != name:
            continue
        new, n = re.subn(pattern, replacement, src, flags=re.S)
        if n != 1:
            raise PatchError(
                f"{DOC_EDITS_NAME} rule for {name}.py matched {n} times (expected "
                f"once): update the rule in scripts/captum_patch.py to the "
                f"library's text"
            )
        src = new
    return src


def _drop_deprecated_shim(src: str) -> str:
    src = re.sub(
        r"^from \._deprecated import accepts_moved_keywords\n", "", src, flags=re.M
    )
    return re.sub(r"^[ \t]*@accepts_moved_keywords\n", "", src, flags=re.M)


def _captum_attr_imports(src: str, where: str) -> str:
    def repl(m: "re.Match[str]") -> str:
        names = [n.strip() for n in m.group(1).split(",")]
        mods = {CAPTUM_ATTR_DEFS.get(n) for n in names}
        if None in mods or len(mods) != 1:
            raise PatchError(f"{where}: add {names} to CAPTUM_ATTR_DEFS")
        return f"from {mods.pop()} import {', '.join(names)}\n"

    return re.sub(r"^from captum\.attr import ([^\n(]+)\n", repl, src, flags=re.M)


def _check_clean(path: str, text: str) -> None:
    for word in FORBIDDEN:
        if word in text:
            line = next(i for i, s in enumerate(text.splitlines(), 1) if word in s)
            raise PatchError(
                f"{path}:{line} still mentions `{word}`, which stays in this "
                "package: add a rule in scripts/captum_patch.py"
            )


def rewrite_library(name: str, src: str) -> str:
    r"""The Captum version of the library module ``name`` (unformatted)."""
    where = f"{PACKAGE}/{name}.py"
    src = _drop_deprecated_shim(src)
    src = _apply_doc_edits(name, src)
    src = _rewrite_imports(src, where)
    src = _captum_attr_imports(src, where)
    src = src.replace("@log_usage()", "@log_usage(part_of_slo=True)")
    src = _rewrite_doc_references(src, where)
    return HEADER + src


def rewrite_test(path: Path, src: str) -> str:
    r"""The Captum version of a test module of ``tests/upstream``."""
    where = str(path.relative_to(ROOT))
    src = _rewrite_top_imports(src, where)
    src = _rewrite_imports(src, where)
    src = _rewrite_doc_references(src, where)
    return TEST_HEADER + src


def parts_init() -> str:
    r"""``captum/attr/_utils/neuron_shapley/__init__.py``: the public parts."""
    public = _public_names()
    by_module: Dict[str, List[str]] = {}
    for name, module in public.items():
        if module in MODULES and MODULES[module].startswith(PARTS):
            by_module.setdefault(MODULES[module], []).append(name)
    lines = [
        HEADER.rstrip("\n"),
        "",
        'r"""The parts of Neuron Shapley (:class:`captum.attr.NeuronShapley`,',
        ":class:`captum.attr.FilterShapley`, :class:`captum.attr.HeadShapley`):",
        "samplers, stopping rules, confidence bounds, dataset-level metrics, the",
        'removal-set search and the result of a run."""',
        "",
    ]
    for module, names in by_module.items():
        lines.append(f"from {module} import {', '.join(names)}")
    exported = [n for names in by_module.values() for n in names]
    lines += ["", "__all__ = ["] + [f'    "{n}",' for n in exported] + ["]", ""]
    return "\n".join(lines)


# -- formatting ---------------------------------------------------------------------


def ufmt(path: str, text: str) -> str:
    r"""Format ``text`` as ``ufmt format`` does with Captum's settings
    (pyproject.toml: usort ``first_party_detection = false``, black
    ``target-version = ['py39']``)."""
    import black
    import usort
    from ufmt.core import ufmt_bytes

    mode = black.Mode(target_versions={black.TargetVersion.PY39})
    config = usort.Config(first_party_detection=False)
    out = ufmt_bytes(Path(path), text.encode(), black_config=mode, usort_config=config)
    return out.decode()


# -- edits of Captum's files --------------------------------------------------------


@dataclass(frozen=True)
class Hunk:
    r"""A change of a Captum file as a unified-diff hunk: ``start`` is the line
    (1-based) of the file at :data:`CAPTUM_COMMIT` where ``body`` begins; each
    line of ``body`` starts with ``" "`` (a line of that file, kept), ``"-"`` (a
    line of that file, removed) or ``"+"`` (an added line)."""

    path: str
    start: int
    body: Tuple[str, ...]

    @property
    def old(self) -> Tuple[str, ...]:
        return tuple(s[1:] for s in self.body if s[0] in " -")

    @property
    def n_added(self) -> int:
        return sum(1 for s in self.body if s[0] == "+") - sum(
            1 for s in self.body if s[0] == "-"
        )


def ctx(*lines: str) -> Tuple[str, ...]:
    return tuple(" " + s if s else " " for s in lines)


def add(*lines: str) -> Tuple[str, ...]:
    return tuple("+" + s for s in lines)


def remove(*lines: str) -> Tuple[str, ...]:
    return tuple("-" + s for s in lines)


# fmt: off
_CONFIG_ENTRIES = '''\
    # Neuron Shapley: a dataset-level method (one attribution per unit of the
    # layer, no batch dimension), so test_targets skips it. Each entry sets a
    # seed and a budget in permutation chains, so that two runs (CPU and CUDA,
    # DataParallel, DistributedDataParallel) sample the same chains.
    {
        "name": "neuron_shapley_conv_layer_labels",
        "algorithms": [NeuronShapley, FilterShapley],
        "model": BasicModel_ConvNet(),
        "layer": "conv2",
        "attribute_args": {
            "inputs": 100 * torch.randn(20, 1, 10, 10),
            "target": torch.randint(0, 10, (20,)),
            "perturbations_per_eval": 16,
            "max_permutations": 4,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_conv_layers_single_target",
        "algorithms": [NeuronShapley, FilterShapley],
        "model": BasicModel_ConvNet_One_Conv(),
        "layer": ["conv1", "relu1"],
        "attribute_args": {
            "inputs": 20 + 10 * torch.randn(12, 1, 4, 4),
            "target": 0,
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_layer_in_place",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer(inplace=True),
        "layer": "relu",
        "attribute_args": {
            "inputs": torch.randn(8, 3),
            "target": 0,
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_layer_multi_output",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer(multi_input_module=True),
        "layer": "multi_relu",
        "attribute_args": {
            "inputs": torch.randn(8, 3),
            "target": 0,
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_layer_multi_input",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer_MultiInput(),
        "layer": "model.relu",
        "attribute_args": {
            "inputs": (10 * torch.randn(12, 3), 5 * torch.randn(12, 3)),
            "additional_forward_args": (2 * torch.randn(12, 3), 5),
            "target": 0,
            "perturbations_per_eval": 2,
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_layer_multiple_target",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer(),
        "layer": "linear1",
        "attribute_args": {
            "inputs": torch.randn(8, 3),
            "target": [0, 1, 1, 0, 1, 0, 0, 1],
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_layer_multiple_tuple_target",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer(),
        "layer": "relu",
        "attribute_args": {
            "inputs": torch.randn(4, 3),
            "target": [(1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0)],
            "additional_forward_args": (None, True),
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "neuron_shapley_multi_layer_layer_input",
        "algorithms": [NeuronShapley],
        "model": BasicModel_MultiLayer(),
        "layer": ["linear1", "linear2"],
        "attribute_args": {
            "inputs": torch.randn(8, 3),
            "target": 1,
            "attribute_to_layer_input": True,
            "layer_baselines": 0.5,
            "max_permutations": 8,
            "seed": 0,
        },
    },
    {
        "name": "head_shapley_encoder_layer",
        "algorithms": [HeadShapley],
        "model": torch.nn.Sequential(
            torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
            torch.nn.Flatten(),
            torch.nn.Linear(24, 3),
        ),
        "layer": "0.self_attn",
        "attribute_args": {
            "inputs": torch.randn(10, 3, 8),
            "target": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
            "perturbations_per_eval": 2,
            "max_permutations": 8,
            "seed": 0,
        },
    },'''
# fmt: on

_ALGO_DOC = """\
### Neuron Shapley
Neuron Shapley attributes a *dataset-level* metric of a model, such as its \
accuracy on an evaluation set, to the units of one or more of its layers: the \
neurons of a layer (`NeuronShapley`, optionally grouped with a `layer_mask`), \
its convolutional filters (`FilterShapley`, one unit per channel) or the heads \
of its attention layers (`HeadShapley`). A unit's attribution is its Shapley \
value in the game whose players are the units and whose value for a coalition \
is the metric of the model with every other unit removed, that is replaced by \
a baseline (the unit's mean activation, zero, or a user value) through forward \
hooks. Unlike the other layer methods, the attributions have no batch \
dimension: one number per unit for the whole evaluation set, which ranks the \
units responsible for a behaviour of the model (its accuracy, the recall of one \
class, the accuracy on a subgroup).

The values are estimated with truncated permutation chains (a chain removes the \
units one by one in a random order and stops once the metric has collapsed) \
and a multi-armed bandit that stops sampling a unit once its confidence \
interval separates it from the top-k boundary. Several coalitions are \
evaluated in one forward pass (`perturbations_per_eval`), and the part of the \
model before the first ablated layer is computed once. The result can also \
report standard errors, confidence intervals and a greedy search for the k \
units whose joint removal hurts the metric most.

To learn more about Neuron Shapley, visit the following resources:
- [Original paper](https://arxiv.org/abs/2002.09815)
"""

_LAYER_RST = """\

Neuron Shapley
^^^^^^^^^^^^^^^^^^^^^^^^^^^

.. autoclass:: captum.attr.NeuronShapley
    :members:

Filter Shapley
^^^^^^^^^^^^^^^^^^^^^^^^^^^

.. autoclass:: captum.attr.FilterShapley
    :members:

Head Shapley
^^^^^^^^^^^^^^^^^^^^^^^^^^^

.. autoclass:: captum.attr.HeadShapley
    :members:"""


def layer_rst() -> str:
    r"""The entries of ``sphinx/source/layer.rst``: the three classes, then the
    public functions of their modules (``feature_mask``, ...)."""
    out = [_LAYER_RST]
    for name, module in _public_names().items():
        target = MODULES.get(module, "")
        if target.startswith(LAYER) and name not in ATTR_EXPORTS:
            kind = "function" if name[0].islower() else "class"
            out.append(f"\n.. auto{kind}:: {target}.{name}")
    return "\n".join(out)


_PARTS_RST_HEAD = """\
Neuron Shapley Estimation
=========================

The parts that :class:`captum.attr.NeuronShapley`,
:class:`captum.attr.FilterShapley` and :class:`captum.attr.HeadShapley`
assemble: how marginal contributions are sampled (``sampler=``), when sampling
stops (``stop=``, rules combined with ``|`` and ``&``), the confidence bounds
of the stopping rules, dataset-level metrics (``metric=``), the removal-set
search (``refine=``) and the result (``return_result=True``).

Shapley Result
^^^^^^^^^^^^^^

.. autoclass:: captum.attr.ShapleyResult
    :members:
"""

#: The sections of ``sphinx/source/neuron_shapley.rst`` and the library modules
#: whose public parts each lists (in the package's order, the base classes of
#: :data:`RST_MEMBERS` first, with their members). A module with public parts
#: and no section stops the script.
RST_SECTIONS: List[Tuple[str, Tuple[str, ...]]] = [
    ("Samplers", ("sampler", "msr")),
    ("Stopping Rules", ("stopping",)),
    ("Confidence Bounds", ("bounds",)),
    ("Metrics", ("metrics",)),
    ("Removal Sets", ("refine",)),
    ("Warnings", ("_run",)),
]
RST_MEMBERS = ("Sampler", "StoppingRule", "Bound")


def parts_rst() -> str:
    r"""``sphinx/source/neuron_shapley.rst``: an entry for every public part."""
    by_module: Dict[str, List[str]] = {}
    for name, module in _public_names().items():
        if name in ATTR_EXPORTS or not MODULES.get(module, "").startswith(PARTS):
            continue
        by_module.setdefault(module, []).append(name)
    placed = {m for _, modules in RST_SECTIONS for m in modules}
    unplaced = sorted(set(by_module) - placed)
    if unplaced:
        raise PatchError(
            f"the public parts of {unplaced} have no section in the API page: add "
            "the module to RST_SECTIONS in scripts/captum_patch.py"
        )
    out = [_PARTS_RST_HEAD]
    for title, modules in RST_SECTIONS:
        names = [n for m in modules for n in by_module.get(m, [])]
        if not names:
            continue
        names.sort(key=lambda n: n not in RST_MEMBERS)  # stable: bases first
        out.append(f"{title}\n{'^' * len(title)}\n")
        for n in names:
            kind = "function" if n[0].islower() else "class"
            out.append(f".. auto{kind}:: {PARTS}.{n}")
            out.append("    :members:\n" if n in RST_MEMBERS else "")
    return "\n".join(out)


_SHAPLEY = "(NeuronShapley, FilterShapley, HeadShapley)"
_IMPORT = "from captum.attr._core.layer.{0} import {1}"

EDITS: List[Hunk] = [
    # captum/attr/__init__.py: the classes and the result type
    Hunk(
        "captum/attr/__init__.py",
        13,
        ctx("from captum.attr._core.kernel_shap import KernelShap")
        + add(_IMPORT.format("filter_shapley", "FilterShapley"))
        + ctx(_IMPORT.format("grad_cam", "LayerGradCam"))
        + add(_IMPORT.format("head_shapley", "HeadShapley"))
        + ctx(_IMPORT.format("internal_influence", "InternalInfluence")),
    ),
    Hunk(
        "captum/attr/__init__.py",
        24,
        ctx(_IMPORT.format("layer_lrp", "LayerLRP"))
        + add(_IMPORT.format("neuron_shapley", "NeuronShapley"))
        + ctx("from captum.attr._core.lime import Lime, LimeBase"),
    ),
    Hunk(
        "captum/attr/__init__.py",
        69,
        ctx("    TextTokenInput,", ")")
        + add(f"from {PARTS}.result import ShapleyResult")
        + ctx("from captum.attr._utils.stat import ("),
    ),
    Hunk(
        "captum/attr/__init__.py",
        126,
        ctx('    "LayerLRP",')
        + add(*(f'    "{n}",' for n in ATTR_EXPORTS))
        + ctx('    "NeuronConductance",'),
    ),
    # the test configuration: imports and entries
    Hunk(
        "captum/testing/attr/helpers/test_config.py",
        15,
        ctx("from captum.attr._core.kernel_shap import KernelShap")
        + add(_IMPORT.format("filter_shapley", "FilterShapley"))
        + ctx(_IMPORT.format("grad_cam", "LayerGradCam"))
        + add(_IMPORT.format("head_shapley", "HeadShapley"))
        + ctx(_IMPORT.format("internal_influence", "InternalInfluence")),
    ),
    Hunk(
        "captum/testing/attr/helpers/test_config.py",
        25,
        ctx(_IMPORT.format("layer_lrp", "LayerLRP"))
        + add(_IMPORT.format("neuron_shapley", "NeuronShapley"))
        + ctx("from captum.attr._core.lime import Lime"),
    ),
    Hunk(
        "captum/testing/attr/helpers/test_config.py",
        46,
        ctx("    BasicModel_ConvNet,")
        + add("    BasicModel_ConvNet_One_Conv,")
        + ctx("    BasicModel_MultiLayer,"),
    ),
    Hunk(
        "captum/testing/attr/helpers/test_config.py",
        1323,
        ctx('        "dp_delta": 0.0002,', "    },")
        + add(*_CONFIG_ENTRIES.split("\n"))
        + ctx("]"),
    ),
    # test_targets: a dataset-level attribution has no per-example rows
    Hunk(
        "tests/attr/test_targets.py",
        11,
        ctx("from captum.attr._core.integrated_gradients import IntegratedGradients")
        + add(
            _IMPORT.format("filter_shapley", "FilterShapley"),
            _IMPORT.format("head_shapley", "HeadShapley"),
            _IMPORT.format("neuron_shapley", "NeuronShapley"),
        )
        + ctx("from captum.attr._core.lime import Lime"),
    ),
    Hunk(
        "tests/attr/test_targets.py",
        65,
        ctx("            for algorithm in algorithms:")
        + add(
            "                # NeuronShapley, FilterShapley and HeadShapley attribute",
            "                # a metric of the whole batch (one value per unit, no",
            "                # batch dimension): a batch's attributions are not the",
            "                # concatenation of each example's, so skipping tests",
            f"                if issubclass(algorithm, {_SHAPLEY}):",
            "                    continue",
        )
        + ctx(
            "                # FeaturePermutation requires a batch of inputs",
            "                # so skipping tests",
        ),
    ),
    # test_jit: why the Shapley layer methods are not in JIT_SUPPORTED
    Hunk(
        "tests/attr/test_jit.py",
        40,
        ctx("from torch.nn import Module", "")
        + add(
            "# NeuronShapley, FilterShapley and HeadShapley are not listed: they "
            "remove",
            "# units with forward hooks, which TorchScript modules do not run, so "
            "they",
            "# refuse traced and scripted models with a ValueError",
            "# (tests/attr/layer/test_neuron_shapley.py checks it).",
        )
        + ctx("JIT_SUPPORTED = ["),
    ),
    # test_hook_removal: the Shapley layer methods check `target` and their layer
    Hunk(
        "tests/attr/test_hook_removal.py",
        8,
        ctx("import torch")
        + add(
            _IMPORT.format("filter_shapley", "FilterShapley"),
            _IMPORT.format("head_shapley", "HeadShapley"),
            _IMPORT.format("neuron_shapley", "NeuronShapley"),
        )
        + ctx("from captum.attr._core.noise_tunnel import NoiseTunnel"),
    ),
    Hunk(
        "tests/attr/test_hook_removal.py",
        82,
        ctx(
            "                    if mode is HookRemovalMode.invalid_module and layer "
            "is None:",
            "                        continue",
        )
        + add(
            "                    # HeadShapley's layer must be an attention module:",
            "                    # the ErrorModule put in its place is refused when",
            "                    # the method is constructed, before any hook exists",
            "                    if mode is HookRemovalMode.invalid_module and "
            "issubclass(",
            "                        algorithm, HeadShapley",
            "                    ):",
            "                        continue",
        )
        + ctx(
            "                    # Only one test per algorithm and mode is necessary"
        ),
    ),
    Hunk(
        "tests/attr/test_hook_removal.py",
        158,
        ctx("")
        + remove("            if expect_error:")
        + add(
            "            if (",
            "                expect_error",
            "                and mode is HookRemovalMode.incorrect_target_or_neuron",
            f"                and issubclass(algorithm, {_SHAPLEY})",
            "            ):",
            "                # the Shapley layer methods check `target` against the",
            "                # model's output and raise a ValueError that names it",
            "                with self.assertRaises(ValueError):",
            "                    attr_method.attribute(**args)",
            "            elif expect_error:",
        )
        + ctx(
            "                with self.assertRaises(AssertionError):",
            "                    attr_method.attribute(**args)",
        ),
    ),
    # test_data_parallel: HeadShapley refuses nn.MultiheadAttention under
    # DataParallel (its replicas would not run the patched forward)
    Hunk(
        "tests/attr/test_data_parallel.py",
        11,
        ctx("from captum.attr._core.guided_grad_cam import GuidedGradCam")
        + add(_IMPORT.format("head_shapley", "HeadShapley"))
        + ctx(_IMPORT.format("layer_deep_lift", "LayerDeepLift, LayerDeepLiftShap")),
    ),
    Hunk(
        "tests/attr/test_data_parallel.py",
        81,
        ctx("                for mode in DataParallelCompareMode:")
        + add(
            *(
                " " * 20 + s
                for s in (
                    "# HeadShapley patches the forward of the",
                    "# nn.MultiheadAttention instance, which DataParallel's",
                    "# replicas do not share: the method refuses it",
                    "if issubclass(algorithm, HeadShapley) and mode in (",
                    "    DataParallelCompareMode.data_parallel_default,",
                    "    DataParallelCompareMode.data_parallel_alt_dev_ids,",
                    "):",
                    "    continue",
                )
            )
        )
        + ctx(" " * 20 + "# Creates test case corresponding to each algorithm and"),
    ),
    # Sphinx: the classes among the layer methods, the parts on their own page
    Hunk(
        "sphinx/source/layer.rst",
        74,
        ctx(".. autoclass:: captum.attr.LayerLRP", "    :members:")
        + add(*layer_rst().split("\n")),
    ),
    Hunk(
        "sphinx/source/index.rst",
        17,
        ctx("   layer", "   neuron") + add("   neuron_shapley") + ctx("   metrics"),
    ),
    # the algorithm descriptions: after Layer Feature Ablation
    Hunk(
        "docs/attribution_algorithms.md",
        199,
        ctx("") + add(*_ALGO_DOC.split("\n")) + ctx("## Neuron Attribution"),
    ),
]


# -- the patch -----------------------------------------------------------------------


def _new_file(path: str, text: str) -> str:
    body = text.split("\n")
    if body[-1] != "":
        raise PatchError(f"{path} does not end with a newline")
    body = body[:-1]
    out = [
        f"diff --git a/{path} b/{path}",
        "new file mode 100644",
        "--- /dev/null",
        f"+++ b/{path}",
        f"@@ -0,0 +1,{len(body)} @@",
    ]
    out += ["+" + s for s in body]
    return "\n".join(out) + "\n"


def _modified_file(path: str, hunks: Sequence[Hunk]) -> str:
    out = [f"diff --git a/{path} b/{path}", f"--- a/{path}", f"+++ b/{path}"]
    shift = 0
    for h in sorted(hunks, key=lambda h: h.start):
        n_old = len(h.old)
        out.append(f"@@ -{h.start},{n_old} +{h.start + shift},{n_old + h.n_added} @@")
        out += list(h.body)
        shift += h.n_added
    return "\n".join(out) + "\n"


def new_files() -> Dict[str, str]:
    r"""Captum path -> content of every file the patch adds (formatted)."""
    files: Dict[str, str] = {}
    found = {p.stem for p in (ROOT / PACKAGE).glob("*.py")} - {"__init__"}
    unknown = found - set(MODULES) - set(LEFT_OUT)
    if unknown:
        raise PatchError(
            f"library modules {sorted(unknown)} are neither in MODULES nor in "
            "LEFT_OUT of scripts/captum_patch.py: decide where they go"
        )
    for name, module in MODULES.items():
        src = (ROOT / PACKAGE / f"{name}.py").read_text()
        files[_module_path(module)] = rewrite_library(name, src)
    files[PARTS.replace(".", "/") + "/__init__.py"] = parts_init()
    for path in sorted(UPSTREAM_TESTS.glob("test_*.py")):
        files[f"tests/attr/layer/{path.name}"] = rewrite_test(path, path.read_text())
    out = {}
    for path, text in files.items():
        text = ufmt(path, text)
        _check_clean(path, text)
        out[path] = text
    out["sphinx/source/neuron_shapley.rst"] = parts_rst()
    return out


def build_patch() -> str:
    r"""The whole patch, as text."""
    chunks: List[str] = []
    edits: Dict[str, List[Hunk]] = {}
    for h in EDITS:
        edits.setdefault(h.path, []).append(h)
    files = new_files()
    for path in sorted(set(files) | set(edits)):
        if path in files:
            chunks.append(_new_file(path, files[path]))
        else:
            chunks.append(_modified_file(path, edits[path]))
    return "".join(chunks)


def verify(tree: Path, patch: str) -> List[str]:
    r"""Problems of the patch against a Captum checkout (none: it applies)."""
    problems = []
    for h in EDITS:
        lines = (tree / h.path).read_text().split("\n")
        got = tuple(lines[h.start - 1 : h.start - 1 + len(h.old)])
        if got != h.old:
            problems.append(
                f"{h.path}: the lines from {h.start} differ from the hunk's"
            )
    for path in new_files():
        if (tree / path).exists():
            problems.append(f"{path} exists already")
    res = subprocess.run(
        ["git", "apply", "--check", "-"],
        cwd=tree,
        input=patch,
        text=True,
        capture_output=True,
    )
    if res.returncode:
        problems.append("git apply --check: " + res.stderr.strip())
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if stale")
    parser.add_argument("--verify", type=Path, help="a Captum checkout")
    parser.add_argument("--output", type=Path, default=PATCH_PATH)
    args = parser.parse_args(argv)
    patch = build_patch()
    if args.verify is not None:
        problems = verify(args.verify, patch)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            return 1
        print(f"the patch applies to {args.verify}")
        return 0
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != patch:
            diff = difflib.unified_diff(
                current.splitlines(),
                patch.splitlines(),
                str(args.output),
                "regenerated",
                lineterm="",
                n=1,
            )
            print("\n".join(list(diff)[:40]), file=sys.stderr)
            print(f"{args.output} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(patch)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
