r"""PROSE: a multimodal transformer predicting ODE solutions and their equations.

Liu, Zhang & Schaeffer, "PROSE: Predicting Operators and Symbolic Expressions using Multimodal
Transformers" (Neural Networks 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..metrics import continuation_rel_l2, score_equations
from ..nn import (
    DataEmbedding,
    ModalityFusion,
    OperatorDecoder,
    SymbolDecoder,
    SymbolEmbedding,
    TransformerEncoder,
)
from ..symbolic import PrefixVocabulary
from ._base import OptimizerConfig, Task

__all__ = ["PROSE", "ProseSizes"]


@dataclass(frozen=True)
class ProseSizes:
    """Widths and depths of the PROSE blocks (the paper: 512, 8 heads, 2048, 2/4/8/8/8).

    Args:
        width: model width of every block.
        heads: attention heads.
        ffn: feed-forward width.
        data_encoder, symbol_encoder, fusion, data_decoder, symbol_decoder: layers per block.
    """

    width: int = 64
    heads: int = 4
    ffn: int = 256
    data_encoder: int = 2
    symbol_encoder: int = 2
    fusion: int = 2
    data_decoder: int = 2
    symbol_decoder: int = 2

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"sizes.width={self.width} must be divisible by heads={self.heads}")
        depths = (self.data_encoder, self.symbol_encoder, self.fusion, self.data_decoder)
        if min(self.width, self.ffn, self.symbol_decoder, *depths) < 1:
            raise ValueError(f"every size must be >= 1, got {self}")


class PROSE(Task):
    r"""Data + skeleton in, continuation + equation out.

    * data encoder: each observation $(t_i, u(t_i)) \in \mathbb{R}^{1+D}$ embedded by an MLP,
      then self-attention (no positions: time is in the token);
    * symbol encoder: the skeleton's tokens with sinusoidal positions, self-attention;
    * fusion: self-attention over both sequences, tagged by a learned modality embedding;
    * operator decoder: each query time $\tau$ cross-attends to the fused *data* features only,
      independently of the other queries, giving $\hat u(\tau) \in \mathbb{R}^D$;
    * symbol decoder: causal, cross-attends to the fused *symbol* features, predicts the
      equation's tokens (constants included), decoded greedily.

    Loss: $w\,\frac1B\sum_b \frac{\sum m_b(\hat u_b - \tilde u_b)^2}
    {\sum m_b \tilde u_b^2 + 10^{-5}} + \mathrm{CE}$ with $m_b$ masking padded components and
    $\tilde u$ the noisy observations of the query window (as in PROSE; evaluation scores against
    the clean states). Training evaluates ``train_queries`` random query times per step (valid
    since queries are independent).

    With ``multimodal=False`` (the data-only ablation, PROSE's ``--no_text``) the symbol branch is
    absent: the fusion layers then act on the data tokens alone and the loss is the data term.
    With ``symbol_output=False`` (PROSE's "2-to-1" ablation, ``--data_only``) the skeleton is
    still read and fused, but there is no symbol decoder: the loss is the data term, so the
    continuation gets the symbol input without sharing the encoders with the equation output.

    Logged in val/test: ``rel_l2`` (clean continuation), ``rel_l2_noisy``, ``last_value_rel_l2``
    (hold-the-last-observation baseline), and with the symbol branch ``token_accuracy``,
    ``valid_fraction``, ``rhs_rel_l2`` (median over the batch's valid equations of the RHS error
    at 50 random states), ``rhs_rel_l2_mean``; in test also ``solve_rel_l2`` (median),
    ``solve_failures`` (fraction of valid equations whose scipy solve failed or blew up) and the
    same data/equation scores with the pre-drawn corrupted skeletons (``*_corrupted``).

    Args:
        max_dim: padded state dimension ``D`` of the data.
        symbol_length: token length of the symbol sequences.
        sizes: block sizes.
        multimodal: ``False`` gives the data-only variant.
        symbol_output: ``False`` drops the symbol decoder (2-to-1: both inputs, continuation
            only); without ``multimodal`` there is no symbol output either way.
        data_loss_weight: $w$.
        train_queries: query times per training step (``None``: all).
        warmup_steps: linear learning-rate warm-up before the optimizer's schedule.
        decode_in_val: greedy-decode equations in validation too (test always decodes).
        optimizer: optimizer settings.

    Shapes:
        ``forward(t_in (B, N), u_in (B, N, D), t_query (B, Q), symbols (B, L) | None,
        target (B, L') | None) -> (u_hat (B, Q, D), logits (B, L'-1, V) | None)``.
    """

    def __init__(
        self,
        max_dim: int = 2,
        symbol_length: int = 64,
        sizes: ProseSizes = ProseSizes(),
        multimodal: bool = True,
        symbol_output: bool = True,
        data_loss_weight: float = 6.0,
        train_queries: int | None = 32,
        warmup_steps: int = 100,
        decode_in_val: bool = True,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sizes = ProseSizes(**sizes) if isinstance(sizes, dict) else sizes
        if max_dim < 1:
            raise ValueError(f"model.init_args.max_dim must be >= 1, got {max_dim}")
        if data_loss_weight < 0:
            raise ValueError(
                f"model.init_args.data_loss_weight must be >= 0, got {data_loss_weight}"
            )
        self.vocabulary = PrefixVocabulary(max_dim=max_dim)
        w, h, f = sizes.width, sizes.heads, sizes.ffn
        self.data_embedding = DataEmbedding(1 + max_dim, w)
        self.data_encoder = TransformerEncoder(w, h, sizes.data_encoder, f)
        self.fusion = ModalityFusion(w, h, sizes.fusion, f)
        self.operator_decoder = OperatorDecoder(w, h, sizes.data_decoder, f, max_dim)
        if multimodal:
            vocab = len(self.vocabulary)
            self.symbol_embedding = SymbolEmbedding(vocab, w, symbol_length)
            self.symbol_encoder = TransformerEncoder(w, h, sizes.symbol_encoder, f)
        #: the symbol output exists only with the symbol input (the encoders feed it)
        self.decodes_symbols = multimodal and symbol_output
        if self.decodes_symbols:
            self.symbol_decoder = SymbolDecoder(vocab, w, h, sizes.symbol_decoder, f, symbol_length)

    def setup(self, stage: str) -> None:
        datamodule = (
            getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        )
        for name in ("max_dim", "symbol_length"):
            data_value = getattr(datamodule, name, None)
            if data_value is not None and data_value != self.hparams[name]:
                raise ValueError(
                    f"model.init_args.{name}={self.hparams[name]} but the data has {name}="
                    f"{data_value}"
                )

    def encode(
        self, t_in: torch.Tensor, u_in: torch.Tensor, symbols: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Fused ``(data features (B, N, w), symbol features (B, L, w) | None, symbol mask)``."""
        data = self.data_encoder(self.data_embedding(torch.cat([t_in[..., None], u_in], -1)))
        if not self.hparams.multimodal:
            return self.fusion([data], [None])[0], None, None
        if symbols is None:
            raise ValueError("the multimodal PROSE needs symbol input (or use multimodal=False)")
        mask = symbols == self.vocabulary.pad_id
        text = self.symbol_encoder(self.symbol_embedding(symbols), mask)
        data, text = self.fusion([data, text], [None, mask])
        return data, text, mask

    def forward(
        self,
        t_in: torch.Tensor,
        u_in: torch.Tensor,
        t_query: torch.Tensor,
        symbols: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        data, text, mask = self.encode(t_in, u_in, symbols)
        u_hat = self.operator_decoder(t_query, data)
        logits = None
        if self.decodes_symbols and target is not None:
            logits = self.symbol_decoder(target[:, :-1], text, mask)
        return u_hat, logits

    @torch.no_grad()
    def predict_batch(
        self, batch: dict[str, torch.Tensor], symbols_key: str = "symbols"
    ) -> tuple[torch.Tensor, list[list[str]] | None]:
        """Continuation at all ``t_out`` and the greedily decoded equations (token strings)."""
        batch = self._trim(batch)
        symbols = batch[symbols_key] if self.hparams.multimodal else None
        data, text, mask = self.encode(batch["t_in"], batch["u_in"], symbols)
        u_hat = self.operator_decoder(batch["t_out"], data)
        if not self.decodes_symbols:
            return u_hat, None
        vocab = self.vocabulary
        ids = self.symbol_decoder.greedy(
            text, mask, bos=vocab.bos_id, eos=vocab.eos_id, pad=vocab.pad_id
        )
        return u_hat, [vocab.decode(row) for row in ids.tolist()]

    def _trim(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the trailing all-padding columns of the token tensors (a batch's longest
        sequence is usually far shorter than ``symbol_length``)."""
        out = dict(batch)
        for key in ("target", "symbols", "symbols_corrupted"):
            if key in out:
                used = (out[key] != self.vocabulary.pad_id).any(0).nonzero()
                out[key] = out[key][:, : int(used.max()) + 1 if len(used) else 1]
        return out

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = self._trim(batch)
        t_out, u_noisy, mask = batch["t_out"], batch["u_out_noisy"], batch["mask"]
        queries = self.hparams.train_queries
        if stage == "train" and queries is not None and queries < t_out.shape[1]:
            index = torch.randperm(t_out.shape[1], device=t_out.device)[:queries]
            t_out, u_noisy = t_out[:, index], u_noisy[:, index]
        target = batch["target"] if self.decodes_symbols else None
        u_hat, logits = self(batch["t_in"], batch["u_in"], t_out, batch.get("symbols"), target)
        weights = mask[:, None, :]
        data_loss = (
            ((u_hat - u_noisy) ** 2 * weights).sum((1, 2))
            / ((u_noisy**2 * weights).sum((1, 2)) + 1e-5)
        ).mean()
        loss = self.hparams.data_loss_weight * data_loss
        terms: dict[str, Any] = {"data_loss": data_loss}
        if logits is not None:
            labels = batch["target"][:, 1:]
            symbol_loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=self.vocabulary.pad_id,
            )
            loss = loss + symbol_loss
            terms["symbol_loss"] = symbol_loss
            real = labels != self.vocabulary.pad_id
            terms["token_accuracy"] = ((logits.argmax(-1) == labels) & real).sum() / real.sum()
        if stage != "train":
            terms.update(self._evaluation_terms(batch, u_hat, stage))
        return loss, terms

    def _evaluation_terms(
        self, batch: dict[str, torch.Tensor], u_hat: torch.Tensor, stage: str
    ) -> dict[str, Any]:
        mask = batch["mask"]
        last = batch["u_in"][:, -1:].expand_as(batch["u_out"])
        terms: dict[str, Any] = {
            "rel_l2": continuation_rel_l2(u_hat, batch["u_out"], mask).mean(),
            "rel_l2_noisy": continuation_rel_l2(u_hat, batch["u_out_noisy"], mask).mean(),
            "last_value_rel_l2": continuation_rel_l2(last, batch["u_out"], mask).mean(),
        }
        decode = self.decodes_symbols and (stage == "test" or self.hparams.decode_in_val)
        variants = [("symbols", "")] if decode else []
        if self.hparams.multimodal and stage == "test":
            variants.append(("symbols_corrupted", "_corrupted"))
        for key, suffix in variants:
            u_pred, tokens = self.predict_batch(batch, key)
            if suffix:
                terms["rel_l2" + suffix] = continuation_rel_l2(u_pred, batch["u_out"], mask).mean()
            if tokens is None:
                continue
            scores = self.score(batch, tokens, solve=stage == "test" and not suffix)
            for name, value in scores.items():
                if math.isfinite(value):
                    terms[name + suffix] = torch.tensor(value)
        return terms

    def score(
        self, batch: dict[str, torch.Tensor], tokens: list[list[str]], *, solve: bool
    ) -> dict[str, float]:
        """Equation scores of decoded ``tokens`` against ``batch["target"]`` (batch statistics)."""
        vocab = self.vocabulary
        scores = score_equations(
            tokens,
            [vocab.decode(row) for row in batch["target"].tolist()],
            batch["dim"].tolist(),
            y0=batch["y0"].double().cpu().numpy(),
            t_solve=np.concatenate([[0.0], batch["t_out"][0].double().cpu().numpy()]),
            targets=batch["u_out"].double().cpu().numpy(),
            target_times=batch["t_out"][0].double().cpu().numpy(),
            rng=np.random.default_rng(0),  # scores depend on the batch and weights only
            solve=solve,
        )
        summary = scores.summary()
        out = {
            "valid_fraction": summary["valid_fraction"],
            "rhs_rel_l2": summary["rhs_rel_l2_median"],
            "rhs_rel_l2_mean": summary["rhs_rel_l2_mean"],
        }
        if solve:
            out["solve_rel_l2"] = summary["solve_rel_l2_median"]
            out["solve_failures"] = summary["solve_failure_fraction"]
        return out

    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        warmup = self.hparams.warmup_steps
        if warmup <= 0:
            return configured
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        config = self.optimizer_config()
        total = max(int(self.trainer.estimated_stepping_batches), 1)

        def factor(step: int) -> float:
            ramp = min(1.0, (step + 1) / warmup)
            if config.scheduler == "exponential":  # the decay stays per epoch, as without warm-up
                return ramp * config.gamma**self.trainer.current_epoch
            if config.scheduler != "cosine":
                return ramp
            progress = min(1.0, max(0.0, (step - warmup) / max(total - warmup, 1)))
            return ramp * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
