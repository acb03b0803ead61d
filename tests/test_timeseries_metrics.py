import matplotlib
import pytest
import torch

from sciml.data import sine_sequences
from sciml.metrics import (
    discriminative_score,
    embed_sequences,
    plot_embedding,
    predictive_score,
    tsne,
)

matplotlib.use("Agg")


def _sines(n, seed):
    return torch.tensor(sine_sequences(n, 24, 5, seed), dtype=torch.float32)


def _predictable(n, seed):
    """Sines whose last feature at t+1 is the mean of the other features at t."""
    x = _sines(n, seed)
    x[:, 1:, 4] = x[:, :-1, :4].mean(dim=-1)
    return x


def test_discriminative_score_sanity():
    real, held_out = _sines(500, 0), _sines(500, 1)
    noise = torch.rand(500, 24, 5, generator=torch.Generator().manual_seed(0))
    same = discriminative_score(real, held_out, iterations=400)
    different = discriminative_score(real, noise, iterations=400)
    assert same.mean <= 0.08
    assert different.mean >= 0.35
    assert len(same.values) == 1 and same.std == 0.0


def test_discriminative_score_repeats_are_seeded_and_leave_global_rng_alone():
    real, other = _sines(60, 0), _sines(60, 1)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = discriminative_score(real, other, iterations=5, repeats=2, seed=4)
    assert torch.equal(torch.rand(1), before)
    second = discriminative_score(real, other, iterations=5, repeats=2, seed=4)
    assert first == second and len(first.values) == 2


def test_predictive_score_real_to_real_matches_a_direct_fit():
    real, held_out = _predictable(300, 0), _predictable(300, 1)
    # The target is linear in the inputs, so a direct least-squares fit is exact.
    inputs = torch.cat([real[:, :-1, :4].reshape(-1, 4), torch.ones(300 * 23, 1)], dim=1)
    target = real[:, 1:, 4].reshape(-1, 1)
    coefficients = torch.linalg.lstsq(inputs, target).solution
    direct = float((inputs @ coefficients - target).abs().mean())
    assert direct < 1e-5
    real_to_real = predictive_score(real, real, iterations=200, lr=1e-2).mean
    real_to_held_out = predictive_score(real, held_out, iterations=200, lr=1e-2).mean
    noise = torch.rand(300, 24, 5, generator=torch.Generator().manual_seed(0))
    noise_to_real = predictive_score(noise, real, iterations=200, lr=1e-2).mean
    assert real_to_real < direct + 0.02
    assert abs(real_to_held_out - real_to_real) < 0.003
    assert noise_to_real > 10 * real_to_real


def test_predictive_score_uses_only_the_other_features_as_inputs():
    # TimeGAN issue #51: features :D-1 at t predict feature D-1 at t+1. Scrambling the last
    # feature of the test inputs (except the targets) must not change the predictions, so a
    # target that is unpredictable from the others scores like a constant guess.
    x = _sines(200, 0)
    shuffled = x.clone()
    shuffled[:, :, 4] = x[torch.randperm(200), :, 4]
    score = predictive_score(x, shuffled, iterations=50, lr=1e-2).mean
    assert score > 0.02


def test_metrics_validate_inputs_and_run_inside_inference_mode():
    real = _sines(20, 0)
    with pytest.raises(ValueError, match="NaN"):
        discriminative_score(real, real.clone().index_fill_(1, torch.tensor([3]), float("nan")))
    with pytest.raises(ValueError, match="differ"):
        predictive_score(real, real[:, :10])
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        discriminative_score(real[0], real[0])
    with torch.inference_mode():
        inside = predictive_score(real, real, iterations=3)
    assert inside == predictive_score(real, real, iterations=3)


def test_pca_and_tsne_embeddings():
    real, fake = _sines(80, 0), torch.rand(80, 24, 5, generator=torch.Generator().manual_seed(1))
    a, b = embed_sequences(real, fake, method="pca", n=50)
    assert a.shape == (50, 2) and b.shape == (50, 2)
    torch.testing.assert_close(a.mean(dim=0), torch.zeros(2), atol=1e-5, rtol=0)
    # t-SNE keeps two well-separated clusters apart: nearest neighbours share the cluster.
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(40, 5, generator=generator), 8 + torch.randn(40, 5)])
    y = tsne(points, perplexity=10, iterations=200)
    distance = torch.cdist(y, y).fill_diagonal_(float("inf"))
    neighbour = distance.argmin(dim=1)
    assert float(((neighbour < 40) == (torch.arange(80) < 40)).float().mean()) == 1.0
    ax = plot_embedding(real, fake, method="tsne", n=30)
    assert len(ax.collections) == 2
    with pytest.raises(ValueError, match="method"):
        embed_sequences(real, fake, method="umap")
