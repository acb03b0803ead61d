"""A Brownian motion replayed from increments on a uniform grid (a torchsde ``BaseBrownian``)."""

from __future__ import annotations

import math

import torch
import torchsde

__all__ = ["GridBrownian"]

# Query times within this many grid spacings of a grid point are snapped to it. It absorbs the
# roundoff of solvers that accumulate ``t += dt`` (torchsde does; in float32 over a few hundred
# steps that reaches ~1e-4 dt) while leaving genuinely off-grid queries to interpolation.
_SNAP = 1e-3


class GridBrownian(torchsde.BaseBrownian):
    r"""Brownian path given by its increments on the grid $t_k = t_0 + k\,\Delta t$.

    ``W(t_0) = 0`` and ``W(t_{k+1}) - W(t_k) = dW[k]``. Queries follow torchsde's convention:
    ``bm(ta, tb)`` returns $W(t_b) - W(t_a)$ and ``bm(ta)`` returns $W(t_a)$, each of shape
    ``(batch, m)``. Pass it as ``bm=`` to ``torchsde.sdeint`` to replay exactly the increments
    that :func:`sciml.solvers.sdeint` uses, or to :func:`sciml.solvers.sdeint` itself.

    Query times within ``1e-3 * dt`` of a grid point are snapped to it, so grid-aligned queries
    return the stored increments exactly (summed when they span several cells). Other times use
    the piecewise-linear interpolation of $W$ between grid points (the Brownian bridge's mean;
    no new randomness): this is meant for roundoff-level misalignment, not for refining the
    path, and it provides no Lévy area.

    Args:
        dW: increments of shape ``(n_steps, batch, m)``.
        t0: time of the first grid point.
        dt: grid spacing (> 0).
    """

    def __init__(self, dW: torch.Tensor, t0: float, dt: float) -> None:
        if dW.ndim != 3:
            raise ValueError(f"dW must have shape (n_steps, batch, m), got {tuple(dW.shape)}")
        t0, dt = float(t0), float(dt)
        if not (math.isfinite(dt) and dt > 0 and math.isfinite(t0)):
            raise ValueError(f"need finite t0 and dt > 0, got t0={t0}, dt={dt}")
        self.increments = dW
        self.t0 = t0
        self.dt = dt
        self._path: torch.Tensor | None = None

    @property
    def n_steps(self) -> int:
        return self.increments.shape[0]

    @property
    def t1(self) -> float:
        return self.t0 + self.n_steps * self.dt

    @property
    def dtype(self) -> torch.dtype:
        return self.increments.dtype

    @property
    def device(self) -> torch.device:
        return self.increments.device

    @property
    def shape(self) -> torch.Size:
        return self.increments.shape[1:]

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def __repr__(self) -> str:
        return (
            f"GridBrownian(t0={self.t0}, dt={self.dt}, n_steps={self.n_steps}, "
            f"shape={tuple(self.shape)}, dtype={self.dtype})"
        )

    def _grid_position(self, t: float | torch.Tensor) -> float:
        s = (float(t) - self.t0) / self.dt
        if not -_SNAP <= s <= self.n_steps + _SNAP:
            raise ValueError(
                f"time {float(t)} lies outside the Brownian grid [{self.t0}, {self.t1}]"
            )
        k = round(s)
        return float(k) if abs(s - k) <= _SNAP else s

    def _value(self, s: float) -> torch.Tensor:
        """$W$ at grid position ``s`` by linear interpolation of the cumulative path."""
        if self._path is None:
            zero = torch.zeros_like(self.increments[:1])
            self._path = torch.cat([zero, self.increments.cumsum(0)])
        k = min(int(s), self.n_steps - 1)
        return self._path[k] + (s - k) * self.increments[k]

    def __call__(
        self,
        ta: float | torch.Tensor,
        tb: float | torch.Tensor | None = None,
        return_U: bool = False,
        return_A: bool = False,
    ) -> torch.Tensor:
        if return_U or return_A:
            raise ValueError(
                "GridBrownian stores increments only (no space-time or Lévy area); use a method "
                "that needs none, e.g. euler, milstein, heun, euler_heun, midpoint"
            )
        sa = self._grid_position(ta)
        if tb is None:
            return self._value(sa)
        sb = self._grid_position(tb)
        if sb < sa:
            raise ValueError(f"need ta <= tb, got ta={float(ta)}, tb={float(tb)}")
        if sa.is_integer() and sb.is_integer():
            ka, kb = int(sa), int(sb)
            if kb == ka + 1:
                return self.increments[ka]
            return self.increments[ka:kb].sum(0)
        return self._value(sb) - self._value(sa)
