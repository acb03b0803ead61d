"""TimeGAN's post-hoc metrics for synthetic time series, in torch, and an embedding plot helper.

Both scores train a small GRU on the fly (Yoon et al., NeurIPS 2019, ``metrics/`` of the TimeGAN
code), so they are random variables: report the mean and spread over ``repeats``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from .._random import isolated_seed

__all__ = [
    "MIN_SCORED_SEQUENCES",
    "ScoreSummary",
    "discriminative_score",
    "embed_sequences",
    "plot_embedding",
    "predictive_score",
    "tsne",
]


#: fewest sequences per set :func:`discriminative_score` accepts (its 80/20 split needs them)
MIN_SCORED_SEQUENCES = 5


class ScoreSummary(NamedTuple):
    """``mean`` and ``std`` (population) of the per-repeat ``values``."""

    mean: float
    std: float
    values: tuple[float, ...]


class _GRUHead(nn.Module):
    """One-layer GRU then a linear map to one output, per step or from the last state."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, 1)

    def forward(self, x: torch.Tensor, *, every_step: bool) -> torch.Tensor:
        states, last = self.gru(x)
        return self.out(states if every_step else last[-1])[..., 0]


@contextmanager
def _trainable(seed: int) -> Iterator[None]:
    # The metrics train networks: they must work inside Lightning's inference-mode test loop and
    # must neither depend on nor disturb the caller's global random state.
    with torch.inference_mode(False), torch.enable_grad(), isolated_seed(seed):
        yield


def _as_sequences(x: Any, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must have shape (N, T, D), got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} has NaN/inf entries; metrics compare complete sequences")
    return tensor.detach().float().clone()


def _summary(values: list[float]) -> ScoreSummary:
    return ScoreSummary(float(np.mean(values)), float(np.std(values)), tuple(values))


