"""A neural-ODE classifier: encoder -> ODE block -> linear head."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..nn import activation
from ..regularizers import AbstractRegularizer, solve_regularized
from ..solvers import ODESolverConfig, SolverStats
from ._base import OptimizerConfig, Task

__all__ = ["ODEClassifier"]


class _TimeConcatMLP(nn.Module):
    r"""Two-layer vector field with the time fed to *every* layer (the reference's ``TDChain``):
    $f(t, z) = W_2[\sigma(W_1[z, t] + b_1), t] + b_2$, ``(B, d) -> (B, d)``."""

    def __init__(self, dim: int, hidden_dim: int, activation_name: str) -> None:
        super().__init__()
        self.inner = nn.Linear(dim + 1, hidden_dim)
        self.activation = activation(activation_name)
        self.outer = nn.Linear(hidden_dim + 1, dim)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t_column = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(len(z), 1)
        hidden = self.activation(self.inner(torch.cat([z, t_column], dim=-1)))
        return self.outer(torch.cat([hidden, t_column], dim=-1))


class ODEClassifier(Task):
    r"""Classifier whose hidden layer is a neural ODE, as in the MNIST experiments of the
    local-regularization paper.

    $z_0 = E(x)$ (flatten, then a linear map when ``state_dim`` is set), $\dot z = f_\theta(t, z)$
    on $[0, T]$ with $f_\theta$ a two-layer MLP taking $t$ at both layers, logits $= W z(T) + b$,
    cross-entropy loss. Works with any loader whose batches are ``{"x", "y"}`` dicts or
    ``(x, y)`` tuples, ``x`` of shape ``(B, ...)`` flattening to ``input_dim`` and integer labels
    ``y (B,)``.

    **Regularization** (training only): ``regularizers`` add $\sum_i \lambda_i R_i$; training logs
    ``train/reg``, ``train/reg_<name>``, ``train/nfe`` (forward solve), ``train/nfe_reg`` and
    ``train/nfe_backward`` (adjoint evaluations, 0 with backprop). Validation logs ``val/ce``,
    ``val/acc`` and ``val/nfe`` per batch. Test logs ``test/ce``, ``test/acc`` and ``test/nfe``:
    the evaluations of **one** plain forward solve over the whole test set, so the cost measure
    does not depend on the test batch size.

    Args:
        input_dim: size of a flattened input.
        n_classes: number of classes.
        state_dim: ODE state size; ``None`` keeps the flattened input (no encoder weights).
        hidden_dim: hidden width of the vector field.
        activation: its activation.
        t_end: $T$.
        solver: ODE solver settings.
        optimizer: optimizer settings.
        regularizers: training-only ODE regularizers (YAML: list of ``class_path``/``init_args``);
            stored in checkpoint hyperparameters by their ``config()``.

    Shapes:
        ``forward(x (B, ...)) -> logits (B, n_classes)``.
    """

    def __init__(
        self,
        input_dim: int = 64,
        n_classes: int = 10,
        state_dim: int | None = None,
        hidden_dim: int = 100,
        activation: str = "tanh",
        t_end: float = 1.0,
        solver: ODESolverConfig = ODESolverConfig(rtol=1e-6, atol=1e-6),  # noqa: B008
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
        regularizers: list[AbstractRegularizer] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["regularizers"])
        for name, value in (("input_dim", input_dim), ("n_classes", n_classes)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(t_end) and t_end > 0):
            raise ValueError(f"t_end must be positive and finite, got {t_end}")
        dim = input_dim if state_dim is None else state_dim
        self.encoder = nn.Identity() if state_dim is None else nn.Linear(input_dim, state_dim)
        self.vector_field = _TimeConcatMLP(dim, hidden_dim, activation)
        self.head = nn.Linear(dim, n_classes)
        self.solver = ODESolverConfig(**solver) if isinstance(solver, dict) else solver
        self.regularizers = nn.ModuleList(self.store_regularizers("regularizers", regularizers))
        self.last_stats: SolverStats | None = None
        self._test_inputs: list[torch.Tensor] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, ...) -> z0 (B, d)``."""
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != self.hparams.input_dim:
            raise ValueError(
                f"inputs flatten to {flat.shape[1]} features but input_dim={self.hparams.input_dim}"
            )
        return self.encoder(flat.to(self.head.weight.dtype))

    def times(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, self.hparams.t_end], dtype=like.dtype, device=like.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a plain (unregularized) solve; its statistics land in ``last_stats``."""
        z0 = self.encode(x)
        zs, self.last_stats = self.solver.solve(self.vector_field, z0, self.times(z0))
        return self.head(zs[-1])

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Logits of a batch (``{"x", ...}`` dict, ``(x, ...)`` tuple or a bare ``x``)."""
        if isinstance(batch, dict):
            x = batch["x"]
        elif isinstance(batch, (list, tuple)):
            x = batch[0]
        else:
            x = batch
        return self(x)

    @staticmethod
    def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, dict):
            return batch["x"], batch["y"]
        x, y = batch[0], batch[1]
        return x, y

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        x, labels = self._unpack(batch)
        terms: dict[str, Any] = {}
        penalty = None
        if stage == "train" and self.regularizers:
            z0 = self.encode(x)
            solution = solve_regularized(
                self.solver, self.vector_field, z0, self.times(z0), self.regularizers
            )
            self.last_stats = solution.stats
            logits = self.head(solution.ys[-1])
            penalty, reg_terms = solution.weighted_penalty(
                self.regularizers, self.global_step, self.total_steps()
            )
            terms.update(reg_terms, nfe_reg=float(solution.nfe_reg))
        else:
            logits = self(x)
        ce = nn.functional.cross_entropy(logits, labels)
        terms["ce"] = ce.detach()
        terms["acc"] = (logits.argmax(-1) == labels).float().mean()
        if stage == "test":
            self._test_inputs.append(x.detach())
        else:
            terms["nfe"] = float(self.last_stats.nfe_forward)
        loss = ce if penalty is None else ce + penalty
        return loss, terms

    def on_test_epoch_start(self) -> None:
        self._test_inputs = []

    def on_test_epoch_end(self) -> None:
        if not self._test_inputs:
            return
        with torch.no_grad():
            self(torch.cat(self._test_inputs))
        self.log("test/nfe", float(self.last_stats.nfe_forward))
        self._test_inputs = []

    def on_after_backward(self) -> None:
        # The adjoint's backward evaluations are only known once backward has run.
        if self.last_stats is not None and (self.solver.adjoint or self.regularizers):
            self.log("train/nfe_backward", float(self.last_stats.nfe_backward), on_step=True)
