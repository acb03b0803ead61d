"""Distances between empirical distributions and parameter errors, for snapshot inference."""

from __future__ import annotations

from collections.abc import Callable

import ot
import torch

__all__ = ["energy_distance", "relative_frobenius_error", "sampling_floor", "wasserstein2"]


def _samples(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"expected (n, d) and (m, d) samples, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.detach().cpu().double(), y.detach().cpu().double()


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Exact $W_2 = (\min_\pi \sum_{ij}\pi_{ij}\|x_i - y_j\|^2)^{1/2}$ between uniform empirical
    measures, by POT's network simplex (``ot.emd2``) on the squared Euclidean cost.

    This is the "EMD" reported in the trajectory-inference literature (TrajectoryNet, SBIRR).

    Args:
        x: ``(n, d)``; y: ``(m, d)``.
    """
    x, y = _samples(x, y)
    cost = torch.cdist(x, y).square()
    a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    return float(ot.emd2(a, b, cost, numItermax=1_000_000)) ** 0.5


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Energy distance $2\,\mathbb E\|X - Y\| - \mathbb E\|X - X'\| - \mathbb E\|Y - Y'\|$
    (Székely's $\mathcal E$, V-statistic over all pairs; zero iff the samples coincide in law).

    Args:
        x: ``(n, d)``; y: ``(m, d)``.
    """
    x, y = _samples(x, y)
    cross = torch.cdist(x, y).mean()
    return float(2.0 * cross - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def sampling_floor(
    sample: Callable[[int, torch.Generator], torch.Tensor],
    n: int,
    *,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    r"""Mean $W_2$ between two independent ``n``-samples of the same distribution.

    No estimator evaluated with ``n`` samples can be expected to score below this, so a
    predicted marginal is judged against it.

    Args:
        sample: ``sample(n, generator) -> (n, d)`` draws from the true distribution.
        n: sample size (match the size used for the prediction).
        repeats: pairs of samples averaged.
        seed: seed of the generator passed to ``sample``.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n}, repeats={repeats}")
    generator = torch.Generator().manual_seed(seed)
    values = [wasserstein2(sample(n, generator), sample(n, generator)) for _ in range(repeats)]
    return sum(values) / repeats


def relative_frobenius_error(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    r"""$\|\hat\theta - \theta^*\|_F / \|\theta^*\|_F$ (e.g. of a recovered drift matrix)."""
    estimate, truth = torch.as_tensor(estimate).double(), torch.as_tensor(truth).double()
    if estimate.shape != truth.shape:
        raise ValueError(
            f"shape mismatch: estimate {tuple(estimate.shape)} vs truth {tuple(truth.shape)}"
        )
    return float(torch.linalg.norm(estimate - truth) / torch.linalg.norm(truth))
