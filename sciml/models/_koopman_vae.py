"""Koopman VAE (KoVAE): generative modelling of regular and irregular time series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from ..metrics import MIN_SCORED_SEQUENCES, discriminative_score, predictive_score
from ..nn import (
    OPERATOR_SOLVERS,
    NeuralCDE,
    gaussian_kl,
    least_squares_operator,
    linear_prediction_loss,
    natural_cubic_spline_coeffs,
)
from ..regularizers import AbstractRegularizer, as_regularizer
from ._base import OptimizerConfig, Task

__all__ = ["KoopmanVAE", "TimeSeriesMetricsConfig", "masked_reconstruction_loss"]


@dataclass(frozen=True)
class TimeSeriesMetricsConfig:
    """What ``sciml test`` computes after the test epoch.

    Logged as ``test/disc_score`` and ``test/pred_score``.

    As many sequences as the test split holds (at most ``max_sequences``) are generated and
    compared with the complete test sequences by
    :func:`sciml.metrics.discriminative_score` and :func:`sciml.metrics.predictive_score`.
    The TimeGAN protocol is 2000 / 5000 iterations; fewer keep a quick check cheap.

    Args:
        enabled: compute the scores at all.
        disc_iterations: classifier training steps.
        pred_iterations: predictor training steps.
        repeats: metric repetitions (the mean is logged).
        max_sequences: cap on the real test sequences used (``None``: all).
        seed: seed of the metrics and of the generated samples.
    """

    enabled: bool = True
    disc_iterations: int = 2000
    pred_iterations: int = 5000
    repeats: int = 1
    max_sequences: int | None = None
    seed: int = 0


def masked_reconstruction_loss(
    reconstruction: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    r"""$\sum_{b,t,d} m_{b,t} (\hat x_{b,t,d} - x_{b,t,d})^2 / B$ over observed rows only.

    Missing entries of ``x`` (NaN) are replaced before the subtraction, so neither the value nor
    the gradient sees them: $\partial L / \partial \hat x = 0$ on missing rows.

    Args:
        reconstruction: ``(B, T, D)``.
        x: ``(B, T, D)``, NaN where missing.
        mask: ``(B, T)``, 1 on observed rows, 0 on missing ones.
    """
    observed = mask[..., None].bool()
    target = torch.where(observed, x, torch.zeros_like(x))
    error = torch.where(observed, reconstruction - target, torch.zeros_like(reconstruction))
    return (error**2).sum() / len(x)


class _BatchNormChannels(nn.Module):
    """BatchNorm1d over the feature channels of ``(B, T, C)`` sequences (statistics over B, T)."""

    def __init__(self, channels: int, enabled: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels) if enabled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class KoopmanVAE(Task):
    r"""KoVAE (Naiman et al., ICLR 2024): a sequential VAE whose prior's latent dynamics are linear.

    * Posterior $q(z_t \mid x)$: a bidirectional GRU (``num_layers``, hidden ``H``), BatchNorm,
      then linear heads for $\mu_q, \log\sigma_q^2$ at every step. With ``encoder="cde"``
      (missing rows) a neural CDE over the natural cubic spline of the observed rows
      (:class:`sciml.nn.NeuralCDE`), ``Linear(H, H)`` + sigmoid and a one-layer bi-GRU replace
      the GRU stack, as in the authors' code.
    * Prior $p(z_t \mid z_{<t})$: a GRU cell started from $z_0 = 0$, $h_0 = 0$, emitting
      $(\mu_p, \log\sigma_p^2)$. Generation runs it freely, feeding back its own sample
      $\bar z_t$. In the KL term it is conditioned on the posterior sample's past
      (``prior_kl="posterior"``, the default: $p(z_t \mid z^q_{<t})$, as in sequential VAEs) or
      run freely as in the authors' code (``prior_kl="free"``). The free form cannot learn
      temporal structure from the KL: the $(\mu_p, \sigma_p)$ minimising
      $\mathbb E_x \mathbb E_{\bar z}\,\mathrm{KL}(q(z_t \mid x) \| p(z_t \mid \bar z_{<t}))$
      for a path $\bar z$ drawn independently of $x$ are the same for every path (the moments
      of the aggregate posterior at step $t$), so its samples are nearly independent across time
      and decode to under-dispersed, jittery sequences unless the Koopman term alone supplies the
      coherence (``docs/benchmarks.md`` measures both on TimeGAN sines).
    * Decoder: bi-GRU, linear, sigmoid (data are min-max scaled to [0, 1]).
    * Koopman operator: not a parameter; every step $C$ solves
      $\min_C \|\bar Z_{:, :-1} C - \bar Z_{:, 1:}\|$ over the batch's prior samples by a
      differentiable QR (:func:`sciml.nn.least_squares_operator`), and
      $L_\text{pred}$ = :func:`sciml.nn.linear_prediction_loss` (MSE over the Frobenius norm of
      the prediction, so $\bar z \to 0$ does not win).

    Loss (``B`` the batch size, sums over time, features and latent dimensions):

    $$ L = w_\text{rec} \tfrac1B \sum m_t (\hat x_t - x_t)^2
       + w_\text{kl} \tfrac1B \sum_t \mathrm{KL}(q(z_t \mid x) \,\|\, p(z_t \mid z_{<t}))
       + w_\text{pred} L_\text{pred} + \lambda R_\text{spectral}(C), $$

    the KL against the prior conditioned as ``prior_kl`` says, reconstruction only on observed
    rows ($m_t$); $L_\text{pred}$ always uses free-running prior samples $\bar z$. Defaults are
    the paper's for sines (``w_kl=0.007``, ``w_pred=0.005``, Adam 7e-4; batch 64 is the data
    module's). The optional ``spectral`` regularizer (e.g.
    :class:`sciml.regularizers.EigenvalueModulusRegularizer`) constrains the eigenvalues of $C$
    (domain knowledge such as stability or undamped modes).

    Generation (:meth:`generate`): run the prior and decode (the reference behaviour), or
    ``method="linear"``: $z_t = z_{t-1} C + \varepsilon_t$ with $C$ and the residual scale fitted
    on prior samples. :meth:`eigenvalues` exposes the spectrum of $C$; the buffer ``operator``
    holds $C$ of the last training batch.

    Args:
        input_dim: features ``D``.
        seq_len: sequence length ``T`` of generated samples.
        hidden_dim: GRU width ``H``.
        latent_dim: ``k``.
        num_layers: layers of the encoder and decoder GRUs (and of the CDE vector field).
        batch_norm: BatchNorm after the encoder.
        encoder: ``"gru"`` (complete sequences) or ``"cde"`` (missing rows allowed).
        w_rec, w_kl, w_pred: loss weights.
        pred_steps: horizon of the predictive loss.
        prior_kl: ``"posterior"`` (prior fed the posterior sample's past in the KL) or
            ``"free"`` (prior run on its own samples in the KL, the authors' code).
        operator_solver: ``"qr"`` or ``"pinv"``.
        spectral: a regularizer applied to $C$ (``forward(operator)``), weighted by its own
            schedule; stored in checkpoint hyperparameters by its ``config()``.
        metrics: what ``sciml test`` computes (:class:`TimeSeriesMetricsConfig`).
        optimizer: optimizer settings.

    Shapes:
        Batches are dicts with ``"x" (B, T, D)`` (NaN rows where missing), ``"mask" (B, T)``,
        optionally ``"x_full"`` (complete, for test metrics) and ``"coeffs" (B, T-1, 4, D)``
        (else computed from ``x``). ``forward(batch) -> dict`` of reconstruction and latents.
    """

    def __init__(
        self,
        input_dim: int = 5,
        seq_len: int = 24,
        hidden_dim: int = 20,
        latent_dim: int = 16,
        num_layers: int = 3,
        batch_norm: bool = True,
        encoder: Literal["gru", "cde"] = "gru",
        w_rec: float = 1.0,
        w_kl: float = 0.007,
        w_pred: float = 0.005,
        pred_steps: int = 1,
        prior_kl: Literal["posterior", "free"] = "posterior",
        operator_solver: Literal["qr", "pinv"] = "qr",
        spectral: AbstractRegularizer | None = None,
        metrics: TimeSeriesMetricsConfig = TimeSeriesMetricsConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=7e-4),  # noqa: B008
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["spectral"])
        if encoder not in ("gru", "cde"):
            raise ValueError(f"model.encoder must be 'gru' or 'cde', got {encoder!r}")
        if prior_kl not in ("posterior", "free"):
            raise ValueError(f"model.prior_kl must be 'posterior' or 'free', got {prior_kl!r}")
        if operator_solver not in OPERATOR_SOLVERS:
            raise ValueError(
                f"model.operator_solver must be one of {OPERATOR_SOLVERS}, got {operator_solver!r}"
            )
        if min(input_dim, seq_len - 1, hidden_dim, latent_dim, num_layers) < 1:
            raise ValueError(
                "model sizes must be positive (and seq_len >= 2), got "
                f"input_dim={input_dim}, seq_len={seq_len}, hidden_dim={hidden_dim}, "
                f"latent_dim={latent_dim}, num_layers={num_layers}"
            )
        if not 1 <= pred_steps < seq_len:
            raise ValueError(f"model.pred_steps must lie in [1, seq_len), got {pred_steps}")
        if min(w_rec, w_kl, w_pred) < 0:
            raise ValueError("model loss weights w_rec, w_kl, w_pred must be >= 0")
        self.metrics = TimeSeriesMetricsConfig(**metrics) if isinstance(metrics, dict) else metrics
        self.spectral = None if spectral is None else as_regularizer(spectral)
        self.hparams["spectral"] = None if spectral is None else self.spectral.config()
        h, k = hidden_dim, latent_dim
        if encoder == "gru":
            self.encoder_rnn = nn.GRU(
                input_dim, h, num_layers, batch_first=True, bidirectional=True
            )
        else:
            self.cde = NeuralCDE(input_dim, h, num_layers)
            self.cde_readout = nn.Sequential(nn.Linear(h, h), nn.Sigmoid())
            self.encoder_rnn = nn.GRU(h, h, 1, batch_first=True, bidirectional=True)
        self.encoder_norm = _BatchNormChannels(2 * h, batch_norm)
        self.posterior_mean, self.posterior_logvar = nn.Linear(2 * h, k), nn.Linear(2 * h, k)
        self.prior_cell = nn.GRUCell(k, h)
        self.prior_mean, self.prior_logvar = nn.Linear(h, k), nn.Linear(h, k)
        self.decoder_rnn = nn.GRU(k, h, num_layers, batch_first=True, bidirectional=True)
        self.decoder_out = nn.Linear(2 * h, input_dim)
        self.register_buffer("operator", torch.zeros(k, k))
        self._test_real: list[torch.Tensor] = []

    def setup(self, stage: str) -> None:
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        if datamodule is None or not hasattr(datamodule, "n_features"):
            return
        features, length = datamodule.n_features, datamodule.hparams.seq_len
        if (features, length) != (self.hparams.input_dim, self.hparams.seq_len):
            raise ValueError(
                f"model.init_args.input_dim={self.hparams.input_dim}, "
                f"seq_len={self.hparams.seq_len} but the data have {features} features and "
                f"seq_len={length}"
            )

    # --- networks ------------------------------------------------------------------------------

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)``, each ``(B, T, k)``."""
        x, mask = batch["x"], batch["mask"]
        if self.hparams.encoder == "gru":
            if not bool(mask.all()):
                raise ValueError(
                    "the batch has missing rows; use model.encoder='cde' for irregular data"
                )
            features, _ = self.encoder_rnn(x)
        else:
            coeffs = batch.get("coeffs")
            if coeffs is None:
                coeffs = natural_cubic_spline_coeffs(x)
            features, _ = self.encoder_rnn(self.cde_readout(self.cde(coeffs)))
        features = self.encoder_norm(features)
        return self.posterior_mean(features), self.posterior_logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, T, k) -> (B, T, D)`` in [0, 1]."""
        features, _ = self.decoder_rnn(z)
        return torch.sigmoid(self.decoder_out(features))

    def prior(
        self,
        n: int,
        length: int | None = None,
        *,
        generator: torch.Generator | None = None,
        conditioning: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Run the GRU-cell prior; ``(samples, mean, logvar)``, each ``(n, T, k)``.

        Without ``conditioning`` the cell is fed its own previous sample (free running). With
        ``conditioning`` ``(n, T, k)`` it is fed ``conditioning[:, t-1]`` instead (teacher
        forcing), so ``mean[:, t], logvar[:, t]`` parametrise $p(z_t \mid z_{<t})$ on that path.
        """
        if conditioning is not None:
            n, length = conditioning.shape[:2]
        length = length or self.hparams.seq_len
        k, h_dim = self.hparams.latent_dim, self.hparams.hidden_dim
        z = self.operator.new_zeros(n, k)
        h = self.operator.new_zeros(n, h_dim)
        samples, means, logvars = [], [], []
        for t in range(length):
            if conditioning is not None and t > 0:
                z = conditioning[:, t - 1]
            h = self.prior_cell(z, h)
            mean, logvar = self.prior_mean(h), self.prior_logvar(h)
            noise = torch.randn(n, k, generator=generator, device=h.device, dtype=h.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
            samples.append(z)
            means.append(mean)
            logvars.append(logvar)
        return torch.stack(samples, 1), torch.stack(means, 1), torch.stack(logvars, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mean_q, logvar_q = self.encode(batch)
        z_posterior = mean_q + torch.exp(0.5 * logvar_q) * torch.randn_like(mean_q)
        z_prior, mean_p, logvar_p = self.prior(len(mean_q), mean_q.shape[1])
        if self.hparams.prior_kl == "posterior":
            _, mean_p, logvar_p = self.prior(len(mean_q), conditioning=z_posterior)
        return {
            "reconstruction": self.decode(z_posterior),
            "mean_q": mean_q,
            "logvar_q": logvar_q,
            "z_prior": z_prior,
            "mean_p": mean_p,
            "logvar_p": logvar_p,
        }

    # --- training -----------------------------------------------------------------------------

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        hp = self.hparams
        out = self(batch)
        x = batch["x"]
        rec = masked_reconstruction_loss(out["reconstruction"], x, batch["mask"])
        kl = gaussian_kl(out["mean_q"], out["logvar_q"], out["mean_p"], out["logvar_p"])
        kl = kl.sum() / len(x)
        operator = least_squares_operator(out["z_prior"], solver=hp.operator_solver)
        pred = linear_prediction_loss(out["z_prior"], operator, steps=hp.pred_steps)
        loss = hp.w_rec * rec + hp.w_kl * kl + hp.w_pred * pred
        terms: dict[str, Any] = {
            "rec": rec.detach(),
            "kl": kl.detach(),
            "pred_prior": pred.detach(),
        }
        if self.spectral is not None:
            penalty = self.spectral(operator)
            total = None
            if self.spectral.weight_final is not None:
                total = int(self.trainer.estimated_stepping_batches)
            loss = loss + self.spectral.weight_at(self.global_step, total) * penalty
            terms[self.spectral.name] = penalty.detach()
        if stage == "train":
            self.operator.copy_(operator.detach())
            terms["max_abs_eig"] = torch.linalg.eigvals(operator.detach()).abs().max()
        return loss, terms

    # --- generation and analysis -----------------------------------------------------------------

    @torch.no_grad()
    def fit_operator(
        self, n: int = 1024, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """$C$ fitted on ``n`` fresh prior sequences, and the residual std per latent dim."""
        z, _, _ = self.prior(n, generator=generator)
        operator = least_squares_operator(z, solver=self.hparams.operator_solver)
        residual = z[:, 1:] - z[:, :-1] @ operator
        return operator, residual.reshape(-1, z.shape[-1]).std(dim=0)

    def eigenvalues(self, n: int = 1024, *, generator: torch.Generator | None = None):
        """Complex eigenvalues ``(k,)`` of the Koopman operator fitted on ``n`` prior samples.

        For a stable latent linear system all lie inside the unit circle; moduli close to 1 are
        persistent modes, arguments are frequencies per time step.
        """
        return torch.linalg.eigvals(self.fit_operator(n, generator=generator)[0])

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        method: Literal["prior", "linear"] = "prior",
        generator: torch.Generator | None = None,
        batch_size: int = 1024,
    ) -> torch.Tensor:
        """Sample ``(n, T, D)`` sequences in the scaled space (decoded in eval mode).

        ``method="prior"`` decodes the GRU prior's samples (the authors' sampler);
        ``"linear"`` starts from the prior's first step and advances
        $z_t = z_{t-1} C + \\mathrm{diag}(s)\\,\\varepsilon_t$ with $C$ and residual scales $s$
        fitted on prior samples (:meth:`fit_operator`), a sampler that is linear by construction.
        """
        if method not in ("prior", "linear"):
            raise ValueError(f"method must be 'prior' or 'linear', got {method!r}")
        was_training = self.training
        self.eval()
        if method == "linear":
            operator, scale = self.fit_operator(generator=generator)
        chunks = []
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            if method == "prior":
                z, _, _ = self.prior(count, generator=generator)
            else:
                z = [self.prior(count, 1, generator=generator)[0][:, 0]]
                for _ in range(self.hparams.seq_len - 1):
                    noise = torch.randn(
                        z[-1].shape, generator=generator, device=z[-1].device, dtype=z[-1].dtype
                    )
                    z.append(z[-1] @ operator + scale * noise)
                z = torch.stack(z, 1)
            chunks.append(self.decode(z))
        self.train(was_training)
        return torch.cat(chunks)

    # --- test metrics -------------------------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        self._test_real = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().test_step(batch, batch_idx)
        self._test_real.append(batch.get("x_full", batch["x"]).detach())
        return loss

    def on_test_epoch_end(self) -> None:
        config = self.metrics
        if not config.enabled or not self._test_real:
            return
        real = torch.cat(self._test_real)[: config.max_sequences]
        self._test_real = []
        # The scores compare complete sequences (the data's own NaNs are dropped, not imputed)
        # and the predictive score needs a second feature to predict the last one from.
        real = real[torch.isfinite(real).flatten(1).all(dim=1)]
        if len(real) < MIN_SCORED_SEQUENCES or real.shape[-1] < 2:
            rank_zero_warn(
                "KoopmanVAE: test/disc_score and test/pred_score are not computed: they need at "
                f"least {MIN_SCORED_SEQUENCES} complete test sequences with two features, got "
                f"{len(real)} with {real.shape[-1]}"
            )
            return
        generator = torch.Generator(device=real.device).manual_seed(config.seed)
        fake = self.generate(len(real), generator=generator)
        disc = discriminative_score(
            real,
            fake,
            iterations=config.disc_iterations,
            repeats=config.repeats,
            seed=config.seed,
        )
        pred = predictive_score(
            fake,
            real,
            iterations=config.pred_iterations,
            repeats=config.repeats,
            seed=config.seed,
        )
        self.log("test/disc_score", disc.mean)
        self.log("test/pred_score", pred.mean)
