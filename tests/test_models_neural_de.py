import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from sciml.data import TrajectoryDataModule
from sciml.models import NeuralODE, NeuralSDE, NonFiniteLossError
from sciml.solvers import ODESolverConfig, SDESolverConfig, odeint


def _trainer(tmp_path, **kwargs):
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def test_forward_is_the_ode_solution():
    model = NeuralODE(state_dim=2, hidden_dims=[16], solver=ODESolverConfig(rtol=1e-8, atol=1e-10))
    y0, t = torch.randn(5, 2), torch.linspace(0, 1, 7)
    expected, _ = odeint(model.vector_field, y0, t, rtol=1e-8, atol=1e-10)
    got = model(y0, t)
    assert got.shape == (5, 7, 2)
    torch.testing.assert_close(got, expected.movedim(0, 1))
    assert model.last_stats.nfe_forward > 0


def test_recovers_a_linear_system(tmp_path):
    """A linear vector field trained on damped-oscillator data must find the true matrix."""
    pl.seed_everything(0)
    data = TrajectoryDataModule(
        "damped_oscillator", n_trajectories=24, n_times=21, t_span=(0.0, 4.0), batch_size=24, seed=0
    )
    model = NeuralODE(
        state_dim=2,
        vector_field=nn.Linear(2, 2, bias=False),
        solver=ODESolverConfig(rtol=1e-6, atol=1e-8),
        optimizer={"lr": 0.05},
    )
    _trainer(tmp_path, max_epochs=150, limit_val_batches=0).fit(model, data)
    true = torch.tensor([[0.0, 1.0], [-1.0, -0.2]])
    learned = model.vector_field.net.weight.detach()
    assert torch.allclose(learned, true, atol=0.02), learned
    result = _trainer(tmp_path).test(model, datamodule=data, verbose=False)[0]
    assert result["test/rel_l2"] < 0.01


def test_logged_training_terms_belong_to_the_written_step(tmp_path):
    """The loss terms reach the logger at the same steps as the loss, with that step's values
    (without regularizers the loss is the MSE term). They were once recorded one logging period
    early, so every written MSE was stale."""
    pl.seed_everything(0)
    data = TrajectoryDataModule(
        "lotka_volterra", n_trajectories=12, n_times=21, segment_length=6, batch_size=16, seed=0
    )
    model = NeuralODE(state_dim=2, hidden_dims=[8])
    logger = CSVLogger(tmp_path)
    trainer = _trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=4)
    trainer.fit(model, data)
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["train/loss_step"]]
    assert trainer.global_step == 16
    assert [int(row["step"]) for row in rows] == [3, 7, 11, 15]
    for row in rows:
        assert float(row["train/mse"]) == float(row["train/loss_step"]), row


def test_adjoint_gradients_match_backprop():
    torch.manual_seed(0)
    y0, t = torch.randn(4, 2), torch.linspace(0, 1, 5)
    target = torch.randn(4, 5, 2)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(1)
        model = NeuralODE(
            state_dim=2,
            hidden_dims=[16],
            solver=ODESolverConfig(rtol=1e-9, atol=1e-11, adjoint=adjoint),
        ).double()
        loss = torch.mean((model(y0.double(), t.double()) - target.double()) ** 2)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if adjoint:
            assert model.last_stats.nfe_backward > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-8)


class _NaNAfter(pl.Callback):
    """Turns the loss NaN from a given global step on, as a diverging run would."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:
            batch["y"][:, 1:] = float("nan")


def test_non_finite_loss_stops_and_last_good_checkpoint_resumes(tmp_path):
    def run(root, max_epochs, callbacks=(), ckpt_path=None):
        pl.seed_everything(0)
        data = TrajectoryDataModule(
            "lotka_volterra", n_trajectories=16, n_times=11, segment_length=5, batch_size=16, seed=0
        )
        model = NeuralODE(
            state_dim=2, hidden_dims=[16], solver=ODESolverConfig(rtol=1e-5, atol=1e-6)
        )
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True)
        trainer = _trainer(
            root,
            max_epochs=max_epochs,
            enable_checkpointing=True,
            callbacks=[checkpoint, *callbacks],
        )
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return trainer, model

    steps_per_epoch = 6  # 12 train trajectories x 7 windows = 84 samples, batches of 16
    reference, reference_model = run(tmp_path / "ref", max_epochs=3)
    with pytest.raises(
        NonFiniteLossError, match=r"global step 14 \(epoch 2, batch 2\); terms: mse=nan"
    ):
        run(tmp_path / "bad", max_epochs=3, callbacks=[_NaNAfter(2 * steps_per_epoch + 2)])
    last = tmp_path / "bad" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2 * steps_per_epoch
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    resumed, resumed_model = run(tmp_path / "bad", max_epochs=3, ckpt_path=last)
    for name in ("train/loss_epoch", "val/loss", "val/rel_l2"):
        assert float(resumed.callback_metrics[name]) == pytest.approx(
            float(reference.callback_metrics[name]), rel=1e-5
        ), name
    for a, b in zip(reference_model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_neural_sde_recovers_ornstein_uhlenbeck(tmp_path):
    """Transition-likelihood training must recover the OU drift slope (-1) and noise level (0.5)."""
    pl.seed_everything(0)
    data = TrajectoryDataModule(
        "ornstein_uhlenbeck",
        n_trajectories=160,
        n_times=51,
        t_span=(0.0, 5.0),
        batch_size=32,
        eval_batch_size=16,
        seed=0,
    )
    model = NeuralSDE(
        state_dim=1,
        hidden_dims=[16],
        solver=SDESolverConfig(method="euler", dt=0.01),
        n_eval_samples=8,
        optimizer={"lr": 1e-2},
    )
    _trainer(tmp_path, max_epochs=25, limit_val_batches=0).fit(model, data)
    x = torch.linspace(-1.5, 1.5, 31).unsqueeze(-1)
    with torch.no_grad():
        drift = model.drift(torch.tensor(0.0), x)
        diffusion = model.diffusion(torch.tensor(0.0), x)
    slope = torch.linalg.lstsq(torch.cat([x, torch.ones_like(x)], 1), drift).solution[0].item()
    assert slope == pytest.approx(-1.0, abs=0.2)
    assert diffusion.mean().item() == pytest.approx(0.5, rel=0.1)
    assert diffusion.std().item() < 0.05
    result = _trainer(tmp_path).test(model, datamodule=data, verbose=False)[0]
    assert result["test/w2_final"] < 0.25
