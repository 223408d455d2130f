r"""``python -m comparisons --applications``: the targeted gradient baselines
(a quantity given as a callable), and every before/after number the report
prints, recomputed here on the shipped models with plain forward hooks (no
library removal code) and Captum's PGD: for a small run made here, and for the
committed results of the last full run (``docs/applications/``).

The models are the same on every machine (their weights ship with the package),
but another CPU's kernels may round differently. Tolerances, per number:

- A prediction can only change where the two largest logits are within
  ``MARGIN`` = 1e-3 of each other. Recomputing these models in float64 moves
  their logits by at most 2.1e-5, so 1e-3 is about 50 times what a change of
  rounding does. A rate over a group may differ by the share of such examples
  in the group (on the committed run there are none, so the check is exact).
- The transfer attack is crafted through the digits CNN, whose max-pooling
  routes the gradient by the position of the maximum: at tied activations that
  choice belongs to the kernel, and PGD's sign steps amplify it. Recomputed in
  float64, its success moved by at most 4 of the 400 test digits (0.01) at any
  removal; ``TRANSFER_TOL`` allows twice that. Every other number (clean
  accuracies, and attacks crafted through the residual network, which has no
  max-pooling) did not move at all in float64."""

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from comparisons.case_studies import (
    AppOptions,
    CaseStudies,
    fingerprint,
    GRADIENT_METHODS,
    render_saved,
    run_applications,
    SHAPLEY_SET,
)
from comparisons.methods import baselines as B
from torch import nn

DOCS = Path(__file__).resolve().parent.parent / "docs" / "applications"


# -- a quantity given as a callable ----------------------------------------------


@pytest.fixture(scope="module")
def cnn():
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    return trained_digits_cnn(), load_digits_splits()


def _class_score(out, t):
    return out.gather(1, t.view(-1, 1)).squeeze(1)


def test_quantity_callable_matches_captum_targets(cnn):
    model, s = cnn
    x, y = s.x_val[:40], s.y_val[:40]
    layers = model.conv_layers
    for fn, kw in (
        (B.gradient_x_activation, {}),
        (B.layer_conductance, {"n_steps": 4}),
        (B.distributional_influence, {}),
        (B.distributional_influence, {"distribution": "path", "n_steps": 4}),
    ):
        ref = fn(model, layers, x, y, **kw)
        got = fn(model, layers, x, y, quantity=_class_score, batch_size=16, **kw)
        assert torch.allclose(ref, got, atol=1e-6), fn.__name__


def test_quantity_reads_a_tuple_target_per_example(cnn):
    model, s = cnn
    x, y = s.x_val[:30], s.y_val[:30]
    w = torch.where(torch.arange(30) < 12, 1.0, -1.0)
    got = B.gradient_x_activation(
        model, model.conv_layers, x, (y, w), quantity=B.log_likelihood, batch_size=7
    )
    a = B.gradient_x_activation(
        model, model.conv_layers, x[:12], y[:12], quantity=B.log_likelihood
    )
    b = B.gradient_x_activation(
        model, model.conv_layers, x[12:], y[12:], quantity=B.log_likelihood
    )
    assert torch.allclose(got, (12 * a - 18 * b) / 30, atol=1e-6)
    out = torch.randn(5, 10)
    t = torch.tensor([0, 3, 9, 2, 2])
    assert torch.allclose(
        B.log_likelihood(out, t), -F.cross_entropy(out, t, reduction="none")
    )
    with pytest.raises(ValueError, match="`quantity`"):
        B.gradient_x_activation(
            model, model.conv1, x, y, contrast=(1, 2), quantity=B.log_likelihood
        )
    with pytest.raises(ValueError, match="one number per example"):
        B.gradient_x_activation(model, model.conv1, x, y, quantity=lambda o, t: o.sum())
    assert all(not m._forward_hooks for m in model.modules())


# -- recomputing the report's numbers ------------------------------------------------


