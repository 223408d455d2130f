r"""Neuron Shapley for Captum: the neurons and filters responsible for a model's
behaviour, by their Shapley values for a dataset-level metric."""

from .attr import FilterShapley, NeuronShapley
from .metrics import (
    Accuracy,
    accuracy,
    ClassRecall,
    MeanOutput,
    NegativeCrossEntropy,
    SubgroupAccuracy,
)
from .result import ShapleyResult

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
]

from .ablation import ablated, removal_curves  # noqa: E402
from .repair import export_repaired  # noqa: E402

__all__ += ["ablated", "removal_curves", "export_repaired"]
