"""odeint: statistics equal hand counts, validation errors, adjoint counts, ODESolverConfig."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import FixedGridODESolver

from sciml.solvers import (
    ODE_METHODS,
    MaxStepsError,
    ODESolverConfig,
    SolverStats,
    StepSizeUnderflowError,
    odeint,
)

torch.set_num_threads(1)
DTYPE = torch.float64


class CountingField(nn.Module):
    """``f(t, y) = -k (y - cos t)`` with a learnable ``k`` and a call counter."""

    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=DTYPE))
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -self.k * (y - torch.cos(t))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_methods_match_torchdiffeq_families() -> None:
    adaptive = [m for m in ODE_METHODS if issubclass(SOLVERS[m], RKAdaptiveStepsizeODESolver)]
    fixed = [m for m in ODE_METHODS if issubclass(SOLVERS[m], FixedGridODESolver)]
    assert sorted(adaptive + fixed) == sorted(ODE_METHODS)
    assert set(adaptive) == {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}


@pytest.mark.parametrize("k", [1.0, 80.0])
def test_dopri5_counts(k: float) -> None:
    """2 evaluations before the first step (f(t0) and the initial-step heuristic), then 6 per
    attempted step (FSAL reuses the 7th stage)."""
    func = CountingField(k)
    y0 = torch.tensor([2.0, -1.0], dtype=DTYPE)
    t = torch.linspace(0.0, 3.0, 7, dtype=DTYPE)
    ys, stats = odeint(func, y0, t, rtol=1e-6, atol=1e-9)
    assert ys.shape == (7, 2)
    assert stats.nfe_forward == func.calls
    assert stats.nfe_forward == 2 + 6 * (stats.n_accepted + stats.n_rejected)
    assert stats.nfe_backward == 0
    if k > 1:  # the stiff-ish problem makes the controller reject steps
        assert stats.n_rejected > 0
    steps = stats.step_sizes
    assert steps.dtype == torch.float64 and steps.device.type == "cpu"
    assert len(steps) == stats.n_accepted == stats.n_steps and bool((steps > 0).all())
    # The last step overshoots t[-1]; torchdiffeq interpolates back.
    assert steps[:-1].sum() < 3.0 <= steps.sum() + 1e-12


def test_first_step_option_skips_heuristic() -> None:
    func = CountingField()
    y0 = torch.ones(3, dtype=DTYPE)
    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    _, stats = odeint(func, y0, t, options={"first_step": 0.1})
    assert stats.nfe_forward == func.calls == 1 + 6 * (stats.n_accepted + stats.n_rejected)


@pytest.mark.parametrize(
    ("method", "per_step"), [("euler", 1), ("midpoint", 2), ("rk4", 4), ("heun3", 3)]
)
def test_fixed_grid_counts(method: str, per_step: int) -> None:
    func = CountingField()
    y0 = torch.ones(2, dtype=DTYPE)
    t = torch.linspace(0.0, 1.0, 11, dtype=DTYPE)
    _, stats = odeint(func, y0, t, method=method)
    assert stats.n_accepted == 10 and stats.n_rejected == 0
    assert stats.nfe_forward == func.calls == per_step * 10
    assert math.isclose(float(stats.step_sizes.sum()), 1.0, abs_tol=1e-12)

    func.calls = 0
    _, stats = odeint(func, y0, t, method=method, options={"step_size": 0.025})
    assert stats.n_accepted == 40
    assert stats.nfe_forward == func.calls == per_step * 40
    assert torch.allclose(stats.step_sizes, torch.full((40,), 0.025, dtype=DTYPE))


def test_decreasing_time_gives_signed_steps() -> None:
    func = CountingField()
    y0 = torch.ones(2, dtype=DTYPE)
    t = torch.linspace(1.0, 0.0, 5, dtype=DTYPE)
    _, stats = odeint(func, y0, t, method="euler")
    assert math.isclose(float(stats.step_sizes.sum()), -1.0, abs_tol=1e-12)
    _, stats = odeint(func, y0, t)
    assert bool((stats.step_sizes < 0).all()) and float(stats.step_sizes.sum()) <= -1.0 + 1e-12


def test_stats_are_fresh_per_call() -> None:
    func = CountingField()
    y0 = torch.ones(2, dtype=DTYPE)
    t = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    first = odeint(func, y0, t).stats
    second = odeint(func, y0, t).stats
    assert first is not second
    assert first.as_dict() == second.as_dict()
    assert torch.equal(first.step_sizes, second.step_sizes)
    assert "nfe_forward=" in repr(first)


def test_solution_matches_torchdiffeq_and_exact() -> None:
    import torchdiffeq

    func = CountingField()
    y0 = torch.tensor([1.0], dtype=DTYPE)
    t = torch.linspace(0.0, 2.0, 5, dtype=DTYPE)
    ys, _ = odeint(func, y0, t, rtol=1e-10, atol=1e-12)
    assert torch.equal(ys, torchdiffeq.odeint(func, y0, t, rtol=1e-10, atol=1e-12))
    # y' = -(y - cos t), y(0) = 1: y = (sin t + cos t + e^{-t}) / 2.
    exact = (torch.sin(t) + torch.cos(t) + torch.exp(-t)) / 2
    assert torch.allclose(ys[:, 0], exact, atol=1e-9)


def test_euler_first_order() -> None:
    func = CountingField()
    y0 = torch.tensor([1.0], dtype=DTYPE)
    t = torch.tensor([0.0, 2.0], dtype=DTYPE)
    exact = (math.sin(2.0) + math.cos(2.0) + math.exp(-2.0)) / 2
    hs = [0.1, 0.05, 0.025, 0.0125]
    with torch.no_grad():
        finals = [
            float(odeint(func, y0, t, method="euler", options={"step_size": h}).ys[-1, 0])
            for h in hs
        ]
    errors = [abs(final - exact) for final in finals]
    slope = (math.log(errors[-1]) - math.log(errors[0])) / (math.log(hs[-1]) - math.log(hs[0]))
    assert abs(slope - 1.0) < 0.1


def test_adjoint_backward_counts() -> None:
    func = CountingField(2.0)
    y0 = torch.tensor([1.0, 0.5], dtype=DTYPE, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 4, dtype=DTYPE)
    ys, stats = odeint(func, y0, t, rtol=1e-8, atol=1e-10, adjoint=True)
    forward_calls = func.calls
    assert stats.nfe_forward == forward_calls == 2 + 6 * (stats.n_accepted + stats.n_rejected)
    assert stats.nfe_backward == 0
    ys.sum().backward()
    assert stats.nfe_backward > 0
    assert stats.nfe_backward == func.calls - forward_calls
    assert stats.nfe_forward == forward_calls
    # Adjoint gradients agree with backpropagation through the solver.
    grad_adjoint = (func.k.grad.clone(), y0.grad.clone())
    func.k.grad, y0.grad = None, None
    ys, stats = odeint(func, y0, t, rtol=1e-8, atol=1e-10)
    ys.sum().backward()
    assert stats.nfe_backward == 0
    assert torch.allclose(grad_adjoint[0], func.k.grad, rtol=1e-5)
    assert torch.allclose(grad_adjoint[1], y0.grad, rtol=1e-5)


def test_adjoint_plain_callable_needs_params() -> None:
    k = torch.tensor(1.5, dtype=DTYPE, requires_grad=True)

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -k * y

    y0 = torch.ones(2, dtype=DTYPE)
    t = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint(func, y0, t, adjoint=True)
    ys, stats = odeint(func, y0, t, adjoint=True, adjoint_params=[k])
    ys[-1].sum().backward()
    # d/dk of 2 exp(-k) at k = 1.5.
    assert math.isclose(float(k.grad), -2 * math.exp(-1.5), rel_tol=1e-5)
    assert stats.nfe_backward > 0


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown ODE method 'rk45'") as info:
        odeint(
            CountingField(),
            torch.ones(1, dtype=DTYPE),
            torch.tensor([0.0, 1.0], dtype=DTYPE),
            method="rk45",
        )
    for method in ODE_METHODS:
        assert repr(method) in str(info.value)


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (torch.tensor([0.0, 1.0, 0.5]), "strictly increasing or decreasing"),
        (torch.tensor([0.0, 1.0, 1.0]), "strictly increasing or decreasing"),
        (torch.zeros(2, 2), "1-D"),
        (torch.tensor([0.0]), "at least two"),
        (torch.tensor([0.0, float("nan")]), "non-finite"),
    ],
)
def test_invalid_times(t: torch.Tensor, match: str) -> None:
    func = CountingField()
    with pytest.raises(ValueError, match=match):
        odeint(func, torch.ones(1, dtype=DTYPE), t.to(DTYPE))
    assert func.calls == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_initial_state(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        odeint(
            CountingField(),
            torch.tensor([1.0, bad], dtype=DTYPE),
            torch.tensor([0.0, 1.0], dtype=DTYPE),
        )


@pytest.mark.parametrize(
    ("rtol", "atol", "match"),
    [
        (-1.0, 1e-9, r"rtol must be finite and >= 0"),  # accepted every step: a wrong answer
        (1e-7, float("nan"), r"atol must be finite and >= 0"),
        (0.0, 0.0, "both be zero"),
    ],
)
def test_invalid_tolerances(rtol: float, atol: float, match: str) -> None:
    func = CountingField()
    with pytest.raises(ValueError, match=match):
        odeint(
            func,
            torch.ones(2, dtype=DTYPE),
            torch.tensor([0.0, 1.0], dtype=DTYPE),
            rtol=rtol,
            atol=atol,
        )
    assert func.calls == 0


def test_broken_torchdiffeq_method_is_refused_with_its_reason() -> None:
    # torchdiffeq 0.2.5's explicit_adams: y' = -y on [0, 1], step 0.01, gives 0.735, not e^-1
    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    with pytest.raises(ValueError, match=r"explicit_adams.*wrong solutions"):
        odeint(CountingField(), torch.ones(2, dtype=DTYPE), t, method="explicit_adams")
    with pytest.raises(ValueError, match="wrong solutions"):
        ODESolverConfig(method="explicit_adams")


def test_type_errors() -> None:
    t = torch.tensor([0.0, 1.0], dtype=DTYPE)
    with pytest.raises(TypeError, match="callable"):
        odeint("not a function", torch.ones(1, dtype=DTYPE), t)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"y0 must be a torch\.Tensor"):
        odeint(CountingField(), [1.0], t)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        odeint(CountingField(), torch.ones(1, dtype=DTYPE), torch.tensor([0, 1]))


def test_output_shape_mismatch_fails_before_stepping() -> None:
    calls = []

    def bad(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return y.sum(-1)

    with pytest.raises(ValueError, match=r"returned shape \(3,\), expected \(3, 2\)"):
        odeint(bad, torch.ones(3, 2, dtype=DTYPE), torch.tensor([0.0, 1.0], dtype=DTYPE))
    assert len(calls) == 1


def test_max_steps_error() -> None:
    func = CountingField()
    with pytest.raises(MaxStepsError, match=r"max_num_steps=3.*loosen rtol/atol") as info:
        odeint(
            func,
            torch.ones(2, dtype=DTYPE),
            torch.tensor([0.0, 10.0], dtype=DTYPE),
            rtol=1e-12,
            atol=1e-12,
            options={"max_num_steps": 3},
        )
    assert isinstance(info.value, RuntimeError)
    assert "3 accepted" in str(info.value)


def test_blow_up_raises_a_named_error() -> None:
    # y' = y^2, y(0) = 1 blows up at t = 1: torchdiffeq stops with a bare AssertionError
    with pytest.raises(StepSizeUnderflowError, match="blows up"):
        odeint(lambda t, y: y**2, torch.ones(1, dtype=DTYPE), torch.tensor([0.0, 2.0], dtype=DTYPE))


def test_float32_and_batched_state() -> None:
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return field(y)

    y0 = torch.randn(8, 3)
    t = torch.linspace(0.0, 1.0, 6)
    ys, stats = odeint(func, y0, t, rtol=1e-5, atol=1e-7)
    assert ys.shape == (6, 8, 3) and ys.dtype == torch.float32
    ys.square().mean().backward()
    assert all(p.grad is not None for p in field.parameters())
    assert stats.nfe_forward == 2 + 6 * (stats.n_accepted + stats.n_rejected)


def test_solver_stats_defaults() -> None:
    stats = SolverStats()
    assert stats.n_steps == 0 and stats.step_sizes.shape == (0,)
    assert stats.as_dict() == {
        "nfe_forward": 0,
        "nfe_backward": 0,
        "nfe_diffusion": 0,
        "n_accepted": 0,
        "n_rejected": 0,
    }


def test_ode_config_round_trip_and_solve() -> None:
    config = ODESolverConfig(method="euler", step_size=0.05)
    assert ODESolverConfig(**dataclasses.asdict(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.method = "rk4"  # type: ignore[misc]
    func = CountingField()
    y0 = torch.ones(2, dtype=DTYPE)
    t = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    ys, stats = config.solve(func, y0, t)
    assert ys.shape == (3, 2)
    assert stats.n_accepted == stats.nfe_forward == func.calls == 20

    adaptive = ODESolverConfig(max_num_steps=2, rtol=1e-10, atol=1e-12)
    with pytest.raises(MaxStepsError):
        adaptive.solve(func, y0, torch.tensor([0.0, 5.0], dtype=DTYPE))
    adjoint = ODESolverConfig(adjoint=True)
    ys, stats = adjoint.solve(func, y0, t)
    ys.sum().backward()
    assert stats.nfe_backward > 0 and func.k.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "rk45"}, "unknown ODE method"),
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1.0}, "atol"),
        ({"method": "dopri5", "step_size": 0.1}, "fixed-grid"),
        ({"method": "euler", "step_size": -0.1}, "step_size"),
        ({"method": "euler", "max_num_steps": 10}, "adaptive"),
        ({"max_num_steps": 0}, "max_num_steps"),
    ],
)
def test_ode_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ODESolverConfig(**kwargs)
