"""SBIRR: parameter recovery, unequal gaps, determinism, Lightning loop, snapshot data."""

import itertools
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from sciml.data import SnapshotDataModule
from sciml.metrics import relative_frobenius_error, sampling_floor, wasserstein2
from sciml.models import NonFiniteLossError, SBIRRConfig, SchrodingerBridge
from sciml.solvers import linear_transition

A_TRUE = torch.tensor([[-0.2, -1.0], [1.0, -0.2]], dtype=torch.float64)


def _snapshots(n=300, seed=0, held_out=()):
    data = SnapshotDataModule("rotation_ou", n_per_snapshot=n, seed=seed, held_out=held_out)
    batch = data.generate()
    times = batch["t"][0].tolist()
    keep = [k for k in range(len(times)) if not bool(batch["held_out"][0, k])]
    return data, [times[k] for k in keep], [batch["x"][0, k] for k in keep], batch


def _distances(x, y):
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def _rel_error(model):
    return relative_frobenius_error(model.drift.A.detach(), A_TRUE)


def test_refinement_recovers_the_drift_matrix():
    _, times, snapshots, _ = _snapshots()
    model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=6, tol=0.0))
    model.set_snapshots(times, snapshots)
    errors = []
    for _ in range(6):
        model.refine()
        errors.append(_rel_error(model))
    assert errors[0] > 0.2  # one pass from the Brownian reference is biased
    assert errors[-1] <= 0.10 and errors[-1] <= 0.5 * errors[0]
    assert all(later <= earlier + 0.02 for earlier, later in itertools.pairwise(errors[2:]))


def test_unequal_gaps_refit_does_not_diverge():
    # Gaps 0.95, 2.05 and 1.0 give three different path steps h. Regressing with one shared h
    # made A blow up (|A| ~ 10x after 8 iterations) in a prototype.
    data = SnapshotDataModule("rotation_ou", times=[0.0, 0.95, 3.0, 4.0], n_per_snapshot=300)
    batch = data.generate()
    snapshots = [batch["x"][0, k] for k in range(4)]
    model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=8, tol=0.0))
    model.fit_snapshots([0.0, 0.95, 3.0, 4.0], snapshots)
    steps = {round((b - a) / math.ceil((b - a) / 0.1 - 1e-9), 9) for a, b in [(0, 0.95), (0.95, 3)]}
    assert len(steps) == 2
    norms = [float(np.linalg.norm(record["theta"])) for record in model.history]
    assert max(norms) < 2.0 * float(torch.linalg.norm(A_TRUE))
    assert _rel_error(model) < 0.15


def test_held_out_prediction_beats_the_brownian_bridge():
    data, times, snapshots, batch = _snapshots(held_out=[2.0])
    model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=6, tol=0.0))
    model.set_snapshots(times, snapshots)
    truth = batch["x"][0, 2]
    brownian = wasserstein2(model.marginal(2.0), truth)
    model.fit_snapshots(times, snapshots)
    refined = wasserstein2(model.marginal(2.0), truth)
    floor = sampling_floor(lambda n, g: data.sample_marginal(2.0, n, g), 300, repeats=2)
    assert brownian > 0.4
    assert refined <= floor + 0.1 and refined <= 0.5 * brownian


def test_seeded_determinism():
    _, times, snapshots, _ = _snapshots(n=100)
    runs = []
    for seed in (0, 0, 1):
        model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=3, seed=seed))
        history = model.fit_snapshots(times, snapshots)
        grid, paths = model.sample_paths(20)
        runs.append(([r["theta"] for r in history], paths, model.marginal(1.5)))
    # equal seeds agree up to floating-point roundoff (BLAS results may depend on alignment)
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-9)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(runs[0][2], runs[1][2], rtol=1e-9, atol=1e-9)
    assert runs[0][0] != runs[2][0]
    assert grid[0] == 0.0 and grid[-1] == 4.0 and paths.shape == (20, len(grid), 2)
    assert bool((_distances(paths[:, 0], snapshots[0]).min(1).values == 0).all())


def test_sample_paths_pass_through_the_snapshots():
    _, times, snapshots, _ = _snapshots(n=100)
    model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=2))
    model.fit_snapshots(times, snapshots)
    grid, paths = model.sample_paths()
    for t, snapshot in zip(times, snapshots, strict=True):
        column = paths[:, int(torch.argmin((grid - t).abs()))]
        # every path sits on a data point at each observation time (Markov chain of partners)
        assert bool((_distances(column, snapshot).min(1).values < 1e-12).all())


