import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from sciml.cli import main
from sciml.data import TimeSeriesDataModule
from sciml.models import KoopmanVAE, TimeSeriesMetricsConfig, masked_reconstruction_loss
from sciml.nn import gaussian_kl, least_squares_operator, linear_prediction_loss
from sciml.regularizers import (
    EigenvalueModulusRegularizer,
    PrescribedEigenvalueRegularizer,
    safe_eigvals,
)

from .conftest import PROBLEMS, retest_saved_run


def _rotation_blocks(k: int, radius: float) -> torch.Tensor:
    """Block-diagonal 2x2 rotations scaled by ``radius`` (eigenvalues radius * e^{±i w_j})."""
    a = torch.zeros(k, k, dtype=torch.float64)
    for j in range(k // 2):
        w = 0.3 + 0.4 * j
        block = radius * torch.tensor([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]])
        a[2 * j : 2 * j + 2, 2 * j : 2 * j + 2] = block
    return a


def _linear_latents(a: torch.Tensor, batch: int = 8, length: int = 24) -> torch.Tensor:
    z = [torch.randn(batch, a.shape[0], dtype=torch.float64)]
    for _ in range(length - 1):
        z.append(z[-1] @ a.T)  # z_{t+1} = A z_t, rows: z_{t+1} = z_t A^T
    return torch.stack(z, 1)


@pytest.mark.parametrize("solver", ["qr", "pinv"])
def test_least_squares_operator_recovers_linear_latent_map(solver):
    a = _rotation_blocks(16, 0.95)
    z = _linear_latents(a)
    c = least_squares_operator(z, solver=solver)
    assert torch.allclose(c, a.T, atol=1e-9)
    assert torch.allclose(torch.linalg.eigvals(c).abs(), torch.full((16,), 0.95, dtype=c.dtype))
    for steps in (1, 5):
        assert float(linear_prediction_loss(z, c, steps=steps)) < 1e-20


def test_prediction_loss_positive_for_nonlinear_latents_and_gradient_reaches_latents():
    z = torch.tanh(3 * _linear_latents(_rotation_blocks(4, 1.2))).requires_grad_(True)
    loss = linear_prediction_loss(z, least_squares_operator(z), steps=2)
    assert float(loss.detach()) > 1e-3
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_operator_argument_errors():
    with pytest.raises(ValueError, match="solver"):
        least_squares_operator(torch.randn(4, 5, 3), solver="svd")
    with pytest.raises(ValueError, match="steps"):
        linear_prediction_loss(torch.randn(4, 5, 3), torch.eye(3), steps=5)


def test_gaussian_kl_matches_monte_carlo_and_vanishes_for_equal_distributions():
    generator = torch.Generator().manual_seed(0)
    mean_q, mean_p = torch.tensor([0.3, -1.0]), torch.tensor([-0.2, 0.5])
    logvar_q, logvar_p = torch.tensor([-0.5, 0.4]), torch.tensor([0.2, -0.3])
    closed = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p).double()
    z = mean_q + torch.exp(0.5 * logvar_q) * torch.randn(400_000, 2, generator=generator)
    q = torch.distributions.Normal(mean_q, torch.exp(0.5 * logvar_q))
    p = torch.distributions.Normal(mean_p, torch.exp(0.5 * logvar_p))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).double().mean(dim=0)
    assert torch.allclose(monte_carlo, closed, rtol=0.01)
    assert float(gaussian_kl(mean_q, logvar_q, mean_q, logvar_q).abs().max()) == 0.0


def test_reconstruction_loss_ignores_missing_rows_in_value_and_gradient():
    x = torch.rand(3, 6, 2)
    mask = torch.ones(3, 6)
    mask[0, [1, 4]] = 0
    mask[2, 0] = 0
    x_missing = x.masked_fill(~mask.bool()[..., None], float("nan"))
    reconstruction = torch.rand(3, 6, 2, requires_grad=True)
    loss = masked_reconstruction_loss(reconstruction, x_missing, mask)
    expected = (((reconstruction - x) ** 2) * mask[..., None]).sum() / 3
    assert torch.allclose(loss, expected)
    loss.backward()
    missing = ~mask.bool()
    assert torch.isfinite(reconstruction.grad).all()
    assert float(reconstruction.grad[missing].abs().max()) == 0.0
    assert float(reconstruction.grad[~missing].abs().min()) > 0.0


