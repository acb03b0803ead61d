r"""Global error-estimate regularizer (Pal, Ma, Shah & Rackauckas, ICML 2021, "ERNODE")."""

from __future__ import annotations

from typing import Literal

import torch

from ..solvers import TABLEAUS, ODESolverConfig, error_ratio, rk_step
from ._ode import AbstractODERegularizer, ODESolveRecord

__all__ = ["GlobalErrorRegularizer"]


class GlobalErrorRegularizer(AbstractODERegularizer):
    r"""Sum of the solver's local error estimates over all accepted steps.

    $$ R_E = \sum_{j} h_j\,\mathrm{EEst}_j, $$

    where step $j$ starts at $(t_j, y_j)$ with size $h_j$ and $\mathrm{EEst}_j$ is the scaled RMS
    error norm of that step (:func:`sciml.solvers.error_ratio`) for the pair ``tableau``. The
    accepted steps are recorded during the main solve; each is then retaken from the *recorded,
    attached* $y_j$, so with the main solver's own pair (``dopri5``) $\mathrm{EEst}_j$ is exactly
    the value the controller accepted ($\le 1$) and the gradient flows through the whole
    discretised trajectory, as in the reference ("discretise-then-optimise": the adjoint
    cannot be used). The step sizes $h_j$ are treated as constants.

    **Cost.** ``n_stages`` (7) evaluations per accepted step, reported as regularizer NFE
    (torchdiffeq does not expose its own stages, so they are recomputed), plus memory for the
    recorded states.

    Args:
        tableau: the embedded pair, ``"dopri5"`` (sciml's default adaptive solver) or ``"tsit5"``.
        weight: $\lambda_0$.
        weight_final: $\lambda_1$ of an exponential decay, or ``None``.

    Raises:
        ValueError: (at the solve) with ``solver.adjoint=True``.
    """

    name = "global_error"

    def __init__(
        self,
        tableau: Literal["dopri5", "tsit5"] = "dopri5",
        weight: float = 1.0,
        weight_final: float | None = None,
    ) -> None:
        super().__init__(weight=weight, weight_final=weight_final)
        if tableau not in ("dopri5", "tsit5"):
            raise ValueError(
                f"GlobalErrorRegularizer: tableau must be one of ['dopri5', 'tsit5'], "
                f"got {tableau!r}"
            )
        self.tableau = TABLEAUS[tableau]
        self._steps: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def begin(self, t: torch.Tensor, y0: torch.Tensor, solver: ODESolverConfig) -> torch.Tensor:
        if solver.adjoint:
            raise ValueError(
                "GlobalErrorRegularizer differentiates through the solver's steps; it cannot be "
                "used with solver.adjoint=True (use LocalRegularizer, which works with both)"
            )
        self._steps = []
        return t.new_zeros(0)

    def on_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self._steps.append((t0.detach(), y0, float(dt.detach())))

    def forward(self, record: ODESolveRecord) -> tuple[torch.Tensor, int]:
        if not self._steps:
            raise ValueError(
                "GlobalErrorRegularizer saw no accepted step; it needs an adaptive solver method"
            )
        solver = record.solver
        total = record.ys.new_zeros(())
        for t0, y0, h in self._steps:
            step = rk_step(record.func, t0, y0, h, tableau=self.tableau)
            ratio = error_ratio(step.y_error, y0, step.y1, rtol=solver.rtol, atol=solver.atol)
            total = total + h * ratio
        nfe = len(self._steps) * self.tableau.n_stages
        self._steps = []  # release the recorded graph
        return total, nfe
