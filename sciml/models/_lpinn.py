"""Lagrangian physics-informed neural networks (Mojgani, Balajewicz, Hassanzadeh 2023)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from ..data import ConvectionDiffusion1D, fourier_interpolate
from ..metrics import relative_l2_centered
from ..nn import MLP, PeriodicEmbedding
from ._base import OptimizerConfig
from ._physics_informed import LBFGSConfig, PhysicsInformedTask

__all__ = ["CrossingCharacteristicsWarning", "LagrangianPINN", "lagrangian_residuals"]

Flow = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DIFFUSION_MODES = ("chain_rule", "label_space")
CHARACTERISTIC_PRIORS = ("none", "frozen_velocity")


class CrossingCharacteristicsWarning(UserWarning):
    """$X_\\xi \\le 0$ somewhere: particles crossed, the Lagrangian map is not invertible."""


def lagrangian_residuals(
    flow: Flow,
    problem: ConvectionDiffusion1D,
    xi: torch.Tensor,
    t: torch.Tensor,
    *,
    diffusion: Literal["chain_rule", "label_space"] = "chain_rule",
) -> dict[str, torch.Tensor]:
    r"""Residuals of the Lagrangian form of $u_t + f\,u_x = \nu u_{xx} + s$ along particles.

    A particle labelled by its start $\xi$ sits at $X(\xi, t)$ and carries $U(\xi, t)$:

    $$ r_x = X_t - f(U, X, t), \qquad r_u = U_t - \nu\,u_{xx} - s(U, X, t). $$

    With ``diffusion="chain_rule"`` (correct on any moving grid), $J = X_\xi$ and
    $u_{xx} = J^{-1}\,\partial_\xi (U_\xi / J)$. ``"label_space"`` uses $U_{\xi\xi}$, which is
    exact only when $J \equiv 1$ (constant-speed convection); it reproduces the paper's code.

    Args:
        flow: ``(xi, t) -> (X, U)``, differentiable, elementwise over ``(N,)`` tensors.
        problem: the PDE.
        xi, t: labels and times ``(N,)``.
        diffusion: ``"chain_rule"`` or ``"label_space"``.

    Returns:
        ``{"r_x", "r_u", "jacobian", "X", "U"}``, each ``(N,)``, differentiable (graph kept).
    """
    if diffusion not in DIFFUSION_MODES:
        raise ValueError(f"diffusion must be one of {DIFFUSION_MODES}, got {diffusion!r}")
    xi = xi.detach().requires_grad_(True)
    t = t.detach().requires_grad_(True)
    x_pos, u_val = flow(xi, t)
    ones = torch.ones_like(x_pos)
    x_t, jacobian = torch.autograd.grad(
        x_pos, (t, xi), ones, create_graph=True, materialize_grads=True
    )
    u_t, u_xi = torch.autograd.grad(u_val, (t, xi), ones, create_graph=True, materialize_grads=True)
    rhs = problem.source_torch(u_val, x_pos, t)
    if problem.nu > 0:
        if diffusion == "chain_rule":
            (flux_xi,) = torch.autograd.grad(
                u_xi / jacobian, xi, ones, create_graph=True, materialize_grads=True
            )
            u_xx = flux_xi / jacobian
        else:
            (u_xx,) = torch.autograd.grad(u_xi, xi, ones, create_graph=True, materialize_grads=True)
        rhs = rhs + problem.nu * u_xx
    return {
        "r_x": x_t - problem.velocity_torch(u_val, x_pos, t),
        "r_u": u_t - rhs,
        "jacobian": jacobian,
        "X": x_pos,
        "U": u_val,
    }


class LagrangianPINN(PhysicsInformedTask):
    r"""Lagrangian PINN: two networks for the characteristics and the state carried along them.

    For $u_t + f(u, x, t)\,u_x = \nu u_{xx} + s(u, x, t)$ on a periodic domain, particles start at
    their labels $\xi$ and follow $dX/dt = f(U, X, t)$ while $dU/dt = \nu u_{xx} + s$ (see
    :func:`lagrangian_residuals`). Initial conditions and periodicity are exact by construction,
    with inputs $e(\xi, t) = (\cos(2\pi\xi/L), \sin(2\pi\xi/L), t/T)$:

    $$ X = \xi + t\,s_f\,N_x(e), \qquad U = u_0(\xi) + t\,N_u(e), $$

    with $s_f = \max_x |f(u_0(x), x, 0)|$ so both networks output $O(1)$ numbers. With
    ``characteristic_prior="frozen_velocity"`` the straight characteristic of the initial velocity
    is built in and $N_x$ (last layer zero-initialised) learns only the correction:

    $$ X = \xi + t\,f(u_0(\xi), \xi, 0) + t\,s_f\,N_x(e). $$

    This is exact with $N_x \equiv 0$ for constant-speed convection and for inviscid Burgers before
    the shock, and training starts from $J = X_\xi = 1 + t\,\partial_\xi f(u_0, \xi, 0)$ instead of
    $1 + t\,s_f\,\partial_\xi N_x$: with the plain ansatz a random $N_x$ makes $J$ wrong by
    $O(s_f)$, so $J$ crosses 0 and the chain-rule $u_{xx}$ (which divides by $J$ twice) blows up.
    The loss is $\mathrm{mean}(r_x^2)/s_f^2 + \mathrm{mean}(r_u^2)$ over the collocation points,
    minimised by Adam then L-BFGS (see :class:`~sciml.models.PhysicsInformedTask`). Evaluation
    maps the particles back to a fixed grid with :meth:`to_eulerian` and logs ``rel_l2``
    (normalised by the reference's fluctuation, :func:`sciml.metrics.relative_l2_centered`),
    ``rel_l2_particles`` (the error on the particles, $U$ against $u_{ref}(X, t)$, no
    interpolation) and the smallest $J = X_\xi$.

    Args:
        problem: the PDE (same as the data module's).
        x_hidden_dims, u_hidden_dims: widths of $N_x$ and $N_u$.
        activation: hidden activation of both networks.
        diffusion: ``"chain_rule"`` (correct) or ``"label_space"`` (the paper's code; wrong when
            $J \ne 1$, kept to reproduce it).
        characteristic_prior: ``"none"`` (the paper's ansatz) or ``"frozen_velocity"`` (see above).
        velocity_scale: $s_f$; default from the problem.
        adam_steps: Adam steps before L-BFGS.
        optimizer: Adam settings.
        lbfgs: L-BFGS settings.

    Shapes:
        ``forward(xi (...), t (...)) -> (X (...), U (...))``. Training batches hold collocation
        points ``x, t (1, N)`` (used as labels); evaluation batches ``x (1, N_x)``, ``t (1, N_t)``
        and the reference ``u (1, N_t, N_x)``.
    """

    def __init__(
        self,
        problem: ConvectionDiffusion1D = ConvectionDiffusion1D(),  # noqa: B008 (frozen dataclass)
        x_hidden_dims: Sequence[int] = (32, 32),
        u_hidden_dims: Sequence[int] = (32, 32, 32),
        activation: str = "tanh",
        diffusion: Literal["chain_rule", "label_space"] = "chain_rule",
        characteristic_prior: Literal["none", "frozen_velocity"] = "none",
        velocity_scale: float | None = None,
        adam_steps: int = 1500,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008
        lbfgs: LBFGSConfig = LBFGSConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optimizer_config(), self.lbfgs_config()  # validate settings given as dicts now
        if diffusion not in DIFFUSION_MODES:
            raise ValueError(f"model.diffusion must be one of {DIFFUSION_MODES}, got {diffusion!r}")
        if characteristic_prior not in CHARACTERISTIC_PRIORS:
            raise ValueError(
                f"model.characteristic_prior must be one of {CHARACTERISTIC_PRIORS}, "
                f"got {characteristic_prior!r}"
            )
        if adam_steps < 0:
            raise ValueError(f"model.adam_steps must be >= 0, got {adam_steps}")
        self.problem = ConvectionDiffusion1D(**problem) if isinstance(problem, dict) else problem
        self.scale = (
            float(velocity_scale) if velocity_scale is not None else self.problem.velocity_scale()
        )
        if self.scale <= 0:
            raise ValueError(f"model.velocity_scale must be positive, got {velocity_scale}")
        self.embedding = PeriodicEmbedding(self.problem.length, self.problem.t_final)
        self.x_net = MLP(3, 1, x_hidden_dims, activation_name=activation)
        self.u_net = MLP(3, 1, u_hidden_dims, activation_name=activation)
        if characteristic_prior == "frozen_velocity":
            with torch.no_grad():  # start exactly on the frozen-velocity characteristics
                self.x_net[-2].weight.zero_()
                self.x_net[-2].bias.zero_()

    def forward(self, xi: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embedding(xi, t)
        x_pos = xi + t * self.scale * self.x_net(features)[..., 0]
        if self.hparams.characteristic_prior == "frozen_velocity":
            u_start = self.problem.initial_torch(xi)
            x_pos = x_pos + t * self.problem.velocity_torch(u_start, xi, torch.zeros_like(t))
        u_val = self.problem.initial_torch(xi) + t * self.u_net(features)[..., 0]
        return x_pos, u_val

    def residuals(self, xi: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """:func:`lagrangian_residuals` of this model at labels/times ``(N,)``."""
        return lagrangian_residuals(self, self.problem, xi, t, diffusion=self.hparams.diffusion)

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if stage == "train":
            xi, t = batch["x"][0], batch["t"][0]
        else:
            t, xi = (a.ravel() for a in torch.meshgrid(batch["t"][0], batch["x"][0], indexing="ij"))
        res = self.residuals(xi, t)
        loss_x = torch.mean(res["r_x"] ** 2) / self.scale**2
        loss_u = torch.mean(res["r_u"] ** 2)
        terms: dict[str, Any] = {
            "residual_x": loss_x.detach(),
            "residual_u": loss_u.detach(),
            "min_jacobian": res["jacobian"].detach().min(),
        }
        if stage != "train":
            terms.update(self._errors(batch, res))
        return loss_x + loss_u, terms

    def _errors(self, batch: dict[str, torch.Tensor], res: dict[str, torch.Tensor]) -> dict:
        x, t, reference = batch["x"][0], batch["t"][0], batch["u"][0]
        shape = (len(t), len(x))
        positions = res["X"].detach().reshape(shape).double().cpu().numpy()
        values = res["U"].detach().reshape(shape).double().cpu()
        eulerian = _periodic_interpolation(
            x.double().cpu().numpy(), positions, values.numpy(), length=self.problem.length
        )
        at_particles = fourier_interpolate(
            reference.cpu().numpy(), positions % self.problem.length, self.problem.length
        )
        return {
            "rel_l2": relative_l2_centered(torch.as_tensor(eulerian), reference.cpu()),
            "rel_l2_particles": relative_l2_centered(values, torch.as_tensor(at_particles)),
        }

    @torch.enable_grad()
    def to_eulerian(
        self, x: torch.Tensor, t: torch.Tensor, *, n_labels: int | None = None
    ) -> torch.Tensor:
        """The solution on the fixed grid ``x (N_x,) x t (N_t,)``, shape ``(N_t, N_x)``.

        Particles start on ``n_labels`` uniform labels (default ``max(N_x, 256)``); at each time
        their values are interpolated linearly and periodically from the positions
        ``X mod L`` to ``x``. Warns with :class:`CrossingCharacteristicsWarning` when
        $X_\\xi \\le 0$ somewhere (crossing characteristics: the map is no longer invertible and
        the interpolation is meaningless there).
        """
        n = n_labels or max(len(x), 256)
        labels = torch.linspace(0.0, self.problem.length, n + 1, dtype=x.dtype, device=x.device)[
            :-1
        ]
        t_grid, xi = (a.ravel() for a in torch.meshgrid(t, labels, indexing="ij"))
        xi = xi.detach().requires_grad_(True)
        x_pos, u_val = self(xi, t_grid)
        (jacobian,) = torch.autograd.grad(x_pos, xi, torch.ones_like(x_pos))
        worst = float(jacobian.min())
        if worst <= 0:
            warnings.warn(
                f"X_xi reaches {worst:.3g} <= 0: characteristics cross, the Lagrangian map is "
                "not invertible and the Eulerian interpolation is not meaningful there",
                CrossingCharacteristicsWarning,
                stacklevel=2,
            )
        positions = x_pos.detach().reshape(len(t), n).double().cpu().numpy()
        values = u_val.detach().reshape(len(t), n).double().cpu().numpy()
        eulerian = _periodic_interpolation(
            x.detach().double().cpu().numpy(), positions, values, length=self.problem.length
        )
        return torch.as_tensor(eulerian, dtype=x.dtype)


def _periodic_interpolation(
    x: np.ndarray, positions: np.ndarray, values: np.ndarray, length: float = 2 * np.pi
) -> np.ndarray:
    """Row by row, linear periodic interpolation of ``values`` at ``positions (T, N)`` to ``x``."""
    return np.stack(
        [
            np.interp(x, row_x % length, row_u, period=length)
            for row_x, row_u in zip(positions, values, strict=True)
        ]
    )
