"""Neural stochastic differential equations fitted by the Euler–Maruyama transition likelihood."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..metrics import wasserstein
from ..nn import MLP, TimeConcat
from ..regularizers import AbstractRegularizer, LocalSDERegularizer
from ..solvers import SDESolverConfig, SolverStats
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
    observed states at the final time (``w2_final``), and the drift and diffusion evaluations of
    that simulation (``nfe_drift``, ``nfe_diffusion``; with ``solver.adaptive`` they measure how
    hard the learned SDE is to solve).

    **Regularization** (training only). Each :class:`~sciml.regularizers.LocalSDERegularizer` in
    ``regularizers`` adds $\lambda R$, evaluated at the observed states of one random
    observation index of the batch with the solver's step ``solver.dt`` and tolerances. Training
    then logs ``train/reg``, ``train/reg_<name>``, ``train/nfe_reg_drift`` and
    ``train/nfe_reg_diffusion``.

    Args:
        state_dim: dimension ``d`` of the state.
        hidden_dims: widths of the drift and diffusion MLPs.
        activation: their activation.
        time_dependent: feed ``t`` to both networks.
        min_diffusion: lower bound added to the softplus diffusion (keeps the likelihood finite).
        solver: SDE solver settings used for simulation in evaluation.
        n_eval_samples: simulated paths per initial state in evaluation.
        optimizer: optimizer settings.
        regularizers: training-only :class:`~sciml.regularizers.LocalSDERegularizer` penalties
            (YAML: list of ``class_path``/``init_args``); stored in checkpoint
            hyperparameters by their ``config()``.
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
        regularizers: list[AbstractRegularizer] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["regularizers"])
        regularizers = self.store_regularizers("regularizers", regularizers)
        for regularizer in regularizers:
            if not isinstance(regularizer, LocalSDERegularizer):
                raise ValueError(
                    f"NeuralSDE regularizers must be LocalSDERegularizer, "
                    f"got {type(regularizer).__name__}"
                )
        self.regularizers = nn.ModuleList(regularizers)
        self.last_stats: SolverStats | None = None
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
        """Sample paths ``(B, T, d)`` from ``y0 (B, d)`` at times ``t (T,)``; the solver's
        statistics land in ``last_stats``."""
        ys, self.last_stats = self.solver.solve(self.sde, y0, t, generator=generator)
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
        loss = nll
        if stage == "train" and self.regularizers:
            # One random observation index per batch, as LocalRegularizer samples one time.
            k = int(torch.randint(t.shape[1] - 1, ()))
            total = nll.new_zeros(())
            nfe_drift = nfe_diffusion = 0
            for regularizer in self.regularizers:
                penalty = regularizer(
                    self.drift,
                    self.diffusion,
                    t[:, k : k + 1],
                    y[:, k],
                    self.solver.dt,
                    rtol=self.solver.rtol,
                    atol=self.solver.atol,
                )
                total = total + regularizer.weight_at(self.global_step, self.total_steps()) * (
                    penalty.value
                )
                terms[f"reg_{regularizer.name}"] = penalty.value.detach()
                nfe_drift += penalty.nfe_drift
                nfe_diffusion += penalty.nfe_diffusion
            terms.update(
                reg=total.detach(), nfe_reg_drift=nfe_drift, nfe_reg_diffusion=nfe_diffusion
            )
            loss = nll + total
        if stage != "train":
            with torch.no_grad():
                y0 = y[:, 0].repeat_interleave(self.hparams.n_eval_samples, dim=0)
                samples = self(y0, t[0])
            terms["w2_final"] = wasserstein(samples[:, -1], y[:, -1])
            terms["nfe_drift"] = float(self.last_stats.nfe_forward)
            terms["nfe_diffusion"] = float(self.last_stats.nfe_diffusion)
        return loss, terms
