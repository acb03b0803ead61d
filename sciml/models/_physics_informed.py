"""Shared training schedule of physics-informed models: Adam, then L-BFGS, in stages."""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from ._base import OptimizerConfig, Task

__all__ = ["LBFGSConfig", "PhysicsInformedTask"]

#: retries of an L-BFGS chunk that ended non-finite, each with half the step length
_LBFGS_RETRIES = 3


@dataclass(frozen=True)
class LBFGSConfig:
    """L-BFGS settings for the phase that follows Adam.

    Args:
        max_iter: total L-BFGS iterations per stage (0 disables L-BFGS).
        iterations_per_step: iterations per Lightning training step; logging and checkpoints
            happen between steps, and the curvature history carries over.
        lr: step length scale (1 with a line search).
        history_size: stored curvature pairs.
        tolerance_grad: stop when the largest gradient entry falls below this.
        tolerance_change: stop when the loss or the parameters change less than this.
        line_search_fn: ``"strong_wolfe"`` (default, robust) or ``"none"`` (fixed step ``lr``).
    """

    max_iter: int = 500
    iterations_per_step: int = 50
    lr: float = 1.0
    history_size: int = 50
    tolerance_grad: float = 1e-9
    tolerance_change: float = 1e-12
    line_search_fn: Literal["strong_wolfe", "none"] = "strong_wolfe"

    def __post_init__(self) -> None:
        if self.max_iter < 0 or self.iterations_per_step < 1:
            raise ValueError(
                f"lbfgs.max_iter must be >= 0 and lbfgs.iterations_per_step >= 1, got "
                f"{self.max_iter} and {self.iterations_per_step}"
            )
        if self.line_search_fn not in ("strong_wolfe", "none"):
            raise ValueError(
                "lbfgs.line_search_fn must be 'strong_wolfe' or 'none', "
                f"got {self.line_search_fn!r}"
            )


@dataclass
class _Schedule:
    """Where training stands; saved in checkpoints so a resumed run continues the same phase."""

    stage: int = 0
    phase: Literal["adam", "lbfgs"] = "adam"
    done: int = 0  # Adam steps or L-BFGS iterations done in this phase
    converged: bool = False
    lbfgs_iterations: int = 0  # all stages, as counted by torch's L-BFGS
    lbfgs_evaluations: int = 0


