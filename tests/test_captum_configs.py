"""Captum's own layer-method test configurations, run through NeuronShapley and
FilterShapley.

``captum.testing.attr.helpers.test_config.config`` is the list of models, layers
and ``attribute`` arguments that Captum's generated tests (DataParallel, JIT,
targets) run every attribution method on. Each applicable layer entry is run
here with its own arguments plus a small budget, and must

- run without an exception and leave no hook (nor a patched ``forward``) and the
  modules' training flags as they were;
- return one attribution per layer tensor in the layer's dtype, and a delta that
  ``compute_convergence_delta`` reproduces;
- give the same values with ``perturbations_per_eval`` 1 and 3 (same seed);
- give the same values through a CPU ``nn.DataParallel`` of the model, passed
  as the model and, as in Captum's harness, as ``dp.forward`` with
  ``device_ids``.

Which entries apply is decided by the explicit rules of :func:`_skip_reason`
(listed in ``docs/upstream.md``); a skipped entry is reported by pytest with its
reason, and the reasons themselves are checked (the method refuses the entry
with a clear error, or the entry is out of scope). One rule adapts the entries'
arguments (:func:`_setup`): ``internal_batch_size``, an ``attribute`` argument
of Captum's methods, is a constructor argument here.
"""

import copy
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
from captum.attr import LayerActivation
from captum.attr._utils.attribution import LayerAttribution
from captum.testing.attr.helpers.gen_test_utils import (
    get_target_layer,
    parse_test_config,
)
from captum.testing.attr.helpers.test_config import config

from captum_neuron_shapley import FilterShapley, NeuronShapley
from torch import nn

# A small budget in chains (not in evaluations), so that the values do not depend
# on how many coalitions share a forward pass.
BUDGET: Dict[str, Any] = {"max_permutations": 8, "seed": 0}
CLASSES = [NeuronShapley, FilterShapley]

# Rule 0: the layer-method entries are those with an algorithm that is one of
# Captum's layer methods (a LayerAttribution); the others attribute inputs or
# one neuron (`neuron_selector`) and have no layer to play the game on.
LAYER_ENTRIES = [
    e
    for e in config
    if any(
        isinstance(a, type) and issubclass(a, LayerAttribution) for a in e["algorithms"]
    )
]


def _skip_reason(entry: Dict[str, Any], cls: type) -> Optional[str]:
    r"""Why ``entry`` does not apply to ``cls`` (None: it applies)."""
    args = entry["attribute_args"]
    # Rule 1: `baselines` are a distribution of *input* baselines that
    # DeepLiftShap / GradientShap average over (an expectation over reference
    # inputs per example). A game over layer units has no input baselines: what
    # replaces a removed unit is `layer_baselines`, and the dataset is `inputs`.
    if "baselines" in args:
        return "input-baseline distribution of a SHAP method (Rule 1)"
    # Rule 2: no `target`, and the model returns several values per example
    # (LayerActivation's entry attributes activations, not an output): no
    # dataset-level metric follows. With target=None the default metric is the
    # mean output, which needs one value per example.
    if "target" not in args:
        return "no target and several outputs per example: no metric (Rule 2)"
    # Rule 3 (FilterShapley): filters are channels, dimension 1 of an (N, C, ...)
    # tensor; every tensor of the layer(s) must have one (Captum's
    # LayerActivation gives the tensors).
    if cls is FilterShapley and not all(t.dim() >= 3 for t in _layer_tensors(entry)):
        return "a layer tensor has no channel dimension (N, C, ...) (Rule 3)"
    return None


def _layer_tensors(entry: Dict[str, Any]) -> List[torch.Tensor]:
    _, model, args, layer, _, _ = parse_test_config(entry)
    model = copy.deepcopy(model)
    acts = LayerActivation(model, get_target_layer(model, layer)).attribute(
        args["inputs"], additional_forward_args=args.get("additional_forward_args")
    )
    flat: List[torch.Tensor] = []

    def walk(a: Any) -> None:
        if isinstance(a, torch.Tensor):
            flat.append(a)
        else:
            for b in a:
                walk(b)

    walk(acts)
    return flat


CASES = [
    pytest.param(
        e,
        cls,
        id=f"{cls.__name__}-{e['name']}",
        marks=[pytest.mark.skip(reason=r)] if (r := _skip_reason(e, cls)) else [],
    )
    for e in LAYER_ENTRIES
    for cls in CLASSES
]


# Rule 4: Captum's entries pass `internal_batch_size` to `attribute`; here it
# configures the class, so it moves from the entry's arguments to the
# constructor (for `attribute`, `compute_convergence_delta` and the DataParallel
# runs alike). It sets how many examples a forward pass takes, not the values.
CONSTRUCTOR_ARGS = ("internal_batch_size",)


def _setup(
    entry: Dict[str, Any],
) -> Tuple[nn.Module, Any, Dict[str, Any], Dict[str, Any]]:
    """A deep copy of the entry's model, its layer(s), its ``attribute``
    arguments and its constructor arguments (Rule 4), as Captum's harness
    deep-copies them, so that entries cannot affect each other."""
    _, model, args, layer, _, _ = parse_test_config(entry)
    model = copy.deepcopy(model)
    args = copy.deepcopy(args)
    ctor = {k: args.pop(k) for k in CONSTRUCTOR_ARGS if k in args}
    return model, get_target_layer(model, layer), args, ctor


