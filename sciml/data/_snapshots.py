r"""Population snapshots for trajectory inference: every sample is observed once, at one time.

Each snapshot is an independent population of the SDE $dX = f(X)dt + \sigma dW$ at time $t_k$
(no particle is followed across times). Linear systems are sampled exactly from the Gaussian
transition; nonlinear ones by a fine Euler–Maruyama grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..nn import DriftFamily, LinearDrift, LotkaVolterraDrift, RepressilatorDrift
from ..solvers import linear_transition
from ._base import ProblemDataModule, TensorDictDataset

__all__ = ["SNAPSHOT_SYSTEMS", "SnapshotDataModule", "SnapshotSystem"]


@dataclass(frozen=True)
class SnapshotSystem:
    r"""A stochastic system observed through population snapshots.

    Args:
        name: registry key.
        make_drift: builds the true drift family (its parameters are the ground truth).
        sigma: isotropic diffusion $\sigma$.
        x0_mean, x0_scale: initial law, $\mathcal N(\text{mean}, \text{scale}^2 I)$ for
            ``x0_law="normal"`` or the box ``[mean, mean + scale]`` for ``"uniform"``.
        x0_law: ``"normal"`` or ``"uniform"``.
        times: default observation times.
        euler_dt: Euler–Maruyama step of nonlinear systems.
    """

    name: str
    make_drift: Callable[[], DriftFamily]
    sigma: float
    x0_mean: tuple[float, ...]
    x0_scale: float
    x0_law: str = "normal"
    times: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)
    euler_dt: float = 1e-3
    description: str = field(default="", compare=False)

    @property
    def dim(self) -> int:
        return len(self.x0_mean)


def _rotation_drift() -> LinearDrift:
    drift = LinearDrift(2)
    with torch.no_grad():
        drift.A.copy_(torch.tensor([[-0.2, -1.0], [1.0, -0.2]], dtype=torch.float64))
    return drift


SNAPSHOT_SYSTEMS: dict[str, SnapshotSystem] = {
    "rotation_ou": SnapshotSystem(
        "rotation_ou",
        _rotation_drift,
        sigma=0.3,
        x0_mean=(2.0, 0.0),
        x0_scale=0.2,
        description="2-D damped rotation OU, A = [[-0.2, -1], [1, -0.2]], sigma = 0.3",
    ),
    "lotka_volterra": SnapshotSystem(
        "lotka_volterra",
        lambda: LotkaVolterraDrift((1.0, 0.4, 0.4, 0.1)),
        sigma=0.1,
        x0_mean=(5.0, 4.0),
        x0_scale=0.1,
        x0_law="uniform",
        times=tuple(float(t) for t in range(9)),
        euler_dt=0.005,
        description="Lotka-Volterra (alpha, beta, gamma, delta) = (1, 0.4, 0.4, 0.1), sigma = 0.1",
    ),
    "repressilator": SnapshotSystem(
        "repressilator",
        lambda: RepressilatorDrift((10.0, 3.0, 1.0, 1.0)),
        sigma=0.1,
        x0_mean=(1.0, 1.0, 2.0),
        x0_scale=0.1,
        times=tuple(float(t) for t in range(11)),
        euler_dt=0.005,
        description="mRNA repressilator (beta, n, k, gamma) = (10, 3, 1, 1), sigma = 0.1",
    ),
}


class SnapshotDataModule(ProblemDataModule):
    r"""Snapshots $\{x^{(k)}_i\}_{i \le n_k}$ at times $t_0 < \dots < t_K$, some held out.

    Every stage's loader yields one batch holding the whole data set (trajectory inference needs
    all marginals at once):

    * ``"x"`` ``(1, K, n_max, d)`` float64 samples, padded; ``"mask"`` ``(1, K, n_max)`` marks
      real samples;
    * ``"t"`` ``(1, K)`` times; ``"held_out"`` ``(1, K)`` bool, the snapshots a model must not fit
      (they score interpolation);
    * ``"theta_true"`` ``(1, p)`` the true drift family's parameter vector (``p = 0`` when
      unknown, e.g. for user data).

    Args:
        system: a key of :data:`SNAPSHOT_SYSTEMS` (``rotation_ou``, ``lotka_volterra``,
            ``repressilator``), or ``"file"`` to read ``snapshots_file``.
        times: observation times (default: the system's).
        n_per_snapshot: samples per simulated snapshot.
        held_out: times held out for evaluation; each must be an interior observation time.
        diffusion: $\sigma$ of the simulated system (default: the system's; named apart from the
            model's ``sigma``, the reference diffusion it assumes).
        snapshots_file: ``.npz`` file in the AnnData-like layout ``X`` ``(N, d)`` (one row per
            cell) and a per-row time column ``obs_time`` ``(N,)`` (names set by ``x_key`` and
            ``time_key``).
        seed, batch_size, num_workers, cache_dir: see :class:`ProblemDataModule`.

    Use :meth:`from_arrays` for snapshots already in memory.
    """

    def __init__(
        self,
        system: str = "rotation_ou",
        *,
        times: Sequence[float] | None = None,
        n_per_snapshot: int = 300,
        held_out: Sequence[float] = (),
        diffusion: float | None = None,
        snapshots_file: str | None = None,
        x_key: str = "X",
        time_key: str = "obs_time",
        seed: int = 0,
        batch_size: int = 1,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            seed=seed, batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir
        )
        self.save_hyperparameters()
        self._arrays: list[np.ndarray] | None = None
        if system == "file":
            if snapshots_file is None:
                raise ValueError('data.system="file" needs data.snapshots_file (an .npz path)')
            self.spec = None
        elif system == "arrays":
            self.spec = None
        elif system in SNAPSHOT_SYSTEMS:
            self.spec = SNAPSHOT_SYSTEMS[system]
        else:
            raise ValueError(
                f"unknown data.system {system!r}; choose one of "
                f"{[*sorted(SNAPSHOT_SYSTEMS), 'file']}"
            )
        if n_per_snapshot < 2:
            raise ValueError(f"data.n_per_snapshot must be >= 2, got {n_per_snapshot}")
        if diffusion is not None and diffusion <= 0:
            raise ValueError(f"data.diffusion must be positive, got {diffusion}")
        self._times = None if times is None else [float(t) for t in times]
        if self.spec is not None:
            self._times = self._times or list(self.spec.times)
            self._check_times(self._times)

    @classmethod
    def from_arrays(
        cls,
        snapshots: Sequence[np.ndarray | torch.Tensor],
        times: Sequence[float],
        *,
        held_out: Sequence[float] = (),
        seed: int = 0,
    ) -> SnapshotDataModule:
        """A data module over user snapshots ``[(n_k, d), ...]`` observed at ``times``."""
        if len(snapshots) != len(times):
            raise ValueError(f"got {len(snapshots)} snapshots but {len(times)} times")
        module = cls("arrays", times=list(times), held_out=list(held_out), seed=seed)
        module._arrays = [np.asarray(s, dtype=np.float64) for s in snapshots]
        return module

    def _check_times(self, times: list[float]) -> None:
        if len(times) < 2 or any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"data.times must be increasing with >= 2 entries, got {times}")
        for t in self.hparams.held_out:
            matches = [k for k, s in enumerate(times) if math.isclose(s, t, abs_tol=1e-9)]
            if not matches or matches[0] in (0, len(times) - 1):
                raise ValueError(
                    f"data.held_out time {t} must be an interior observation time; "
                    f"interior times are {times[1:-1]}"
                )

    @property
    def sigma(self) -> float | None:
        """Diffusion of the simulated system (``None`` for user data)."""
        if self.spec is None:
            return None
        return self.hparams.diffusion or self.spec.sigma

    @property
    def state_dim(self) -> int:
        if self.spec is not None:
            return self.spec.dim
        return self.load_or_generate()["x"].shape[-1]

    @property
    def times(self) -> list[float]:
        if self._times is None:
            self._times = self._read_file()[0]
        return list(self._times)

    def true_drift(self) -> DriftFamily | None:
        """The drift family with the true parameters (``None`` for user data)."""
        return None if self.spec is None else self.spec.make_drift()

    def sample_marginal(
        self, t: float, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r"""``n`` independent samples ``(n, d)`` of the true marginal at time ``t``."""
        if self.spec is None:
            raise ValueError("sample_marginal needs a simulated system, not user snapshots")
        x0 = self._initial(n, generator)
        return self._propagate(x0, float(t), generator)

    def _initial(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        spec = self.spec
        mean = torch.tensor(spec.x0_mean, dtype=torch.float64)
        if spec.x0_law == "uniform":
            return mean + spec.x0_scale * torch.rand(n, spec.dim, generator=generator).double()
        return mean + spec.x0_scale * torch.randn(n, spec.dim, generator=generator).double()

    def _propagate(self, x0: torch.Tensor, t: float, generator) -> torch.Tensor:
        spec, sigma = self.spec, self.sigma
        drift = spec.make_drift()
        if t == 0.0:
            return x0
        if isinstance(drift, LinearDrift):
            moments = linear_transition(drift.A.detach(), sigma, t, drift.c.detach())
            chol = torch.linalg.cholesky(moments.cov[0])
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
            return x0 @ moments.flow[0].T + moments.shift[0] + noise @ chol.T
        n_steps = max(1, math.ceil(t / spec.euler_dt))
        h = t / n_steps
        x = x0
        with torch.no_grad():
            for _ in range(n_steps):
                noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
                x = x + drift(x) * h + sigma * math.sqrt(h) * noise
        return x

    def _read_file(self) -> tuple[list[float], list[np.ndarray]]:
        path = Path(self.hparams.snapshots_file)
        if not path.exists():
            raise ValueError(f"data.snapshots_file {str(path)!r} does not exist")
        with np.load(path) as archive:
            for key in (self.hparams.x_key, self.hparams.time_key):
                if key not in archive:
                    raise ValueError(
                        f"{path} has no array {key!r}; it holds {sorted(archive.files)}"
                    )
            x = np.asarray(archive[self.hparams.x_key], dtype=np.float64)
            labels = np.asarray(archive[self.hparams.time_key], dtype=np.float64).reshape(-1)
        if x.ndim != 2 or len(x) != len(labels):
            raise ValueError(
                f"{path}: {self.hparams.x_key} must be (N, d) with one "
                f"{self.hparams.time_key} per row, got {x.shape} and {labels.shape}"
            )
        times = sorted(set(labels.tolist()))
        return times, [x[labels == t] for t in times]

    def generate(self) -> dict[str, torch.Tensor]:
        if self.spec is not None:
            generator = torch.Generator().manual_seed(self.hparams.seed)
            snapshots = [
                self.sample_marginal(t, self.hparams.n_per_snapshot, generator) for t in self._times
            ]
        elif self.hparams.system == "file":
            self._times, arrays = self._read_file()
            self._check_times(self._times)
            snapshots = [torch.as_tensor(a) for a in arrays]
        else:
            if self._arrays is None:
                raise ValueError('data.system="arrays" is built by SnapshotDataModule.from_arrays')
            self._check_times(self._times)
            snapshots = [torch.as_tensor(a) for a in self._arrays]
        return self._pack(snapshots)

    def _pack(self, snapshots: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        dims = {s.shape[1] for s in snapshots if s.ndim == 2}
        if len(dims) != 1 or any(s.ndim != 2 or len(s) < 2 for s in snapshots):
            raise ValueError("snapshots must be (n_k, d) arrays with n_k >= 2 and one shared d")
        n_max, d = max(len(s) for s in snapshots), dims.pop()
        x = torch.zeros(len(snapshots), n_max, d, dtype=torch.float64)
        mask = torch.zeros(len(snapshots), n_max, dtype=torch.bool)
        for k, s in enumerate(snapshots):
            x[k, : len(s)], mask[k, : len(s)] = s.double(), True
        times = torch.tensor(self._times, dtype=torch.float64)
        held = torch.tensor(
            [any(math.isclose(t, h, abs_tol=1e-9) for h in self.hparams.held_out) for t in times]
        )
        truth = self.true_drift()
        theta = truth.parameter_vector() if truth is not None else torch.zeros(0)
        return {
            "x": x[None],
            "mask": mask[None],
            "t": times[None],
            "held_out": held[None],
            "theta_true": theta.double()[None],
        }

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        # One data set for every stage: models fit the snapshots not flagged ``held_out`` and
        # score the held-out ones, so the split lives in the flags, not in separate rows.
        dataset = TensorDictDataset(data)
        return {"train": dataset, "val": dataset, "test": dataset}