class Recompute:
    r"""The models and data of a summary, and plain-hook removal."""

    def __init__(self, summary):
        from captum_neuron_shapley.examples import (
            bold_minority_splits,
            load_digits_splits,
            trained_digits_cnn,
            trained_digits_resnet,
        )

        st, d = summary["settings"], summary["data"]
        self.models = {
            "resnet": trained_digits_resnet(),
            "resnet_bold": trained_digits_resnet(bold_fraction=st["bold_fraction"]),
            "transfer_source": trained_digits_cnn(),
        }
        self.fingerprints = {k: fingerprint(m) for k, m in self.models.items()}
        self.same_weights = all(
            self.fingerprints[k] == summary["models"][k]["fingerprint"]
            for k in self.models
        )
        s = load_digits_splits()
        nv, nt = d["max_val"], d["max_test"]
        self.x_val, self.y_val = s.x_val[:nv], s.y_val[:nv]
        self.x_test, self.y_test = s.x_test[:nt], s.y_test[:nt]
        b = bold_minority_splits(st["bold_fraction"])

        def paired(x, y, n):
            if not n:
                return x, y
            half = len(y) // 2
            idx = torch.cat([torch.arange(n), half + torch.arange(n)])
            return x[idx], y[idx]

        self.bx_val, _ = paired(b.x_val, b.y_val, nv)
        self.bx_test, self.by_test = paired(b.x_test, b.y_test, nt)
        self.bg_test = torch.arange(len(self.by_test)) >= len(self.by_test) // 2
        self.st = st
        self._base = {}

    def baselines(self, key):
        r"""Channel means of every conv layer over the clean validation inputs
        (averaged in float64, as the estimator does)."""
        if key not in self._base:
            model = self.models[key]
            x = self.x_val if key == "resnet" else self.bx_val
            means, hooks = {}, []
            for name, m in model.named_modules():
                if isinstance(m, nn.Conv2d):
                    hooks.append(
                        m.register_forward_hook(
                            lambda mod, i, o, n=name: means.__setitem__(
                                n, o.double().mean((0, 2, 3)).float()
                            )
                        )
                    )
            try:
                with torch.no_grad():
                    model(x)
            finally:
                for h in hooks:
                    h.remove()
            self._base[key] = means
        return self._base[key]

    def hooks(self, key, units):
        model, base = self.models[key], self.baselines(key)
        per = {}
        for name, ch in units:
            per.setdefault(name, []).append(int(ch))
        handles = []
        for name, chs in per.items():

            def hook(mod, i, o, n=name, c=chs):
                o = o.clone()
                o[:, c] = base[n][c].view(1, -1, 1, 1)
                return o

            handles.append(model.get_submodule(name).register_forward_hook(hook))
        return handles

    def logits(self, key, units, x):
        handles = self.hooks(key, units)
        try:
            with torch.no_grad():
                return self.models[key](x)
        finally:
            for h in handles:
                h.remove()

    def pgd(self, model, x, goal):
        from captum.robust import PGD

        eps, steps = self.st["eps"], self.st["step_num"]
        loss = lambda o, t: F.cross_entropy(o, t, reduction="none")  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (
                PGD(model, loss, 0.0, 1.0)
                .perturb(x, eps, 2.5 * eps / steps, steps, goal, targeted=True)
                .detach()
            )

    def attacks(self):
        model = self.models["resnet"]
        g = torch.Generator().manual_seed(1)  # the test split's random targets
        goal = (
            self.y_test + torch.randint(1, 10, (len(self.y_test),), generator=g)
        ) % 10
        adv = self.pgd(model, self.x_test, goal)
        transfer = self.pgd(self.models["transfer_source"], self.x_test, goal)
        return adv, goal, transfer

    def metrics(self, app, units, attacks=None):
        r"""The metrics of ``app`` after removing ``units``: ``{name: (value,
        tolerance)}`` (see the module docstring for the tolerance)."""
        y = self.y_test
        if app["key"] == "overall":
            hit, fragile = _decisions(self.logits("resnet", units, self.x_test), y)
            return {"accuracy": _rate(hit, fragile)}
        if app["key"] == "class":
            c = app["class"]
            hit, fragile = _decisions(self.logits("resnet", units, self.x_test), y)
            r, o = _rate(hit, fragile, y == c), _rate(hit, fragile, y != c)
            return {
                "recall": r,
                "accuracy_other_classes": o,
                "accuracy": _rate(hit, fragile),
                "recall_minus_others": (r[0] - o[0], r[1] + o[1]),
            }
        if app["key"] == "fairness":
            hit, fragile = _decisions(
                self.logits("resnet_bold", units, self.bx_test), self.by_test
            )
            g = self.bg_test
            return {
                "subgroup_accuracy": _rate(hit, fragile, g),
                "rest_accuracy": _rate(hit, fragile, ~g),
                "accuracy": _rate(hit, fragile),
            }
        adv, goal, transfer = attacks
        clean = _rate(*_decisions(self.logits("resnet", units, self.x_test), y))
        success = _rate(*_decisions(self.logits("resnet", units, adv), goal))
        moved = _rate(*_decisions(self.logits("resnet", units, transfer), goal))
        return {
            "attack_success": success,
            "clean_accuracy": clean,
            "vulnerability": (success[0] - clean[0], success[1] + clean[1]),
            "transfer_attack_success": (moved[0], moved[1] + TRANSFER_TOL),
        }


