"""Reference solvers, the sympy front end and the collocation data module of the PDE problems."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from sciml.data import (
    ConvectionDiffusion1D,
    ConvectionDiffusionDataModule,
    fourier_interpolate,
    hopf_cole_solution,
    spectral_mol_solution,
)
from sciml.metrics import relative_l2, relative_l2_centered
from sciml.symbolic import SymbolicParseError, parse_convection_diffusion

X64 = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)


def particle_solution(nu, t_eval, *, n=128, diffusion="chain_rule"):
    """Burgers (u0 = sin) along particles: dX/dt = U, dU/dt = nu u_xx with u_xx on the moving grid.

    d = X - xi is periodic, so xi-derivatives are spectral. Returns X, U of shape (len(t), n)."""
    xi = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    k = np.fft.rfftfreq(n, d=1.0 / n)

    def d_xi(f):
        return np.fft.irfft(1j * k * np.fft.rfft(f), n=n)

    def rhs(_, y):
        d, u = y[:n], y[n:]
        if diffusion == "chain_rule":
            jacobian = 1.0 + d_xi(d)
            u_xx = d_xi(d_xi(u) / jacobian) / jacobian
        else:
            u_xx = d_xi(d_xi(u))
        return np.concatenate([u, nu * u_xx])

    y0 = np.concatenate([np.zeros(n), np.sin(xi)])
    sol = solve_ivp(
        rhs, (0, t_eval[-1]), y0, method="DOP853", t_eval=t_eval, rtol=1e-12, atol=1e-12
    )
    assert sol.success
    return xi + sol.y[:n].T, sol.y[n:].T


# --- sympy front end -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equation", "velocity", "nu", "source"),
    [
        ("u_t + 50*u_x = 0", "50", 0.0, "0"),
        ("u_t + u*u_x = 0.01*u_xx", "u", 0.01, "0"),
        ("2*u_t + 4*u*u_x - 0.04*u_xx", "2*u", 0.02, "0"),
        ("u_t + sin(x)*u_x = 0.1*u_xx + u*(1 - u)", "sin(x)", 0.1, "u*(1 - u)"),
        ("u_t = -(2 + t)*u_x", "t + 2", 0.0, "0"),
    ],
)
def test_parser_accepts_the_class(equation, velocity, nu, source):
    import sympy

    terms = parse_convection_diffusion(equation)
    assert sympy.simplify(terms.velocity - sympy.sympify(velocity)) == 0
    assert terms.nu == pytest.approx(nu)
    assert sympy.simplify(terms.source - sympy.sympify(source)) == 0


@pytest.mark.parametrize(
    ("equation", "message"),
    [
        ("u_x + u", "no u_t"),
        ("u_t + u_x**2", "nonlinear in u_x"),
        ("u_t + u_x*u_xx", "multiplies u_x by u_xx"),
        ("u_t = u*u_xx", "diffusivity .* must be a constant"),
        ("u_t = -0.1*u_xx", "negative diffusivity"),
        ("u*u_t + u_x", "coefficient of u_t must be a constant"),
        ("u_t + u_xxx", "unknown symbols"),
        ("u_t + u_x +* 2", "not a valid expression"),
        # sympy alone would evaluate these derivatives of a symbol to 0, dropping the term
        ("u_t + 50*u_x = 0.01*Derivative(u, x, 2)", "unknown functions \\['Derivative'\\]"),
        ("u_t + diff(u, x)*u", "unknown functions \\['diff'\\]"),
        ("u_t + sqrt(u_x**2)", "source .* contains \\['u_x'\\]"),
    ],
)
def test_parser_rejects_other_equations(equation, message):
    with pytest.raises(SymbolicParseError, match=message):
        parse_convection_diffusion(equation)


def test_problem_from_equation_and_validation():
    import pickle

    problem = ConvectionDiffusion1D.from_equation("u_t + u*u_x = 0.02*u_xx", t_final=0.8)
    assert problem.is_burgers and problem.nu == 0.02 and problem.t_final == 0.8
    problem.velocity_torch(torch.ones(2), torch.zeros(2), 0.0)  # caches compiled functions
    assert pickle.loads(pickle.dumps(problem)) == problem  # hparams and checkpoints need this
    assert ConvectionDiffusion1D(u0="5 + sin(x)", velocity="u", nu=0.01).sine_offset == 5.0
    assert ConvectionDiffusion1D(u0="sin(2*x)").sine_offset is None
    with pytest.raises(ValueError, match="not periodic"):
        ConvectionDiffusion1D(u0="x")
    with pytest.raises(ValueError, match=r"problem\.nu"):
        ConvectionDiffusion1D(nu=-1.0)
    with pytest.raises(ValueError, match="must be finite"):
        ConvectionDiffusion1D(nu=float("nan"))
    with pytest.raises(SymbolicParseError, match=r"problem.velocity .*unknown symbols \['y'\]"):
        ConvectionDiffusion1D(velocity="y*u")
    with pytest.raises(ValueError, match=r"unknown reference method 'exact'.*fourier"):
        problem.reference(X64, [0.0, 0.1], method="exact")


# --- reference solutions -------------------------------------------------------------------


def test_fourier_multiplier_is_exact_for_convection_diffusion():
    problem = ConvectionDiffusion1D(velocity="50", nu=0.01)
    t = np.linspace(0.0, 1.0, 11)
    exact = np.exp(-0.01 * t)[:, None] * np.sin(X64 - 50 * t[:, None])
    assert np.abs(problem.reference(X64, t) - exact).max() < 1e-12


def test_fourier_multiplier_agrees_with_method_of_lines_for_a_general_initial_condition():
    problem = ConvectionDiffusion1D(velocity="2", nu=0.05, u0="exp(sin(x))")
    t = np.array([0.0, 0.3, 0.6])
    fourier = problem.reference(X64, t, method="fourier")
    mol = spectral_mol_solution(problem, X64, t, n_points=128)
    assert np.abs(fourier - mol).max() < 1e-8
    # and it really moves and decays: not a trivially constant field
    assert np.abs(fourier[-1] - fourier[0]).max() > 0.5


@pytest.mark.parametrize(("nu", "offset"), [(0.02, 0.0), (0.01, 5.0)])
def test_hopf_cole_agrees_with_pseudo_spectral_burgers(nu, offset):
    problem = ConvectionDiffusion1D(velocity="u", nu=nu, u0=f"{offset} + sin(x)")
    t = np.array([0.0, 0.25, 0.5, 0.8, 1.0])
    exact = problem.reference(X64, t)  # auto: Hopf-Cole
    mol = problem.reference(X64, t, method="spectral")
    assert np.all(np.isfinite(exact))
    assert np.abs(exact - mol).max() < 1e-7
    # a steep front has formed by t = 1 (gradient >> the initial 1)
    assert np.abs(np.diff(exact[-1])).max() / (X64[1] - X64[0]) > 5


def test_hopf_cole_has_no_underflow_at_small_viscosity():
    u = hopf_cole_solution(X64, np.array([0.5, 1.0]), nu=1e-3)
    assert np.all(np.isfinite(u)) and np.abs(u).max() <= 1.0 + 1e-12


def test_particle_integration_with_chain_rule_matches_hopf_cole():
    nu, t = 0.02, np.array([0.0, 0.4, 0.8])
    positions, values = particle_solution(nu, t)
    exact = np.stack(
        [hopf_cole_solution(x, [s], nu=nu)[0] for x, s in zip(positions, t, strict=True)]
    )
    assert np.abs(values - exact).max() < 1e-8
    # the label-space shortcut (the paper's code) is visibly wrong on the moving grid
    _, shortcut = particle_solution(nu, t, diffusion="label_space")
    assert np.abs(shortcut - exact).max() > 1e-3


def test_fourier_interpolation_is_exact_for_band_limited_data():
    x = np.linspace(0.0, 3.0, 16, endpoint=False)
    f = lambda z: 1.0 + np.sin(2 * np.pi * z / 3.0) - 0.5 * np.cos(4 * np.pi * z / 3.0)  # noqa: E731
    query = np.array([[0.1, 1.7, 2.95], [0.4, 0.5, 2.0]])
    values = np.stack([f(x), 2 * f(x)])
    assert np.allclose(
        fourier_interpolate(values, query, 3.0), np.stack([f(query[0]), 2 * f(query[1])])
    )
    assert np.allclose(fourier_interpolate(f(x), query[0], 3.0), f(query[0]))


# --- metric --------------------------------------------------------------------------------


def test_centered_relative_l2():
    rng = np.random.default_rng(0)
    target = torch.as_tensor(np.sin(X64))
    prediction = target + 0.01 * torch.as_tensor(rng.standard_normal(64))
    # zero-mean target: the plain relative L2 error
    assert relative_l2_centered(prediction, target) == pytest.approx(
        float(relative_l2(prediction, target)), rel=1e-12
    )
    # a constant offset in both does not hide the error (it would in the plain metric)
    shifted = relative_l2_centered(prediction + 5, target + 5)
    assert shifted == pytest.approx(float(relative_l2_centered(prediction, target)), rel=1e-12)
    assert float(relative_l2(prediction + 5, target + 5)) < 0.2 * float(shifted)
    with pytest.raises(ValueError, match="shape mismatch"):
        relative_l2_centered(prediction[:3], target)
    with pytest.raises(ValueError, match="constant"):
        relative_l2_centered(target, torch.ones(64))


# --- data module ---------------------------------------------------------------------------


def test_data_module_grid_random_and_lazy_test_split():
    problem = ConvectionDiffusion1D(velocity="u", nu=0.02, t_final=0.8)
    data = ConvectionDiffusionDataModule(problem, n_x=16, n_t=5, test_n_x=32, test_n_t=6)
    data.setup("fit")
    assert set(data.splits) == {"train", "val"}
    train = next(iter(data.train_dataloader()))
    assert train["x"].shape == train["t"].shape == (1, 80)
    assert float(train["t"].min()) == 0.0 and float(train["t"].max()) == pytest.approx(0.8)
    assert torch.allclose(train["u_initial"], torch.sin(train["x_initial"]), atol=1e-6)
    val = next(iter(data.val_dataloader()))
    assert val["u"].shape == (1, 11, 64)
    test = next(iter(data.test_dataloader()))
    assert test["u"].shape == (1, 6, 32)
    reference = problem.reference(test["x"][0].double().numpy(), test["t"][0].double().numpy())
    assert np.allclose(test["u"][0].numpy(), reference, atol=1e-6)

    random = ConvectionDiffusionDataModule(problem, sampling="random", n_collocation=100, seed=3)
    again = ConvectionDiffusionDataModule(problem, sampling="random", n_collocation=100, seed=3)
    first, second = random.generate(), again.generate()
    assert torch.equal(first["train/x"], second["train/x"])
    t = first["train/t"]
    assert t.shape == (1, 100) and float(t.min()) > 0 and float(t.max()) <= 0.8
    with pytest.raises(ValueError, match="sampling"):
        ConvectionDiffusionDataModule(problem, sampling="sobol")
    with pytest.raises(ValueError, match="n_x"):
        ConvectionDiffusionDataModule(problem, n_x=1)
    assert math.isclose(problem.velocity_scale(), 1.0, rel_tol=1e-6)
