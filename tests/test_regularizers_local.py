"""LocalRegularizer: the one-step error/stiffness penalty, checked without training."""

import math

import pytest
import torch
from torch import nn
from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU
from torchdiffeq._impl.misc import _compute_error_ratio, _rms_norm, _select_initial_step
from torchdiffeq._impl.rk_common import _runge_kutta_step

from sciml.regularizers import (
    LocalRegularizer,
    LocalSDERegularizer,
    ODESolveRecord,
    initial_step_size,
    solve_regularized,
)
from sciml.solvers import TABLEAUS, ODESolverConfig, SolverStats

SOLVER = ODESolverConfig(rtol=1e-6, atol=1e-6)
T = torch.tensor([0.0, 1.0], dtype=torch.float64)


class Field(nn.Module):
    """A small smooth time-dependent field ``(B, d) -> (B, d)``."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, 16), nn.Tanh(), nn.Linear(16, dim)).double()

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(len(y), 1)], dim=-1))


class Counting(nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


def _y0(batch=4, dim=3):
    return torch.randn(batch, dim, dtype=torch.float64)


def test_biased_step_error_equals_torchdiffeq_own_step_error():
    # With the solver's step size and the dopri5 pair, the sampled regularization step *is* one of
    # the accepted steps of the main solve: same start, same h, same error estimate.
    field = Field()
    reg = LocalRegularizer(sampling="biased", tableau="dopri5")
    solution = solve_regularized(SOLVER, field, _y0(), T, [reg])
    t0, z, h = reg.last_sample
    func = lambda t, y, perturb=None: field(t, y)  # noqa: E731 (torchdiffeq's call signature)
    tableau = _DORMAND_PRINCE_SHAMPINE_TABLEAU
    tableau = type(tableau)(
        alpha=tableau.alpha.double(),
        beta=[b.double() for b in tableau.beta],
        c_sol=tableau.c_sol.double(),
        c_error=tableau.c_error.double(),
    )
    dt = torch.tensor(h, dtype=torch.float64)
    with torch.no_grad():
        y1, _, y_error, _ = _runge_kutta_step(func, z, field(t0, z), t0, dt, t0 + dt, tableau)
        ratio = _compute_error_ratio(y_error, SOLVER.rtol, SOLVER.atol, z, y1, _rms_norm)
    penalty = float(solution.penalties["local"].detach())
    assert penalty == pytest.approx(h * float(ratio), rel=1e-10)
    assert float(ratio) <= 1.0  # it was accepted by the controller
    assert any(math.isclose(h, float(s), rel_tol=1e-12) for s in solution.stats.step_sizes)


@pytest.mark.parametrize("kind", ["error", "stiffness"])
@pytest.mark.parametrize("tableau", ["dopri5", "tsit5"])
@pytest.mark.parametrize("field", ["constant", "linear_in_t"])
def test_zero_for_constant_and_linear_in_t_fields(kind, tableau, field):
    c, b = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([2.0, 0.5]).double()
    func = {
        "constant": lambda t, y: c.expand_as(y),
        "linear_in_t": lambda t, y: (c + b * t).expand_as(y),
    }[field]
    reg = LocalRegularizer(kind=kind, tableau=tableau)
    solution = solve_regularized(SOLVER, func, torch.ones(5, 2, dtype=torch.float64), T, [reg])
    # Zero in exact arithmetic; in float64 the weights b - b_hat sum to zero only up to rounding,
    # so bound R by a few hundred ulps of h * |f| on the tolerance scale.
    h = reg.last_sample[2]
    f_max = float((c.abs() + b.abs()).max())
    rounding = 256 * torch.finfo(torch.float64).eps * h * f_max / SOLVER.atol
    assert abs(float(solution.penalties["local"])) <= (h * rounding if kind == "error" else 1e-12)


def _record_at(func, z, h):
    """A record whose (unbiased) sample is ``z`` at t1 = 0.5 inside a solver step of size h."""
    t1 = torch.tensor([0.5], dtype=torch.float64)
    return ODESolveRecord(
        func=func,
        t=T,
        ys=z.expand(2, *z.shape),
        extra_t=t1,
        extra_ys=z.unsqueeze(0),
        integrals=z.new_zeros(len(z), 0),
        stats=SolverStats(step_sizes=torch.full((math.ceil(1 / h) + 1,), h, dtype=torch.float64)),
        solver=ODESolverConfig(rtol=1e-12, atol=1e-6),
    )


@pytest.mark.parametrize("tableau", ["dopri5", "tsit5"])
def test_error_penalty_scales_like_h_to_the_sixth(tableau):
    # R = h * EEst and the embedded estimate is O(h^5): log-log slope 6 for a smooth ODE.
    func = lambda t, y: torch.cos(t) * y - 0.5 * y**3  # noqa: E731
    z = torch.tensor([[0.8], [-0.3]], dtype=torch.float64)
    reg = LocalRegularizer(tableau=tableau)
    hs = torch.tensor([0.02, 0.04, 0.08, 0.16], dtype=torch.float64)
    penalties = torch.stack([reg(_record_at(func, z, float(h)))[0] for h in hs])
    slope = torch.diff(penalties.log()) / torch.diff(hs.log())
    assert torch.all((slope - 6).abs() < 0.3), slope


@pytest.mark.parametrize("tableau", ["dopri5", "tsit5"])
def test_stiffness_penalty_is_the_dominant_eigenvalue_over_the_stability_size(tableau):
    # For y' = lambda y the quotient (k7 - k6)/(Y7 - Y6) is lambda exactly.
    lam = -40.0
    z = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    reg = LocalRegularizer(kind="stiffness", tableau=tableau, eps=0.0)
    penalty, _ = reg(_record_at(lambda t, y: lam * y, z, 0.01))
    assert float(penalty) == pytest.approx(abs(lam) / TABLEAUS[tableau].stability_size, rel=1e-9)


@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_gradient_reaches_the_parameters_and_not_the_sampled_state(sampling, adjoint):
    field = Field()
    y0 = _y0().requires_grad_()
    solver = ODESolverConfig(rtol=1e-6, atol=1e-6, adjoint=adjoint)
    reg = LocalRegularizer(sampling=sampling)
    solution = solve_regularized(solver, field, y0, T, [reg])
    penalty = solution.penalties["local"]
    grads = torch.autograd.grad(penalty, [*field.parameters(), y0], allow_unused=True)
    assert grads[-1] is None  # z(t1) is a constant of the regularizer
    assert all(g is not None for g in grads[:-1])
    assert sum(float(g.abs().sum()) for g in grads[:-1]) > 0


@pytest.mark.parametrize(
    ("step_size", "sampling", "expected"),
    [("solver", "unbiased", 7), ("solver", "biased", 7), ("heuristic", "unbiased", 8)],
)
def test_regularizer_nfe_is_exactly_the_stage_count(step_size, sampling, expected):
    field = Counting(Field())
    reg = LocalRegularizer(sampling=sampling, step_size=step_size)
    solution = solve_regularized(SOLVER, field, _y0(), T, [reg])
    assert solution.nfe_reg == expected
    assert field.calls == solution.stats.nfe_forward + expected


def test_unbiased_step_size_is_the_solver_step_covering_t1():
    field = Field()
    reg = LocalRegularizer()
    solution = solve_regularized(SOLVER, field, _y0(), T, [reg])
    t1, _, h = reg.last_sample
    steps = solution.stats.step_sizes
    starts = torch.cumsum(steps, 0) - steps
    index = int(torch.searchsorted(starts, float(t1), right=True)) - 1
    assert h == float(steps[index])
    assert float(starts[index]) <= float(t1) < float(starts[index] + steps[index])


def test_biased_sampling_picks_accepted_steps_uniformly():
    field = Field()
    y0 = _y0()
    reg = LocalRegularizer(sampling="biased")
    counts: dict[float, int] = {}
    n_draws = 600
    with torch.no_grad():
        for _ in range(n_draws):
            solution = solve_regularized(SOLVER, field, y0, T, [reg])
            t0 = float(reg.last_sample[0])
            counts[t0] = counts.get(t0, 0) + 1
    n_steps = solution.stats.n_accepted
    assert n_steps >= 3
    assert len(counts) == n_steps
    expected = n_draws / n_steps
    # Binomial standard deviation sqrt(n p (1 - p)); 4 sigma.
    sigma = math.sqrt(n_draws * (1 / n_steps) * (1 - 1 / n_steps))
    assert all(abs(c - expected) < 4 * sigma for c in counts.values()), counts


def test_heuristic_step_size_matches_torchdiffeq_initial_step():
    field = Field()
    t0, y0 = torch.tensor(0.3, dtype=torch.float64), _y0()
    with torch.no_grad():
        f0 = field(t0, y0)
    ours = initial_step_size(field, t0, y0, f0, order=4, rtol=1e-6, atol=1e-6)
    theirs = _select_initial_step(
        lambda t, y, perturb=None: field(t, y), t0, y0, 4, 1e-6, 1e-6, _rms_norm, f0
    )
    assert ours == pytest.approx(float(theirs), rel=1e-10)


def test_adjoint_gives_the_same_penalty_and_gradient_as_backprop():
    field = Field()
    y0 = _y0()
    results = []
    for adjoint in (False, True):
        torch.manual_seed(3)
        solver = ODESolverConfig(rtol=1e-6, atol=1e-6, adjoint=adjoint)
        penalty = solve_regularized(solver, field, y0, T, [LocalRegularizer()]).penalties["local"]
        grads = torch.autograd.grad(penalty, list(field.parameters()))
        results.append((penalty.detach(), torch.cat([g.flatten() for g in grads])))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-9)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-7, atol=1e-12)


def test_exponential_weight_decay():
    reg = LocalRegularizer(weight=2.5, weight_final=1.0)
    assert reg.weight_at(0, 100) == pytest.approx(2.5)
    assert reg.weight_at(50, 100) == pytest.approx(math.sqrt(2.5))
    assert reg.weight_at(100, 100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("kind", "curvature"), ("sampling", "stratified"), ("step_size", "auto"), ("tableau", "rk4")],
)
def test_bad_arguments_name_the_choices(argument, value):
    with pytest.raises(ValueError, match=argument):
        LocalRegularizer(**{argument: value})


def test_biased_sampling_needs_an_adaptive_solver():
    reg = LocalRegularizer(sampling="biased")
    solver = ODESolverConfig(method="rk4", step_size=0.25)
    with pytest.raises(ValueError, match="adaptive"):
        solve_regularized(solver, Field(), _y0(), T, [reg])


def test_unbiased_sampling_never_changes_a_fixed_grid_solve():
    # the sample time is an extra output time: for rk4 without step_size it would be a grid point
    reg = LocalRegularizer()
    with pytest.raises(ValueError, match="extra step of the training solve"):
        solve_regularized(ODESolverConfig(method="rk4"), Field(), _y0(), T, [reg])
    plain, field, y0 = ODESolverConfig(method="rk4", step_size=0.25), Field(), _y0()
    regularized = solve_regularized(plain, field, y0, T, [reg])
    assert torch.equal(regularized.ys, plain.solve(field, y0, T).ys)


# --- neural SDEs --------------------------------------------------------------------------------


def _sde_penalty(drift, diffusion, y, h, **kwargs):
    reg = LocalSDERegularizer()
    t = torch.zeros(len(y), 1, dtype=y.dtype)
    return reg(drift, diffusion, t, y, h, rtol=kwargs.get("rtol", 1e-12), atol=1e-3)


def test_sde_penalty_is_zero_for_constant_drift_and_additive_noise():
    y = torch.randn(64, 3, dtype=torch.float64)
    penalty = _sde_penalty(
        lambda t, y: torch.full_like(y, 0.7), lambda t, y: torch.full_like(y, 0.3), y, 0.1
    )
    assert float(penalty.value) < 1e-12  # zero up to the rounding of h vs h/2 + h/2
    assert (penalty.nfe_drift, penalty.nfe_diffusion) == (2, 2)


def test_sde_penalty_orders_in_h():
    # Without noise the two-half-steps difference is f'f h^2 / 4, so R = h * EEst ~ h^3; with
    # multiplicative noise only it is g'g dW1 dW2 ~ h, so R ~ h^2.
    y = torch.rand(20000, 1, dtype=torch.float64) + 0.5
    hs = torch.tensor([0.01, 0.02, 0.04], dtype=torch.float64)
    cases = {
        3.0: (lambda t, y: torch.sin(y), lambda t, y: torch.zeros_like(y)),
        2.0: (lambda t, y: torch.zeros_like(y), lambda t, y: 0.5 * y),
    }
    for order, (drift, diffusion) in cases.items():
        values = torch.stack([_sde_penalty(drift, diffusion, y, float(h)).value for h in hs])
        slope = torch.diff(values.log()) / torch.diff(hs.log())
        assert torch.all((slope - order).abs() < 0.15), (order, slope)


def test_sde_penalty_gradient_reaches_the_networks_and_not_the_state():
    drift = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    diffusion = nn.Sequential(nn.Linear(2, 8), nn.Softplus(), nn.Linear(8, 2)).double()
    y = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    penalty = _sde_penalty(lambda t, y: drift(y), lambda t, y: diffusion(y), y, 0.1, rtol=1e-3)
    params = [*drift.parameters(), *diffusion.parameters()]
    grads = torch.autograd.grad(penalty.value, [*params, y], allow_unused=True)
    assert grads[-1] is None
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads[:-1])


def test_sde_penalty_needs_diagonal_noise():
    y = torch.randn(4, 2)
    with pytest.raises(ValueError, match="diagonal"):
        _sde_penalty(lambda t, y: y, lambda t, y: y.unsqueeze(-1), y, 0.1)


def test_neural_sde_regularizes_training_only():
    from sciml.models import NeuralSDE

    model = NeuralSDE(state_dim=2, hidden_dims=(16,), regularizers=[LocalSDERegularizer(weight=3)])
    plain = NeuralSDE(state_dim=2, hidden_dims=(16,))
    plain.load_state_dict(model.state_dict())
    t = torch.linspace(0, 1, 11).expand(8, 11)
    batch = {"t": t, "y": torch.randn(8, 11, 2).cumsum(1) * 0.1}
    loss, terms = model.compute_loss(batch, "train")
    assert float(loss.detach()) == pytest.approx(float(terms["nll"] + 3 * terms["reg_local_sde"]))
    assert (terms["nfe_reg_drift"], terms["nfe_reg_diffusion"]) == (2, 2)
    torch.manual_seed(5)
    loss_val, terms_val = model.compute_loss(batch, "val")
    torch.manual_seed(5)
    loss_plain, _ = plain.compute_loss(batch, "val")
    assert float(loss_val.detach()) == float(loss_plain.detach()) and "reg" not in terms_val
    assert terms_val["nfe_drift"] > 0 and terms_val["nfe_diffusion"] > 0
    with pytest.raises(ValueError, match="LocalSDERegularizer"):
        NeuralSDE(regularizers=[LocalRegularizer()])
