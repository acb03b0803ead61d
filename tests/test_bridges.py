"""Schrödinger-bridge building blocks: Van Loan moments, bridges, couplings, distances."""

import math

import numpy as np
import ot
import pytest
import scipy.integrate
import scipy.linalg
import torch

from sciml.metrics import energy_distance, relative_frobenius_error, sampling_floor, wasserstein2
from sciml.nn import ipf_bridge
from sciml.solvers import (
    entropic_plan,
    linear_bridge_cost,
    linear_bridge_marginal,
    linear_bridge_paths,
    linear_transition,
    sample_partners,
)

HURWITZ = torch.tensor([[-0.2, -1.0], [1.0, -0.2]], dtype=torch.float64)
UNSTABLE = torch.tensor([[0.3, -1.0], [0.8, 0.1]], dtype=torch.float64)  # eigenvalues Re > 0
SIGMA = torch.tensor([[0.3, 0.0], [0.1, 0.2]], dtype=torch.float64)


@pytest.mark.parametrize("A", [HURWITZ, UNSTABLE], ids=["hurwitz", "non_hurwitz"])
def test_van_loan_matches_quadrature(A):
    assert (torch.linalg.eigvals(UNSTABLE).real > 0).all()
    c = torch.tensor([0.5, -0.3], dtype=torch.float64)
    times = torch.tensor([0.0, 0.3, 1.0, 2.5], dtype=torch.float64)
    moments = linear_transition(A, SIGMA, times, c)
    a, s = A.numpy(), (SIGMA @ SIGMA.T).numpy()
    for i, t in enumerate(times.tolist()):
        cov, _ = scipy.integrate.quad_vec(
            lambda u: scipy.linalg.expm(u * a) @ s @ scipy.linalg.expm(u * a).T, 0.0, t
        )
        shift, _ = scipy.integrate.quad_vec(lambda u: scipy.linalg.expm(u * a) @ c.numpy(), 0, t)
        np.testing.assert_allclose(moments.flow[i], scipy.linalg.expm(t * a), atol=1e-12)
        np.testing.assert_allclose(moments.cov[i], cov, atol=1e-9)
        np.testing.assert_allclose(moments.shift[i], shift, atol=1e-9)


def test_brownian_special_case_of_the_cost():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(50, 2, generator=generator, dtype=torch.float64) + 1.0
    sigma, gap = 0.3, 1.7
    cost = linear_bridge_cost(x, y, torch.zeros(2, 2), sigma, gap)
    expected = torch.cdist(x, y).square() / (2 * sigma**2 * gap)
    torch.testing.assert_close(cost, expected, rtol=1e-12, atol=1e-12)
    # hence the static SB with reg 1 is entropic OT on |y - x|^2 with reg 2 sigma^2 gap
    plan = entropic_plan(cost, 1.0)
    squared = torch.cdist(x, y).square()
    reference = ot.sinkhorn(
        torch.full((40,), 1 / 40, dtype=torch.float64),
        torch.full((50,), 1 / 50, dtype=torch.float64),
        squared,
        2 * sigma**2 * gap,
        stopThr=1e-12,
    )
    torch.testing.assert_close(plan, reference, rtol=1e-6, atol=1e-9)