def test_cde_model_gradients_are_zero_on_missing_inputs_and_finite_elsewhere():
    data = TimeSeriesDataModule("sines", n_samples=40, missing_rate=0.5, seed=1)
    data.setup()
    batch = {k: v[:8].clone() for k, v in data.splits["train"].tensors.items()}
    batch.pop("coeffs")  # the model computes the spline from x, so x gets gradients
    batch["x"].requires_grad_(True)
    model = KoopmanVAE(encoder="cde", num_layers=1, hidden_dim=8, latent_dim=4)
    loss, terms = model.compute_loss(batch, "train")
    assert all(math.isfinite(float(v)) for v in terms.values())
    loss.backward()
    grad, missing = batch["x"].grad, batch["mask"] == 0
    assert missing.sum() == 8 * 12
    assert float(grad[missing].abs().max()) == 0.0
    assert torch.isfinite(grad[~missing]).all() and grad[~missing].abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_gru_encoder_rejects_missing_rows_and_bad_arguments():
    data = TimeSeriesDataModule("sines", n_samples=40, missing_rate=0.3)
    data.setup()
    batch = data.splits["train"][:4]
    with pytest.raises(ValueError, match="cde"):
        KoopmanVAE(num_layers=1).compute_loss(batch, "train")
    with pytest.raises(ValueError, match="encoder"):
        KoopmanVAE(encoder="lstm")
    with pytest.raises(ValueError, match="operator_solver"):
        KoopmanVAE(operator_solver="svd")
    with pytest.raises(ValueError, match="prior_kl"):
        KoopmanVAE(prior_kl="teacher")


def test_conditioned_prior_is_causal_and_free_run_is_conditioning_on_own_samples():
    torch.manual_seed(0)
    model = KoopmanVAE(num_layers=1, hidden_dim=8, latent_dim=4)
    with torch.no_grad():
        free, free_mean, free_logvar = model.prior(
            3, 10, generator=torch.Generator().manual_seed(1)
        )
        _, mean, logvar = model.prior(3, conditioning=free)
        torch.testing.assert_close(mean, free_mean)
        torch.testing.assert_close(logvar, free_logvar)
        # p(z_t | z_<t): perturbing the path from step 6 on leaves steps 0..6 unchanged
        perturbed = free.clone()
        perturbed[:, 6:] += 1.0
        _, mean_perturbed, _ = model.prior(3, conditioning=perturbed)
        torch.testing.assert_close(mean_perturbed[:, :7], mean[:, :7])
        assert float((mean_perturbed[:, 7:] - mean[:, 7:]).abs().min()) > 0


def test_eigenvalue_modulus_regularizer():
    unit = _rotation_blocks(4, 1.0)
    stable = torch.block_diag(unit, 0.5 * torch.eye(2, dtype=torch.float64))
    assert float(EigenvalueModulusRegularizer(n_unit=4, radius=0.9)(stable)) < 1e-12
    assert float(EigenvalueModulusRegularizer(n_unit=0)(stable)) < 1e-12
    # Unstable mode 1.2 > 1 and a persistent mode missing: both penalised.
    unstable = torch.block_diag(_rotation_blocks(2, 1.2), 0.5 * torch.eye(2, dtype=torch.float64))
    # (the repeated eigenvalue 0.5 is split by 1e-6 to keep gradients finite)
    assert float(EigenvalueModulusRegularizer(n_unit=0)(unstable)) == pytest.approx(
        2 * 0.2**2 / 4, rel=1e-4
    )
    assert float(EigenvalueModulusRegularizer(n_unit=3)(unstable)) == pytest.approx(
        (2 * 0.2**2 + 0.5**2) / 3, rel=1e-4
    )
    with pytest.raises(ValueError, match="n_unit"):
        EigenvalueModulusRegularizer(n_unit=-1)


def test_spectral_gradients_finite_at_repeated_eigenvalues_and_descent_reaches_target():
    operator = torch.eye(4, dtype=torch.float64, requires_grad=True)  # fourfold eigenvalue 1
    penalty = EigenvalueModulusRegularizer(n_unit=0, radius=0.5)(operator)
    penalty.backward()
    assert torch.isfinite(operator.grad).all() and operator.grad.abs().sum() > 0
    assert torch.isfinite(safe_eigvals(torch.zeros(3, 3))).all()

    target = [[0.9, 0.2], [0.9, -0.2]]
    regularizer = PrescribedEigenvalueRegularizer(target)
    exact = torch.tensor([[0.9, -0.2, 0.0], [0.2, 0.9, 0.0], [0.0, 0.0, 0.3]], dtype=torch.float64)
    assert float(regularizer(exact)) < 1e-20
    generator = torch.Generator().manual_seed(0)
    c = (0.3 * torch.randn(3, 3, generator=generator, dtype=torch.float64)).requires_grad_(True)
    optimizer = torch.optim.Adam([c], lr=0.02)
    start = float(regularizer(c).detach())
    for _ in range(400):
        optimizer.zero_grad()
        loss = regularizer(c)
        loss.backward()
        optimizer.step()
    assert float(regularizer(c).detach()) < 1e-3 * start
    with pytest.raises(ValueError, match="pairs"):
        PrescribedEigenvalueRegularizer([[1.0]])


