"""Latent-variable building blocks: Gaussian KL and least-squares linear (Koopman) operators."""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["OPERATOR_SOLVERS", "gaussian_kl", "least_squares_operator", "linear_prediction_loss"]

OPERATOR_SOLVERS = ("qr", "pinv")


def gaussian_kl(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    r"""Elementwise $\mathrm{KL}(\mathcal N(\mu_q, \sigma_q^2)\,\|\,\mathcal N(\mu_p, \sigma_p^2))$.

    $$ \tfrac12\Big(\log\sigma_p^2 - \log\sigma_q^2
       + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{\sigma_p^2} - 1\Big). $$

    All inputs broadcast together; sum the result over the dimensions of a diagonal Gaussian.
    """
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p) ** 2) / logvar_p.exp() - 1.0
    )


def least_squares_operator(
    z: torch.Tensor, *, solver: Literal["qr", "pinv"] = "qr"
) -> torch.Tensor:
    r"""The linear map that best advances latent sequences by one step, fitted by least squares.

    With $X$ the rows $z_{b,t}$ for $t = 0..T-2$ and $Y$ the rows $z_{b,t+1}$, both
    ``(B (T-1), k)``, solve $\min_C \|X C - Y\|_F$ (row-vector convention, $C = A^\top$ for
    $z_{t+1} = A z_t$). ``"qr"``: $X = QR$, $C = R^{-1} Q^\top Y$ by a triangular solve;
    ``"pinv"``: $C = X^+ Y$. Both are differentiable, so gradients reach whatever produced
    ``z``; QR needs $X$ of full column rank (``B (T-1) >= k``).

    Args:
        z: latent sequences ``(B, T, k)``.
        solver: ``"qr"`` or ``"pinv"``.

    Returns:
        ``C`` of shape ``(k, k)``; ``z[:, :-1] @ C`` predicts ``z[:, 1:]``.
    """
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"z must have shape (B, T >= 2, k), got {tuple(z.shape)}")
    k = z.shape[-1]
    x = z[:, :-1].reshape(-1, k)
    y = z[:, 1:].reshape(-1, k)
    if solver == "qr":
        if x.shape[0] < k:
            raise ValueError(f"the QR solver needs B*(T-1) >= k rows, got {x.shape[0]} < {k}")
        q, r = torch.linalg.qr(x, mode="reduced")
        return torch.linalg.solve_triangular(r, q.transpose(-1, -2) @ y, upper=True)
    if solver == "pinv":
        return torch.linalg.pinv(x) @ y
    raise ValueError(f"solver must be one of {OPERATOR_SOLVERS}, got {solver!r}")


def linear_prediction_loss(
    z: torch.Tensor, operator: torch.Tensor, *, steps: int = 1
) -> torch.Tensor:
    r"""How far ``z`` is from following ``operator``, normalised so that $z \to 0$ does not win.

    Starting from $\hat z^{(0)} = z_{:, 0..T-2}$, for $j = 1..\text{steps}$:
    $\hat z^{(j)} = \hat z^{(j-1)} C$ and the loss adds
    $\mathrm{MSE}(\hat z^{(j)}_{:, 0..T-1-j},\ z_{:, j..T-1}) / \|\hat z^{(j)}_{:, 0..T-1-j}\|_F$,
    the $j$-step-ahead error divided by the Frobenius norm of the prediction (as in the KoVAE
    reference code).

    Args:
        z: latent sequences ``(B, T, k)``.
        operator: ``C`` of shape ``(k, k)``.
        steps: prediction horizon, ``1 <= steps <= T - 1``.

    Returns:
        Scalar loss; exactly 0 when ``z[:, t+1] = z[:, t] @ C`` for all ``t``.
    """
    horizon = z.shape[1] - 1
    if not 1 <= steps <= horizon:
        raise ValueError(f"steps must lie in [1, T-1={horizon}], got {steps}")
    prediction = z[:, :-1]
    loss = z.new_zeros(())
    for j in range(steps):
        prediction = prediction @ operator
        kept = prediction[:, : horizon - j]
        loss = loss + torch.mean((kept - z[:, j + 1 :]) ** 2) / torch.linalg.norm(kept)
    return loss
