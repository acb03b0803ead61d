"""Eulerian PINN baseline: residual, soft constraints, causal weights, curriculum, seq2seq."""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from sciml.data import ConvectionDiffusion1D, ConvectionDiffusionDataModule
from sciml.models import PINN, LagrangianPINN

TWO_PI = 2 * math.pi


class Exact(nn.Module):
    """u = exp(-nu t) sin(x - beta t) from the (x, t) features."""

    def __init__(self, beta, nu=0.0):
        super().__init__()
        self.beta, self.nu = beta, nu

    def forward(self, features):
        x, t = features[..., 0], features[..., 1]
        return (torch.exp(-self.nu * t) * torch.sin(x - self.beta * t))[..., None]


def _batch(problem, **kwargs):
    data = ConvectionDiffusionDataModule(problem, sampling="random", n_collocation=200, **kwargs)
    data.setup("fit")
    return data, next(iter(data.train_dataloader()))


@pytest.mark.parametrize("nu", [0.0, 0.01])
def test_exact_solution_has_zero_loss(nu):
    problem = ConvectionDiffusion1D(velocity="50", nu=nu)
    model = PINN(problem).double()
    model.nets[0] = Exact(50, nu)
    _, batch = _batch(problem)
    batch = {k: v.double() for k, v in batch.items()}
    loss, terms = model.compute_loss(batch, "train")
    assert float(loss.detach()) < 1e-12  # u_initial is stored in float32
    # a wrong speed is penalised by the residual only
    model.nets[0] = Exact(49, nu)
    loss, terms = model.compute_loss(batch, "train")
    assert terms["residual"] > 0.5 and terms["initial"] < 1e-12


def test_causal_weights_use_the_exclusive_cumulative_sum():
    problem = ConvectionDiffusion1D(velocity="1")
    model = PINN(problem, causal_epsilon=2.0, causal_chunks=4)
    t = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.9])  # chunks 0, 0, 1, 2, 3 of [0, 1]
    residual = torch.tensor([1.0, 3.0, 2.0, 0.5, 0.0])
    loss, terms = model._residual_loss(residual, t, 0.0, 1.0)
    chunk_losses = torch.tensor([5.0, 4.0, 0.25, 0.0])  # mean of r^2 per chunk
    weights = torch.exp(-2.0 * torch.tensor([0.0, 5.0, 9.0, 9.25]))  # first weight is 1
    assert torch.allclose(loss, torch.mean(weights * chunk_losses))
    assert float(terms["causal_weight_min"]) == pytest.approx(math.exp(-18.5))


def _fit(model, data):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_epochs=-1,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=10**6,
    )
    trainer.fit(model, data)
    return trainer


class Recorder(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _, terms = pl_module.compute_loss(batch, "train")
        self.rows.append((pl_module.stage, terms["speed_factor"]))


def _trainer(*callbacks):
    return pl.Trainer(
        max_epochs=-1,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )


def test_curriculum_raises_the_speed_in_stages_with_the_same_budget():
    problem = ConvectionDiffusion1D(velocity="30")
    data, _ = _batch(problem, val_n_x=8, val_n_t=2)
    model = PINN(
        problem,
        hidden_dims=[8],
        curriculum_stages=3,
        adam_steps=9,
        lbfgs={"max_iter": 6, "iterations_per_step": 2},
    )
    recorder = Recorder()
    _trainer(recorder).fit(model, data)
    stages = [stage for stage, _ in recorder.rows]
    assert min(stages.count(k) for k in range(3)) >= 3  # 9 // 3 Adam steps per stage
    assert all(speed == (stage + 1) / 3 for stage, speed in recorder.rows)
    assert {speed for _, speed in recorder.rows} == {1 / 3, 2 / 3, 1.0}
    assert 0 < model._schedule.lbfgs_iterations <= 6


class Snapshot(pl.Callback):
    """Window 0's weights when window 1 starts training."""

    def __init__(self):
        self.first = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module._schedule.stage == 1 and self.first is None:
            self.first = [p.detach().clone() for p in pl_module.nets[0].parameters()]


def test_seq2seq_trains_one_window_at_a_time_from_the_previous_prediction():
    problem = ConvectionDiffusion1D(velocity="1")
    data, batch = _batch(problem, val_n_x=8, val_n_t=2)
    model = PINN(problem, hidden_dims=[16], time_windows=2, adam_steps=40, lbfgs={"max_iter": 4})
    snapshot = Snapshot()
    _trainer(snapshot).fit(model, data)
    assert model._schedule.stage == 2
    # window 0's network is frozen while window 1 trains, and window 1 has moved away from it
    first = list(model.nets[0].parameters())
    assert all(torch.equal(a, b) for a, b in zip(snapshot.first, first, strict=True))
    second = list(model.nets[1].parameters())
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    # window 1's initial condition is window 0's prediction at t = T/2
    x0 = batch["x_initial"][0]
    half = torch.full_like(x0, 0.5)
    _, terms = model.compute_loss(batch, "train")
    with torch.no_grad():
        mismatch = torch.mean(
            (model._net_output(1, x0, half) - model._net_output(0, x0, half)) ** 2
        )
    assert float(terms["initial"]) == pytest.approx(float(mismatch), rel=1e-5)
    # forward dispatches by time: t < T/2 to net 0, t >= T/2 to net 1
    x, t = torch.tensor([1.0, 1.0]), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        out = model(x, t)
        assert out[0] == model._net_output(0, x[:1], t[:1])[0]
        assert out[1] == model._net_output(1, x[1:], t[1:])[0]


def test_bad_options():
    with pytest.raises(ValueError, match=r"either model\.curriculum_stages or model\.time_windows"):
        PINN(curriculum_stages=2, time_windows=2)
    with pytest.raises(ValueError, match="causal_epsilon"):
        PINN(causal_epsilon=-1.0)
    with pytest.raises(ValueError, match="time_windows"):
        PINN(time_windows=0)


@pytest.mark.slow
def test_eulerian_pinn_fails_on_convection_beta_30():
    """Negative control (non-gating: a claim about an optimiser): rel_l2 stays of order 1."""
    problem = ConvectionDiffusion1D(velocity="30")
    data = ConvectionDiffusionDataModule(problem, sampling="random", n_collocation=1000)
    model = PINN(problem, adam_steps=2000, lbfgs={"max_iter": 2000, "iterations_per_step": 100})
    trainer = _fit(model, data)
    assert trainer.test(model, data, verbose=False)[0]["test/rel_l2"] > 0.3


@pytest.mark.parametrize("model_class", [PINN, LagrangianPINN])
def test_model_and_data_must_pose_the_same_problem(model_class):
    data = ConvectionDiffusionDataModule(ConvectionDiffusion1D(velocity="50"), n_collocation=64)
    model = model_class(ConvectionDiffusion1D(velocity="30"), adam_steps=1)
    with pytest.raises(ValueError, match=r"differs from data\.problem"):
        _fit(model, data)


def test_evaluation_under_inference_mode_says_what_to_change():
    problem = ConvectionDiffusion1D(velocity="1")
    data = ConvectionDiffusionDataModule(problem, n_x=8, n_t=4, test_n_x=8, test_n_t=4)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match=r"inference_mode=False"):
        trainer.test(PINN(problem, hidden_dims=(8,)), data, verbose=False)