def test_entropic_plan_marginals_and_log_domain_for_large_costs():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(30, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(20, 2, generator=generator, dtype=torch.float64) * 3
    a = torch.full((30,), 1 / 30, dtype=torch.float64)
    b = torch.full((20,), 1 / 20, dtype=torch.float64)
    for scale in (1.0, 12.0):  # the second cost exceeds the kernel domain (exp(-C) underflows)
        cost = scale * torch.cdist(x, y).square()
        plan = entropic_plan(cost, 1.0, max_iter=20_000, tol=1e-9)
        assert torch.isfinite(plan).all()
        torch.testing.assert_close(plan.sum(1), a)
        torch.testing.assert_close(plan.sum(0), b)
        reference = ot.sinkhorn(a, b, cost, 1.0, method="sinkhorn_log", stopThr=1e-9,
                                numItermax=20_000)  # fmt: skip
        torch.testing.assert_close(plan, reference, rtol=0, atol=1e-8)
    assert float(cost.max()) > 745  # plain exp(-C) would have underflowed to zero here
    partners = sample_partners(plan, torch.Generator().manual_seed(0))
    assert partners.shape == (30,) and bool((plan[torch.arange(30), partners] > 0).all())


def _conditional_moments(A, sigma, gap, s, x, y):
    """Moments of X_s given X_0 = x, X_gap = y from the joint Gaussian of (X_s, X_gap)."""
    m = linear_transition(A, sigma, torch.tensor([s, gap - s, gap]))
    (F_s, F_rest, F_gap), (cov_s, _, cov_gap) = m.flow, m.cov
    cross = cov_s @ F_rest.T  # Cov(X_s, X_gap)
    mean = F_s @ x + cross @ torch.linalg.solve(cov_gap, y - F_gap @ x)
    cov = cov_s - cross @ torch.linalg.solve(cov_gap, cross.T)
    return mean, cov


def test_bridge_endpoint_pinning():
    x = torch.tensor([2.0, 0.0], dtype=torch.float64)
    y = torch.tensor([-0.5, 1.0], dtype=torch.float64)
    previous = math.inf
    for s in (1.0, 1.9, 1.99, 1.999999):
        mean, cov = _conditional_moments(UNSTABLE, 0.3, 2.0, s, x, y)
        distance = float(torch.linalg.norm(mean - y))
        assert distance < previous
        previous = distance
    assert distance < 1e-5 and float(torch.linalg.norm(cov)) < 1e-6
    grid = torch.tensor([0.0, 0.5, 1.2, 1.9, 2.0], dtype=torch.float64)  # non-uniform
    paths = linear_bridge_paths(
        x.expand(5, 2), y.expand(5, 2), UNSTABLE, 0.3, grid, generator=torch.Generator()
    )
    torch.testing.assert_close(paths[:, 0], x.expand(5, 2))
    torch.testing.assert_close(paths[:, -1], y.expand(5, 2))
    near_end = linear_bridge_marginal(x[None], y[None], UNSTABLE, 0.3, 2.0, 2.0 - 1e-7)
    assert float(torch.linalg.norm(near_end - y)) < 1e-2


def test_sequential_bridge_paths_have_the_bridge_marginals():
    x = torch.tensor([2.0, 0.0], dtype=torch.float64)
    y = torch.tensor([-0.5, 1.0], dtype=torch.float64)
    c = torch.tensor([0.2, 0.1], dtype=torch.float64)
    n = 20_000
    generator = torch.Generator().manual_seed(3)
    grid = torch.tensor([0.0, 0.3, 0.8, 1.0, 1.5, 2.0], dtype=torch.float64)
    paths = linear_bridge_paths(x.expand(n, 2), y.expand(n, 2), HURWITZ, 0.3, grid, c,
                                generator=generator)  # fmt: skip
    direct = linear_bridge_marginal(x.expand(n, 2), y.expand(n, 2), HURWITZ, 0.3, 2.0, 0.8, c,
                                    generator=generator)  # fmt: skip
    m = linear_transition(HURWITZ, 0.3, torch.tensor([0.8, 1.2, 2.0]), c)
    cross = m.cov[0] @ m.flow[1].T
    resid = y - m.flow[2] @ x - m.shift[2]
    mean = m.flow[0] @ x + m.shift[0] + cross @ torch.linalg.solve(m.cov[2], resid)
    cov = m.cov[0] - cross @ torch.linalg.solve(m.cov[2], cross.T)
    for sample in (paths[:, 2], direct):  # grid point 2 is s = 0.8
        torch.testing.assert_close(sample.mean(0), mean, atol=4 * math.sqrt(cov.max() / n), rtol=0)
        torch.testing.assert_close(torch.cov(sample.T), cov, atol=0.05 * float(cov.max()), rtol=0)


def test_ipf_bridge_matches_the_target_marginal():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x0 = 0.2 * torch.randn(100, 2, generator=generator, dtype=torch.float64)
    x1 = 0.2 * torch.randn(100, 2, generator=generator, dtype=torch.float64) + torch.tensor(
        [2.0, -1.0], dtype=torch.float64
    )
    bridge = ipf_bridge(x0, x1, 1.0, None, 0.3, n_steps=10, iterations=3, fit_steps=200,
                        lr=3e-3, generator=generator)  # fmt: skip
    end = bridge.forward_paths[:, -1]
    start = bridge.backward_paths[:, 0]
    # the Brownian reference alone would leave the forward paths near the origin (W2 ~ 2.2)
    assert wasserstein2(end, x1) < 0.3
    assert wasserstein2(start, x0) < 0.3


def test_wasserstein2_energy_and_relative_frobenius():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=generator, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    assert wasserstein2(x, x + shift) == pytest.approx(float(torch.linalg.norm(shift)), rel=1e-9)
    assert wasserstein2(x, x[torch.randperm(100, generator=generator)]) == pytest.approx(
        0, abs=1e-7
    )
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, x + shift) > 0.5
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert relative_frobenius_error(A * 1.1, A) == pytest.approx(0.1)

    def normal(n, g):
        return torch.randn(n, 2, generator=g)

    small, large = sampling_floor(normal, 100, repeats=2), sampling_floor(normal, 800, repeats=2)
    assert 0 < large < small < 1.0
    with pytest.raises(ValueError, match="expected"):
        wasserstein2(x, x[:, :2])
