"""Global regularizers (RNODE kinetic/Jacobian, global error sum) and their composition."""

import math

import pytest
import torch
from torch import nn

from sciml.regularizers import (
    GlobalErrorRegularizer,
    JacobianFrobeniusRegularizer,
    KineticEnergyRegularizer,
    LocalRegularizer,
    solve_regularized,
)
from sciml.regularizers._base import AbstractRegularizer
from sciml.solvers import ODESolverConfig, error_ratio, rk_step

SOLVER = ODESolverConfig(rtol=1e-8, atol=1e-10)
T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


class Linear(nn.Module):
    """``f(t, y) = y A^T`` with a trainable matrix."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, t, y):
        return y @ self.matrix.T


def test_kinetic_energy_is_the_exact_path_integral():
    # y' = a y: integral of |a y0 e^{a t}|^2 over [0, 1] = a y0^2 (e^{2a} - 1) / 2.
    a = -0.7
    field = Linear(torch.tensor([[a]], dtype=torch.float64))
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
    solution = solve_regularized(SOLVER, field, y0, T, [KineticEnergyRegularizer()])
    exact = a * (y0**2).mean() * (math.exp(2 * a) - 1) / 2
    assert float(solution.penalties["kinetic"].detach()) == pytest.approx(float(exact), rel=1e-6)
    # The model's states are untouched by the extra column.
    assert torch.allclose(solution.ys[:, :, 0], y0.T * torch.exp(a * T)[:, None], rtol=1e-6)


def test_jacobian_frobenius_estimates_the_frobenius_norm():
    # Constant Jacobian A: E ||eps^T A||^2 = ||A||_F^2, integrated over [0, 1].
    matrix = torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.3, 1.0], [0.0, 0.7, -0.4]])
    field = Linear(matrix.double())
    y0 = torch.randn(4000, 3, dtype=torch.float64)
    solution = solve_regularized(SOLVER, field, y0, T, [JacobianFrobeniusRegularizer()])
    frobenius = float((matrix**2).sum())
    # Hutchinson with 4000 Gaussian probes: relative standard error about sqrt(2/4000) ~ 2 %.
    assert float(solution.penalties["jacobian"].detach()) == pytest.approx(frobenius, rel=0.08)


@pytest.mark.parametrize("regularizer", [KineticEnergyRegularizer, JacobianFrobeniusRegularizer])
def test_running_costs_differentiate_the_same_with_adjoint_and_backprop(regularizer):
    field = Linear(torch.tensor([[-0.3, 0.8], [-0.9, -0.1]], dtype=torch.float64))
    y0 = torch.randn(8, 2, dtype=torch.float64)
    results = []
    for adjoint in (False, True):
        torch.manual_seed(1)
        solver = ODESolverConfig(rtol=1e-9, atol=1e-11, adjoint=adjoint)
        solution = solve_regularized(solver, field, y0, T, [regularizer()])
        (penalty,) = solution.penalties.values()
        (grad,) = torch.autograd.grad(penalty, [field.matrix])
        results.append((penalty.detach(), grad))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-7)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-9)


def test_global_error_sum_retakes_every_accepted_step_of_the_solver():
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    func = lambda t, y: field(y)  # noqa: E731
    y0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    solver = ODESolverConfig(rtol=1e-5, atol=1e-5)
    reg = GlobalErrorRegularizer()
    recorded = []
    original = reg.on_accept_step
    reg.on_accept_step = lambda t0, y, dt: (
        recorded.append((t0, y, float(dt.detach()))),
        original(t0, y, dt),
    )
    solution = solve_regularized(solver, func, y0, T, [reg])
    assert len(recorded) == solution.stats.n_accepted >= 3
    ratios = []
    for t0, y, h in recorded:
        step = rk_step(func, t0, y, h, tableau="dopri5")
        ratios.append(error_ratio(step.y_error, y, step.y1, rtol=solver.rtol, atol=solver.atol))
    # Every accepted step passed the controller's test with this very estimate.
    assert all(float(r.detach()) <= 1.0 for r in ratios)
    expected = sum(h * r for (_, _, h), r in zip(recorded, ratios, strict=True))
    assert float(solution.penalties["global_error"].detach()) == pytest.approx(
        float(expected.detach()), rel=1e-12
    )
    assert solution.nfe_reg == 7 * solution.stats.n_accepted
    # Discretise-then-optimise: the gradient flows back through the solver to the initial state.
    (grad_y0,) = torch.autograd.grad(solution.penalties["global_error"], [y0])
    assert float(grad_y0.abs().sum()) > 0


def test_global_error_refuses_the_adjoint():
    field = Linear(torch.eye(2, dtype=torch.float64))
    solver = ODESolverConfig(adjoint=True)
    with pytest.raises(ValueError, match="adjoint"):
        solve_regularized(solver, field, torch.ones(2, 2).double(), T, [GlobalErrorRegularizer()])


def test_regularizers_compose_in_one_solve():
    field = Linear(torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64))
    y0 = torch.randn(6, 2, dtype=torch.float64)
    regs = [
        LocalRegularizer(),
        KineticEnergyRegularizer(),
        JacobianFrobeniusRegularizer(weight=0.1),
        LocalRegularizer(kind="stiffness", weight=0.0),
        GlobalErrorRegularizer(weight=2.0),
    ]
    solution = solve_regularized(SOLVER, field, y0, T, regs)
    assert list(solution.penalties) == ["local", "kinetic", "jacobian", "local_1", "global_error"]
    plain, _ = SOLVER.solve(field, y0, T)
    assert solution.ys.shape == plain.shape
    assert torch.allclose(solution.ys, plain, rtol=1e-6, atol=1e-8)
    total, terms = solution.weighted_penalty(regs, step=0)
    expected = sum(
        r.weight * solution.penalties[n] for r, n in zip(regs, solution.penalties, strict=True)
    )
    assert float(total.detach()) == pytest.approx(float(expected.detach()))
    assert set(terms) == {"reg", *(f"reg_{n}" for n in solution.penalties)}


def test_non_ode_regularizers_are_refused():
    class Penalty(AbstractRegularizer):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ValueError, match="AbstractODERegularizer"):
        solve_regularized(SOLVER, Linear(torch.eye(1)), torch.ones(1, 1), T, [Penalty()])
