"""Neural ordinary differential equations fitted to trajectories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..metrics import relative_l2
from ..nn import MLP, TimeConcat
from ..regularizers import (
    AbstractRegularizer,
    RegularizedSolution,
    solve_regularized,
)
from ..solvers import ODESolverConfig, SolverStats
from ._base import OptimizerConfig, Task

__all__ = ["NeuralODE", "solve_on_batch_grid"]


def solve_on_batch_grid(
    solve, y0: torch.Tensor, t: torch.Tensor, *, time_dependent: bool
) -> tuple[torch.Tensor, SolverStats]:
    """Solve from ``y0 (B, d)`` on the per-sample grids ``t (B, T)``; return ``(B, T, d)``, stats.

    An autonomous field only sees time differences, so windows cut from different places of a
    trajectory share one solve on the grid relative to their start. A time-dependent field needs
    identical absolute grids.
    """
    grid = t - t[:, :1] if not time_dependent else t
    tolerance = 1e-5 * (1.0 + float(grid.abs().max()))  # float32 times: compare up to rounding
    if not torch.allclose(grid, grid[:1].expand_as(grid), rtol=0.0, atol=tolerance):
        raise ValueError(
            "all samples of a batch must share one time grid"
            + ("" if time_dependent else " relative to their first time")
            + "; use equal spacing or batch_size=1"
        )
    ys, stats = solve(y0, grid[0])
    return ys.movedim(0, 1), stats


class NeuralODE(Task):
    r"""A neural ODE $\dot y = f_\theta(t, y)$ fitted to observed trajectories.

    The training loss is the mean squared error between the solution started from each observed
    initial state, $y(t_k) = y_0 + \int_{t_0}^{t_k} f_\theta$, and the observations at all times of
    the batch. Validation and test also report the relative L2 error against the noise-free
    trajectories (``y_true`` in the batch) and the solver's function evaluations.

    **Regularization.** ``regularizers`` (ODE regularizers of :mod:`sciml.regularizers`, e.g.
    :class:`~sciml.regularizers.LocalRegularizer`) add $\sum_i \lambda_i(\text{step}) R_i$ to the
    training loss only; validation, test and ``forward`` run the plain solve. Training logs
    ``train/reg`` (the weighted sum), ``train/reg_<name>`` (each unweighted $R_i$),
    ``train/nfe`` (forward solve), ``train/nfe_reg`` (evaluations spent by the regularizers
    outside the solve) and ``train/nfe_backward`` (the adjoint's evaluations; 0 with backprop).

    Args:
        state_dim: dimension ``d`` of the state.
        hidden_dims: widths of the default MLP vector field.
        activation: activation of the default MLP.
        time_dependent: feed ``t`` to the vector field as an extra input.
        solver: ODE solver settings (method, tolerances, adjoint).
        optimizer: optimizer settings.
        vector_field: a custom ``nn.Module`` mapping ``(..., d)`` (or ``d + 1`` with time) to
            ``(..., d)``; replaces the default MLP (Python use; in YAML give its ``class_path``).
        regularizers: training-only penalties on the solve (a list of ``class_path`` /
            ``init_args`` in YAML, or such mappings in Python). Checkpoint hyperparameters store
            their :meth:`~sciml.regularizers.AbstractRegularizer.config`, so
            ``load_from_checkpoint`` rebuilds them.

    Shapes:
        ``forward(y0 (B, d), t (T,)) -> (B, T, d)``. Batches are dicts with ``"t" (B, T)``,
        ``"y" (B, T, d)`` and optionally ``"y_true" (B, T, d)``.
    """

    def __init__(
        self,
        state_dim: int = 2,
        hidden_dims: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time_dependent: bool = False,
        solver: ODESolverConfig = ODESolverConfig(),  # noqa: B008 (frozen dataclass, immutable)
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
        vector_field: nn.Module | None = None,
        regularizers: list[AbstractRegularizer] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["vector_field", "regularizers"])
        if vector_field is None:
            vector_field = MLP(
                state_dim + int(time_dependent), state_dim, hidden_dims, activation_name=activation
            )
        self.vector_field = TimeConcat(vector_field, time_dependent=time_dependent)
        self.solver = ODESolverConfig(**solver) if isinstance(solver, dict) else solver
        self.last_stats: SolverStats | None = None
        self.regularizers = nn.ModuleList(self.store_regularizers("regularizers", regularizers))

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ys, self.last_stats = self.solver.solve(self.vector_field, y0, t)
        return ys.movedim(0, 1)

    def setup(self, stage: str) -> None:
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        data_dim = getattr(datamodule, "state_dim", None)
        if data_dim is not None and data_dim != self.hparams.state_dim:
            raise ValueError(
                f"model.init_args.state_dim={self.hparams.state_dim} "
                f"but the data has state_dim={data_dim}"
            )

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        y = batch["y"]
        regularized: list[RegularizedSolution] = []

        def solve(y0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, SolverStats]:
            if stage != "train" or not self.regularizers:
                return self.solver.solve(self.vector_field, y0, t)
            solution = solve_regularized(self.solver, self.vector_field, y0, t, self.regularizers)
            regularized.append(solution)
            return solution.ys, solution.stats

        prediction, stats = solve_on_batch_grid(
            solve, y[:, 0], batch["t"].to(y.dtype), time_dependent=self.hparams.time_dependent
        )
        self.last_stats = stats
        mse = torch.mean((prediction - y) ** 2)
        loss = mse
        terms: dict[str, Any] = {
            "mse": mse.detach(),
            "nfe": float(stats.nfe_forward),
            "steps": float(stats.n_accepted),
        }
        if regularized:
            penalty, reg_terms = regularized[0].weighted_penalty(
                self.regularizers, self.global_step, self.total_steps()
            )
            loss = mse + penalty
            terms.update(reg_terms, nfe_reg=float(regularized[0].nfe_reg))
        if stage != "train" and "y_true" in batch:
            terms["rel_l2"] = relative_l2(prediction.detach(), batch["y_true"])
        return loss, terms

    def on_after_backward(self) -> None:
        # The adjoint's backward evaluations are only known once backward has run.
        if self.last_stats is not None and (self.solver.adjoint or self.regularizers):
            self.log(
                "train/nfe_backward",
                float(self.last_stats.nfe_backward),
                on_step=True,
                on_epoch=True,
            )
