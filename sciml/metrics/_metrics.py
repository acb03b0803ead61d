"""Error and distance metrics between predictions and references."""

from __future__ import annotations

import numpy as np
import ot
import torch

__all__ = ["relative_l2", "wasserstein"]


def relative_l2(
    prediction: torch.Tensor, target: torch.Tensor, *, dim: int | None = None
) -> torch.Tensor:
    r"""Relative L2 error $\|\hat y - y\|_2 / \|y\|_2$.

    With ``dim=None`` the norm runs over all entries and a scalar is returned; otherwise over
    ``dim``.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"shape mismatch: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}"
        )
    if dim is None:
        return torch.linalg.vector_norm(prediction - target) / torch.linalg.vector_norm(target)
    return torch.linalg.vector_norm(prediction - target, dim=dim) / torch.linalg.vector_norm(
        target, dim=dim
    )


def wasserstein(x: torch.Tensor, y: torch.Tensor, *, p: int = 2) -> float:
    r"""Exact $W_p$ distance between two empirical measures with uniform weights (POT's EMD).

    Args:
        x: samples ``(n, d)``.
        y: samples ``(m, d)``.
        p: order of the distance, cost ``|x - y|^p``.

    Returns:
        $W_p = (\min_\pi \sum_{ij} \pi_{ij} |x_i - y_j|^p)^{1/p}$ as a float.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"expected (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    a = x.detach().cpu().double().numpy()
    b = y.detach().cpu().double().numpy()
    cost = ot.dist(a, b, metric="euclidean") ** p
    weights_a = np.full(len(a), 1.0 / len(a))
    weights_b = np.full(len(b), 1.0 / len(b))
    return float(ot.emd2(weights_a, weights_b, cost)) ** (1.0 / p)