def test_lightning_fit_stops_logs_and_reloads(in_tmp_dir):
    data = SnapshotDataModule("rotation_ou", n_per_snapshot=200, held_out=[2.0])
    model = SchrodingerBridge(sigma=0.3, config=SBIRRConfig(max_iterations=30, tol=0.05))
    trainer = pl.Trainer(
        max_epochs=30, inference_mode=False, logger=False, enable_progress_bar=False,
        default_root_dir=in_tmp_dir,
    )  # fmt: skip
    trainer.fit(model, data)
    assert trainer.current_epoch < 30  # the stopping rule ended training
    assert model.history[-1]["change"] < 0.05
    metrics = trainer.test(model, data, verbose=False)[0]
    assert metrics["test/w2_heldout"] < 0.3 and metrics["test/param_rel_error"] < 0.15
    path = in_tmp_dir / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = SchrodingerBridge.load_from_checkpoint(path)
    assert reloaded.history == model.history
    torch.testing.assert_close(reloaded.drift.A, model.drift.A)
    again = pl.Trainer(inference_mode=False, logger=False, enable_progress_bar=False)
    assert again.test(reloaded, data, verbose=False)[0] == pytest.approx(metrics)


def test_ipf_backend_refines_a_general_drift(small_ipf_config):
    # The nonlinear back-end (IPF with neural drifts + Adam refit) treats the family as any
    # nn.Module; on OU snapshots its fitted matrix can be checked against the truth.
    _, times, snapshots, _ = _snapshots(n=100)
    model = SchrodingerBridge(sigma=0.3, backend="ipf", config=small_ipf_config)
    model.set_snapshots(times, snapshots)
    model.refine()
    first = _rel_error(model)
    model.refine()
    assert _rel_error(model) < 0.6 * first and _rel_error(model) < 0.25
    grid, paths = model.sample_paths(10)
    assert paths.shape == (10, len(grid), 2) and torch.isfinite(paths).all()
    assert grid[-1] == 4.0 and model.marginal(1.5).shape == (100, 2)


def test_ipf_bridges_are_seeded_and_survive_a_checkpoint(in_tmp_dir):
    config = SBIRRConfig(
        max_iterations=2, tol=0.0, refit="adam", step=0.25, ipf_iterations=1, ipf_fit_steps=10,
        refit_steps=10, ipf_hidden_dims=(8,), ipf_batch_size=128,
    )  # fmt: skip
    _, times, snapshots, _ = _snapshots(n=60)
    thetas = []
    for global_seed in (1, 2):  # config.seed alone decides: the global random state does not
        torch.manual_seed(global_seed)
        model = SchrodingerBridge(sigma=0.3, backend="ipf", config=config)
        thetas.append([r["theta"] for r in model.fit_snapshots(times, snapshots)])
    assert thetas[0] == thetas[1]
    # the warm-started neural bridges are saved, so a reloaded model tests like the fitted one
    data = SnapshotDataModule("rotation_ou", n_per_snapshot=60, held_out=[2.0])
    model = SchrodingerBridge(sigma=0.3, backend="ipf", config=config)
    trainer = pl.Trainer(
        max_epochs=2, inference_mode=False, logger=False, enable_progress_bar=False,
        enable_checkpointing=False, default_root_dir=in_tmp_dir,
    )  # fmt: skip
    trainer.fit(model, data)
    metrics = trainer.test(model, data, verbose=False)[0]
    path = in_tmp_dir / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = SchrodingerBridge.load_from_checkpoint(path)
    again = pl.Trainer(inference_mode=False, logger=False, enable_progress_bar=False)
    assert again.test(reloaded, data, verbose=False)[0] == pytest.approx(metrics, rel=1e-9)


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, x):
        return self.scale * x * float("inf")


def test_non_finite_refit_raises_and_keeps_the_drift():
    _, times, snapshots, _ = _snapshots(n=50)
    config = SBIRRConfig(refit="adam", refit_steps=2, ipf_iterations=1, ipf_fit_steps=1)
    model = SchrodingerBridge(sigma=0.3, family="linear", config=config, drift=_Exploding())
    with pytest.raises(NonFiniteLossError, match="outer iteration 0"):
        model.fit_snapshots(times, snapshots)
    assert model.drift.scale.item() == 1.0 and model.history == []


