"""Neural-network building blocks shared by the model families."""

from ._mlp import ACTIVATIONS, MLP, TimeConcat, activation

__all__ = ["ACTIVATIONS", "MLP", "TimeConcat", "activation"]
