"""Fixed-step integrators: classic RK4 order and counts; leapfrog energy, order, reversibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sciml.solvers import leapfrog, rk4

torch.set_num_threads(1)
DTYPE = torch.float64


def forced_decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y' = -y + sin t; with y(0) = 1, y = 1.5 e^{-t} + (sin t - cos t) / 2."""
    return -y + torch.sin(t)


def forced_decay_exact(t: float) -> float:
    return 1.5 * math.exp(-t) + (math.sin(t) - math.cos(t)) / 2


def _slope(hs: list[float], errors: list[float]) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def test_rk4_fourth_order_and_counts() -> None:
    y0 = torch.tensor([1.0], dtype=DTYPE)
    t = torch.linspace(0.0, 2.0, 9, dtype=DTYPE)
    ys, stats = rk4(forced_decay, y0, t)
    assert ys.shape == (9, 1)
    assert stats.n_accepted == 8 and stats.nfe_forward == 32 and stats.n_rejected == 0
    assert math.isclose(float(stats.step_sizes.sum()), 2.0, abs_tol=1e-12)

    t = torch.linspace(0.0, 2.0, 6, dtype=DTYPE)
    exact = torch.tensor([forced_decay_exact(float(s)) for s in t], dtype=DTYPE)
    hs = [0.2, 0.1, 0.05, 0.025]
    errors = []
    for h in hs:
        ys, stats = rk4(forced_decay, y0, t, step_size=h)
        assert stats.n_accepted == round(2.0 / h)
        errors.append(float((ys[:, 0] - exact).abs().max()))
    assert abs(_slope(hs, errors) - 4.0) < 0.15


def test_rk4_substeps_hit_output_times() -> None:
    y0 = torch.tensor([1.0], dtype=DTYPE)
    t = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=DTYPE)
    ys, stats = rk4(forced_decay, y0, t, step_size=0.1)
    # ceil(0.3/0.1) + ceil(0.7/0.1) + ceil(1.0/0.1) sub-steps, each <= 0.1.
    assert stats.n_accepted == 3 + 7 + 10 and stats.nfe_forward == 80
    assert bool((stats.step_sizes <= 0.1 + 1e-15).all())
    assert math.isclose(float(stats.step_sizes.sum()), 2.0, abs_tol=1e-12)
    exact = torch.tensor([forced_decay_exact(float(s)) for s in t], dtype=DTYPE)
    assert torch.allclose(ys[:, 0], exact, atol=1e-6)


def test_rk4_backwards_in_time_and_gradients() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    y0 = torch.randn(4, 2, dtype=DTYPE, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 5, dtype=DTYPE)
    ys, _ = rk4(lambda t, y: net(y), y0, t, step_size=0.05)
    back, back_stats = rk4(lambda t, y: net(y), ys[-1], t.flip(0), step_size=0.05)
    assert torch.allclose(back[-1], y0, atol=1e-6)
    assert math.isclose(float(back_stats.step_sizes.sum()), -1.0, abs_tol=1e-12)
    ys[-1].square().sum().backward()
    assert y0.grad is not None and all(p.grad is not None for p in net.parameters())


def test_rk4_validation() -> None:
    y0 = torch.ones(2, dtype=DTYPE)
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        rk4(forced_decay, y0, torch.tensor([0.0, 1.0, 0.5], dtype=DTYPE))
    with pytest.raises(ValueError, match="step_size"):
        rk4(forced_decay, y0, torch.tensor([0.0, 1.0], dtype=DTYPE), step_size=0.0)
    with pytest.raises(ValueError, match=r"returned shape \(1,\), expected \(2,\)"):
        rk4(lambda t, y: y[:1], y0, torch.tensor([0.0, 1.0], dtype=DTYPE))
    with pytest.raises(ValueError, match="non-finite"):
        rk4(
            forced_decay,
            torch.tensor([math.nan], dtype=DTYPE),
            torch.tensor([0.0, 1.0], dtype=DTYPE),
        )


