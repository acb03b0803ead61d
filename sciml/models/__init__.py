"""Model families, one LightningModule each; the networks inside are plain ``nn.Module`` objects."""

from ._base import NonFiniteLossError, OptimizerConfig, Task
from ._neural_ode import NeuralODE
from ._neural_sde import NeuralSDE

__all__ = ["NeuralODE", "NeuralSDE", "NonFiniteLossError", "OptimizerConfig", "Task"]