class PhysicsInformedTask(Task, abc.ABC):
    """A :class:`Task` trained by full-batch Adam then L-BFGS, possibly in several stages.

    Training uses Lightning's manual optimisation: each training step is one Adam step, or
    ``lbfgs.iterations_per_step`` L-BFGS iterations through a closure (strong-Wolfe line search by
    default). Each of the :attr:`num_stages` stages runs ``adam_steps // num_stages`` Adam steps
    then up to ``lbfgs.max_iter // num_stages`` L-BFGS iterations, with fresh optimiser states;
    subclasses use :attr:`stage` for curricula and time marching. When every stage is done (or
    L-BFGS converged in the last one) the model stops the trainer itself, so run it with
    ``max_epochs=-1`` or a large value (one training step per epoch, the batch is the whole set).

    The real L-BFGS iteration and loss-evaluation counts are logged as
    ``train/lbfgs_iterations`` and ``train/lbfgs_evaluations``. A non-finite loss raises
    :class:`~sciml.models.NonFiniteLossError` naming the step and the terms, with the weights of
    the last finite state. An L-BFGS chunk that ends non-finite is undone and retried from
    scratch with half the step length (up to 3 times) before that.

    Subclasses store ``adam_steps``, ``optimizer`` and ``lbfgs`` hyperparameters and their PDE
    as ``self.problem``; a data module with a different ``problem`` is rejected in :meth:`setup`.
    """

    differentiates_inputs = True

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._schedule = _Schedule()

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        data_problem = getattr(datamodule, "problem", None)
        if data_problem is not None and not data_problem.poses_the_same_problem(self.problem):
            raise ValueError(
                f"model.problem {self.problem} differs from data.problem {data_problem}"
            )

    @property
    def num_stages(self) -> int:
        """Number of training stages (1 unless a subclass marches in time or speed)."""
        return 1

    @property
    def stage(self) -> int:
        return min(self._schedule.stage, self.num_stages - 1)

    def lbfgs_config(self) -> LBFGSConfig:
        config = self.hparams.get("lbfgs", LBFGSConfig())
        return LBFGSConfig(**config) if isinstance(config, dict) else config

    def configure_optimizers(self) -> Any:
        config = self.optimizer_config()
        adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
            config.name
        ](self.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        lbfgs_config = self.lbfgs_config()
        lbfgs = torch.optim.LBFGS(
            self.parameters(),
            lr=lbfgs_config.lr,
            max_iter=lbfgs_config.iterations_per_step,
            history_size=lbfgs_config.history_size,
            tolerance_grad=lbfgs_config.tolerance_grad,
            tolerance_change=lbfgs_config.tolerance_change,
            line_search_fn=None
            if lbfgs_config.line_search_fn == "none"
            else lbfgs_config.line_search_fn,
        )
        return [adam, lbfgs]

    def _adam_steps_per_stage(self) -> int:
        return int(self.hparams.get("adam_steps", 0)) // self.num_stages

    def _lbfgs_iterations_per_stage(self) -> int:
        return self.lbfgs_config().max_iter // self.num_stages

    def _learning_rate(self, step_in_stage: int) -> float:
        config: OptimizerConfig = self.optimizer_config()
        if config.scheduler == "cosine":
            total = max(self._adam_steps_per_stage(), 1)
            return 0.5 * config.lr * (1 + math.cos(math.pi * min(step_in_stage, total) / total))
        if config.scheduler == "exponential":
            return config.lr * config.gamma**step_in_stage
        return config.lr

    def _advance(self) -> bool:
        """Move to the next phase/stage when the current one is finished; False when all are."""
        s = self._schedule
        while s.stage < self.num_stages:
            if s.phase == "adam":
                if s.done < self._adam_steps_per_stage():
                    return True
                s.phase, s.done = "lbfgs", 0
                self._reset(1)
                continue
            if s.done < self._lbfgs_iterations_per_stage() and not s.converged:
                return True
            s.stage, s.phase, s.done, s.converged = s.stage + 1, "adam", 0, False
            self._reset(0)
        return False

    def _reset(self, index: int) -> None:
        optimizer = self.optimizers()[index].optimizer
        optimizer.state.clear()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if not self._advance():
            self.trainer.should_stop = True
            return None
        if self._schedule.phase == "adam":
            loss, terms = self._adam_step(batch, batch_idx)
        else:
            loss, terms = self._lbfgs_step(batch, batch_idx)
        s = self._schedule
        terms = {
            **terms,
            "stage": float(s.stage),
            "lbfgs_iterations": float(s.lbfgs_iterations),
            "lbfgs_evaluations": float(s.lbfgs_evaluations),
        }
        self._log_terms("train", loss, terms, batch)
        if not self._advance():
            self.trainer.should_stop = True
        return loss

    def _adam_step(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, dict[str, Any]]:
        optimizer = self.optimizers()[0]
        for group in optimizer.param_groups:
            group["lr"] = self._learning_rate(self._schedule.done)
        optimizer.zero_grad()
        loss, terms = self.compute_loss(batch, "train")
        self._check_finite(loss, terms, batch_idx)
        self.manual_backward(loss)
        optimizer.step()
        self._schedule.done += 1
        return loss.detach(), terms

    def _lbfgs_step(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, dict[str, Any]]:
        optimizer = self.optimizers()[1]
        lbfgs = optimizer.optimizer
        s = self._schedule
        chunk = min(
            self.lbfgs_config().iterations_per_step, self._lbfgs_iterations_per_stage() - s.done
        )
        for group in optimizer.param_groups:
            group["max_iter"], group["max_eval"] = chunk, chunk * 5 // 4
        saved = [p.detach().clone() for p in self.parameters()]

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss, _ = self.compute_loss(batch, "train")
            self.manual_backward(loss)
            return loss

        for _ in range(_LBFGS_RETRIES + 1):
            state = lbfgs.state[lbfgs._params[0]]
            iterations, evaluations = state.get("n_iter", 0), state.get("func_evals", 0)
            optimizer.step(closure=closure)
            state = lbfgs.state[lbfgs._params[0]]
            done = state.get("n_iter", 0) - iterations
            evaluated = state.get("func_evals", 0) - evaluations
            s.lbfgs_iterations += done
            s.lbfgs_evaluations += evaluated
            loss, terms = self.compute_loss(batch, "train")
            if torch.isfinite(loss):
                break
            # A line-search trial left the finite region (e.g. X_xi -> 0 in a Lagrangian
            # model): undo the chunk, forget the curvature pairs and retry with shorter steps.
            with torch.no_grad():
                for p, value in zip(self.parameters(), saved, strict=True):
                    p.copy_(value)
            lbfgs.state.clear()
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        else:
            self._check_finite(loss, terms, batch_idx)
        s.done += done
        # torch's L-BFGS stops early only on its tolerances (or the evaluation cap).
        s.converged = done < chunk and evaluated < chunk * 5 // 4
        return loss.detach(), terms

    def _check_finite(self, loss: torch.Tensor, terms: dict[str, Any], batch_idx: int) -> None:
        phase = f"{self._schedule.phase} phase of stage {self._schedule.stage}, batch {batch_idx}"
        self.check_finite_loss(loss, terms, where=phase, advice="Lower the learning rate")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["physics_informed_schedule"] = asdict(self._schedule)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "physics_informed_schedule" in checkpoint:
            self._schedule = _Schedule(**checkpoint["physics_informed_schedule"])
