"""Butcher tableaus (order conditions, stability sizes) and rk_step / error_ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchdiffeq._impl.adaptive_heun import _ADAPTIVE_HEUN_TABLEAU
from torchdiffeq._impl.bosh3 import _BOGACKI_SHAMPINE_TABLEAU
from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU
from torchdiffeq._impl.misc import _compute_error_ratio, _rms_norm
from torchdiffeq._impl.rk_common import _runge_kutta_step

from sciml.solvers import TABLEAUS, ButcherTableau, error_ratio, rk_step

torch.set_num_threads(1)
DTYPE = torch.float64


def _matrices(tableau: ButcherTableau) -> tuple[np.ndarray, np.ndarray]:
    s = tableau.n_stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, : len(row)] = row
    return a, np.array(tableau.c)


def _order_residuals(b: np.ndarray, a: np.ndarray, c: np.ndarray) -> dict[int, list[float]]:
    """Residuals of the order conditions sum(b Φ(τ)) - 1/γ(τ) for all rooted trees of order <= 5."""
    ac, ac2, ac3 = a @ c, a @ c**2, a @ c**3
    return {
        1: [b.sum() - 1],
        2: [b @ c - 1 / 2],
        3: [b @ c**2 - 1 / 3, b @ ac - 1 / 6],
        4: [b @ c**3 - 1 / 4, b @ (c * ac) - 1 / 8, b @ ac2 - 1 / 12, b @ (a @ ac) - 1 / 24],
        5: [
            b @ c**4 - 1 / 5,
            b @ (c**2 * ac) - 1 / 10,
            b @ (c * ac2) - 1 / 15,
            b @ (c * (a @ ac)) - 1 / 30,
            b @ ac**2 - 1 / 20,
            b @ ac3 - 1 / 20,
            b @ (a @ (c * ac)) - 1 / 40,
            b @ (a @ ac2) - 1 / 60,
            b @ (a @ (a @ ac)) - 1 / 120,
        ],
    }


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_order_conditions(name: str) -> None:
    tableau = TABLEAUS[name]
    a, c = _matrices(tableau)
    b = np.array(tableau.b)
    b_hat = b - np.array(tableau.b_error)
    assert np.allclose(a.sum(axis=1), c, atol=1e-14, rtol=0)
    assert abs(sum(tableau.b_error)) < 1e-15
    residuals = _order_residuals(b, a, c)
    for order in range(1, tableau.order + 1):
        assert np.abs(residuals[order]).max() < 1e-12, (name, order)
    if tableau.order < 5:
        assert np.abs(residuals[tableau.order + 1]).max() > 1e-6  # exactly the stated order
    embedded = _order_residuals(b_hat, a, c)
    for order in range(1, tableau.order):
        assert np.abs(embedded[order]).max() < 1e-12, (name, "embedded", order)
    assert np.abs(embedded[tableau.order]).max() > 1e-6


def _stability_interval(tableau: ButcherTableau) -> float:
    r"""Largest x with |R(-ξ)| <= 1 on [0, x], R(z) = 1 + Σ_k z^k b^T A^{k-1} 1."""
    a, _ = _matrices(tableau)
    b = np.array(tableau.b)
    coefficients = [1.0] + [
        b @ np.linalg.matrix_power(a, k - 1) @ np.ones(len(b)) for k in range(1, len(b) + 1)
    ]
    poly = np.polynomial.Polynomial(coefficients)
    xs = np.linspace(1e-9, 10.0, 100_001)
    first_bad = int(np.argmax(np.abs(poly(-xs)) > 1.0))
    lo, hi = xs[first_bad - 1], xs[first_bad]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if abs(poly(-mid)) > 1.0 else (mid, hi)
    return lo


@pytest.mark.parametrize(
    ("name", "literature"),
    [("tsit5", 3.5068), ("dopri5", 3.3066), ("bosh3", 2.5127), ("heun_euler", 2.0)],
)
def test_stability_size(name: str, literature: float) -> None:
    tableau = TABLEAUS[name]
    computed = _stability_interval(tableau)
    assert abs(computed - tableau.stability_size) < 1e-8
    assert abs(computed - literature) < 1e-4


def test_tableau_validation() -> None:
    with pytest.raises(ValueError, match="does not sum"):
        ButcherTableau(
            a=((), (0.5,)),
            b=(0.0, 1.0),
            b_error=(0.0, 0.0),
            c=(0.0, 1.0),
            order=2,
            fsal=False,
            stability_size=2.0,
        )
    with pytest.raises(ValueError, match="fsal"):
        ButcherTableau(
            a=((), (1.0,)),
            b=(0.5, 0.5),
            b_error=(0.5, -0.5),
            c=(0.0, 1.0),
            order=2,
            fsal=True,
            stability_size=2.0,
        )


def _field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sin(y) * torch.cos(t) - 0.3 * y.roll(1, dims=-1)


@pytest.mark.parametrize(
    ("name", "reference", "sign"),
    [
        ("dopri5", _DORMAND_PRINCE_SHAMPINE_TABLEAU, 1.0),
        ("bosh3", _BOGACKI_SHAMPINE_TABLEAU, 1.0),
        # torchdiffeq embeds Euler with the end-point slope; the magnitude of the estimate agrees.
        ("heun_euler", _ADAPTIVE_HEUN_TABLEAU, -1.0),
    ],
)
def test_rk_step_matches_torchdiffeq(name: str, reference, sign: float) -> None:
    torch.manual_seed(0)
    y0 = torch.randn(4, 3, dtype=DTYPE)
    t0 = torch.tensor(0.3, dtype=DTYPE)
    dt = torch.tensor(0.17, dtype=DTYPE)
    step = rk_step(_field, t0, y0, dt, tableau=name)

    def perturbed(t: torch.Tensor, y: torch.Tensor, perturb=None) -> torch.Tensor:
        return _field(t, y)

    y1, f1, y_error, _ = _runge_kutta_step(
        perturbed, y0, _field(t0, y0), t0, dt, t0 + dt, reference
    )
    assert torch.allclose(step.y1, y1, atol=1e-12, rtol=0)
    assert torch.allclose(step.y_error, sign * y_error, atol=1e-12, rtol=0)
    ratio = error_ratio(step.y_error, y0, step.y1, rtol=1e-6, atol=1e-8)
    assert torch.allclose(
        ratio, _compute_error_ratio(y_error, 1e-6, 1e-8, y0, y1, _rms_norm), rtol=1e-12
    )
    if TABLEAUS[name].fsal:
        assert torch.allclose(step.stages[-1], f1, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_stages_and_fsal_shortcut(name: str) -> None:
    tableau = TABLEAUS[name]
    calls = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(float(t))
        return _field(t, y)

    y0 = torch.randn(5, 2, dtype=DTYPE)
    step = rk_step(field, 0.5, y0, 0.1, tableau=name)
    assert len(calls) == len(step.stages) == len(step.stage_states) == tableau.n_stages
    assert calls == pytest.approx([0.5 + c * 0.1 for c in tableau.c], abs=1e-15)
    assert step.stage_states[0] is y0 and step.stage_states[-1] is step.y1
    explicit = y0 + 0.1 * sum(b * k for b, k in zip(tableau.b, step.stages, strict=True))
    assert torch.allclose(step.y1, explicit, atol=1e-14)
    for state, stage, c in zip(step.stage_states, step.stages, tableau.c, strict=True):
        assert torch.allclose(
            stage, _field(torch.tensor(0.5 + c * 0.1, dtype=DTYPE), state), atol=1e-14
        )

    calls.clear()
    again = rk_step(field, 0.5, y0, 0.1, tableau=name, k1=step.stages[0])
    assert len(calls) == tableau.n_stages - 1
    assert torch.equal(again.y1, step.y1) and torch.equal(again.y_error, step.y_error)


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_error_vanishes_for_exactly_integrated_fields(name: str) -> None:
    y0 = torch.randn(3, dtype=DTYPE)

    def constant(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, 2.5)

    step = rk_step(constant, 0.0, y0, 0.3, tableau=name)
    assert float(step.y_error.abs().max()) < 1e-15
    assert torch.allclose(step.y1, y0 + 0.75, atol=1e-15)
    if TABLEAUS[name].order - 1 >= 2:  # the embedded solution integrates f = a + b t exactly

        def linear_in_t(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (1.0 - 2.0 * t) * torch.ones_like(y)

        step = rk_step(linear_in_t, 0.2, y0, 0.5, tableau=name)
        assert float(step.y_error.abs().max()) < 1e-15
        assert torch.allclose(step.y1, y0 + (0.5 - (0.7**2 - 0.2**2)), atol=1e-15)


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_local_error_scaling(name: str) -> None:
    """h * EEst = O(h^6) on a smooth scalar ODE (local error O(h^5) of the embedded solution)."""

    def logistic(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * (1.0 - y) + 0.5 * torch.sin(3.0 * t)

    y0 = torch.tensor([0.2], dtype=DTYPE)
    hs = [0.02 * 2.0**-k for k in range(4)]
    values = []
    for h in hs:
        step = rk_step(logistic, 0.1, y0, h, tableau=name)
        values.append(h * float(error_ratio(step.y_error, y0, step.y1, rtol=1e-6, atol=1e-6)))
    slope = np.polyfit(np.log(hs), np.log(values), 1)[0]
    assert abs(slope - 6.0) < 0.3, slope


def test_rk_step_differentiable() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return net(y)

    y0 = torch.randn(16, 2, dtype=DTYPE)
    h = torch.tensor(0.3, dtype=DTYPE, requires_grad=True)
    step = rk_step(field, 0.0, y0, h, tableau="tsit5")
    penalty = h * error_ratio(step.y_error, y0, step.y1, rtol=1e-3, atol=1e-3)
    penalty.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())
    assert h.grad is not None and torch.isfinite(h.grad)
    # Stiffness estimate from stored stages: h |λ| for a linear field f = λ y.
    lam = -7.0
    step = rk_step(lambda t, y: lam * y, 0.0, y0, 0.1, tableau="tsit5")
    rho = (step.stages[-1] - step.stages[-2]).norm() / (
        step.stage_states[-1] - step.stage_states[-2]
    ).norm()
    assert math.isclose(float(rho), abs(lam), rel_tol=1e-12)


def test_unknown_tableau() -> None:
    with pytest.raises(ValueError, match=r"unknown tableau 'rk45'.*dopri5"):
        rk_step(_field, 0.0, torch.ones(2, dtype=DTYPE), 0.1, tableau="rk45")


def test_error_ratio_formula() -> None:
    y0 = torch.tensor([1.0, -2.0], dtype=DTYPE)
    y1 = torch.tensor([3.0, 0.5], dtype=DTYPE)
    err = torch.tensor([0.1, -0.2], dtype=DTYPE)
    scale = 1e-2 + 1e-1 * torch.tensor([3.0, 2.0], dtype=DTYPE)
    expected = math.sqrt(float(((err / scale) ** 2).mean()))
    assert math.isclose(
        float(error_ratio(err, y0, y1, rtol=1e-1, atol=1e-2)), expected, rel_tol=1e-14
    )
