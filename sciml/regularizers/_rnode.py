r"""Global running-cost regularizers of RNODE (Finlay et al., "How to train your neural ODE", 2020).

Both integrate a cost along the whole trajectory as an extra state column, so the main solve
computes them (any gradient method, adjoint included) and they cost no separate evaluations of
$f$; the Jacobian term costs one vector-Jacobian product per evaluation.
"""

from __future__ import annotations

import torch

from ..solvers import ODESolverConfig
from ._ode import AbstractODERegularizer, ODESolveRecord

__all__ = ["JacobianFrobeniusRegularizer", "KineticEnergyRegularizer"]


class KineticEnergyRegularizer(AbstractODERegularizer):
    r"""Kinetic energy $R_K = \operatorname{mean}_b \int_{t_0}^{t_{\text{end}}}
    \|f(t, z_b(t))\|^2\,dt$ (optimal-transport-like straight, constant-speed paths).

    Integrated as one augmented column with rate $\|f\|^2$ per sample.

    Args:
        weight: $\lambda_0$.
        weight_final: $\lambda_1$ of an exponential decay, or ``None``.
    """

    name = "kinetic"
    augmented_dim = 1

    def augmented_rates(self, t: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (f**2).sum(dim=-1, keepdim=True)

    def forward(self, record: ODESolveRecord) -> tuple[torch.Tensor, int]:
        return record.integrals.mean(), 0


class JacobianFrobeniusRegularizer(AbstractODERegularizer):
    r"""Jacobian Frobenius norm $R_J = \operatorname{mean}_b \int_{t_0}^{t_{\text{end}}}
    \|\partial_z f(t, z_b(t))\|_F^2\,dt$, by Hutchinson's estimator.

    $\|J\|_F^2 = \mathbb E_\varepsilon \|\varepsilon^\top J\|^2$ for $\varepsilon \sim N(0, I)$;
    one $\varepsilon$ per sample is drawn in :meth:`begin` and kept for the whole solve (fresh
    noise at every evaluation makes the running cost non-smooth in $t$ and the adaptive solver's
    step count explode). $\varepsilon^\top J$ is one vector-Jacobian product per evaluation.

    Args:
        weight: $\lambda_0$.
        weight_final: $\lambda_1$ of an exponential decay, or ``None``.
    """

    name = "jacobian"
    augmented_dim = 1
    needs_input_grad = True

    def __init__(self, weight: float = 1.0, weight_final: float | None = None) -> None:
        super().__init__(weight=weight, weight_final=weight_final)
        self._noise: torch.Tensor | None = None

    def begin(self, t: torch.Tensor, y0: torch.Tensor, solver: ODESolverConfig) -> torch.Tensor:
        self._noise = torch.randn_like(y0)
        return t.new_zeros(0)

    def augmented_rates(self, t: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        if self._noise is None:
            raise RuntimeError("JacobianFrobeniusRegularizer.begin must run before the solve")
        (vjp,) = torch.autograd.grad(
            f, y, self._noise, create_graph=torch.is_grad_enabled(), allow_unused=True
        )
        if vjp is None:  # f does not depend on y
            return f.new_zeros(len(f), 1)
        return (vjp**2).sum(dim=-1, keepdim=True)

    def forward(self, record: ODESolveRecord) -> tuple[torch.Tensor, int]:
        return record.integrals.mean(), 0
