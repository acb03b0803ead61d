"""Implicit midpoint: exact quadratic invariants, order 2, symplecticity, clear failures."""

import itertools
import math

import pytest
import torch

from sciml.solvers import ImplicitSolveError, implicit_midpoint, rk4


def _hamiltonian_field(energy):
    """``f(t, y) = J grad H(y)`` for flat states ``y = (q, p)`` with ``n`` coordinates each."""

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            # Keep the graph only when the caller differentiates w.r.t. the state.
            z = y if y.requires_grad else y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(z).sum(), z, create_graph=y.requires_grad)
        dq, dp = grad.chunk(2, dim=-1)
        return torch.cat([dp, -dq], dim=-1)

    return field


def _quadratic(seed: int, n: int = 2):
    """A random non-separable quadratic H = y^T S y / 2 (S positive definite, q-p coupled)."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(2 * n, 2 * n, generator=generator, dtype=torch.float64)
    s = a @ a.T + 0.5 * torch.eye(2 * n, dtype=torch.float64)
    return s, lambda y: 0.5 * torch.einsum("...i,ij,...j->...", y, s, y)


def _non_separable(y: torch.Tensor) -> torch.Tensor:
    """H = p^2 (1 + q^2) / 2 + q^4 / 4 + q^2 / 2 (one degree of freedom), bounded orbits."""
    q, p = y[..., 0], y[..., 1]
    return 0.5 * p**2 * (1 + q**2) + q**4 / 4 + q**2 / 2


@pytest.mark.parametrize("iteration", ["fixed_point", "newton"])
def test_quadratic_energy_is_conserved_exactly(iteration):
    s, energy = _quadratic(seed=0)
    y0 = torch.tensor([[0.3, -0.7, 0.5, 0.2], [1.0, 0.0, 0.0, -1.0]], dtype=torch.float64)
    lipschitz = float(torch.linalg.matrix_norm(s, ord=2))
    # A large step (a coarse, inaccurate solution), still a contraction for the fixed point.
    h = 1.0 / lipschitz
    t = torch.linspace(0, 400 * h, 401, dtype=torch.float64)
    solution = implicit_midpoint(_hamiltonian_field(energy), y0, t, iteration=iteration)
    drift = (energy(solution.ys) - energy(y0)).abs().max() / energy(y0).abs().min()
    assert float(drift) < 1e-11
    # RK4 with the same step loses energy steadily (it is not symplectic).
    explicit = rk4(_hamiltonian_field(energy), y0, t).ys
    assert float((energy(explicit) - energy(y0)).abs().max() / energy(y0).abs().min()) > 1e-4
    if iteration == "newton":  # a linear equation: one Newton update solves it, one confirms
        assert solution.stats.nfe_forward == solution.stats.n_accepted * (1 + 2 * 2)


def test_matches_the_closed_form_midpoint_map_of_a_linear_system():
    s, energy = _quadratic(seed=1, n=1)
    j = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    a = j @ s  # f(y) = A y
    h = 0.05
    eye = torch.eye(2, dtype=torch.float64)
    cayley = torch.linalg.solve(eye - h / 2 * a, eye + h / 2 * a)
    y0 = torch.tensor([0.4, -0.9], dtype=torch.float64)
    t = torch.linspace(0, 20 * h, 21, dtype=torch.float64)
    ys = implicit_midpoint(_hamiltonian_field(energy), y0, t).ys
    torch.testing.assert_close(
        ys[-1], torch.linalg.matrix_power(cayley, 20) @ y0, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("iteration", ["fixed_point", "newton"])
def test_second_order_convergence(iteration):
    field = _hamiltonian_field(_non_separable)
    y0 = torch.tensor([0.8, 0.3], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    reference = rk4(field, y0, t, step_size=1e-3).ys[-1]
    errors = [
        float(
            (
                implicit_midpoint(field, y0, t, step_size=h, iteration=iteration).ys[-1] - reference
            ).norm()
        )
        for h in (0.1, 0.05, 0.025)
    ]
    orders = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(1.9 < order < 2.1 for order in orders), (errors, orders)


def test_one_step_map_is_symplectic_for_a_non_separable_hamiltonian():
    field = _hamiltonian_field(_non_separable)
    t = torch.tensor([0.0, 0.3], dtype=torch.float64)
    j = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    y0 = torch.tensor([0.9, -0.6], dtype=torch.float64)

    def step(method, y):
        return method(field, y, t).ys[-1]

    midpoint = torch.autograd.functional.jacobian(lambda y: step(implicit_midpoint, y), y0)
    torch.testing.assert_close(midpoint.T @ j @ midpoint, j, rtol=0, atol=1e-11)
    # The test can fail: RK4's one-step map (same h) is not symplectic.
    explicit = torch.autograd.functional.jacobian(lambda y: step(rk4, y), y0)
    assert float((explicit.T @ j @ explicit - j).abs().max()) > 1e-5


def test_non_separable_energy_stays_bounded_over_long_times():
    field = _hamiltonian_field(_non_separable)
    y0 = torch.tensor([[0.8, 0.3], [-1.2, 0.9]], dtype=torch.float64)
    t = torch.linspace(0, 100, 1001, dtype=torch.float64)
    ys = implicit_midpoint(field, y0, t).ys
    error = (_non_separable(ys) - _non_separable(y0)).abs().max(0).values / _non_separable(y0)
    # Symplectic: an O(h^2) energy error that oscillates instead of drifting.
    assert float(error.max()) < 1e-2
    late = (_non_separable(ys[500:]) - _non_separable(y0)).abs().max(0).values
    early = (_non_separable(ys[:500]) - _non_separable(y0)).abs().max(0).values
    assert bool((late < 2 * early).all())


def test_time_reversible_and_gradients_flow_to_parameters():
    omega = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    def field(t, y):
        return torch.stack([y[..., 1], -(omega**2) * y[..., 0]], dim=-1)

    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    forward = implicit_midpoint(
        field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), step_size=0.1
    )
    back = implicit_midpoint(
        field, forward.ys[-1].detach(), torch.tensor([1.0, 0.0], dtype=torch.float64), step_size=0.1
    )
    torch.testing.assert_close(back.ys[-1], y0, rtol=0, atol=1e-12)
    # d q(T) / d omega through the iterations vs a central difference.
    (gradient,) = torch.autograd.grad(forward.ys[-1, 0], omega)

    def q_final(w: float) -> float:
        f = lambda t, y: torch.stack([y[..., 1], -(w**2) * y[..., 0]], dim=-1)  # noqa: E731
        times = torch.tensor([0.0, 1.0], dtype=torch.float64)
        return float(implicit_midpoint(f, y0, times, step_size=0.1).ys[-1, 0])

    numeric = (q_final(1.3 + 1e-6) - q_final(1.3 - 1e-6)) / 2e-6
    assert float(gradient) == pytest.approx(numeric, rel=1e-6)


def test_failure_to_converge_and_bad_arguments_raise_clear_errors():
    _, energy = _quadratic(seed=2)
    field = _hamiltonian_field(energy)
    y0 = torch.ones(4, dtype=torch.float64)
    t = torch.tensor([0.0, 50.0], dtype=torch.float64)  # h * Lip >> 2: the fixed point diverges
    with pytest.raises(ImplicitSolveError, match=r"did not converge at step 0.*newton"):
        implicit_midpoint(field, y0, t)
    # Newton has no step-size limit on a linear system.
    assert torch.isfinite(implicit_midpoint(field, y0, t, iteration="newton").ys).all()
    with pytest.raises(ImplicitSolveError, match="after 1 iterations"):
        implicit_midpoint(
            field, y0, torch.tensor([0.0, 0.1], dtype=torch.float64), max_iterations=1
        )
    with pytest.raises(ValueError, match="iteration must be one of"):
        implicit_midpoint(field, y0, t, iteration="picard")
    with pytest.raises(ValueError, match="rtol and atol cannot both be zero"):
        implicit_midpoint(field, y0, t, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="max_iterations"):
        implicit_midpoint(field, y0, t, max_iterations=0)
    with pytest.raises(ImplicitSolveError, match="differentiable"):
        implicit_midpoint(lambda t, y: y.detach(), y0, t, iteration="newton")