def discriminative_score(
    real: Any,
    synthetic: Any,
    *,
    iterations: int = 2000,
    batch_size: int = 128,
    hidden_dim: int | None = None,
    lr: float = 1e-3,
    repeats: int = 1,
    seed: int = 0,
) -> ScoreSummary:
    r"""TimeGAN's discriminative score $|\mathrm{acc} - \tfrac12|$ of a post-hoc GRU classifier.

    Per repeat: split real and synthetic sequences independently 80/20; train a one-layer GRU
    (hidden ``int(D/2)``, at least 1) whose last state goes through a linear layer and a sigmoid,
    for ``iterations`` Adam steps, each on ``batch_size`` random real (label 1) and
    ``batch_size`` random synthetic (label 0) training sequences with loss
    $\mathrm{BCE}_\text{real} + \mathrm{BCE}_\text{synthetic}$; the score is the distance of
    the accuracy (threshold 0.5) on the pooled held-out 20 % from 1/2. 0 means
    indistinguishable, 0.5 perfectly separable. As in TimeGAN, unequal set sizes are allowed
    (labels follow each set's own length, the fix of TimeGAN issue #14), but equal sizes are the
    protocol.

    Args:
        real, synthetic: ``(N, T, D)`` and ``(M, T, D)`` complete sequences.
        iterations, batch_size, hidden_dim, lr: classifier training (TimeGAN: 2000, 128,
            ``int(D/2)``, Adam default 1e-3).
        repeats: independent splits and classifiers (TimeGAN reports 10).
        seed: seed of repeat 0 (repeat ``r`` uses ``seed + r``).

    Returns:
        :class:`ScoreSummary` over the repeats.
    """
    real, synthetic = _as_sequences(real, "real"), _as_sequences(synthetic, "synthetic")
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real {tuple(real.shape)} and synthetic {tuple(synthetic.shape)} differ in (T, D)"
        )
    if min(len(real), len(synthetic)) < MIN_SCORED_SEQUENCES:
        raise ValueError(
            f"discriminative_score needs at least {MIN_SCORED_SEQUENCES} sequences in each set"
        )
    hidden = hidden_dim or max(1, real.shape[-1] // 2)
    scores = []
    for repeat in range(repeats):
        with _trainable(seed + repeat):
            real_train, real_test = _split(real)
            fake_train, fake_test = _split(synthetic)
            model = _GRUHead(real.shape[-1], hidden).to(real.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            bce = nn.functional.binary_cross_entropy_with_logits
            for _ in range(iterations):
                x_real = real_train[_batch(len(real_train), batch_size, real.device)]
                x_fake = fake_train[_batch(len(fake_train), batch_size, real.device)]
                logits = model(torch.cat([x_real, x_fake]), every_step=False)
                loss = bce(logits[: len(x_real)], torch.ones_like(logits[: len(x_real)])) + bce(
                    logits[len(x_real) :], torch.zeros_like(logits[len(x_real) :])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                correct = (model(real_test, every_step=False) > 0).sum() + (
                    model(fake_test, every_step=False) <= 0
                ).sum()
            accuracy = float(correct) / (len(real_test) + len(fake_test))
            scores.append(abs(accuracy - 0.5))
    return _summary(scores)


def predictive_score(
    synthetic: Any,
    real: Any,
    *,
    iterations: int = 5000,
    batch_size: int = 128,
    hidden_dim: int | None = None,
    lr: float = 1e-3,
    repeats: int = 1,
    seed: int = 0,
) -> ScoreSummary:
    r"""TimeGAN's predictive score (train on synthetic, test on real), TimeGAN's exact variant.

    A one-layer GRU (hidden ``int(D/2)``) → linear → sigmoid reads the first $D-1$ features at
    steps $0..T-2$ and predicts the **last feature** at steps $1..T-1$ (TimeGAN issue #51). It is
    trained with the L1 loss for ``iterations`` Adam steps on batches of ``batch_size``
    synthetic sequences and scored by the mean absolute error on **all** real sequences (mean
    over sequences of the per-sequence MAE). Pass the real training data as ``synthetic`` for
    the "real → real" reference line. Unlike some ports (e.g. GenTS, which predicts all
    features from all features without the sigmoid), this keeps TimeGAN's definition, so numbers
    compare with the TimeGAN/KoVAE tables.

    Args:
        synthetic: ``(M, T, D)`` training sequences, ``D >= 2``, values in [0, 1].
        real: ``(N, T, D)`` test sequences.
        iterations, batch_size, hidden_dim, lr: predictor training (TimeGAN: 5000, 128,
            ``int(D/2)``, Adam default 1e-3).
        repeats: independent predictors.
        seed: seed of repeat 0.

    Returns:
        :class:`ScoreSummary` of the MAE over the repeats.
    """
    synthetic, real = _as_sequences(synthetic, "synthetic"), _as_sequences(real, "real")
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"real {tuple(real.shape)} and synthetic {tuple(synthetic.shape)} differ in (T, D)"
        )
    dim = real.shape[-1]
    if dim < 2:
        raise ValueError("predictive_score needs D >= 2 features (D-1 inputs, 1 target)")
    hidden = hidden_dim or max(1, dim // 2)
    scores = []
    for repeat in range(repeats):
        with _trainable(seed + repeat):
            model = _GRUHead(dim - 1, hidden).to(real.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for _ in range(iterations):
                x = synthetic[_batch(len(synthetic), batch_size, real.device)]
                prediction = torch.sigmoid(model(x[:, :-1, :-1], every_step=True))
                loss = torch.mean(torch.abs(prediction - x[:, 1:, -1]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                prediction = torch.sigmoid(model(real[:, :-1, :-1], every_step=True))
                mae = torch.abs(prediction - real[:, 1:, -1]).mean(dim=1).mean()
            scores.append(float(mae))
    return _summary(scores)


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(x), device=x.device)
    n_train = int(0.8 * len(x))
    return x[order[:n_train]], x[order[n_train:]]


def _batch(n: int, batch_size: int, device: torch.device) -> torch.Tensor:
    # TimeGAN's batch_generator: the first batch_size indices of a fresh permutation.
    return torch.randperm(n, device=device)[: min(batch_size, n)]


def tsne(
    x: torch.Tensor,
    *,
    perplexity: float = 40.0,
    iterations: int = 300,
    learning_rate: float | None = None,
    exaggeration: float = 12.0,
    seed: int = 0,
) -> torch.Tensor:
    r"""Exact t-SNE (van der Maaten & Hinton, 2008) to two dimensions, in torch.

    Gaussian affinities with per-point bandwidths found by bisection so that each row's
    perplexity is ``perplexity``, symmetrised $P = (P + P^\top)/2n$; Student-t affinities $Q$ in
    the embedding; gradient descent on $\mathrm{KL}(P\|Q)$ with momentum (0.5, then 0.8) and
    per-coordinate gains, $P$ multiplied by ``exaggeration`` for the first quarter of the
    iterations. $O(n^2)$ memory: meant for the few thousand points of a plot.

    Args:
        x: ``(n, d)`` points.
        perplexity, iterations, exaggeration: as in t-SNE (TimeGAN plots with 40 and 300).
        learning_rate: step size; default ``max(n / exaggeration / 4, 50)``.
        seed: seed of the initial embedding.

    Returns:
        ``(n, 2)`` embedding.
    """
    x = x.detach().double()
    n = len(x)
    if learning_rate is None:  # scikit-learn's "auto" rule
        learning_rate = max(n / exaggeration / 4, 50.0)
    if n < 3 * perplexity + 1:
        perplexity = max(1.0, (n - 1) / 3)
    distance = torch.cdist(x, x) ** 2
    distance.fill_diagonal_(float("inf"))
    low = torch.full((n, 1), 1e-20, dtype=x.dtype)
    high = torch.full((n, 1), 1e20, dtype=x.dtype)
    target = np.log(perplexity)
    scale = distance[torch.isfinite(distance)].median()
    for _ in range(100):  # bisection on log(beta), beta = 1 / (2 sigma^2)
        beta = torch.sqrt(low * high)
        logits = -beta * distance / scale
        p = torch.softmax(logits, dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1, keepdim=True)
        too_flat = entropy > target
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
    p = (p + p.T) / (2 * n)
    generator = torch.Generator().manual_seed(seed)
    y = 1e-2 * torch.randn(n, 2, generator=generator, dtype=x.dtype)
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    for step in range(iterations):
        weight = 1.0 / (1.0 + torch.cdist(y, y) ** 2)
        weight.fill_diagonal_(0.0)
        q = weight / weight.sum()
        factor = exaggeration if step < iterations // 4 else 1.0
        difference = (factor * p - q) * weight
        gradient = 4 * (difference.sum(dim=1, keepdim=True) * y - difference @ y)
        # Per-coordinate gains (Jacobs' delta-bar-delta), as in the reference implementation.
        agree = torch.sign(gradient) == torch.sign(velocity)
        gains = torch.where(agree, gains * 0.8, gains + 0.2).clamp_min(0.01)
        momentum = 0.5 if step < iterations // 4 else 0.8
        velocity = momentum * velocity - learning_rate * gains * gradient
        y = y + velocity
    return y.float()


def embed_sequences(
    real: Any,
    synthetic: Any,
    *,
    method: Literal["pca", "tsne"] = "pca",
    n: int = 1000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TimeGAN's visualisation: 2-D coordinates of real and synthetic sequences.

    ``min(n, N, M)`` random sequences of each set are averaged over features (``(n, T)``), then
    projected by PCA fitted on the real ones, or embedded jointly by :func:`tsne`.

    Returns:
        ``(real (n, 2), synthetic (n, 2))``.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    real, synthetic = _as_sequences(real, "real").cpu(), _as_sequences(synthetic, "synthetic").cpu()
    count = min(n, len(real), len(synthetic))
    generator = torch.Generator().manual_seed(seed)
    a = real[torch.randperm(len(real), generator=generator)[:count]].mean(dim=-1)
    b = synthetic[torch.randperm(len(synthetic), generator=generator)[:count]].mean(dim=-1)
    if method == "pca":
        center = a.mean(dim=0)
        _, _, v = torch.linalg.svd(a - center, full_matrices=False)
        return (a - center) @ v[:2].T, (b - center) @ v[:2].T
    coords = tsne(torch.cat([a, b]), seed=seed)
    return coords[:count], coords[count:]


def plot_embedding(
    real: Any,
    synthetic: Any,
    *,
    method: Literal["pca", "tsne"] = "pca",
    n: int = 1000,
    seed: int = 0,
    ax: Any = None,
) -> Any:
    """Scatter :func:`embed_sequences` (real red, synthetic blue) on ``ax`` (new if ``None``).

    Needs matplotlib (the ``notebooks`` extra). Returns the axes.
    """
    import matplotlib.pyplot as plt  # optional dependency, only for plotting

    a, b = embed_sequences(real, synthetic, method=method, n=n, seed=seed)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(a[:, 0], a[:, 1], s=6, alpha=0.3, c="tab:red", label="real")
    ax.scatter(b[:, 0], b[:, 1], s=6, alpha=0.3, c="tab:blue", label="synthetic")
    ax.set_title(f"{method.upper() if method == 'pca' else 't-SNE'}: real vs synthetic")
    ax.legend()
    return ax
