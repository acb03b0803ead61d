"""Neural-network building blocks shared by the model families."""

from ._cde import CubicSpline, NeuralCDE, natural_cubic_spline_coeffs
from ._drifts import (
    DriftFamily,
    LinearDrift,
    LotkaVolterraDrift,
    PotentialDrift,
    RepressilatorDrift,
)
from ._graph import HamiltonianGraphNetwork, symplectic_gradient
from ._ipf import IPFBridge, ipf_bridge
from ._latent import (
    OPERATOR_SOLVERS,
    gaussian_kl,
    least_squares_operator,
    linear_prediction_loss,
)
from ._mlp import ACTIVATIONS, MLP, TimeConcat, activation
from ._periodic import PeriodicEmbedding
from ._transformer import (
    DataEmbedding,
    ModalityFusion,
    OperatorDecoder,
    SymbolDecoder,
    SymbolEmbedding,
    TransformerEncoder,
    sinusoidal_positions,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "OPERATOR_SOLVERS",
    "CubicSpline",
    "DataEmbedding",
    "DriftFamily",
    "HamiltonianGraphNetwork",
    "IPFBridge",
    "LinearDrift",
    "LotkaVolterraDrift",
    "ModalityFusion",
    "NeuralCDE",
    "OperatorDecoder",
    "PeriodicEmbedding",
    "PotentialDrift",
    "RepressilatorDrift",
    "SymbolDecoder",
    "SymbolEmbedding",
    "TimeConcat",
    "TransformerEncoder",
    "activation",
    "gaussian_kl",
    "ipf_bridge",
    "least_squares_operator",
    "linear_prediction_loss",
    "natural_cubic_spline_coeffs",
    "sinusoidal_positions",
    "symplectic_gradient",
]
