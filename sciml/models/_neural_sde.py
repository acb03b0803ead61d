"""Neural stochastic differential equations fitted by the Euler–Maruyama transition likelihood."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..metrics import wasserstein
from ..nn import MLP, TimeConcat
from ..solvers import SDESolverConfig, sdeint
from ._base import OptimizerConfig, Task

__all__ = ["NeuralSDE"]


class _DiagonalSDE(nn.Module):
    """torchsde-style container: Ito SDE with drift ``f`` and diagonal diffusion ``g``."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, min_diffusion: float) -> None:
        super().__init__()
        self.drift = drift
        self.diffusion = diffusion
        self.min_diffusion = min_diffusion

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.diffusion(t, y)) + self.min_diffusion


class NeuralSDE(Task):
    r"""A neural Ito SDE fitted to trajectories.

    $$ dy = f_\theta(t, y)\,dt + \mathrm{diag}(g_\phi(t, y))\,dW $$

    **Objective: Euler–Maruyama transition likelihood** (the Gaussian quasi-likelihood of
    discretely observed diffusions). For consecutive observations $y_k, y_{k+1}$ at spacing
    $\Delta_k$ the transition density is approximated by the one-step Euler–Maruyama law

    $$ y_{k+1} \mid y_k \sim \mathcal N\big(y_k + f(t_k, y_k)\Delta_k,\
       \mathrm{diag}(g(t_k, y_k)^2)\Delta_k\big), $$

    and the loss is the mean negative log-likelihood over all transitions. It is a proper scoring
    rule for drift *and* diffusion, needs no simulation during training, and is consistent as
    $\Delta \to 0$; its bias is $O(\Delta)$, so observe densely (``n_times`` large) relative to the
    time scales of $f$. Observation noise should be small against $g\sqrt{\Delta}$.

    Validation/test additionally simulate ``n_eval_samples`` paths per observed initial state with
    :func:`sciml.solvers.sdeint` and report the 2-Wasserstein distance between the simulated and
    observed states at the final time (``w2_final``).

    Args:
        state_dim: dimension ``d`` of the state.
        hidden_dims: widths of the drift and diffusion MLPs.
        activation: their activation.
        time_dependent: feed ``t`` to both networks.
        min_diffusion: lower bound added to the softplus diffusion (keeps the likelihood finite).
        solver: SDE solver settings used for simulation in evaluation.
        n_eval_samples: simulated paths per initial state in evaluation.
        optimizer: optimizer settings.
    """

    def __init__(
        self,
        state_dim: int = 1,
        hidden_dims: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time_dependent: bool = False,
        min_diffusion: float = 1e-3,
        solver: SDESolverConfig = SDESolverConfig(),  # noqa: B008 (frozen dataclass, immutable)
        n_eval_samples: int = 4,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        width = state_dim + int(time_dependent)
        self.sde = _DiagonalSDE(
            TimeConcat(
                MLP(width, state_dim, hidden_dims, activation_name=activation),
                time_dependent=time_dependent,
            ),
            TimeConcat(
                MLP(width, state_dim, hidden_dims, activation_name=activation),
                time_dependent=time_dependent,
            ),
            min_diffusion,
        )
        self.solver = SDESolverConfig(**solver) if isinstance(solver, dict) else solver

    def drift(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sde.f(t, y)

    def diffusion(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sde.g(t, y)

    def forward(
        self, y0: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample paths ``(B, T, d)`` from ``y0 (B, d)`` at times ``t (T,)``."""
        ys, _ = sdeint(
            self.sde, y0, t, method=self.solver.method, dt=self.solver.dt, generator=generator
        )
        return ys.movedim(0, 1)

    def transition_nll(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative Euler–Maruyama log-likelihood of ``y (B, T, d)`` seen at ``t (B, T)``."""
        dt = (t[:, 1:] - t[:, :-1]).unsqueeze(-1)
        if torch.any(dt <= 0):
            raise ValueError("observation times must be strictly increasing")
        start, increment = y[:, :-1], y[:, 1:] - y[:, :-1]
        t_start = t[:, :-1].unsqueeze(-1)
        mean = self.drift(t_start, start) * dt
        variance = self.diffusion(t_start, start) ** 2 * dt
        return 0.5 * torch.mean(
            (increment - mean) ** 2 / variance + torch.log(2 * math.pi * variance)
        )

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        t, y = batch["t"].to(batch["y"].dtype), batch["y"]
        nll = self.transition_nll(t, y)
        terms: dict[str, Any] = {"nll": nll.detach()}
        if stage != "train":
            with torch.no_grad():
                y0 = y[:, 0].repeat_interleave(self.hparams.n_eval_samples, dim=0)
                samples = self(y0, t[0])
            terms["w2_final"] = wasserstein(samples[:, -1], y[:, -1])
        return nll, terms
