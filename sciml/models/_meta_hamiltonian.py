"""Meta-learned Hamiltonian graph networks (Song & Jeong, ICLR 2024) with MAML, and baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.func import functional_call

from ..metrics import linear_cka
from ..nn import HamiltonianGraphNetwork, symplectic_gradient
from ..solvers import ImplicitSolveError, implicit_midpoint, rk4
from ._base import OptimizerConfig, Task

__all__ = [
    "MetaHamiltonian",
    "hamiltonian_derivative_loss",
    "learned_vector_field",
    "maml_inner_step",
]

MODES = ("maml", "reptile", "pretrained", "scratch")
ADAPTED = ("all", "readout")
ROLLOUT_METHODS = ("rk4", "implicit_midpoint")
Params = dict[str, torch.Tensor]


def learned_vector_field(
    network: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    create_graph: bool = False,
) -> torch.Tensor:
    r"""$\dot x = J \nabla_x H_\theta(x)$ for the energy network run with ``params``.

    Args:
        network: maps ``(x (..., N, F), node_mask (N,))`` to energies ``(...)``.
        params: parameters by name (``functional_call``), e.g. adapted ones.
        x: states ``(..., N, F)``.
        mask: ``(N, F)`` real (1) / padded (0) features; padded nodes are left out of the graph.
        create_graph: keep the graph of the derivative, to differentiate the field w.r.t. params.
    """
    node_mask = mask.amax(-1)
    return symplectic_gradient(
        lambda z: functional_call(network, dict(params), (z, node_mask)),
        x,
        feature_mask=mask,
        create_graph=create_graph,
    )


def hamiltonian_derivative_loss(
    network: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    dx: torch.Tensor,
    mask: torch.Tensor,
    *,
    create_graph: bool = True,
    relative: bool = False,
) -> torch.Tensor:
    r"""Masked mean squared error $\frac{1}{K |mask|}\sum \|J\nabla H_\theta(x) - \dot x\|^2$.

    With ``relative`` it is divided by the targets' mean square $\frac{1}{K |mask|}\sum
    \|\dot x\|^2$, so tasks whose derivatives differ in scale weigh (and adapt) alike.

    Shapes: ``x, dx (K, N, F)``, ``mask (N, F)``; returns a scalar.
    """
    field = learned_vector_field(network, params, x, mask, create_graph=create_graph)
    error = ((field - dx) ** 2 * mask).sum()
    scale = (dx**2 * mask).sum() if relative else x.shape[0] * mask.sum()
    return error / scale


def maml_inner_step(
    network: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    dx: torch.Tensor,
    mask: torch.Tensor,
    *,
    lr: float | Mapping[str, torch.Tensor],
    first_order: bool = False,
    differentiable: bool = True,
    relative: bool = False,
    adapted: Sequence[str] | None = None,
) -> Params:
    r"""One SGD step of MAML's inner loop, $\theta' = \theta - \alpha \odot \nabla_\theta L_S$.

    Args:
        network, params: the energy network and the parameters to adapt.
        x, dx, mask: the support set, ``(K, N, F)`` twice and ``(N, F)``.
        lr: inner learning rate $\alpha$: a float, or per-parameter tensors by name
            (Meta-SGD's learned rates, shaped like the parameters; they receive the outer
            gradient like the initialisation does).
        adapted: names of the parameters to update (default all; ANIL: the readout only). The
            others are passed through unchanged.
        first_order: treat $\nabla_\theta L_S$ as a constant (first-order MAML): the outer
            gradient then skips the second derivatives $\nabla^2_\theta L_S$.
        relative: adapt on the relative loss (see :func:`hamiltonian_derivative_loss`).
        differentiable: keep $\theta'$ connected to $\theta$ (training); ``False`` returns
            detached leaves (evaluation, where only the adapted values matter).
    """
    names = list(params) if adapted is None else [n for n in params if n in adapted]
    second_order = differentiable and not first_order
    loss = hamiltonian_derivative_loss(
        network, params, x, dx, mask, create_graph=True, relative=relative
    )
    # Unused parameters (edge MLP of one-body systems, the energy's constant offset, which the
    # vector field never sees) get no gradient and stay as they are.
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], create_graph=second_order, allow_unused=True
    )
    rates = lr if isinstance(lr, Mapping) else dict.fromkeys(names, lr)
    updated = dict(params)
    for n, g in zip(names, grads, strict=True):
        if g is not None:
            updated[n] = params[n] - rates[n] * g
    if differentiable:
        return updated
    return {n: p.detach().requires_grad_(True) for n, p in updated.items()}


class MetaHamiltonian(Task):
    r"""A graph network Hamiltonian $H_\theta(q, p)$ whose initialisation adapts to new physics.

    The dynamics are $\dot q = \partial H_\theta/\partial p$,
    $\dot p = -\partial H_\theta/\partial q$ by autograd, so the learned vector field is
    symplectic (divergence-free) by construction.
    Batches are *tasks* (a system type with drawn parameters, see
    :class:`~sciml.data.HamiltonianMetaDataModule`). ``mode`` picks the training rule:

    * ``"maml"``: for each task, ``inner_steps`` SGD steps of size ``inner_lr`` on the support
      derivative loss give $\theta'$; the outer loss is the query loss at $\theta'$, averaged over
      the meta-batch and minimised with ``optimizer`` (Adam; MAML's second-order gradient unless
      ``first_order``).
    * ``"reptile"`` (Nichol et al. 2018): for each task, ``inner_steps`` plain SGD steps of size
      ``inner_lr`` on the pooled support and query points give $\phi_t$; the outer optimizer
      receives $g = \frac{1}{T}\sum_t (\theta - \phi_t) / (k \alpha)$, the mean loss gradient
      along each task's inner SGD path. First order and cheap per step, so the meta-training
      inner loop can take as many steps as evaluation adapts with; with ``inner_steps=1`` it is
      exactly ``"pretrained"``.
    * ``"pretrained"``: multi-task regression on the pooled support and query points of the
      batch (the paper's pretrained baseline); adapted at evaluation like the others.
    * ``"scratch"``: training leaves the random initialisation untouched (losses are still
      logged): the from-scratch baseline.

    Options of the inner loop (MAML family): ``first_order`` (FOMAML), ``learn_inner_lr``
    (Meta-SGD, Li et al. 2017: a learned step size per parameter entry, $\theta' = \theta -
    \alpha \odot \nabla_\theta L_S$, meta-trained with $\theta$), and ``adapt="readout"``
    (ANIL, Raghu et al. 2020: only the readout, the node MLP's last layer, adapts; in training
    and at evaluation, for every mode).

    Training logs the outer loss and, on the steps the loggers write, the query loss before
    adaptation (MAML) or the pooled loss after it (Reptile); those cost one more evaluation per
    task and are skipped on the other steps.

    Evaluation (val/test) adapts each held-out task from the current weights with
    ``max(eval_steps)`` SGD steps of size ``adapt_lr`` on its support set and logs the query
    derivative MSE after each ``k`` in ``eval_steps`` as ``deriv_mse_k{k}``. Test also rolls out
    the learned field (RK4 or the symplectic implicit midpoint rule) from the start of the
    task's held-out trajectory and logs
    ``traj_rel_err_k{k}`` (relative L2 over the trajectory), ``energy_drift_k{k}`` (drift of the
    learned $H_\theta$ along its own rollout, relative to the spread of $H_\theta$ on the query
    points) and, when the data module exposes its systems, ``energy_err_k{k}`` (mean relative
    error of the true energy along the rollout).

    Args:
        node_dim: features per node $2D$ (must match the data's padding ``2*body_dim``).
        hidden_dims, message_dim, activation: the graph network (smooth activation).
        mode: ``"maml"``, ``"reptile"``, ``"pretrained"`` or ``"scratch"``.
        inner_lr: MAML / Reptile inner learning rate $\alpha$ (paper: 1e-3).
        inner_steps: MAML / Reptile inner SGD steps $k$ (paper, MAML: 1).
        first_order: first-order MAML.
        relative_loss: train and adapt on the derivative MSE divided by the task's target mean
            square, so that systems with small derivatives weigh (and adapt) as much as the
            others. Evaluation always reports the plain MSE.
        learn_inner_lr: Meta-SGD: per-parameter inner step sizes, initialised to
            ``inner_lr`` and learned in the outer loop (``mode="maml"`` only); evaluation then
            adapts with them.
        inner_lr_lr_factor: the outer learning rate of Meta-SGD's rates is
            ``optimizer.lr`` times this. The rates are learned as logarithms, so one Adam step
            changes a rate by about ``optimizer.lr x factor`` *relative*; Li et al. (2017) learn
            the rates themselves, about ``1 / inner_lr`` times faster.
        adapt: ``"all"`` parameters or only the ``"readout"`` (ANIL) in the inner loop and at
            evaluation.
        adapt_lr: SGD step size at evaluation (default ``inner_lr``; with ``learn_inner_lr``
            the learned rates are used).
        eval_steps: adaptation step counts reported at evaluation.
        rollout_step_size: step of the test rollouts.
        rollout_method: ``"rk4"`` or ``"implicit_midpoint"`` (symplectic for the learned,
            generally non-separable $H_\theta$) for the test rollouts.
        optimizer: outer optimizer (paper: Adam 5e-4).

    Shapes:
        ``forward(x (..., N, F), mask (N, F)) -> (..., N, F)`` time derivatives.
    """

    differentiates_inputs = True

    def __init__(
        self,
        node_dim: int = 2,
        hidden_dims: Sequence[int] = (64, 64),
        message_dim: int = 32,
        activation: str = "softplus",
        mode: Literal["maml", "reptile", "pretrained", "scratch"] = "maml",
        inner_lr: float = 1e-3,
        inner_steps: int = 1,
        first_order: bool = False,
        relative_loss: bool = False,
        learn_inner_lr: bool = False,
        inner_lr_lr_factor: float = 1.0,
        adapt: Literal["all", "readout"] = "all",
        adapt_lr: float | None = None,
        eval_steps: Sequence[int] = (0, 1, 5, 10),
        rollout_step_size: float = 0.05,
        rollout_method: Literal["rk4", "implicit_midpoint"] = "rk4",
        optimizer: OptimizerConfig = OptimizerConfig(lr=5e-4),  # noqa: B008 (frozen dataclass)
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if inner_lr <= 0 or (adapt_lr is not None and adapt_lr <= 0):
            raise ValueError(f"inner_lr and adapt_lr must be positive, got {inner_lr}, {adapt_lr}")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        if not eval_steps or min(eval_steps) < 0:
            raise ValueError(f"eval_steps must be non-negative step counts, got {eval_steps}")
        if rollout_step_size <= 0:
            raise ValueError(f"rollout_step_size must be positive, got {rollout_step_size}")
        if adapt not in ADAPTED:
            raise ValueError(f"adapt must be one of {ADAPTED}, got {adapt!r}")
        if rollout_method not in ROLLOUT_METHODS:
            raise ValueError(
                f"rollout_method must be one of {ROLLOUT_METHODS}, got {rollout_method!r}"
            )
        if learn_inner_lr and mode != "maml":
            raise ValueError(f"learn_inner_lr (Meta-SGD) needs mode='maml', got mode={mode!r}")
        if inner_lr_lr_factor <= 0:
            raise ValueError(f"inner_lr_lr_factor must be positive, got {inner_lr_lr_factor}")
        if mode == "reptile" and adapt != "all":
            # Reptile moves the initialisation towards the adapted weights, so parameters that
            # never adapt would never be trained.
            raise ValueError(f"mode='reptile' needs adapt='all', got adapt={adapt!r}")
        self.optimizer = OptimizerConfig(**optimizer) if isinstance(optimizer, dict) else optimizer
        self.network = HamiltonianGraphNetwork(node_dim, hidden_dims, message_dim, activation)
        self.adapted_names = (
            None if adapt == "all" else tuple(self.network.readout_parameter_names())
        )
        # Meta-SGD rates as logs (positive, scale-free updates); "." is not allowed in the keys.
        self.log_inner_lrs = (
            torch.nn.ParameterDict(
                {
                    n.replace(".", "__"): torch.nn.Parameter(torch.full_like(p, math.log(inner_lr)))
                    for n, p in self.network.named_parameters()
                }
            )
            if learn_inner_lr
            else None
        )
        self.automatic_optimization = False

    def setup(self, stage: str) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        body_dim = getattr(datamodule, "body_dim", None)
        if body_dim is not None and 2 * body_dim != self.hparams.node_dim:
            raise ValueError(
                f"model.init_args.node_dim={self.hparams.node_dim} but the data has "
                f"body_dim={body_dim} (node_dim must be 2 * body_dim: q and p per body)"
            )

    def optimizer_config(self) -> OptimizerConfig:
        return self.optimizer

    def parameter_groups(self) -> list[dict[str, Any]]:
        if self.log_inner_lrs is None:
            return super().parameter_groups()
        rates_lr = self.optimizer.lr * self.hparams.inner_lr_lr_factor
        return [
            {"params": list(self.network.parameters())},
            {"params": list(self.log_inner_lrs.parameters()), "lr": rates_lr},
        ]

    def params(self) -> Params:
        """The network's current parameters by name (the MAML initialisation $\\theta$)."""
        return dict(self.network.named_parameters())

    def inner_lrs(self, scale: float = 1.0) -> float | Params:
        """Inner step sizes times ``scale``: Meta-SGD's per-parameter rates, or ``inner_lr``."""
        if self.log_inner_lrs is None:
            return scale * self.hparams.inner_lr
        return {n.replace("__", "."): scale * v.exp() for n, v in self.log_inner_lrs.items()}

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return learned_vector_field(self.network, self.params(), x, mask)

    def energy(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor):
        """$H_\\theta(x)$ for states ``(..., N, F)`` with the given parameters."""
        return functional_call(self.network, dict(params), (x, mask.amax(-1)))

    @torch.no_grad()
    def hidden_features(
        self, params: Mapping[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        r"""Hidden activations of the energy network run with ``params`` on states ``x (K, N, F)``.

        Returns ``{"edge1": (K E, width), ..., "node1": (K N_real, width), ...}``: one row per
        real node (or real edge $i \neq j$) and state, the representation CKA compares. Edge
        layers are left out for one-body systems (no edges).
        """
        network = self.network
        node_weights = mask.amax(-1)
        node_mask = node_weights > 0
        edge_mask = network.edge_weights(node_weights) > 0
        captured: dict[str, torch.Tensor] = {}
        handles = [
            network.get_submodule(module).register_forward_hook(
                lambda _m, _i, out, key=key: captured.__setitem__(key, out)
            )
            for key, module in network.hidden_layer_names().items()
        ]
        try:
            self.energy(params, x, mask)
        finally:
            for handle in handles:
                handle.remove()
        features = {}
        for key, out in captured.items():
            rows = out[:, edge_mask] if key.startswith("edge") else out[:, node_mask]
            if rows.numel():
                features[key] = rows.reshape(-1, out.shape[-1])
        return features

    # -- training -------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The base computes the loss, stops on a non-finite one (before any update) and logs.
        loss = super().training_step(batch, batch_idx)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        if self.hparams.mode != "scratch":
            self.manual_backward(loss)
        # In scratch mode no parameter has a gradient, so the step changes no weight; it only
        # advances the step counters (``max_steps``, logging, checkpoints).
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.optimizer.scheduler == "cosine":
            scheduler.step()
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.optimizer.scheduler == "exponential":
            scheduler.step()

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if stage == "train":
            return self._training_loss(batch)
        return self._evaluation_loss(batch, rollouts=stage == "test")

    def _training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        hp = self.hparams
        if hp.mode == "reptile":
            return self._reptile_loss(batch)
        params = self.params()
        task_losses, pre_adaptation = [], []
        diagnose = self.logs_this_step()
        for i in range(len(batch["mask"])):
            sx, sdx, qx, qdx, mask = (
                batch[k][i] for k in ("support_x", "support_dx", "query_x", "query_dx", "mask")
            )
            if hp.mode != "maml":
                x, dx = torch.cat([sx, qx]), torch.cat([sdx, qdx])
                task_losses.append(
                    hamiltonian_derivative_loss(
                        self.network, params, x, dx, mask, relative=hp.relative_loss
                    )
                )
                continue
            adapted = params
            for _ in range(hp.inner_steps):
                adapted = maml_inner_step(
                    self.network,
                    adapted,
                    sx,
                    sdx,
                    mask,
                    lr=self.inner_lrs(),
                    first_order=hp.first_order,
                    relative=hp.relative_loss,
                    adapted=self.adapted_names,
                )
            task_losses.append(
                hamiltonian_derivative_loss(
                    self.network, adapted, qx, qdx, mask, relative=hp.relative_loss
                )
            )
            if not diagnose:
                continue
            with torch.no_grad():
                pre_adaptation.append(
                    hamiltonian_derivative_loss(
                        self.network,
                        params,
                        qx,
                        qdx,
                        mask,
                        create_graph=False,
                        relative=hp.relative_loss,
                    )
                )
        loss = torch.stack(task_losses).mean()
        name = "deriv_rel_mse" if hp.relative_loss else "deriv_mse"
        terms: dict[str, Any] = {name: loss.detach()}
        if pre_adaptation:
            terms[f"{name}_before_adaptation"] = torch.stack(pre_adaptation).mean()
        return loss, terms

    def _reptile_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        r"""Pre-adaptation pooled loss as the value; its gradient w.r.t. the parameters is the
        Reptile direction (a linear surrogate $\langle\theta, g\rangle$ minus its value), so the
        usual ``manual_backward`` applies it and a non-finite direction makes the value NaN."""
        hp = self.hparams
        params = self.params()
        steps_times_lr = hp.inner_steps * hp.inner_lr
        diagnose = self.logs_this_step()
        direction = {n: torch.zeros_like(p) for n, p in params.items()}
        before, after = [], []
        for i in range(len(batch["mask"])):
            x = torch.cat([batch["support_x"][i], batch["query_x"][i]])
            dx = torch.cat([batch["support_dx"][i], batch["query_dx"][i]])
            mask = batch["mask"][i]
            adapted = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            for _ in range(hp.inner_steps):
                adapted = maml_inner_step(
                    self.network,
                    adapted,
                    x,
                    dx,
                    mask,
                    lr=hp.inner_lr,
                    differentiable=False,
                    relative=hp.relative_loss,
                )
            for n, p in params.items():
                direction[n] += (p.detach() - adapted[n].detach()) / steps_times_lr
            evaluated = [(before, params), (after, adapted)] if diagnose else [(before, params)]
            for losses, weights in evaluated:
                with torch.no_grad():
                    losses.append(
                        hamiltonian_derivative_loss(
                            self.network,
                            weights,
                            x,
                            dx,
                            mask,
                            create_graph=False,
                            relative=hp.relative_loss,
                        )
                    )
        tasks = len(batch["mask"])
        surrogate = sum((p * (direction[n] / tasks)).sum() for n, p in params.items())
        value = torch.stack(before).mean()
        loss = value + surrogate - surrogate.detach()
        name = "deriv_rel_mse" if hp.relative_loss else "deriv_mse"
        terms: dict[str, Any] = {name: value}
        if after:
            terms[f"{name}_after_adaptation"] = torch.stack(after).mean()
        return loss, terms

    # -- evaluation -----------------------------------------------------------------------------

    def adapt_and_evaluate(
        self,
        task: Mapping[str, torch.Tensor],
        *,
        steps: Sequence[int] | None = None,
        lr: float | None = None,
        lr_scale: float = 1.0,
        rollout_steps: Sequence[int] = (),
        system: Any = None,
        extra_rollout_methods: Sequence[str] = (),
        representation_steps: Sequence[int] = (),
    ) -> dict[str, float]:
        """Adapt to one task from the current weights and measure, after each ``k`` in ``steps``.

        Args:
            task: one task's tensors (``support_x``, ..., ``mask``, ``rollout_x``, ``rollout_t``,
                ``parameters``), without a batch dimension.
            steps: adaptation step counts to report (default ``eval_steps``).
            lr: SGD step size (default ``adapt_lr``, else ``inner_lr``; with Meta-SGD the
                learned rates unless given).
            lr_scale: multiplies the step size(s), e.g. chosen on validation tasks.
            rollout_steps: the ``k`` (among ``steps``) after which the adapted field is also
                rolled out (trajectory and energy errors).
            system: a :class:`~sciml.data.HamiltonianSystem` of the task, for the true energy.
            extra_rollout_methods: integrators rolled out besides ``rollout_method``; their
                metrics are named ``{name}_{method}_k{k}``.
            representation_steps: the ``k`` (among ``steps``) after which each hidden layer's
                representation of the query states is compared with the unadapted one
                (:meth:`hidden_features`, :func:`~sciml.metrics.linear_cka`): 1 means the
                adaptation left the layer's features unchanged up to rotation and scale.

        Returns:
            A dict with ``deriv_mse_k{k}`` (and ``deriv_rel_mse_k{k}``, divided by the query
            targets' mean square) for each ``k`` in ``steps``; for each ``k`` in
            ``rollout_steps`` also ``traj_rel_err_k{k}`` and ``energy_drift_k{k}``, and with
            ``system`` ``energy_err_k{k}``; for each ``k`` in ``representation_steps``
            ``cka_{layer}_k{k}`` (layers as in :meth:`hidden_features`).
        """
        hp = self.hparams
        steps = sorted(set(hp.eval_steps if steps is None else steps))
        if lr is not None or self.log_inner_lrs is None:
            rates: float | Params = lr_scale * (lr or hp.adapt_lr or hp.inner_lr)
        else:
            rates = {n: r.detach() for n, r in self.inner_lrs(lr_scale).items()}
        sx, sdx, qx, qdx, mask = (
            task[k] for k in ("support_x", "support_dx", "query_x", "query_dx", "mask")
        )
        params = {n: p.detach().clone().requires_grad_(True) for n, p in self.params().items()}
        metrics: dict[str, float] = {}
        target_mean_square = float((qdx**2 * mask).sum() / (qdx.shape[0] * mask.sum()))
        initial_features = self.hidden_features(params, qx, mask) if representation_steps else {}
        done = 0
        for k in steps:
            for _ in range(k - done):
                params = maml_inner_step(
                    self.network,
                    params,
                    sx,
                    sdx,
                    mask,
                    lr=rates,
                    differentiable=False,
                    relative=hp.relative_loss,
                    adapted=self.adapted_names,
                )
            done = k
            mse = hamiltonian_derivative_loss(
                self.network, params, qx, qdx, mask, create_graph=False
            )
            metrics[f"deriv_mse_k{k}"] = float(mse.detach())
            metrics[f"deriv_rel_mse_k{k}"] = metrics[f"deriv_mse_k{k}"] / target_mean_square
            if k in representation_steps:
                for layer, features in self.hidden_features(params, qx, mask).items():
                    metrics[f"cka_{layer}_k{k}"] = _cka_or_nan(initial_features[layer], features)
            if k in rollout_steps:
                for method in (hp.rollout_method, *extra_rollout_methods):
                    suffix = "" if method == hp.rollout_method else f"_{method}"
                    for name, value in self._rollout_metrics(params, task, system, method).items():
                        metrics[f"{name}{suffix}_k{k}"] = value
        return metrics

    def rollout(
        self,
        params: Mapping[str, torch.Tensor],
        x0: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        method: str | None = None,
    ) -> torch.Tensor:
        """Solution ``(T, N, F)`` of the learned field from ``x0 (N, F)`` at times ``t``.

        ``method`` (default ``rollout_method``): ``"rk4"`` or ``"implicit_midpoint"`` (solved by
        fixed-point iteration to float tolerance; raises
        :class:`~sciml.solvers.ImplicitSolveError` if it does not converge).
        """
        method = method or self.hparams.rollout_method
        if method not in ROLLOUT_METHODS:
            raise ValueError(f"method must be one of {ROLLOUT_METHODS}, got {method!r}")
        step = self.hparams.rollout_step_size

        def field(_: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return learned_vector_field(self.network, params, x, mask).detach()

        integrator = rk4 if method == "rk4" else implicit_midpoint
        return integrator(field, x0.detach(), t, step_size=step).ys

    def _rollout_metrics(
        self, params: Params, task: Mapping[str, torch.Tensor], system: Any, method: str
    ) -> dict[str, float]:
        truth, t, mask = task["rollout_x"], task["rollout_t"], task["mask"]
        try:
            predicted = self.rollout(params, truth[0], mask, t, method)
        except ImplicitSolveError:
            # A diverged adaptation (non-finite field) leaves the midpoint equation unsolvable;
            # report it as a non-finite rollout, as RK4 does, instead of stopping the evaluation.
            predicted = torch.full_like(truth, float("nan"))
        relative = torch.linalg.vector_norm(predicted - truth) / torch.linalg.vector_norm(truth)
        with torch.no_grad():
            learned = self.energy(params, predicted, mask)
            spread = self.energy(params, task["query_x"], mask)
        drift = (learned - learned[0]).abs().max() / (spread.max() - spread.min() + 1e-12)
        metrics = {"traj_rel_err": float(relative), "energy_drift": float(drift)}
        if system is not None:
            values = task["parameters"].tolist()[: len(system.parameters)]
            parameters = dict(zip(system.parameters, values, strict=True))
            flat = system.from_nodes(predicted.double().cpu().numpy())
            energy = system.energy(flat, parameters)
            e0 = system.energy(system.from_nodes(truth[0].double().cpu().numpy()), parameters)
            metrics["energy_err"] = float(np.mean(np.abs(energy - e0)) / (abs(e0) + 1e-12))
        return metrics

    def _evaluation_loss(
        self, batch: dict[str, torch.Tensor], *, rollouts: bool
    ) -> tuple[torch.Tensor, dict]:
        systems = getattr(getattr(self._trainer, "datamodule", None), "systems", None)
        per_task = []
        for i in range(len(batch["mask"])):
            task = {k: v[i] for k, v in batch.items()}
            system = systems[int(task["system"])] if systems is not None and rollouts else None
            per_task.append(
                self.adapt_and_evaluate(
                    task,
                    rollout_steps=self.hparams.eval_steps if rollouts else (),
                    representation_steps=[k for k in self.hparams.eval_steps if k > 0 and rollouts],
                    system=system,
                )
            )
        # Tasks of one-body systems have no edge layers, so not every task has every CKA key.
        names = dict.fromkeys(name for m in per_task for name in m)
        terms = {
            name: torch.tensor(_task_mean([m[name] for m in per_task if name in m], name))
            for name in names
        }
        loss = terms[f"deriv_mse_k{max(self.hparams.eval_steps)}"]
        return loss, terms


def _task_mean(values: list[float], name: str) -> float:
    """Mean over tasks; a diverged task makes an error NaN/inf (as it should), while CKA, a
    similarity undefined after divergence, is averaged over the tasks where it is defined."""
    if name.startswith("cka_"):
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return float("nan")
    return float(np.mean(values))


def _cka_or_nan(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA, or NaN where it is undefined (a diverged adaptation, a dead layer)."""
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return float("nan")
    try:
        return linear_cka(x, y)
    except ValueError:
        return float("nan")
