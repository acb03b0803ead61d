"""Linear CKA: parity with the Gram-matrix (HSIC) definition, invariances, errors."""

import pytest
import torch

from sciml.metrics import linear_cka

torch.set_num_threads(1)


def _gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA from its definition: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T."""
    n = x.shape[0]
    centring = torch.eye(n, dtype=torch.float64) - 1.0 / n

    def hsic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.trace(a @ centring @ b @ centring)

    k, l_ = x @ x.T, y @ y.T
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def test_linear_cka_equals_the_kernel_alignment_of_centred_gram_matrices():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 7, generator=generator, dtype=torch.float64)
    y = torch.tanh(
        x @ torch.randn(7, 5, generator=generator, dtype=torch.float64)
    ) + 0.3 * torch.randn(40, 5, generator=generator, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(_gram_cka(x, y), rel=1e-12)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_linear_cka_is_one_under_rotation_scaling_and_shift_but_not_general_linear_maps():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(60, 6, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    assert linear_cka(x, 3.7 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-12)
    # a float32 input is computed in float64 as well
    assert linear_cka(x.float(), x.float() @ rotation.float()) == pytest.approx(1.0, abs=1e-6)
    stretch = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 30.0], dtype=torch.float64))
    assert linear_cka(x, x @ stretch) < 0.5
    # independent features: CKA of order (feature count / samples), far below 1
    noise = torch.randn(2000, 6, generator=generator, dtype=torch.float64)
    other = torch.randn(2000, 6, generator=generator, dtype=torch.float64)
    assert linear_cka(noise, other) < 0.02


def test_linear_cka_rejects_bad_input():
    with pytest.raises(ValueError, match="same n examples"):
        linear_cka(torch.randn(5, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="same n examples"):
        linear_cka(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match="at least 2 examples"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(5, 3), torch.randn(5, 3))
