r"""Neuron Shapley for Captum: the neurons, filters and attention heads
responsible for a model's behaviour, by their Shapley values for a dataset-level
metric."""

from ._run import UnestimatedWarning
from .attr import NeuronShapley
from .bounds import AnytimeBound, Bound, FixedBound, PaperBound, StrictBound
from .filter_shapley import FilterShapley
from .metrics import (
    Accuracy,
    accuracy,
    ClassRecall,
    MeanOutput,
    NegativeCrossEntropy,
    SubgroupAccuracy,
)
from .msr import MSRSampler
from .refine import GreedyRefine
from .result import ShapleyResult
from .sampler import PermutationSampler, Sampler
from .stopping import (
    Callback,
    Checkpoint,
    HalfWidth,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    StoppingRule,
    TopKSeparated,
)

__version__ = "0.1.0"

__all__ = [
    "FilterShapley",
    "NeuronShapley",
    "ShapleyResult",
    "Accuracy",
    "accuracy",
    "ClassRecall",
    "MeanOutput",
    "NegativeCrossEntropy",
    "SubgroupAccuracy",
    "Sampler",
    "PermutationSampler",
    "MSRSampler",
    "StoppingRule",
    "TopKSeparated",
    "HalfWidth",
    "MaxEvaluations",
    "MaxPermutations",
    "MaxTime",
    "Callback",
    "Checkpoint",
    "Bound",
    "AnytimeBound",
    "FixedBound",
    "StrictBound",
    "PaperBound",
    "GreedyRefine",
    "UnestimatedWarning",
]

from .ablation import ablated, removal_curves  # noqa: E402
from .heads import feature_mask, HeadShapley  # noqa: E402
from .repair import export_repaired  # noqa: E402

__all__ += ["ablated", "removal_curves", "export_repaired"]
__all__ += ["HeadShapley", "feature_mask"]
