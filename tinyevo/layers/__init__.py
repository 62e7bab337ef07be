"""Layers with hand-written forward and backward: ``y = layer(x)`` for inference,
``y, backprop = layer.forward(x, train=...)`` for training."""

from tinyevo.layers import activations
from tinyevo.layers.base import LAYER_TYPES, Layer, layer_from_spec, own, register
from tinyevo.layers.conv import Conv
from tinyevo.layers.dense import Dense
from tinyevo.layers.init import initialize
from tinyevo.layers.norm import BatchNorm
from tinyevo.layers.pool import Dropout, Flatten, GlobalPool, MaxPool, MeanPool
from tinyevo.layers.rescale import Rescale, destandardizer, standardizer
from tinyevo.layers.sequential import Sequential

__all__ = [
    "Layer", "Dense", "Conv", "BatchNorm", "MaxPool", "MeanPool", "GlobalPool", "Flatten",
    "Dropout", "Sequential", "activations", "initialize", "layer_from_spec", "register",
    "LAYER_TYPES", "own", "Rescale", "standardizer", "destandardizer",
]
