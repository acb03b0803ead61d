"""Input embeddings that make a network exactly periodic in space."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PeriodicEmbedding"]


class PeriodicEmbedding(nn.Module):
    r"""$(x, t) \mapsto (\cos(2\pi x/L), \sin(2\pi x/L), t/T)$.

    Any network applied to this embedding is $L$-periodic in $x$ by construction, which replaces
    a soft periodic boundary loss. Time is divided by ``time_scale`` so it lies in $[0, 1]$.

    Args:
        length: the period $L$.
        time_scale: $T$, typically the final time.

    Shapes:
        ``x, t (...) -> (..., 3)``.
    """

    def __init__(self, length: float = 2 * math.pi, time_scale: float = 1.0) -> None:
        super().__init__()
        if length <= 0 or time_scale <= 0:
            raise ValueError(
                f"length and time_scale must be positive, got {length} and {time_scale}"
            )
        self.wavenumber = 2 * math.pi / length
        self.time_scale = time_scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angle = self.wavenumber * x
        return torch.stack([torch.cos(angle), torch.sin(angle), t / self.time_scale], dim=-1)