#: Logit margin below which another CPU's rounding could change a prediction.
MARGIN = 1e-3
#: Extra tolerance of the transfer attack's success (see the module docstring).
TRANSFER_TOL = 0.02


def _decisions(logits, labels):
    r"""Which predictions are right, and which could flip under rounding."""
    top = logits.topk(2, dim=1).values
    return logits.argmax(1) == labels, (top[:, 0] - top[:, 1]) < MARGIN


def _rate(hit, fragile, mask=None):
    r"""``(rate of hit, share of fragile decisions)`` over ``mask``."""
    if mask is not None:
        hit, fragile = hit[mask], fragile[mask]
    return float(hit.double().mean()), float(fragile.double().mean())


def _close(want, got, tol=0.0):
    return abs(want - got) <= tol + 1e-9


def check_summary(summary, every_k=True):
    r"""Recompute the before/after numbers of a summary (every ``k`` of every
    curve, or only the headline ``k``); returns how many were checked."""
    rc = Recompute(summary)
    assert rc.same_weights, (
        "the shipped models are not the ones the report ran on: "
        f"{rc.fingerprints} against {summary['models']}"
    )
    checked = 0
    for key, app in summary["apps"].items():
        attacks = rc.attacks() if key == "adversarial" else None
        metrics = app["metrics"]
        got = rc.metrics(app, [], attacks)
        for m in metrics:
            assert _close(app["before"][m], *got[m]), (key, "before", m)
            checked += 1
        ks = [(j, k) for j, k in enumerate(app["ks"]) if every_k or k == app["k"]]
        for name, order in app["orders"].items():
            for j, k in ks:
                if app["curves"][name][metrics[0]][j] is None:
                    assert k > len(order)
                    continue
                got = rc.metrics(app, order[:k], attacks)
                for m in metrics:
                    want = app["curves"][name][m][j]
                    assert _close(want, *got[m]), (key, name, k, m)
                    checked += 1
        for r, order in enumerate(app["random_orders"]):
            for j, k in ks:
                got = rc.metrics(app, order[:k], attacks)
                for m in metrics:
                    want = app["random"]["curves"][m][r][j]
                    assert _close(want, *got[m]), (key, r, k, m)
                    checked += 1
        # the library's own before/after agree with the curves at k
        j = app["ks"].index(app["k"])
        lib = app.get("library_report", {})
        for m, v in lib.get("after", {}).items():
            if m in app["curves"][SHAPLEY_SET]:
                assert _close(app["curves"][SHAPLEY_SET][m][j], v), (key, m)
        for m, v in lib.get("before", {}).items():
            if m in app["before"]:
                assert _close(app["before"][m], v), (key, m)
        for row in app.get("other_classes", []):
            sub = dict(app, **{"class": row["class"]})
            got0 = rc.metrics(sub, [], None)
            got1 = rc.metrics(sub, row["removed"], None)
            for m in ("recall", "accuracy_other_classes"):
                assert _close(row["before"][m], *got0[m]), (row["class"], m)
                assert _close(row["after_set"][m], *got1[m]), (row["class"], m)
                checked += 2
        if key == "adversarial":
            adv, goal, _ = attacks
            model = rc.models["resnet"]
            for name, v in app["fresh_attack_success"].items():
                units = [] if name == "intact" else app["orders"][name][: app["k"]]
                handles = rc.hooks("resnet", units)
                try:
                    xf = rc.pgd(model, rc.x_test, goal)
                    with torch.no_grad():
                        got_fresh = _rate(*_decisions(model(xf), goal))
                finally:
                    for h in handles:
                        h.remove()
                assert _close(v, *got_fresh), ("fresh", name)
                checked += 1
            if "fresh_attack_success" in lib:
                assert _close(
                    lib["fresh_attack_success"],
                    app["fresh_attack_success"][SHAPLEY_SET],
                )
    return checked