def test_auto_settings_follow_the_family():
    linear = SchrodingerBridge()
    assert (linear.backend, linear.refit) == ("linear", "logm")
    repressilator = SchrodingerBridge(state_dim=3, sigma=0.1, family="repressilator")
    assert (repressilator.backend, repressilator.refit) == ("ipf", "adam")
    # the true repressilator drift: beta / (1 + x_{i-1}^n) - gamma x_i with (10, 3, 1, 1)
    truth = SnapshotDataModule("repressilator").true_drift()
    x = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    expected = 10.0 / (1.0 + torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64) ** 3) - x
    torch.testing.assert_close(truth(x), expected)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"model\.family"):
        SchrodingerBridge(family="lorenz")
    with pytest.raises(ValueError, match=r"model\.backend"):
        SchrodingerBridge(backend="gp")
    with pytest.raises(ValueError, match="linear family"):
        SchrodingerBridge(state_dim=2, family="lotka_volterra", backend="linear")
    with pytest.raises(ValueError, match=r"config\.refit"):
        SBIRRConfig(refit="lbfgs")
    with pytest.raises(ValueError, match="interior observation time"):
        SnapshotDataModule("rotation_ou", held_out=[0.0])
    with pytest.raises(ValueError, match=r"data\.system"):
        SnapshotDataModule("lorenz")
    model = SchrodingerBridge(state_dim=2)
    with pytest.raises(ValueError, match=r"model\.state_dim=2; got shapes \[\(5, 3\), \(5, 3\)\]"):
        model.set_snapshots([0.0, 1.0], [torch.zeros(5, 3), torch.zeros(5, 3)])
    with pytest.raises(ValueError, match=r"non-empty \(n_k, d\)"):
        model.set_snapshots([0.0, 1.0], [torch.zeros(5), torch.zeros(5)])


def test_exact_snapshots_have_the_ou_marginals():
    data = SnapshotDataModule("rotation_ou", n_per_snapshot=4000, times=[0.0, 1.5])
    sample = data.generate()["x"][0, 1]
    moments = linear_transition(A_TRUE, 0.3, 1.5)
    mean = moments.flow[0] @ torch.tensor([2.0, 0.0], dtype=torch.float64)
    cov = moments.flow[0] @ (0.04 * torch.eye(2, dtype=torch.float64)) @ moments.flow[0].T
    cov = cov + moments.cov[0]
    torch.testing.assert_close(sample.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(sample.T), cov, atol=0.01, rtol=0)
    again = SnapshotDataModule("rotation_ou", n_per_snapshot=4000, times=[0.0, 1.5]).generate()
    assert torch.equal(again["x"], data.generate()["x"])


def test_user_snapshots_from_arrays_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 3)) + k for k, n in enumerate([30, 50, 40])]
    from_arrays = SnapshotDataModule.from_arrays(arrays, [0.0, 0.5, 2.0], held_out=[0.5])
    path = tmp_path / "cells.npz"
    labels = np.concatenate(
        [np.full(len(a), t) for a, t in zip(arrays, [0.0, 0.5, 2.0], strict=True)]
    )
    np.savez(path, X=np.concatenate(arrays), obs_time=labels)
    from_file = SnapshotDataModule("file", snapshots_file=str(path), held_out=[0.5])
    for data in (from_arrays, from_file):
        batch = data.generate()
        assert batch["x"].shape == (1, 3, 50, 3) and batch["mask"][0].sum(1).tolist() == [
            30,
            50,
            40,
        ]
        assert batch["held_out"][0].tolist() == [False, True, False]
        np.testing.assert_allclose(batch["x"][0, 2, :40].numpy(), arrays[2])
        assert data.state_dim == 3 and batch["theta_true"].shape == (1, 0)
    model = SchrodingerBridge(state_dim=3, sigma=0.5, config=SBIRRConfig(max_iterations=2))
    trainer = pl.Trainer(max_epochs=2, inference_mode=False, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    trainer.fit(model, from_file)
    assert math.isfinite(trainer.callback_metrics["val/w2_heldout"])
    with pytest.raises(ValueError, match="has no array"):
        SnapshotDataModule("file", snapshots_file=str(path), time_key="day").generate()
