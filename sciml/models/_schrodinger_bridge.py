r"""Multi-marginal Schrödinger bridges with iterative reference refinement (SBIRR).

Shen, Berlinghieri & Broderick, AISTATS 2025 (arXiv 2408.06277): from population snapshots
$\mu_k$ at times $t_0 < \dots < t_K$, solve
$\min_\theta \min_{P:\,P_{t_k} = \mu_k} \mathrm{KL}(P \,\|\, Q_\theta)$ for the reference SDE
$Q_\theta:\ dX = f_\theta(X)dt + \sigma dW$ by coordinate descent:

1. **bridge step** — for Markov $Q_\theta$ the multi-marginal bridge is the concatenation of the
   two-marginal bridges between adjacent snapshots, each solved on its own;
2. **reference step** — by Girsanov (same $\sigma$), $\arg\min_\theta \mathrm{KL}(P\|Q_\theta)$
   is the regression $\arg\min_\theta \sum \|(X_{j+1} - X_j)/h - f_\theta(X_j)\|^2$ over bridge
   paths, each interval with its own step $h$.

The first pass uses a Brownian reference. Training stops when $\theta$ moves by less than a
relative tolerance or after ``max_iterations`` outer iterations.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
from torch import nn

from ..metrics import energy_distance, relative_frobenius_error, wasserstein2
from ..nn import (
    DriftFamily,
    IPFBridge,
    LinearDrift,
    LotkaVolterraDrift,
    PotentialDrift,
    RepressilatorDrift,
    ipf_bridge,
)
from ..solvers import (
    entropic_plan,
    linear_bridge_cost,
    linear_bridge_marginal,
    linear_bridge_paths,
    sample_partners,
)
from ._base import NonFiniteLossError, OptimizerConfig, Task

__all__ = ["SBIRRConfig", "SchrodingerBridge"]

FAMILIES = ("linear", "lotka_volterra", "repressilator", "potential")
BACKENDS = ("auto", "linear", "ipf")


@dataclass(frozen=True)
class SBIRRConfig:
    """Settings of the SBIRR outer loop and of both bridge back-ends.

    Args:
        max_iterations: outer iterations (bridge + refit) at most.
        tol: stop once the relative parameter change $\\|\\theta_{k+1} - \\theta_k\\| /
            \\|\\theta_k\\|$ falls below this.
        step: path step $h$. Linear back-end: steps of exactly $h$ and a shorter last one per
            interval (one $h$ for the whole refit); IPF back-end: $\\lceil\\Delta_k/h\\rceil$
            uniform steps per interval.
        refit: ``"auto"`` (``"logm"`` for the linear family, else ``"adam"``); ``"logm"``
            (regress $X_{j+1}$ on $[X_j, 1]$, $A = \\log \\hat F / h$: no $O(h)$ bias) or
            ``"ols"`` (Euler increments) for the linear family; ``"adam"`` (any family)
            minimises the Euler regression with the model's optimizer.
        refit_steps: Adam steps per outer iteration (warm-started).
        refit_batch_size: increments per Adam step.
        sinkhorn_reg: entropic regularisation on the log-transition cost (1 is the exact static SB).
        sinkhorn_iterations: Sinkhorn iteration cap.
        ipf_iterations, ipf_hidden_dims, ipf_fit_steps, ipf_lr, ipf_batch_size: IPF back-end
            (neural forward/backward drifts, warm-started across outer iterations).
        seed: seed of every random draw (bridges, partners, predictions).
    """

    max_iterations: int = 8
    tol: float = 0.01
    step: float = 0.1
    refit: Literal["auto", "logm", "ols", "adam"] = "auto"
    refit_steps: int = 200
    refit_batch_size: int = 16384
    sinkhorn_reg: float = 1.0
    sinkhorn_iterations: int = 2000
    ipf_iterations: int = 5
    ipf_hidden_dims: Sequence[int] = field(default=(64, 64))
    ipf_fit_steps: int = 200
    ipf_lr: float = 1e-3
    ipf_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ValueError(f"config.max_iterations must be >= 1, got {self.max_iterations}")
        if self.tol < 0 or self.step <= 0 or self.sinkhorn_reg <= 0:
            raise ValueError("config.tol must be >= 0; config.step, config.sinkhorn_reg > 0")
        if self.refit not in ("auto", "logm", "ols", "adam"):
            raise ValueError(
                f"config.refit must be one of auto, logm, ols, adam; got {self.refit!r}"
            )
        if min(self.refit_steps, self.ipf_iterations, self.ipf_fit_steps) < 1:
            raise ValueError("config.refit_steps, ipf_iterations and ipf_fit_steps must be >= 1")


@dataclass
class _LinearBridge:
    """A solved linear-reference bridge over one interval: its plan and the reference used."""

    plan: torch.Tensor
    A: torch.Tensor
    c: torch.Tensor | None


class SchrodingerBridge(Task):
    r"""SBIRR trajectory inference from snapshots, as a Lightning module.

    One training step is one outer iteration (manual optimisation); batches come from
    :class:`sciml.data.SnapshotDataModule` (all snapshots, held-out ones flagged). Validation and
    test predict each held-out snapshot from the bridge across it and log ``w2_heldout`` (exact
    $W_2$), ``energy_heldout`` and, when the data know the true drift, ``param_rel_error``
    $\|\hat\theta - \theta^*\| / \|\theta^*\|$ (the drift matrix for the linear family).

    Back-ends:

    * ``linear`` (linear family $f(x) = Ax + c$): Van Loan transitions, Sinkhorn on the
      log-transition cost (regularisation 1), closed-form OU-bridge paths, closed-form refit;
    * ``ipf`` (any family): IPF with neural forward/backward drifts on Euler–Maruyama paths, and
      an Adam refit of the family.

    Args:
        state_dim: dimension ``d``.
        sigma: known isotropic diffusion $\sigma$ of the reference.
        family: ``"linear"``, ``"lotka_volterra"``, ``"repressilator"`` or ``"potential"`` (MLP
            potential gradient); ignored when ``drift`` is given.
        backend: ``"auto"`` (linear for the linear family, else ipf), ``"linear"`` or ``"ipf"``.
        config: :class:`SBIRRConfig`.
        optimizer: Adam settings of the ``"adam"`` refit.
        drift: a custom drift ``nn.Module`` ``(n, d) -> (n, d)`` (Python use; in YAML give its
            ``class_path``).

    Python use without a trainer: :meth:`set_snapshots`, then :meth:`fit_snapshots` (or
    :meth:`refine` per iteration); :meth:`sample_paths`, :meth:`marginal`.
    """

    def __init__(
        self,
        state_dim: int = 2,
        sigma: float = 0.3,
        family: str = "linear",
        backend: str = "auto",
        config: SBIRRConfig = SBIRRConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=0.05),  # noqa: B008
        drift: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["drift"])
        self.automatic_optimization = False
        if sigma <= 0:
            raise ValueError(f"model.sigma must be positive, got {sigma}")
        if family not in FAMILIES:
            raise ValueError(f"unknown model.family {family!r}; choose one of {list(FAMILIES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown model.backend {backend!r}; choose one of {list(BACKENDS)}")
        self.config = SBIRRConfig(**config) if isinstance(config, dict) else config
        self.drift = drift if drift is not None else _make_family(family, state_dim)
        self._default_drift = drift is None
        is_linear = isinstance(self.drift, LinearDrift)
        self.backend = ("linear" if is_linear else "ipf") if backend == "auto" else backend
        if self.backend == "linear" and not is_linear:
            raise ValueError('model.backend="linear" needs the linear family (f(x) = A x + c)')
        self.refit = (
            ("logm" if is_linear else "adam") if self.config.refit == "auto" else self.config.refit
        )
        if self.refit != "adam" and not is_linear:
            raise ValueError(
                f'model.config.refit="{self.refit}" needs the linear family; use "adam"'
            )
        self.sigma = float(sigma)
        self.history: list[dict[str, Any]] = []
        self._times: list[float] = []
        self._snapshots: list[torch.Tensor] = []
        self._bridges: dict[int, tuple[int, Any]] = {}

    # ------------------------------------------------------------------ snapshots and bridges
    def set_snapshots(self, times: Sequence[float], snapshots: Sequence[torch.Tensor]) -> None:
        """Fix the training marginals: ``snapshots[k]`` ``(n_k, d)`` observed at ``times[k]``."""
        times = [float(t) for t in times]
        if len(times) != len(snapshots) or len(times) < 2:
            raise ValueError("need >= 2 snapshots and one time per snapshot")
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"snapshot times must increase, got {times}")
        snapshots = [torch.as_tensor(s).double() for s in snapshots]
        shapes = [tuple(s.shape) for s in snapshots]
        if any(len(shape) != 2 or shape[0] < 1 for shape in shapes):
            raise ValueError(f"each snapshot must be a non-empty (n_k, d) array, got {shapes}")
        dims = {shape[1] for shape in shapes}
        expected = self.hparams.state_dim if self._default_drift else None
        if len(dims) != 1 or (expected is not None and dims != {expected}):
            raise ValueError(
                "snapshots must share the state dimension"
                + (f" model.state_dim={expected}" if expected is not None else "")
                + f"; got shapes {shapes}"
            )
        if not self._holds_snapshots(times, snapshots):
            self._times, self._snapshots, self._bridges = times, snapshots, {}

    def _holds_snapshots(self, times: list[float], snapshots: Sequence[torch.Tensor]) -> bool:
        """Whether these are the marginals already set (so their bridges stay valid)."""
        return (
            times == self._times
            and len(snapshots) == len(self._snapshots)
            and all(
                a.shape == b.shape and torch.equal(a, b)
                for a, b in zip(snapshots, self._snapshots, strict=True)
            )
        )

    @property
    def version(self) -> int:
        """Number of refits so far; bridges of version ``v`` use the reference after ``v`` refits
        (version 0 is the Brownian reference)."""
        return len(self.history)

    def _generator(self, *salt: int) -> torch.Generator:
        seed = self.config.seed
        for value in salt:
            seed = (seed * 1_000_003 + value) % (2**63)
        return torch.Generator().manual_seed(seed)

    def _n_steps(self, gap: float) -> int:
        return max(1, math.ceil(gap / self.config.step - 1e-9))

    def _grid(self, gap: float) -> torch.Tensor:
        """Path times over an interval of length ``gap``.

        Linear back-end: steps of exactly ``config.step`` and a shorter last one, so every
        interval shares one step for the ``logm`` refit; IPF back-end: ``N`` uniform steps.
        """
        n = self._n_steps(gap)
        device = self._snapshots[0].device
        if self.backend == "ipf":
            return torch.linspace(0.0, gap, n + 1, dtype=torch.float64, device=device)
        full = self.config.step * torch.arange(n, dtype=torch.float64, device=device)
        return torch.cat([full, full.new_tensor([gap])])

    def _linear_reference(self, version: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        snapshot = self._snapshots[0]
        if version == 0:
            return snapshot.new_zeros(snapshot.shape[1], snapshot.shape[1]), None
        return self.drift.A.detach().double(), self.drift.c.detach().double()

    def _reference_drift(self, version: int):
        if version == 0:
            return None
        drift = self.drift

        def reference(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return drift(x).double()

        return reference

    def _bridge(self, k: int) -> Any:
        """The bridge over interval ``k`` under the current reference (cached per version)."""
        cached = self._bridges.get(k)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        x, y = self._snapshots[k], self._snapshots[k + 1]
        gap = self._times[k + 1] - self._times[k]
        generator = self._generator(self.version, k, 1)
        if self.backend == "linear":
            A, c = self._linear_reference(self.version)
            cost = linear_bridge_cost(x, y, A, self.sigma, gap, c)
            plan = entropic_plan(
                cost, self.config.sinkhorn_reg, max_iter=self.config.sinkhorn_iterations
            )
            bridge: Any = _LinearBridge(plan, A, c)
        else:
            config = self.config
            bridge = ipf_bridge(
                x,
                y,
                gap,
                self._reference_drift(self.version),
                self.sigma,
                n_steps=self._n_steps(gap),
                iterations=config.ipf_iterations,
                hidden_dims=tuple(config.ipf_hidden_dims),
                fit_steps=config.ipf_fit_steps,
                lr=config.ipf_lr,
                batch_size=config.ipf_batch_size,
                warm_start=cached[1] if cached is not None else None,
                generator=generator,
            )
        self._bridges[k] = (self.version, bridge)
        return bridge

    def _interval_paths(
        self, k: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bridge paths over interval ``k`` from both marginals, ``(n, N + 1, d)``, and their
        times ``(N + 1,)`` relative to the interval start."""
        bridge = self._bridge(k)
        gap = self._times[k + 1] - self._times[k]
        if self.backend == "ipf":
            return torch.cat([bridge.forward_paths, bridge.backward_paths]), bridge.times
        x, y = self._snapshots[k], self._snapshots[k + 1]
        forward = sample_partners(bridge.plan, generator)
        backward = sample_partners(bridge.plan.T, generator)
        starts = torch.cat([x, x[backward]])
        ends = torch.cat([y[forward], y])
        grid = self._grid(gap)
        paths = linear_bridge_paths(starts, ends, bridge.A, self.sigma, grid, bridge.c,
                                    generator=generator)  # fmt: skip
        return paths, grid

    # ------------------------------------------------------------------ the outer loop
    def refine(self) -> dict[str, Any]:
        r"""One outer iteration: bridges under the current reference, then refit the drift.

        Returns:
            The history record ``{"iteration", "theta", "change", "residual", "seconds"}``;
            ``residual`` is the Euler regression residual scaled by $h/(\sigma^2 d)$ (about 1
            for a drift that explains the paths).

        Raises:
            NonFiniteLossError: if the refit is not finite (the drift is left unchanged).
        """
        if not self._snapshots:
            raise RuntimeError("call set_snapshots (or train on a SnapshotDataModule) first")
        start = time.perf_counter()
        generator = self._generator(self.version, 0)
        paths = [self._interval_paths(k, generator) for k in range(len(self._times) - 1)]
        before = {name: value.detach().clone() for name, value in self.drift.state_dict().items()}
        old = _flat_parameters(self.drift)
        if self.refit == "adam":
            self._refit_adam(paths, generator)
        else:
            self._refit_linear(paths)
        residual = self._residual(paths)
        new = _flat_parameters(self.drift)
        if not (math.isfinite(residual) and torch.isfinite(new).all()):
            self.drift.load_state_dict(before)
            raise NonFiniteLossError(
                f"non-finite training loss {residual} at outer iteration {self.version} "
                f"(global step {self.global_step if self._trainer else 0}); terms: "
                f"residual={residual:.4g}, finite_parameters={bool(torch.isfinite(new).all())}. "
                "The drift was not updated; the last checkpoint is the last good state. "
                "Lower the learning rate or the path step, then resume with --ckpt_path."
            )
        change = float(torch.linalg.norm(new - old) / max(float(torch.linalg.norm(old)), 1e-12))
        record = {
            "iteration": self.version + 1,
            "theta": _parameter_vector(self.drift).tolist(),
            "change": change,
            "residual": residual,
            "seconds": time.perf_counter() - start,
        }
        self.history.append(record)
        return record

    def fit_snapshots(
        self, times: Sequence[float], snapshots: Sequence[torch.Tensor]
    ) -> list[dict[str, Any]]:
        """Run the outer loop to the stopping rule without a trainer; returns the history."""
        self.set_snapshots(times, snapshots)
        while self.version < self.config.max_iterations:
            if self.refine()["change"] < self.config.tol:
                break
        return self.history

    def _refit_linear(self, paths: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        x, after, durations = self._increments(paths)
        d, h = x.shape[1], self.config.step
        if self.refit == "logm":
            # Only steps of exactly h: mixing step lengths in one regression (one h for intervals
            # of unequal gaps) is the bug that made A diverge in a prototype.
            full = (durations - h).abs() < 1e-9
            if not bool(full.any()):
                raise ValueError(f"config.step={h} exceeds every gap; lower it for the logm refit")
            x, target = x[full], after[full]
        else:
            target = (after - x) / durations[:, None]
        design = torch.cat([x, x.new_ones(len(x), 1)], 1) if self.drift.intercept else x
        coef = torch.linalg.lstsq(design, target).solution  # (d [+1], d)
        slope = coef[:d].T
        offset = coef[d] if self.drift.intercept else coef.new_zeros(d)
        if self.refit == "logm":
            A = slope.new_tensor(np.real(scipy.linalg.logm(slope.cpu().numpy()))) / h
            c = torch.linalg.solve(_integrated_flow(A, h), offset)
        else:
            A, c = slope, offset
        with torch.no_grad():
            self.drift.A.copy_(A)
            self.drift.c.copy_(c)

    @staticmethod
    def _increments(paths) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled ``(X_j, X_{j+1}, t_{j+1} - t_j)`` over all intervals' paths."""
        d = paths[0][0].shape[-1]
        x = torch.cat([p[:, :-1].reshape(-1, d) for p, _ in paths])
        after = torch.cat([p[:, 1:].reshape(-1, d) for p, _ in paths])
        durations = torch.cat([grid.diff().repeat(len(p)) for p, grid in paths])
        return x, after, durations

    def _refit_adam(self, paths, generator: torch.Generator) -> None:
        x, after, durations = self._increments(paths)
        v = (after - x) / durations[:, None]
        optimizer = self.optimizers() if self._trainer is not None else None
        if optimizer is None:
            optimizer = torch.optim.Adam(self.drift.parameters(), lr=self.optimizer_config().lr)
        batch = min(self.config.refit_batch_size, len(x))
        lr = self.optimizer_config().lr
        for step in range(self.config.refit_steps):
            # Linear decay within each refit: the Adam iterate settles instead of jittering by ~lr
            # around the least-squares optimum (the family is often linear in its parameters).
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - step / self.config.refit_steps)
            index = torch.randint(len(x), (batch,), generator=generator)
            loss = (self.drift(x[index]).double() - v[index]).square().mean()
            optimizer.zero_grad()
            if self._trainer is not None:
                self.manual_backward(loss)
            else:
                loss.backward()
            optimizer.step()

    def _residual(self, paths) -> float:
        x, after, durations = self._increments(paths)
        with torch.no_grad():
            v = (after - x) / durations[:, None]
            squared = (self.drift(x).double() - v).square().sum(-1)
        return float((squared * durations).mean() / (self.sigma**2 * x.shape[1]))

    # ------------------------------------------------------------------ sampling
    def _locate(self, t: float) -> int:
        if not self._times[0] <= t <= self._times[-1]:
            raise ValueError(
                f"t={t} lies outside the snapshots' span {self._times[0]}..{self._times[-1]}"
            )
        return min(int(np.searchsorted(self._times, t, side="right")) - 1, len(self._times) - 2)

    def marginal(
        self, t: float, n: int | None = None, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Samples ``(n, d)`` of the inferred marginal at time ``t`` (default ``n``: the left
        snapshot's size), drawn from the bridge over the interval that contains ``t``."""
        k = self._locate(float(t))
        generator = generator or self._generator(self.version, k, 2)
        x, y = self._snapshots[k], self._snapshots[k + 1]
        s, gap = float(t) - self._times[k], self._times[k + 1] - self._times[k]
        sources = (
            torch.arange(len(x)) if n is None else torch.randint(len(x), (n,), generator=generator)
        )
        bridge = self._bridge(k)
        if self.backend == "linear":
            partners = sample_partners(bridge.plan[sources], generator)
            return linear_bridge_marginal(
                x[sources], y[partners], bridge.A, self.sigma, gap, s, bridge.c, generator=generator
            )
        paths = bridge.simulate(
            x[sources], self._reference_drift(self.version), self.sigma, generator=generator
        )
        index = int(torch.argmin((bridge.times - s).abs()))
        return paths[:, index]

    def sample_paths(
        self, n: int | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-length paths through all bridges from the first snapshot.

        Linear back-end: a Markov chain of plan partners across snapshots, joined by bridge paths;
        IPF back-end: the forward drifts, interval after interval.

        Returns:
            ``times (T,)`` and ``paths (n, T, d)``.
        """
        generator = generator or self._generator(self.version, 3)
        x0 = self._snapshots[0]
        index = (
            torch.arange(len(x0))
            if n is None
            else torch.randint(len(x0), (n,), generator=generator)
        )
        current = x0[index]
        grids, pieces = [], []
        for k in range(len(self._times) - 1):
            bridge, gap = self._bridge(k), self._times[k + 1] - self._times[k]
            if self.backend == "linear":
                partners = sample_partners(bridge.plan[index], generator)
                end = self._snapshots[k + 1][partners]
                grid = self._grid(gap)
                piece = linear_bridge_paths(current, end, bridge.A, self.sigma, grid, bridge.c,
                                            generator=generator)  # fmt: skip
                index = partners
            else:
                piece = bridge.simulate(
                    current, self._reference_drift(self.version), self.sigma, generator=generator
                )
                grid = bridge.times
            grids.append(grid[int(k > 0) :] + self._times[k])
            pieces.append(piece[:, int(k > 0) :])
            current = piece[:, -1]
        return torch.cat(grids), torch.cat(pieces, dim=1)

    # ------------------------------------------------------------------ Lightning
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fitted reference drift $f_\\theta(x)$."""
        return self.drift(x)

    def configure_optimizers(self) -> Any:
        config = self.optimizer_config()
        return torch.optim.Adam(
            self.drift.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

    @staticmethod
    def _unpack(batch: dict[str, torch.Tensor]) -> tuple[list, list, list, list]:
        x, mask = batch["x"][0], batch["mask"][0]
        times, held = batch["t"][0].tolist(), batch["held_out"][0].tolist()
        samples = [x[k][mask[k]].double() for k in range(len(times))]
        train = [(t, s) for t, s, h in zip(times, samples, held, strict=True) if not h]
        test = [(t, s) for t, s, h in zip(times, samples, held, strict=True) if h]
        return (
            [t for t, _ in train],
            [s for _, s in train],
            [t for t, _ in test],
            [s for _, s in test],
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        times, snapshots, _, _ = self._unpack(batch)
        self.set_snapshots(times, snapshots)
        record = self.refine()
        if self.refit != "adam":
            # The closed-form refit takes no gradient step. A step without gradients moves no
            # parameter but makes global_step count outer iterations; checkpoints and logs are
            # keyed by it.
            self.optimizers().step()
        terms = {"theta_change": record["change"], "iteration": float(record["iteration"])}
        terms.update(self._parameter_terms(batch))
        self._log_terms("train", torch.tensor(record["residual"]), terms, batch)
        if record["change"] < self.config.tol or self.version >= self.config.max_iterations:
            self.trainer.should_stop = True

    def compute_loss(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        times, snapshots, held_times, held = self._unpack(batch)
        self.set_snapshots(times, snapshots)
        terms: dict[str, Any] = self._parameter_terms(batch)
        if held_times:
            w2, energy = [], []
            for t, target in zip(held_times, held, strict=True):
                k = self._locate(t)
                prediction = self.marginal(t, generator=self._generator(self.version, k, 4))
                w2.append(wasserstein2(prediction, target))
                energy.append(energy_distance(prediction, target))
            terms["w2_heldout"] = float(np.mean(w2))
            terms["energy_heldout"] = float(np.mean(energy))
            return torch.tensor(terms["w2_heldout"]), terms
        generator = self._generator(self.version, 5)
        paths = [self._interval_paths(k, generator) for k in range(len(self._times) - 1)]
        return torch.tensor(self._residual(paths)), terms

    def _parameter_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        truth = batch.get("theta_true")
        estimate = _parameter_vector(self.drift)
        if truth is None or truth.shape[-1] == 0 or truth.shape[-1] != estimate.numel():
            return {}
        return {"param_rel_error": relative_frobenius_error(estimate, truth[0])}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["sbirr_history"] = [dict(record) for record in self.history]
        # Neural bridges are warm-started from one refit to the next, so refitting them after a
        # load would not give the same bridges: they are saved with the marginals they join.
        # (Linear-backend bridges are recomputed exactly from the reference.)
        bridges = {
            k: {"version": version, **bridge.state_dict()}
            for k, (version, bridge) in self._bridges.items()
            if isinstance(bridge, IPFBridge)
        }
        if bridges:
            checkpoint["sbirr_ipf_bridges"] = {
                "times": self._times,
                "snapshots": self._snapshots,
                "bridges": bridges,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("sbirr_history", []))
        self._bridges = {}
        saved = checkpoint.get("sbirr_ipf_bridges")
        if saved is None:
            return
        if not self._snapshots:  # loaded outside a trainer: the marginals the bridges join
            self.set_snapshots(saved["times"], saved["snapshots"])
        if self._holds_snapshots(saved["times"], saved["snapshots"]):
            self._bridges = {
                k: (state["version"], IPFBridge.from_state_dict(state))
                for k, state in saved["bridges"].items()
            }


def _make_family(family: str, dim: int) -> DriftFamily:
    if family == "linear":
        return LinearDrift(dim)
    if family == "potential":
        return PotentialDrift(dim)
    expected = {"lotka_volterra": 2, "repressilator": 3}[family]
    if dim != expected:
        raise ValueError(f"model.family={family!r} needs state_dim={expected}, got {dim}")
    return LotkaVolterraDrift() if family == "lotka_volterra" else RepressilatorDrift()


def _integrated_flow(A: torch.Tensor, h: float) -> torch.Tensor:
    r"""$\int_0^h e^{sA} ds$, the top-right block of $\exp([[A, I], [0, 0]] h)$."""
    d = A.shape[0]
    block = A.new_zeros(2 * d, 2 * d)
    block[:d, :d], block[:d, d:] = A, torch.eye(d, dtype=A.dtype, device=A.device)
    return torch.linalg.matrix_exp(block * h)[:d, d:]


def _flat_parameters(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in module.parameters()])


def _parameter_vector(module: nn.Module) -> torch.Tensor:
    if isinstance(module, DriftFamily):
        return module.parameter_vector().double()
    return _flat_parameters(module)
