"""Solver statistics and the ``(ys, stats)`` return type shared by all integrators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = ["Solution", "SolverStats"]


def _no_steps() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.float64)


@dataclass(eq=False, repr=False)
class SolverStats:
    """Counters of one solve; a fresh object is returned by every call.

    Attributes:
        nfe_forward: evaluations of the vector field (ODE) or drift (SDE) during the forward solve.
        nfe_backward: vector-field evaluations made by the adjoint backward pass. It is filled in
            when backward runs, so the same object changes after ``loss.backward()``; 0 without
            an adjoint.
        n_accepted: accepted steps (for fixed-grid methods: the grid steps taken).
        n_rejected: steps rejected by the error controller (0 for fixed-grid methods).
        step_sizes: accepted step sizes in the order taken, a 1-D float64 CPU tensor of length
            ``n_accepted``. They carry the sign of the integration direction.
        nfe_diffusion: evaluations of the diffusion ``g`` (SDE solvers only).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    step_sizes: torch.Tensor = field(default_factory=_no_steps)
    nfe_diffusion: int = 0

    @property
    def n_steps(self) -> int:
        """Number of accepted steps."""
        return self.n_accepted

    def as_dict(self) -> dict[str, int]:
        """The scalar counters, e.g. for ``LightningModule.log_dict``."""
        return {
            "nfe_forward": self.nfe_forward,
            "nfe_backward": self.nfe_backward,
            "nfe_diffusion": self.nfe_diffusion,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"SolverStats({fields})"


class Solution(NamedTuple):
    """Result of a solve: ``ys`` of shape ``(len(t), *y0.shape)`` and its :class:`SolverStats`."""

    ys: torch.Tensor
    stats: SolverStats