def test_small_run_writes_the_report_and_its_numbers_are_real(tmp_path):
    opts = AppOptions(
        out=tmp_path,
        k=2,
        ks=(1, 2, 3),
        max_evaluations=60,
        adversarial_max_evaluations=120,
        refine_pool_factor=2,
        random_seeds=2,
        n_steps=3,
        all_classes=False,
        adversarial_subset=32,
        refine_gradient=True,
        max_val=60,
        max_test=60,
        step_num=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = run_applications(opts)
    for name in ["applications.md", "applications.json"] + list(s.figures.values()):
        assert (tmp_path / name).stat().st_size > 0, name
    text = (tmp_path / "applications.md").read_text()
    assert "| application | paper | here: before -> after on held-out data |" in text
    for case in s.cases.values():
        assert case.paper in text
        assert set(GRADIENT_METHODS) <= set(case.judged.curves)
        assert any(m.endswith("+ greedy") for m in case.judged.curves)
        assert case.n_evaluations > 0
    saved = json.loads((tmp_path / "applications.json").read_text())
    assert check_summary(saved) > 100
    # a saved run is laid out again from its JSON alone: the same text, the
    # same figures, the same JSON
    again = tmp_path / "again"
    render_saved(tmp_path / "applications.json", again)
    assert (again / "applications.md").read_text() == text
    assert json.loads((again / "applications.json").read_text()) == saved
    for name in s.figures.values():
        assert (again / name).stat().st_size > 0, name


def _committed():
    path = DOCS / "applications.json"
    if not path.exists():
        pytest.skip("no committed full run")
    summary = json.loads(path.read_text())
    assert not summary["quick"]
    return summary


def test_committed_run_reads_back_and_renders(tmp_path):
    # the committed JSON is read by the current renderers: every field survives
    # the round trip and the report is laid out again with its numbers
    summary = _committed()
    studies = CaseStudies.from_dict(summary)
    again = studies.to_dict()
    for key in ("command", "models", "data", "settings", "apps", "figures"):
        assert again[key] == summary[key], key
    render_saved(DOCS / "applications.json", tmp_path)
    text = (tmp_path / "applications.md").read_text()
    overall = summary["apps"]["overall"]
    j = overall["ks"].index(overall["k"])
    value = overall["curves"][SHAPLEY_SET]["accuracy"][j]
    assert f"{value:.3f}" in text


def test_committed_full_run_numbers_are_what_the_cached_models_do():
    # every number applications.md prints: before, every method and random order
    # at every k, the every-class table and the fresh attacks
    summary = _committed()
    b = summary["apps"]["fairness"]["before"]
    assert b["rest_accuracy"] - b["subgroup_accuracy"] >= 0.15  # the premise
    assert check_summary(summary) > 1000
