"""Trajectory data from the system registry: reference solvers and the data module."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.integrate import solve_ivp
from tqdm.auto import tqdm

from ._base import ProblemDataModule, TensorDictDataset
from ._systems import DynamicalSystem, get_system

__all__ = ["TrajectoryDataModule", "simulate_sde", "solve_trajectories"]

_PROGRESS_THRESHOLD = 100


def solve_trajectories(
    system: DynamicalSystem,
    y0: np.ndarray,
    t_eval: np.ndarray,
    *,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    progress: bool | None = None,
) -> np.ndarray:
    """Reference solutions by :func:`scipy.integrate.solve_ivp` at tight tolerances.

    Args:
        system: the ODE.
        y0: initial conditions ``(n, d)``.
        t_eval: increasing output times ``(T,)``; integration starts at ``t_eval[0]``.
        method, rtol, atol: passed to ``solve_ivp``.
        progress: show a progress bar (default: when there are more than 100 solves).

    Returns:
        ``(n, T, d)`` array.

    Raises:
        RuntimeError: naming the trajectory index and initial condition, if a solve fails.
    """
    rhs = system.numpy_drift()
    t_eval = np.asarray(t_eval, dtype=float)
    out = np.empty((len(y0), len(t_eval), system.dim))
    show = len(y0) > _PROGRESS_THRESHOLD if progress is None else progress
    for i in tqdm(range(len(y0)), desc=f"solving {system.name}", disable=not show, leave=False):
        solution = solve_ivp(
            rhs, (t_eval[0], t_eval[-1]), y0[i], method=method, t_eval=t_eval, rtol=rtol, atol=atol
        )
        if not solution.success:
            raise RuntimeError(
                f"{system.name}: solve {i} from y0={y0[i].tolist()} failed: {solution.message}"
            )
        out[i] = solution.y.T
    return out


def simulate_sde(
    system: DynamicalSystem,
    y0: np.ndarray,
    t_eval: np.ndarray,
    *,
    rng: np.random.Generator,
    substeps: int = 50,
) -> np.ndarray:
    r"""Euler–Maruyama paths of $dy = f\,dt + \mathrm{diag}(g)\,dW$.

    The grid is ``substeps`` times finer than ``t_eval``.

    Args:
        y0: ``(n, d)`` initial states; all paths are advanced together.
        t_eval: increasing output times ``(T,)``.
        rng: numpy generator, so the paths are a deterministic function of its seed.
        substeps: Euler–Maruyama steps per output interval (strong error ~ sqrt(dt)).

    Returns:
        ``(n, T, d)`` array.
    """
    drift, diffusion = system.numpy_drift(), system.numpy_diffusion()
    y = np.array(y0, dtype=float).T  # (d, n): the compiled functions act on component rows
    out = np.empty((y.shape[1], len(t_eval), system.dim))
    out[:, 0] = y.T
    for k in range(len(t_eval) - 1):
        dt = (t_eval[k + 1] - t_eval[k]) / substeps
        t = t_eval[k]
        for _ in range(substeps):
            noise = rng.standard_normal(y.shape) * np.sqrt(dt)
            y = y + drift(t, y) * dt + diffusion(t, y) * noise
            t += dt
        out[:, k + 1] = y.T
    return out


class TrajectoryDataModule(ProblemDataModule):
    r"""Trajectories of a registered (or ad-hoc) system for fitting neural ODEs/SDEs.

    Initial conditions are drawn uniformly from the system's box, paths are solved by scipy (ODE) or
    a fine Euler–Maruyama grid (SDE), and Gaussian observation noise of standard deviation
    ``noise_std`` is added. Whole trajectories are split into train/val/test. Batches are dicts
    ``{"t": (B, T), "y": (B, T, d), "y_true": (B, T, d)}``; with ``segment_length=L`` the training
    set holds every window of ``L`` consecutive times instead of whole trajectories.

    Args:
        system: name in :data:`sciml.data.SYSTEMS`, or the name of an ad-hoc system given by
            ``rhs``.
        rhs: sympy strings defining an ad-hoc system (with ``state_names``, ``y0_low``, ``y0_high``,
            ``t_span``; ``diffusion`` makes it an SDE).
        state_names: state component names of the ad-hoc system.
        diffusion: diagonal noise amplitudes of the ad-hoc system.
        parameters: parameter values overriding the system's defaults (or defining the ad-hoc
            system's).
        n_trajectories: total number of trajectories before splitting.
        t_span: time interval; defaults to the system's.
        n_times: observation times per trajectory, equally spaced over ``t_span``.
        noise_std: standard deviation of additive Gaussian observation noise.
        y0_low, y0_high: override the box of initial conditions.
        segment_length: if set, train on windows of this many consecutive observations.
        val_fraction, test_fraction: fractions of trajectories held out.
        ode_method, rtol, atol: reference solver settings (scipy ``solve_ivp``).
        sde_substeps: Euler–Maruyama steps per observation interval for stochastic systems.
        eval_batch_size: batch size of the val/test loaders (default: ``batch_size``).
    """

    def __init__(
        self,
        system: str = "lotka_volterra",
        *,
        rhs: list[str] | None = None,
        state_names: list[str] | None = None,
        diffusion: list[str] | None = None,
        parameters: dict[str, float] | None = None,
        n_trajectories: int = 64,
        t_span: tuple[float, float] | None = None,
        n_times: int = 50,
        noise_std: float = 0.0,
        y0_low: list[float] | None = None,
        y0_high: list[float] | None = None,
        segment_length: int | None = None,
        val_fraction: float = 0.125,
        test_fraction: float = 0.125,
        ode_method: str = "DOP853",
        rtol: float = 1e-10,
        atol: float = 1e-10,
        sde_substeps: int = 50,
        seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
        )
        self.save_hyperparameters()
        self.system_spec = self._build_system(
            system, rhs, state_names, diffusion, parameters, y0_low, y0_high, t_span
        )
        self.t_span = tuple(t_span) if t_span is not None else self.system_spec.t_span
        if n_times < 2:
            raise ValueError(f"data.n_times must be >= 2, got {n_times}")
        if noise_std < 0:
            raise ValueError(f"data.noise_std must be >= 0, got {noise_std}")
        if segment_length is not None and not 2 <= segment_length <= n_times:
            raise ValueError(
                f"data.segment_length must lie in [2, n_times={n_times}], got {segment_length}"
            )
        n_val, n_test = round(val_fraction * n_trajectories), round(test_fraction * n_trajectories)
        if min(n_val, n_test) < 1 or n_trajectories - n_val - n_test < 1:
            raise ValueError(
                f"data.n_trajectories={n_trajectories} with val_fraction={val_fraction} and "
                f"test_fraction={test_fraction} leaves an empty split"
            )
        self.n_train, self.n_val, self.n_test = n_trajectories - n_val - n_test, n_val, n_test

    @staticmethod
    def _build_system(
        system, rhs, state_names, diffusion, parameters, y0_low, y0_high, t_span
    ) -> DynamicalSystem:
        if rhs is not None:
            missing = [
                name
                for name, value in (
                    ("state_names", state_names),
                    ("y0_low", y0_low),
                    ("y0_high", y0_high),
                    ("t_span", t_span),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"an ad-hoc system given by data.rhs also needs data.{', data.'.join(missing)}"
                )
            return DynamicalSystem(
                name=system,
                state=tuple(state_names),
                rhs=tuple(rhs),
                y0_low=tuple(y0_low),
                y0_high=tuple(y0_high),
                t_span=tuple(t_span),
                parameters=dict(parameters or {}),
                diffusion=None if diffusion is None else tuple(diffusion),
            )
        spec = get_system(system)
        if parameters:
            spec = spec.with_parameters(parameters)
        if y0_low is not None or y0_high is not None:
            spec = DynamicalSystem(
                name=spec.name,
                state=spec.state,
                rhs=spec.rhs,
                y0_low=tuple(y0_low) if y0_low is not None else spec.y0_low,
                y0_high=tuple(y0_high) if y0_high is not None else spec.y0_high,
                t_span=spec.t_span,
                parameters=spec.parameters,
                diffusion=spec.diffusion,
                description=spec.description,
            )
        return spec

    @property
    def state_dim(self) -> int:
        return self.system_spec.dim

    @property
    def times(self) -> torch.Tensor:
        return torch.linspace(*self.t_span, self.hparams.n_times, dtype=torch.float64)

    def generate(self) -> dict[str, torch.Tensor]:
        hp = self.hparams
        rng = np.random.default_rng(hp.seed)
        spec = self.system_spec
        y0 = rng.uniform(spec.y0_low, spec.y0_high, size=(hp.n_trajectories, spec.dim))
        t = self.times.numpy()
        if spec.is_stochastic:
            paths = simulate_sde(spec, y0, t, rng=rng, substeps=hp.sde_substeps)
        else:
            paths = solve_trajectories(
                spec, y0, t, method=hp.ode_method, rtol=hp.rtol, atol=hp.atol
            )
        observed = paths + hp.noise_std * rng.standard_normal(paths.shape)
        n = hp.n_trajectories
        return {
            "t": torch.as_tensor(np.broadcast_to(t, (n, len(t))).copy(), dtype=torch.float32),
            "y": torch.as_tensor(observed, dtype=torch.float32),
            "y_true": torch.as_tensor(paths, dtype=torch.float32),
        }

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        ranges = {
            "train": slice(0, self.n_train),
            "val": slice(self.n_train, self.n_train + self.n_val),
            "test": slice(self.n_train + self.n_val, None),
        }
        parts = {name: {k: v[s] for k, v in data.items()} for name, s in ranges.items()}
        if self.hparams.segment_length is not None:
            parts["train"] = _windows(parts["train"], self.hparams.segment_length)
        return {name: TensorDictDataset(tensors) for name, tensors in parts.items()}


def _windows(tensors: Mapping[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Every run of ``length`` consecutive times of every trajectory.

    ``(n, T, ...) -> (n * (T - L + 1), L, ...)``.
    """
    out = {}
    for name, value in tensors.items():
        windows = value.unfold(1, length, 1)  # (n, T-L+1, ..., L)
        windows = windows.movedim(-1, 2)  # (n, T-L+1, L, ...)
        out[name] = windows.reshape(-1, length, *value.shape[2:])
    return out