def _state(model: nn.Module) -> Dict[str, Any]:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "params": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_left_alone(model: nn.Module, before: Dict[str, Any]) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
        assert not m._backward_hooks and not m._forward_hooks_with_kwargs, name
        assert "forward" not in vars(m), name  # no replayed prefix left
    assert not nn.modules.module._global_forward_hooks
    after = _state(model)
    assert after["training"] == before["training"]
    for k, v in before["params"].items():
        assert torch.equal(after["params"][k], v), k


def _flat(attr: Any) -> List[torch.Tensor]:
    if isinstance(attr, torch.Tensor):
        return [attr]
    return [t for a in attr for t in _flat(a)]


def _assert_same(a: Any, b: Any, tol: float = 1e-5) -> None:
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def test_rules_select_the_expected_entries() -> None:
    # Captum 0.9 ships 26 layer entries; 19 have no input-baseline
    # distribution (Rule 1). Rule 2 drops LayerActivation's entry for
    # NeuronShapley; Rule 3 leaves FilterShapley the two conv-layer entries.
    assert len(LAYER_ENTRIES) == 26
    ran = {
        cls.__name__: [e["name"] for e in LAYER_ENTRIES if not _skip_reason(e, cls)]
        for cls in CLASSES
    }
    no_shap = [e for e in LAYER_ENTRIES if "baselines" not in e["attribute_args"]]
    assert len(no_shap) == 19
    assert len(ran["NeuronShapley"]) == 18
    assert ran["FilterShapley"] == [
        "conv_layer_single_target",
        "conv_layer_with_perturbations_per_eval",
    ]


def test_skipped_entries_are_refused_clearly() -> None:
    # Rule 2: the method says what is missing rather than inventing a metric
    entry = next(
        e for e in LAYER_ENTRIES if "Rule 2" in str(_skip_reason(e, NeuronShapley))
    )
    model, layer, args, ctor = _setup(entry)
    before = _state(model)
    with pytest.raises(ValueError, match="`target` is required by the default"):
        NeuronShapley(model, layer, **ctor).attribute(**args, **BUDGET)
    _assert_left_alone(model, before)
    # Rule 3: FilterShapley refuses a layer without channels and names the fix
    entry = next(e for e in LAYER_ENTRIES if e["name"] == "basic_layer_multi_output")
    model, layer, args, ctor = _setup(entry)
    before = _state(model)
    with pytest.raises(ValueError, match="no channel dimension.*NeuronShapley"):
        FilterShapley(model, layer, **ctor).attribute(**args, **BUDGET)
    _assert_left_alone(model, before)


@pytest.mark.parametrize("entry, cls", CASES)
def test_config_runs(entry: Dict[str, Any], cls: type) -> None:
    model, layer, args, ctor = _setup(entry)
    model.train()  # the flags must come back, also on submodules
    before = _state(model)
    method = cls(model, layer, **ctor)
    phi, delta = method.attribute(**args, **BUDGET, return_convergence_delta=True)
    _assert_left_alone(model, before)
    tensors = _layer_tensors(entry)
    values = _flat(phi)
    assert len(values) == len(tensors)
    for v, t in zip(values, tensors):
        want = t.shape[1:2] if cls is FilterShapley else t.shape[1:]
        assert v.shape == want and v.dtype == t.dtype
        assert bool(torch.isfinite(v).all())
    # one layer: a tensor, or a tuple for a layer with several tensors; a list
    # of layers: a tuple with one entry per layer
    if isinstance(layer, list):
        assert isinstance(phi, tuple) and len(phi) == len(layer)
    else:
        assert isinstance(phi, torch.Tensor) == (len(tensors) == 1)
    assert isinstance(delta, torch.Tensor) and delta.dim() == 0
    game_args = {k: v for k, v in args.items() if k != "perturbations_per_eval"}
    check = method.compute_convergence_delta(phi, **game_args)
    torch.testing.assert_close(check, delta, rtol=1e-4, atol=1e-4)
    _assert_left_alone(model, before)


@pytest.mark.parametrize("entry, cls", CASES)
def test_config_perturbations_per_eval(entry: Dict[str, Any], cls: type) -> None:
    model, layer, args, ctor = _setup(entry)
    before = _state(model)
    results = []
    for ppe in (1, 3):
        args["perturbations_per_eval"] = ppe
        res = cls(model, layer, **ctor).attribute(**args, **BUDGET, return_result=True)
        results.append(res)
    one, three = results
    assert one.n_permutations == three.n_permutations == BUDGET["max_permutations"]
    torch.testing.assert_close(one.flat_values, three.flat_values)
    _assert_left_alone(model, before)


@pytest.mark.parametrize("entry, cls", CASES)
def test_config_data_parallel(entry: Dict[str, Any], cls: type) -> None:
    model, layer, args, ctor = _setup(entry)
    before = _state(model)
    plain = cls(model, layer, **ctor).attribute(**args, **BUDGET)
    dp = nn.DataParallel(model)  # on CPU: runs the module itself
    _assert_same(cls(dp, layer, **ctor).attribute(**args, **BUDGET), plain)
    # Captum's harness passes the DataParallel forward and the device ids
    by_forward = cls(dp.forward, layer, device_ids=[0], **ctor).attribute(
        **args, **BUDGET
    )
    _assert_same(by_forward, plain)
    _assert_left_alone(model, before)
