"""Similarity of learned representations."""

from __future__ import annotations

import torch

__all__ = ["linear_cka"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Linear centred kernel alignment (Kornblith et al., 2019) of two representations.

    With $X, Y$ the column-centred features of the same $n$ examples,

    $$ \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F} \in [0, 1], $$

    the kernel alignment of the linear Gram matrices $XX^\top$ and $YY^\top$. It is 1 when $Y$ is
    an orthogonal transform and isotropic rescaling (plus shift) of $X$, invariant to those maps on
    either side, but not to general invertible linear maps. Computed in float64.

    Args:
        x: ``(n, p)`` features, one row per example.
        y: ``(n, q)`` features of the same examples in the same order.

    Raises:
        ValueError: for other shapes, fewer than 2 examples or a representation that is constant
            over the examples (CKA is then undefined).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"expected (n, p) and (n, q) features of the same n examples, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {x.shape[0]}")
    x = x.detach().double()
    y = y.detach().double()
    x = x - x.mean(0)
    y = y - y.mean(0)
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norms == 0:
        raise ValueError("a representation is constant over the examples; CKA is undefined")
    return float((y.T @ x).square().sum() / norms)