def _fit(model, data, epochs):
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return trainer


def test_training_reduces_loss_and_generation_has_the_data_shape():
    pl.seed_everything(0)
    data = TimeSeriesDataModule("sines", n_samples=400, batch_size=64)
    model = KoopmanVAE(num_layers=1, metrics=TimeSeriesMetricsConfig(enabled=False))
    data.setup()
    batch = data.splits["val"][:]
    before = float(model.compute_loss(batch, "val")[0].detach())
    _fit(model, data, 4)
    model.eval()
    after = float(model.compute_loss(batch, "val")[0].detach())
    assert after < 0.7 * before
    generator = torch.Generator().manual_seed(0)
    for method in ("prior", "linear"):
        samples = model.generate(7, method=method, generator=generator)
        assert samples.shape == (7, 24, 5)
        assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    assert model.eigenvalues(256).shape == (16,)
    assert float(model.operator.abs().sum()) > 0  # the last training operator is kept
    with pytest.raises(ValueError, match="method"):
        model.generate(2, method="koopman")


def test_spectral_constraint_shapes_the_learned_operator():
    # Two modes pushed onto the unit circle; Adam is scale-free, so the constraint needs steps
    # (lr 1e-2, 45 of them) rather than a large weight.
    data = TimeSeriesDataModule("sines", n_samples=300, batch_size=16)
    settings = {"num_layers": 1, "latent_dim": 4, "metrics": {"enabled": False}}
    regularizer = EigenvalueModulusRegularizer(n_unit=2, radius=0.9, weight=10.0)
    pl.seed_everything(0)
    model = KoopmanVAE(**settings, spectral=regularizer, optimizer={"lr": 1e-2})
    _fit(model, data, 3)
    pl.seed_everything(0)
    free = KoopmanVAE(**settings, optimizer={"lr": 1e-2})
    _fit(free, data, 3)
    generator = torch.Generator().manual_seed(1)
    constrained = model.eigenvalues(512, generator=generator).abs().sort(descending=True).values
    free_moduli = free.eigenvalues(512, generator=generator).abs().sort(descending=True).values
    miss, free_miss = (constrained[:2] - 0.9).abs(), (free_moduli[:2] - 0.9).abs()
    assert float(miss.max()) < 0.12
    assert float(miss.sum()) < 0.5 * float(free_miss.sum())


def test_data_and_model_sizes_must_agree(in_tmp_dir):
    data = TimeSeriesDataModule("sines", n_samples=100, dim=3)
    with pytest.raises(ValueError, match="input_dim=5"):
        _fit(KoopmanVAE(num_layers=1), data, 1)


def test_cli_fit_then_test_logs_generation_scores(in_tmp_dir):
    config = PROBLEMS / "koopman_vae" / "sines.yaml"
    small = [
        "--data.init_args.n_samples=300",
        "--model.init_args.num_layers=1",
        "--model.init_args.metrics.disc_iterations=30",
        "--model.init_args.metrics.pred_iterations=30",
        "--trainer.enable_progress_bar=false",
    ]
    fit = main(["fit", "-c", str(config), "--trainer.max_epochs=1", *small])
    tested = retest_saved_run(fit)
    metrics = tested.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/disc_score"]) <= 0.5
    assert 0.0 < float(metrics["test/pred_score"]) < 1.0
    assert np.isfinite(float(metrics["test/kl"]))
    assert torch.equal(tested.model.operator, fit.model.operator)


def test_test_scores_use_the_complete_sequences_and_warn_when_too_few_are():
    pl.seed_everything(0)
    sequences = np.random.default_rng(0).random((120, 8, 2))
    sequences[::3, 2] = np.nan  # a third of the sequences miss one row
    quick = TimeSeriesMetricsConfig(disc_iterations=5, pred_iterations=5, repeats=1)
    model = KoopmanVAE(
        input_dim=2, seq_len=8, encoder="cde", num_layers=1, hidden_dim=8, latent_dim=4,
        metrics=quick,
    )  # fmt: skip
    data = TimeSeriesDataModule.from_array(sequences, batch_size=16)
    trainer = _fit(model, data, 1)
    assert {"test/disc_score", "test/pred_score"} <= set(
        trainer.test(model, data, verbose=False)[0]
    )
    sequences[:, 2] = np.nan  # now no test sequence is complete
    incomplete = TimeSeriesDataModule.from_array(sequences, batch_size=16)
    with pytest.warns(UserWarning, match="not computed: they need at least 5 complete"):
        metrics = trainer.test(model, incomplete, verbose=False)[0]
    assert "test/disc_score" not in metrics
