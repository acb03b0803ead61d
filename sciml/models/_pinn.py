"""The Eulerian physics-informed neural network baseline, with causal, curriculum and seq2seq
training (Raissi et al. 2019; Krishnapriyan et al. 2021; Wang, Sankaran, Perdikaris 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data import ConvectionDiffusion1D
from ..metrics import relative_l2_centered
from ..nn import MLP, PeriodicEmbedding
from ._base import OptimizerConfig
from ._physics_informed import LBFGSConfig, PhysicsInformedTask

__all__ = ["PINN"]


class PINN(PhysicsInformedTask):
    r"""An MLP $u_\theta(x, t)$ fitted to $u_t + f(u, x, t)\,u_x = \nu u_{xx} + s(u, x, t)$.

    The loss is soft: $\mathrm{MSE}_{ic} + \mathrm{MSE}_{bc} + w\,\mathcal L_{res}$ with the
    initial condition on ``x_initial``, periodicity $u(0, t) = u(L, t)$ (and $u_x$ too when
    $\nu > 0$) on ``t_boundary``, and the residual $r = u_t + f u_x - \nu u_{xx} - s$ by autograd
    on the collocation points. Adam then L-BFGS (:class:`~sciml.models.PhysicsInformedTask`).

    Options (at most one of curriculum and time marching):

    * ``causal_epsilon``: causal weighting (Wang, Sankaran, Perdikaris 2022). The collocation
      times are cut into ``causal_chunks`` equal bins with mean squared residuals $L_i$, and
      $\mathcal L_{res} = \frac1M\sum_i w_i L_i$ with $w_i = \exp(-\epsilon \sum_{k<i} L_k)$
      (exclusive sum, weights not differentiated), so later times count once earlier ones fit.
    * ``curriculum_stages = n``: curriculum over the convection speed (Krishnapriyan et al. 2021):
      stage $k$ trains with $f$ scaled by $(k+1)/n$, warm-starting from stage $k-1$.
    * ``time_windows = n``: seq2seq time marching (Krishnapriyan et al. 2021): one network per
      window $[kT/n, (k+1)T/n]$, trained in turn with the previous window's prediction at its
      start as initial condition.

    The Adam and L-BFGS budgets are split evenly over the stages, so every variant gets the same
    total budget.

    Args:
        problem: the PDE (same as the data module's).
        hidden_dims: MLP widths (default 4 x 50, as in Krishnapriyan et al.).
        activation: hidden activation.
        periodic_inputs: feed $(\cos, \sin)$ of $x$ (exact periodicity) instead of raw $x$.
        residual_weight: $w$.
        causal_epsilon: $\epsilon$ of causal weighting; ``None`` disables it.
        causal_chunks: number of time bins $M$ for causal weighting.
        curriculum_stages: stages of the speed curriculum (1: none).
        time_windows: seq2seq windows (1: none).
        adam_steps, optimizer, lbfgs: the training budget and settings.

    Shapes:
        ``forward(x (...), t (...)) -> u (...)``. Batches as for
        :class:`~sciml.models.LagrangianPINN`, plus ``x_initial, u_initial`` and ``t_boundary``.
    """

    def __init__(
        self,
        problem: ConvectionDiffusion1D = ConvectionDiffusion1D(),  # noqa: B008 (frozen dataclass)
        hidden_dims: Sequence[int] = (50, 50, 50, 50),
        activation: str = "tanh",
        periodic_inputs: bool = False,
        residual_weight: float = 1.0,
        causal_epsilon: float | None = None,
        causal_chunks: int = 10,
        curriculum_stages: int = 1,
        time_windows: int = 1,
        adam_steps: int = 2000,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
        lbfgs: LBFGSConfig = LBFGSConfig(max_iter=2000),  # noqa: B008
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer_config(), self.lbfgs_config()  # validate settings given as dicts now
        self.problem = ConvectionDiffusion1D(**problem) if isinstance(problem, dict) else problem
        if curriculum_stages < 1 or time_windows < 1 or causal_chunks < 1:
            raise ValueError(
                "model.curriculum_stages, model.time_windows and model.causal_chunks must be "
                f">= 1, got {curriculum_stages}, {time_windows} and {causal_chunks}"
            )
        if curriculum_stages > 1 and time_windows > 1:
            raise ValueError(
                "choose either model.curriculum_stages or model.time_windows, not both"
            )
        if causal_epsilon is not None and causal_epsilon < 0:
            raise ValueError(f"model.causal_epsilon must be >= 0, got {causal_epsilon}")
        if adam_steps < 0:
            raise ValueError(f"model.adam_steps must be >= 0, got {adam_steps}")
        self.embedding = PeriodicEmbedding(self.problem.length, 1.0) if periodic_inputs else None
        in_dim = 3 if periodic_inputs else 2
        self.nets = nn.ModuleList(
            MLP(in_dim, 1, hidden_dims, activation_name=activation) for _ in range(time_windows)
        )

    @property
    def num_stages(self) -> int:
        return max(self.hparams.curriculum_stages, self.hparams.time_windows)

    def _window_length(self) -> float:
        return self.problem.t_final / self.hparams.time_windows

    def _net_output(self, index: int, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = self.embedding(x, t) if self.embedding is not None else torch.stack([x, t], -1)
        return self.nets[index](features)[..., 0]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """$u(x, t)$, each time handled by its window's network."""
        x, t = torch.broadcast_tensors(x, t)
        if len(self.nets) == 1:
            return self._net_output(0, x, t)
        window = torch.clamp((t / self._window_length()).long(), 0, len(self.nets) - 1)
        out = torch.zeros_like(t)
        for k in range(len(self.nets)):
            mask = window == k
            out = torch.where(mask, self._net_output(k, x, t), out) if mask.any() else out
        return out

    def residual(
        self, x: torch.Tensor, t: torch.Tensor, *, window: int | None = None, speed: float = 1.0
    ) -> torch.Tensor:
        """$u_t + \\lambda f u_x - \\nu u_{xx} - s$ at points ``(N,)`` (one window's network if
        ``window`` is given), with the speed factor $\\lambda$ = ``speed``."""
        x = x.detach().requires_grad_(True)
        t = t.detach().requires_grad_(True)
        u = self(x, t) if window is None else self._net_output(window, x, t)
        ones = torch.ones_like(u)
        u_t, u_x = torch.autograd.grad(u, (t, x), ones, create_graph=True, materialize_grads=True)
        residual = (
            u_t
            + speed * self.problem.velocity_torch(u, x, t) * u_x
            - self.problem.source_torch(u, x, t)
        )
        if self.problem.nu > 0:
            (u_xx,) = torch.autograd.grad(u_x, x, ones, create_graph=True, materialize_grads=True)
            residual = residual - self.problem.nu * u_xx
        return residual

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if stage != "train":
            return self._evaluate(batch)
        hp, k = self.hparams, self.stage
        marching = hp.time_windows > 1
        window = k if marching else 0
        start, span = window * self._window_length(), self._window_length()
        # Collocation and boundary times in (0, T] are mapped into the current window.
        t = start + batch["t"][0] * (span / self.problem.t_final)
        x = batch["x"][0]
        speed = (k + 1) / hp.curriculum_stages if hp.curriculum_stages > 1 else 1.0
        residual = self.residual(x, t, window=window, speed=speed)
        residual_loss, terms = self._residual_loss(residual, t, start, span)

        x0 = batch["x_initial"][0]
        if marching and window > 0:
            with torch.no_grad():
                target = self._net_output(window - 1, x0, torch.full_like(x0, start))
        else:
            target = batch["u_initial"][0]
        initial_loss = torch.mean(
            (self._net_output(window, x0, torch.full_like(x0, start)) - target) ** 2
        )
        boundary_loss = self._boundary_loss(
            start + batch["t_boundary"][0] * (span / self.problem.t_final), window
        )
        loss = initial_loss + boundary_loss + hp.residual_weight * residual_loss
        terms.update(
            {
                "initial": initial_loss.detach(),
                "boundary": boundary_loss.detach(),
                "residual": residual_loss.detach(),
                "speed_factor": speed,
            }
        )
        return loss, terms

    def _residual_loss(
        self, residual: torch.Tensor, t: torch.Tensor, start: float, span: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        epsilon = self.hparams.causal_epsilon
        if epsilon is None:
            return torch.mean(residual**2), {}
        chunks = self.hparams.causal_chunks
        index = torch.clamp(((t.detach() - start) / span * chunks).long(), 0, chunks - 1)
        squared = residual**2
        totals = squared.new_zeros(chunks).index_add(0, index, squared)
        counts = torch.bincount(index, minlength=chunks).clamp(min=1).to(squared.dtype)
        chunk_losses = totals / counts
        previous = torch.cumsum(chunk_losses.detach(), 0) - chunk_losses.detach()  # exclusive
        weights = torch.exp(-epsilon * previous)
        return torch.mean(weights * chunk_losses), {"causal_weight_min": weights.min()}

    def _boundary_loss(self, t: torch.Tensor, window: int) -> torch.Tensor:
        if self.embedding is not None:
            return t.new_zeros(())
        left = torch.zeros_like(t, requires_grad=self.problem.nu > 0)
        right = torch.full_like(t, self.problem.length, requires_grad=self.problem.nu > 0)
        u_left, u_right = self._net_output(window, left, t), self._net_output(window, right, t)
        loss = torch.mean((u_left - u_right) ** 2)
        if self.problem.nu > 0:
            ones = torch.ones_like(u_left)
            (du_left,) = torch.autograd.grad(
                u_left, left, ones, create_graph=True, materialize_grads=True
            )
            (du_right,) = torch.autograd.grad(
                u_right, right, ones, create_graph=True, materialize_grads=True
            )
            loss = loss + torch.mean((du_left - du_right) ** 2)
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        x, t, reference = batch["x"][0], batch["t"][0], batch["u"][0]
        t_grid, x_grid = (a.ravel() for a in torch.meshgrid(t, x, indexing="ij"))
        residual = self.residual(x_grid, t_grid)
        loss = torch.mean(residual**2)
        prediction = self(x_grid, t_grid).detach().reshape(len(t), len(x))
        error = relative_l2_centered(prediction.double(), reference.double())
        return loss, {"residual": loss.detach(), "rel_l2": error}
