"""Model families, one LightningModule each; the networks inside are plain ``nn.Module`` objects."""

from ._base import NonFiniteLossError, OptimizerConfig, Task
from ._koopman_vae import KoopmanVAE, TimeSeriesMetricsConfig, masked_reconstruction_loss
from ._lpinn import CrossingCharacteristicsWarning, LagrangianPINN, lagrangian_residuals
from ._meta_hamiltonian import (
    MetaHamiltonian,
    hamiltonian_derivative_loss,
    learned_vector_field,
    maml_inner_step,
)
from ._neural_ode import NeuralODE
from ._neural_sde import NeuralSDE
from ._ode_classifier import ODEClassifier
from ._physics_informed import LBFGSConfig, PhysicsInformedTask
from ._pinn import PINN
from ._prose import PROSE, ProseSizes
from ._schrodinger_bridge import SBIRRConfig, SchrodingerBridge

__all__ = [
    "PINN",
    "PROSE",
    "CrossingCharacteristicsWarning",
    "KoopmanVAE",
    "LBFGSConfig",
    "LagrangianPINN",
    "MetaHamiltonian",
    "NeuralODE",
    "NeuralSDE",
    "NonFiniteLossError",
    "ODEClassifier",
    "OptimizerConfig",
    "PhysicsInformedTask",
    "ProseSizes",
    "SBIRRConfig",
    "SchrodingerBridge",
    "Task",
    "TimeSeriesMetricsConfig",
    "hamiltonian_derivative_loss",
    "lagrangian_residuals",
    "learned_vector_field",
    "maml_inner_step",
    "masked_reconstruction_loss",
]
