r"""Captum attribution class :class:`FilterShapley`: Neuron Shapley with one
player per channel (convolutional filter)."""

from __future__ import annotations

from .attr import NeuronShapley

__all__ = ["FilterShapley"]


class FilterShapley(NeuronShapley):
    r"""Neuron Shapley with one player per channel (convolutional filter).

    The same method as :class:`NeuronShapley`, with the units of each layer
    being its output channels (dimension 1 of ``(N, C, L)``, ``(N, C, H, W)`` or
    ``(N, C, D, H, W)`` outputs; of each tensor, for a layer with several). A
    removed filter emits, by default, its mean activation over the evaluation
    inputs (the per-channel constant of the original paper, which removed a
    filter by zeroing its weights and batch-norm moving mean). ``layer_mask`` is
    not supported. The attributions of a layer have shape ``(C,)``.

    The constructor takes the arguments of :class:`NeuronShapley`; so does
    ``attribute``.

    Examples::

        >>> # ImageClassifier takes a single input tensor of images Nx3x32x32,
        >>> # and returns an Nx10 tensor of class probabilities. It contains
        >>> # the conv layers conv1 (6 filters) and conv2 (16 filters).
        >>> net = ImageClassifier()
        >>> fs = FilterShapley(net, [net.conv1, net.conv2])
        >>> # One joint game over the 22 filters: their Shapley values for the
        >>> # accuracy on (x_val, y_val), until the top 10 are separated.
        >>> phi1, phi2 = fs.attribute(x_val, target=y_val, top_k=10, seed=0)
        >>> phi1.shape  # one value per filter of conv1
        torch.Size([6])
        >>> # the filters whose joint removal hurts the accuracy most
        >>> res = fs.attribute(x_val, target=y_val, top_k=10, seed=0,
        >>>                    refine="greedy", return_result=True)
        >>> res.removal_set
    """

    _grouping: str = "filter"
