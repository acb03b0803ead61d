r"""Local regularization of neural SDEs: one step-doubling error estimate at a random state."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ._base import AbstractRegularizer

__all__ = ["LocalSDERegularizer", "SDEPenalty"]

_Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SDEPenalty(NamedTuple):
    """Result of :class:`LocalSDERegularizer`: the penalty and the drift/diffusion evaluations."""

    value: torch.Tensor
    nfe_drift: int
    nfe_diffusion: int


def _rms(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.mean(x**2))


class LocalSDERegularizer(AbstractRegularizer):
    r"""The adaptive SDE solver's error estimate for one step, as a penalty.

    From detached states $y$ at times $t$ (one per sample, e.g. observations at one random time
    index of the batch) and one Brownian sample $\Delta W_1, \Delta W_2 \sim N(0, h/2)$, take
    one Euler–Maruyama step of size $h$ and two of size $h/2$ on the same Brownian path:

    $$ y_{\text{full}} = y + f(t, y)\,h + g(t, y)(\Delta W_1 + \Delta W_2), \qquad
       y_m = y + f(t, y)\,\tfrac h2 + g(t, y)\,\Delta W_1, $$
    $$ y_{\text{half}} = y_m + f(t + \tfrac h2, y_m)\,\tfrac h2
       + g(t + \tfrac h2, y_m)\,\Delta W_2. $$

    The penalty is $R = h\cdot\mathrm{rms}\big((y_{\text{half}} - y_{\text{full}}) /
    (\mathrm{atol} + \mathrm{rtol}\max(|y_{\text{full}}|, |y_{\text{half}}|))\big)$: torchsde's
    step-doubling error estimate (the quantity its adaptive controller compares with 1), times
    $h$, as :class:`LocalRegularizer` does for ODEs. The difference is
    $(f(y_m) - f(y))\tfrac h2 + (g(y_m) - g(y))\Delta W_2$: it penalises drift and diffusion that
    change quickly along the noise, the two things that force small SDE steps. $y$ and the
    Brownian sample are constants; gradients reach the parameters through $f$ and $g$.

    Cost: 2 drift and 2 diffusion evaluations. Diagonal noise (``g`` shaped like ``y``) only.

    Args:
        weight: $\lambda_0$.
        weight_final: $\lambda_1$ of an exponential decay, or ``None``.
    """

    name = "local_sde"

    def forward(
        self,
        drift: _Field,
        diffusion: _Field,
        t: torch.Tensor,
        y: torch.Tensor,
        h: float,
        *,
        rtol: float,
        atol: float,
    ) -> SDEPenalty:
        """Penalty at states ``y (B, d)`` and times ``t`` (broadcastable to ``(B, 1)``).

        ``drift(t, y)`` and ``diffusion(t, y)`` return ``(B, d)``.
        """
        y = y.detach()
        half = 0.5 * h
        dw1, dw2 = (torch.randn_like(y) * half**0.5 for _ in range(2))
        f0, g0 = drift(t, y), diffusion(t, y)
        if g0.shape != y.shape:
            raise ValueError(
                f"LocalSDERegularizer supports diagonal noise: diffusion must return "
                f"{tuple(y.shape)}, got {tuple(g0.shape)}"
            )
        y_full = y + f0 * h + g0 * (dw1 + dw2)
        y_mid = y + f0 * half + g0 * dw1
        t_mid = t + half
        y_half = y_mid + drift(t_mid, y_mid) * half + diffusion(t_mid, y_mid) * dw2
        scale = atol + rtol * torch.maximum(y_full.abs(), y_half.abs())
        return SDEPenalty(h * _rms((y_half - y_full) / scale), 2, 2)
