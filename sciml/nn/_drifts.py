r"""Parametric drift families $f_\theta(x)$ for reference SDEs $dX = f_\theta(X)dt + \sigma dW$.

Each family is a plain ``nn.Module`` mapping ``(..., d) -> (..., d)`` whose
:meth:`~DriftFamily.parameter_vector` lists its interpretable parameters in a fixed order (used to
compare a fitted family with the true one). Positive rate constants are stored through an absolute
value, as in the SBIRR reference code, so Adam can move them freely across zero.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from ._mlp import MLP

__all__ = [
    "DriftFamily",
    "LinearDrift",
    "LotkaVolterraDrift",
    "PotentialDrift",
    "RepressilatorDrift",
]


class DriftFamily(nn.Module, abc.ABC):
    """A drift ``f(x)``: ``(..., d) -> (..., d)`` with named, interpretable parameters."""

    @abc.abstractmethod
    def parameter_vector(self) -> torch.Tensor:
        """The interpretable parameters as a flat tensor (empty for black-box families)."""


class LinearDrift(DriftFamily):
    r"""$f(x) = Ax + c$ with ``A (d, d)`` and ``c (d,)``; zero at initialisation (Brownian).

    :meth:`parameter_vector` is ``A`` flattened row-major.
    """

    def __init__(self, dim: int, *, intercept: bool = True) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.A = nn.Parameter(torch.zeros(dim, dim, dtype=torch.float64))
        self.c = nn.Parameter(torch.zeros(dim, dtype=torch.float64), requires_grad=intercept)
        self.intercept = intercept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.T.to(x.dtype) + self.c.to(x.dtype)

    def parameter_vector(self) -> torch.Tensor:
        return self.A.detach().reshape(-1)


class LotkaVolterraDrift(DriftFamily):
    r"""Lotka–Volterra $f(x, y) = (\alpha x - \beta xy,\ \delta xy - \gamma y)$.

    Parameters $(\alpha, \beta, \gamma, \delta)$.
    """

    def __init__(self, initial: Sequence[float] = (0.1, 0.1, 0.1, 0.1)) -> None:
        super().__init__()
        if len(initial) != 4:
            raise ValueError(f"initial needs (alpha, beta, gamma, delta), got {list(initial)}")
        self.raw = nn.Parameter(torch.tensor(list(initial), dtype=torch.float64))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        alpha, beta, gamma, delta = self.raw.abs().to(state.dtype)
        x, y = state[..., 0], state[..., 1]
        return torch.stack([alpha * x - beta * x * y, delta * x * y - gamma * y], dim=-1)

    def parameter_vector(self) -> torch.Tensor:
        return self.raw.detach().abs()


class RepressilatorDrift(DriftFamily):
    r"""mRNA-only repressilator, $\dot x_i = \beta / (1 + (|x_{i-1}|/k)^n) - \gamma x_i$ (indices
    mod 3); parameters $(\beta, n, k, \gamma)$."""

    def __init__(self, initial: Sequence[float] = (1.0, 1.0, 1.0, 0.1)) -> None:
        super().__init__()
        if len(initial) != 4:
            raise ValueError(f"initial needs (beta, n, k, gamma), got {list(initial)}")
        self.raw = nn.Parameter(torch.tensor(list(initial), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, hill, k, gamma = self.raw.abs().to(x.dtype)
        repressor = torch.roll(x, shifts=1, dims=-1).abs()
        return beta / (1.0 + (repressor / (k + 1e-8)) ** hill) - gamma * x

    def parameter_vector(self) -> torch.Tensor:
        return self.raw.detach().abs()


class PotentialDrift(DriftFamily):
    r"""Gradient field $f(x) = \nabla_x U_\phi(x)$ of an MLP potential (SBIRR's cell family)."""

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.potential = MLP(dim, 1, hidden_dims, activation_name="softplus").double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Keep the graph only when the caller differentiates (the refit), not when simulating.
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            inputs = x.detach().double().requires_grad_(True)
            energy = self.potential(inputs).sum()
            (gradient,) = torch.autograd.grad(energy, inputs, create_graph=keep_graph)
        return gradient.to(x.dtype)

    def parameter_vector(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.float64)
