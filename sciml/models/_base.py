"""The base LightningModule shared by every model family."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch

from .._settings import as_plain
from ..regularizers import AbstractRegularizer, as_regularizer

__all__ = ["NonFiniteLossError", "OptimizerConfig", "Task"]


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite training loss; raised before the optimizer step, so weights stay finite."""


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and learning-rate schedule, as plain data.

    Args:
        name: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: L2 penalty (decoupled for AdamW).
        scheduler: ``"none"``, ``"cosine"`` (to zero over ``trainer.max_steps`` or the estimated
            total steps) or ``"exponential"`` (decay ``gamma`` per epoch).
        gamma: decay factor of the exponential schedule.
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine", "exponential"] = "none"
    gamma: float = 0.99

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"optimizer.gamma must lie in (0, 1], got {self.gamma}")


class Task(pl.LightningModule, abc.ABC):
    """A model family's training logic around plain ``nn.Module`` networks.

    Subclasses implement :meth:`compute_loss`; this class logs every term as ``{stage}/{name}``
    (in training the loss at every step, the other terms on the steps the loggers write, see
    :meth:`logs_this_step`), stops on a non-finite training loss with a message naming the step
    and the terms, and runs the evaluation steps with gradients enabled (models that
    differentiate with respect to their inputs need them; the ``sciml`` CLI also sets
    ``Trainer(inference_mode=False)``).
    """

    #: whether evaluation differentiates with respect to the inputs (PDE residuals, Hamiltonian
    #: vector fields, adaptation steps), which Lightning's default inference mode forbids
    differentiates_inputs: ClassVar[bool] = False

    @abc.abstractmethod
    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss to minimise and named terms/metrics to log (the loss is logged too)."""

    def optimizer_config(self) -> OptimizerConfig:
        """Subclasses with an ``optimizer`` hyperparameter get it here; others use the defaults."""
        config = self.hparams.get("optimizer", OptimizerConfig())
        return OptimizerConfig(**config) if isinstance(config, dict) else config

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups; a group's ``"lr"`` overrides ``optimizer.lr``
        (the scheduler scales every group alike)."""
        return [{"params": list(self.parameters())}]

    def store_regularizers(
        self, key: str, regularizers: list[AbstractRegularizer] | None
    ) -> list[AbstractRegularizer]:
        """Regularizers from instances or ``{"class_path", "init_args"}`` mappings, with their
        :meth:`~sciml.regularizers.AbstractRegularizer.config` recorded as ``hparams[key]`` so
        that ``load_from_checkpoint`` rebuilds them (they are not serialisable as objects)."""
        built = [as_regularizer(r) for r in regularizers or []]
        self.hparams[key] = [r.config() for r in built]
        return built

    def total_steps(self) -> int | None:
        """Optimisation steps of the whole run (``None`` outside a trainer), e.g. for decaying
        regularizer weights."""
        if self._trainer is None:
            return None
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return int(self.trainer.estimated_stepping_batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints are loaded with ``weights_only=True``: settings dataclasses go in as plain
        # dicts, which every Task's ``__init__`` turns back into the dataclass.
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = as_plain(dict(checkpoint["hyper_parameters"]))

    def logs_this_step(self) -> bool:
        """Whether the loggers receive this training step's values: every
        ``log_every_n_steps``-th step (counted from 1), the stopping step, every step of a
        ``fast_dev_run``, and always outside a trainer. Training diagnostics that cost extra
        evaluations are computed only then."""
        if self._trainer is None:
            return True
        trainer = self.trainer
        # Lightning keeps this decision in a private connector; without it every step counts.
        connector = getattr(trainer, "_logger_connector", None)
        return bool(trainer.fast_dev_run) or bool(getattr(connector, "should_update_logs", True))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, terms = self.compute_loss(batch, "train")
        self.check_finite_loss(loss, terms, where=f"epoch {self.current_epoch}, batch {batch_idx}")
        self._log_terms("train", loss, terms, batch)
        return loss

    def check_finite_loss(
        self,
        loss: torch.Tensor,
        terms: dict[str, Any],
        *,
        where: str,
        advice: str = "Lower the learning rate or tighten the solver tolerances",
    ) -> None:
        """Raise :class:`NonFiniteLossError` naming the step, ``where`` and the loss terms when
        ``loss`` is NaN or infinite; call it before the optimizer step so the weights stay good."""
        if torch.isfinite(loss):
            return
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite training loss {float(loss.detach())} at global step {self.global_step} "
            f"({where}); terms: {values or 'none'}. The weights were not updated; the last "
            f"checkpoint is the last good state. {advice}, then resume with --ckpt_path."
        )

    def _check_autograd_available(self) -> None:
        if self.differentiates_inputs and torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{type(self).__name__} differentiates with respect to its inputs when it "
                "evaluates, which inference mode forbids: use pl.Trainer(inference_mode=False) "
                "(the sciml command line sets it)"
            )

    @torch.enable_grad()
    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._check_autograd_available()
        loss, terms = self.compute_loss(batch, "val")
        self._log_terms("val", loss, terms, batch)
        return loss

    @torch.enable_grad()
    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self._check_autograd_available()
        loss, terms = self.compute_loss(batch, "test")
        self._log_terms("test", loss, terms, batch)
        return loss

    def _log_terms(
        self, stage: str, loss: torch.Tensor, terms: dict[str, torch.Tensor], batch: Any
    ) -> None:
        batch_size = _batch_size(batch)
        training = stage == "train"
        self.log(
            f"{stage}/loss",
            loss.detach(),
            prog_bar=True,
            on_step=training,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=not training,
        )
        # Each self.log call costs ~0.5 ms, and the loggers write a training step's values only
        # every `log_every_n_steps` steps, so the terms are recorded at those steps alone.
        if training and not self.logs_this_step():
            return
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                torch.as_tensor(value).detach().float(),
                on_step=training,
                on_epoch=not training,
                batch_size=batch_size,
                sync_dist=not training,
            )

    def configure_optimizers(self) -> Any:
        config = self.optimizer_config()
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        optimizer = optimizers[config.name](
            self.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay
        )
        if config.scheduler == "none":
            return optimizer
        if config.scheduler == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
            }
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, dict):
        first = next(iter(batch.values()), None)
        return len(first) if isinstance(first, torch.Tensor) and first.ndim > 0 else None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return len(batch[0])
    return None
