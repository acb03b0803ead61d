"""Errors of space-time fields, e.g. PDE solutions on an (x, t) grid."""

from __future__ import annotations

import torch

__all__ = ["relative_l2_centered"]


def relative_l2_centered(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Relative L2 error against the target's fluctuation, $\|\hat u - u\|_2 / \|u - \bar u\|_2$.

    Both norms are vector (Frobenius) norms over all entries and $\bar u$ is the mean of the
    target over all entries. For a zero-mean target this is the plain relative L2 error; unlike
    it, the value stays meaningful when the field rides on a large constant (Burgers with
    $u_0 = C + \sin x$), where $\|u\|_2$ would hide the error.

    Args:
        prediction: any shape, e.g. ``(T, N_x)``.
        target: same shape as ``prediction``; must not be constant.

    Returns:
        A scalar tensor.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"shape mismatch: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}"
        )
    scale = torch.linalg.vector_norm(target - target.mean())
    if scale == 0:
        raise ValueError("the target is constant, so its fluctuation norm is zero")
    return torch.linalg.vector_norm(prediction - target) / scale
