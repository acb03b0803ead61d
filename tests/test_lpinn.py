"""Lagrangian PINN: residuals on exact particle solutions, hard constraints, to_eulerian, training."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from scipy.integrate import solve_ivp
from torch import nn

from sciml.cli import main
from sciml.data import ConvectionDiffusion1D, ConvectionDiffusionDataModule
from sciml.models import (
    CrossingCharacteristicsWarning,
    LagrangianPINN,
    NonFiniteLossError,
    lagrangian_residuals,
)

from .conftest import PROBLEMS, retest_saved_run

TWO_PI = 2 * math.pi


def _points(n=500, t_final=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xi = TWO_PI * torch.rand(n, generator=g, dtype=torch.float64)
    t = t_final * torch.rand(n, generator=g, dtype=torch.float64)
    return xi, t


@pytest.mark.parametrize("diffusion", ["chain_rule", "label_space"])
def test_residuals_vanish_on_exact_convection_diffusion_particles(diffusion):
    # u_t + 50 u_x = 0.01 u_xx: X = xi + 50 t, U = exp(-nu t) sin(xi); J = 1, so both forms agree
    problem = ConvectionDiffusion1D(velocity="50", nu=0.01)
    xi, t = _points()
    res = lagrangian_residuals(
        lambda a, s: (a + 50 * s, torch.exp(-0.01 * s) * torch.sin(a)),
        problem,
        xi,
        t,
        diffusion=diffusion,
    )
    assert res["r_x"].abs().max() < 1e-12 and res["r_u"].abs().max() < 1e-12
    # a wrong speed is seen
    wrong = lagrangian_residuals(lambda a, s: (a + 49 * s, torch.sin(a)), problem, xi, t)
    assert wrong["r_x"].abs().min() > 0.99


def test_chain_rule_second_derivative_on_a_moving_grid():
    # X = xi + 0.3 t sin(xi) (J > 0), U = sin(X): u_xx = -sin(X) and U_t = 0.3 sin(xi) cos(X), so with
    # nu = 1, no velocity check needed: r_u = U_t - u_xx = 0.3 sin(xi) cos(X) + sin(X) exactly.
    problem = ConvectionDiffusion1D(velocity="0", nu=1.0)
    xi, t = _points()

    def flow(a, s):
        x = a + 0.3 * s * torch.sin(a)
        return x, torch.sin(x)

    x = xi + 0.3 * t * torch.sin(xi)
    expected = 0.3 * torch.sin(xi) * torch.cos(x) + torch.sin(x)
    chain = lagrangian_residuals(flow, problem, xi, t)["r_u"]
    label = lagrangian_residuals(flow, problem, xi, t, diffusion="label_space")["r_u"]
    assert torch.allclose(chain.detach(), expected, atol=1e-12)
    assert (label.detach() - expected).abs().max() > 0.1


class ChebyshevFourierFlow:
    """A differentiable particle solution: Fourier series in xi times Chebyshev series in t."""

    def __init__(self, nu, t_final, n=256, m=28):
        xi = np.linspace(0.0, TWO_PI, n, endpoint=False)
        k = np.fft.rfftfreq(n, d=1.0 / n)

        def d_xi(f):
            return np.fft.irfft(1j * k * np.fft.rfft(f), n=n)

        def rhs(_, y):
            d, u = y[:n], y[n:]
            jacobian = 1.0 + d_xi(d)
            return np.concatenate([u, nu * d_xi(d_xi(u) / jacobian) / jacobian])

        nodes = np.cos(np.pi * (np.arange(m) + 0.5) / m)[::-1]  # Chebyshev points in (-1, 1)
        times = 0.5 * t_final * (nodes + 1)
        sol = solve_ivp(
            rhs,
            (0, t_final),
            np.concatenate([np.zeros(n), np.sin(xi)]),
            method="DOP853",
            t_eval=times,
            rtol=1e-13,
            atol=1e-13,
        )
        assert sol.success
        self.t_final, self.n, self.m = t_final, n, m
        self.coefficients = []
        for field in (sol.y[:n].T, sol.y[n:].T):  # (m, n) at the nodes
            spectrum = np.fft.rfft(field, axis=1) / n  # (m, n//2 + 1)
            cheb = np.polynomial.chebyshev.chebfit(nodes, spectrum, m - 1)  # (m, n//2+1)
            self.coefficients.append(torch.as_tensor(cheb))

    def _evaluate(self, coefficients, xi, t):
        tau = 2 * t / self.t_final - 1
        basis = [torch.ones_like(tau), tau]
        for _ in range(self.m - 2):
            basis.append(2 * tau * basis[-1] - basis[-2])
        spectrum = torch.stack(basis, -1).to(coefficients.dtype) @ coefficients  # (N, K)
        k = torch.arange(spectrum.shape[-1], dtype=xi.dtype)
        weights = torch.full_like(k, 2.0)
        weights[0] = weights[-1] = 1.0
        phase = k * xi[:, None]
        return (
            weights * (spectrum.real * torch.cos(phase) - spectrum.imag * torch.sin(phase))
        ).sum(-1)

    def __call__(self, xi, t):
        d, u = (self._evaluate(c, xi, t) for c in self.coefficients)
        return xi + d, u


def test_residuals_vanish_on_an_exact_burgers_particle_solution():
    nu, t_final = 0.02, 0.8
    problem = ConvectionDiffusion1D(velocity="u", nu=nu, t_final=t_final)
    flow = ChebyshevFourierFlow(nu, t_final)
    xi, t = _points(300, t_final)
    res = lagrangian_residuals(flow, problem, xi, t)
    assert res["r_x"].abs().max() < 1e-8
    assert res["r_u"].abs().max() < 1e-6
    assert res["jacobian"].min() > 0.1  # no shock: the map stays invertible
    # the paper's label-space u_xx leaves a residual of the size of the diffusion term itself
    shortcut = lagrangian_residuals(flow, problem, xi, t, diffusion="label_space")
    assert shortcut["r_u"].abs().max() > 0.05


def test_hard_initial_condition_and_periodicity():
    problem = ConvectionDiffusion1D(velocity="u", nu=0.01, u0="2 + sin(x)")
    model = LagrangianPINN(problem)
    assert model.scale == pytest.approx(3.0, rel=1e-5)
    xi = torch.linspace(0.0, TWO_PI, 33)
    x_pos, u_val = model(xi, torch.zeros_like(xi))
    assert torch.equal(x_pos, xi)
    assert torch.allclose(u_val, 2 + torch.sin(xi), atol=1e-6)
    t = torch.full_like(xi, 0.7)
    x_a, u_a = model(xi, t)
    x_b, u_b = model(xi + TWO_PI, t)
    assert torch.allclose(x_b - x_a, torch.full_like(xi, TWO_PI), atol=1e-5)
    assert torch.allclose(u_a, u_b, atol=1e-5)


def _exact_convection_model(beta):
    model = LagrangianPINN(ConvectionDiffusion1D(velocity=str(beta)))
    with torch.no_grad():  # N_x = 1, N_u = 0: the exact solution X = xi + beta t, U = sin(xi)
        for net, value in ((model.x_net, 1.0), (model.u_net, 0.0)):
            net[-2].weight.zero_()
            net[-2].bias.fill_(value)
    return model


@pytest.mark.parametrize("velocity", ["50", "u"])
def test_frozen_velocity_prior_starts_on_the_exact_characteristics(velocity):
    # Untrained, N_x = 0: X = xi + t f(u0(xi)), the exact characteristics of constant-speed
    # convection and of inviscid Burgers before breaking (t < 1 for u0 = sin x), so r_x = 0 once
    # U = u0 along them (N_u = 0 here); J = 1 + t f_xi is exact, whatever the speed.
    problem = ConvectionDiffusion1D(velocity=velocity, nu=0.0)
    model = LagrangianPINN(problem, characteristic_prior="frozen_velocity").double()
    with torch.no_grad():
        model.u_net[-2].weight.zero_()
        model.u_net[-2].bias.zero_()
    xi, t = _points(t_final=0.9)
    res = model.residuals(xi, t)
    jacobian = 1 + t * torch.cos(xi) if velocity == "u" else torch.ones_like(t)
    assert res["r_x"].abs().max() < 1e-12 and res["r_u"].abs().max() < 1e-12
    assert torch.allclose(res["jacobian"], jacobian, rtol=0, atol=1e-12)
    # the plain ansatz at initialisation is far from it: the prior is what makes J well conditioned
    plain = LagrangianPINN(problem).double().residuals(xi, t)
    assert plain["r_x"].abs().max() > 1e-2


def test_to_eulerian_recovers_the_exact_solution_up_to_the_interpolation_floor():
    model = _exact_convection_model(50)
    x = torch.linspace(0.0, TWO_PI, 257, dtype=torch.float64)[:-1]
    t = torch.linspace(0.0, 1.0, 100, dtype=torch.float64)
    model = model.double()
    u = model.to_eulerian(x, t)
    exact = torch.sin(x[None] - 50 * t[:, None])
    error = float((u - exact).norm() / exact.norm())
    assert error < 1e-4  # linear interpolation floor with 256 particles (~4.5e-5)
    assert model.to_eulerian(x, t, n_labels=32).sub(exact).norm() / exact.norm() > 10 * error


def test_to_eulerian_warns_when_characteristics_cross():
    model = LagrangianPINN(ConvectionDiffusion1D(velocity="u", nu=0.0))

    class Steepening(nn.Module):
        def forward(self, features):
            return -5 * features[..., :1]  # X = xi - 5 t cos(xi): X_xi = 1 + 5 t sin(xi)

    model.x_net = Steepening()
    x, t = torch.linspace(0, TWO_PI, 65)[:-1], torch.linspace(0, 1, 5)
    with pytest.warns(CrossingCharacteristicsWarning, match="characteristics cross"):
        model.to_eulerian(x, t)
    model.to_eulerian(
        x, torch.linspace(0, 0.15, 3)
    )  # J >= 0.25 > 0: no warning (warnings are errors)


def _trainer(**kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=-1,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=10**6,
        **kwargs,
    )


def test_training_solves_convection_beta_30_and_counts_lbfgs_iterations(tmp_path):
    pl.seed_everything(0)
    problem = ConvectionDiffusion1D(velocity="30")
    data = ConvectionDiffusionDataModule(problem, n_x=32, n_t=25, test_n_x=128, test_n_t=50)
    model = LagrangianPINN(
        problem, adam_steps=500, lbfgs={"max_iter": 200, "iterations_per_step": 40}
    )
    logger = CSVLogger(tmp_path, name="run")
    trainer = _trainer(logger=logger, log_every_n_steps=1)
    trainer.fit(model, data)
    lbfgs = trainer.optimizers[1]
    real_iterations = lbfgs.state[lbfgs._params[0]]["n_iter"]
    assert 0 < real_iterations <= 200
    assert model._schedule.lbfgs_iterations == real_iterations
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [row["train/lbfgs_iterations"] for row in csv.DictReader(f)]
    assert float([v for v in logged if v][-1]) == real_iterations
    result = trainer.test(model, data, verbose=False)[0]
    assert result["test/rel_l2"] < 1e-2
    assert result["test/rel_l2_particles"] < 1e-2


def test_non_finite_loss_names_the_phase_and_keeps_finite_weights():
    benign = ConvectionDiffusion1D(velocity="1")
    data = ConvectionDiffusionDataModule(benign, n_x=8, n_t=4, val_n_x=8, val_n_t=2)
    data.setup("fit")
    poisoned = ConvectionDiffusion1D(velocity="1", source="log(u - 10)")  # NaN for |u| < 10
    for adam_steps, phase in ((5, "adam"), (0, "lbfgs")):
        model = LagrangianPINN(poisoned, adam_steps=adam_steps, lbfgs={"max_iter": 5})
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(NonFiniteLossError, match=f"{phase} phase of stage 0"):
            _trainer().fit(model, train_dataloaders=data.train_dataloader())
        after = list(model.parameters())
        assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_problem_mismatch_and_bad_options():
    data = ConvectionDiffusionDataModule(ConvectionDiffusion1D(velocity="30"), n_x=8, n_t=4)
    with pytest.raises(ValueError, match=r"differs from data\.problem"):
        _trainer(fast_dev_run=True).fit(LagrangianPINN(ConvectionDiffusion1D(velocity="50")), data)
    # the same problem written differently (30.0 from a parameter, "30" in the data) is accepted
    same = ConvectionDiffusion1D.from_equation("u_t + beta*u_x", parameters={"beta": 30.0})
    _trainer(fast_dev_run=True).fit(LagrangianPINN(same, adam_steps=1, lbfgs={"max_iter": 0}), data)
    with pytest.raises(ValueError, match="chain_rule"):
        LagrangianPINN(diffusion="eulerian")
    with pytest.raises(ValueError, match="frozen_velocity"):
        LagrangianPINN(characteristic_prior="straight")
    with pytest.raises(ValueError, match="line_search_fn"):
        LagrangianPINN(lbfgs={"line_search_fn": "armijo"})


def test_checkpoint_of_a_data_module_built_in_python_loads_weights_only(tmp_path):
    # The problem object goes into the data module's hyperparameters; a checkpoint is read back
    # with weights_only=True, which refuses a pickled dataclass.
    problem = ConvectionDiffusion1D(velocity="30", nu=0.01)
    data = ConvectionDiffusionDataModule(problem, n_x=8, n_t=4)
    model = LagrangianPINN(problem, adam_steps=2, lbfgs={"max_iter": 0})
    trainer = _trainer()
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["datamodule_hyper_parameters"]
    assert ConvectionDiffusionDataModule(**saved).problem == problem
    _trainer().test(model, data, ckpt_path=path, verbose=False)


def test_fit_then_test_from_the_saved_config_and_checkpoint(in_tmp_dir):
    config = PROBLEMS / "lpinn" / "convection_beta30.yaml"
    overrides = [
        "--model.init_args.adam_steps=20",
        "--model.init_args.lbfgs.max_iter=20",
        "--data.init_args.test_n_t=10",
        "--trainer.enable_progress_bar=false",
    ]
    fit = main(["fit", "-c", str(config), *overrides])
    assert fit.model._schedule.lbfgs_iterations > 0
    expected = fit.trainer.test(fit.model, datamodule=fit.datamodule, verbose=False)[0]
    rebuilt = retest_saved_run(fit)
    got = {k: float(v) for k, v in rebuilt.trainer.callback_metrics.items()}
    assert got["test/rel_l2"] == pytest.approx(expected["test/rel_l2"], rel=1e-6)
    assert rebuilt.model._schedule == fit.model._schedule