# Harmonic oscillator H = (p^2 + q^2) / 2 and pendulum H = p^2 / 2 - cos q.
def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def sin(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


def pendulum_energy(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return 0.5 * p**2 - torch.cos(q)


def test_leapfrog_energy_bounded_while_rk4_and_euler_drift() -> None:
    n_steps, h = 20_000, 0.1
    t = torch.linspace(0.0, n_steps * h, n_steps + 1, dtype=DTYPE)
    q0 = torch.tensor([1.0], dtype=DTYPE)
    p0 = torch.tensor([0.5], dtype=DTYPE)
    e0 = float(pendulum_energy(q0, p0))
    with torch.no_grad():
        qs, ps, stats = leapfrog(sin, identity, q0, p0, t)
        leap_error = (pendulum_energy(qs, ps)[:, 0] - e0).abs()
        quarter = n_steps // 4
        # Bounded oscillation of size O(h^2), no secular growth.
        assert float(leap_error.max()) < 0.01
        assert float(leap_error[-quarter:].max()) < 1.2 * float(leap_error[:quarter].max())

        def pendulum(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.stack([y[1], -torch.sin(y[0])])

        y0 = torch.cat([q0, p0])
        ys, _ = rk4(pendulum, y0, t)
        rk4_error = (pendulum_energy(ys[:, 0], ys[:, 1]) - e0).abs()
        # RK4 dissipates energy steadily: the drift keeps growing with time.
        assert float(rk4_error[-1]) > 1.8 * float(rk4_error[n_steps // 2])
        assert float(rk4_error[-1]) > 3 * float(rk4_error[quarter])

        # Explicit Euler on the pendulum gains energy geometrically; 2000 steps suffice.
        y = y0
        for _ in range(2000):
            y = y + h * pendulum(t[0], y)
        euler_gain = float(pendulum_energy(y[0], y[1])) - e0
        assert euler_gain > 10 * float(leap_error[:2001].max())
    assert stats.n_accepted == n_steps and stats.nfe_forward == 2 * n_steps + 1


def test_leapfrog_second_order() -> None:
    q0 = torch.tensor([1.0], dtype=DTYPE)
    p0 = torch.tensor([0.0], dtype=DTYPE)
    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    hs = [0.1, 0.05, 0.025, 0.0125]
    errors = []
    for h in hs:
        qs, ps, stats = leapfrog(identity, identity, q0, p0, t, step_size=h)
        assert stats.n_accepted == round(1.0 / h)
        error = math.hypot(float(qs[-1, 0]) - math.cos(1.0), float(ps[-1, 0]) + math.sin(1.0))
        errors.append(error)
    assert abs(_slope(hs, errors) - 2.0) < 0.15


def test_leapfrog_time_reversible() -> None:
    torch.manual_seed(0)
    q0 = torch.randn(3, 2, dtype=DTYPE)
    p0 = torch.randn(3, 2, dtype=DTYPE)
    t = torch.linspace(0.0, 50.0, 11, dtype=DTYPE)
    qs, ps, _ = leapfrog(sin, identity, q0, p0, t, step_size=0.05)
    back_q, back_p, stats = leapfrog(sin, identity, qs[-1], ps[-1], t.flip(0), step_size=0.05)
    assert torch.allclose(back_q[-1], q0, atol=1e-10) and torch.allclose(back_p[-1], p0, atol=1e-10)
    assert torch.allclose(back_q.flip(0), qs, atol=1e-10)
    assert math.isclose(float(stats.step_sizes.sum()), -50.0, abs_tol=1e-9)


def test_leapfrog_differentiable_and_validated() -> None:
    stiffness = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)
    q0 = torch.tensor([1.0], dtype=DTYPE)
    p0 = torch.tensor([0.0], dtype=DTYPE)
    t = torch.tensor([0.0, 0.5], dtype=DTYPE)
    qs, _, _ = leapfrog(lambda q: stiffness * q, identity, q0, p0, t, step_size=0.001)
    qs[-1].sum().backward()
    # q(t) = cos(sqrt(k) t): dq/dk = -sin(sqrt(k) t) t / (2 sqrt(k)).
    root = math.sqrt(2.0)
    assert math.isclose(
        float(stiffness.grad), -math.sin(root * 0.5) * 0.5 / (2 * root), rel_tol=1e-5
    )
    with pytest.raises(ValueError, match="same shape"):
        leapfrog(identity, identity, q0, torch.zeros(2, dtype=DTYPE), t)
    with pytest.raises(ValueError, match=r"dH_dq\(q\) returned shape"):
        leapfrog(lambda q: q.sum(), identity, q0, p0, t)
