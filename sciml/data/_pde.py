"""1-D periodic convection-diffusion problems from sympy strings, reference solvers, data module."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Literal

import numpy as np
import sympy
import torch
from scipy.integrate import solve_ivp
from torch.utils.data import Dataset

from ..symbolic import (
    SymbolicParseError,
    parse_convection_diffusion,
    parse_expressions,
    to_numpy_function,
    to_torch_function,
)
from ._base import ProblemDataModule, TensorDictDataset

__all__ = [
    "ConvectionDiffusion1D",
    "ConvectionDiffusionDataModule",
    "fourier_interpolate",
    "fourier_multiplier_solution",
    "hopf_cole_solution",
    "spectral_mol_solution",
]

ReferenceMethod = Literal["auto", "fourier", "hopf_cole", "spectral"]
_FIELDS = ("u", "x", "t")


@dataclass(frozen=True)
class ConvectionDiffusion1D:
    r"""The periodic problem $u_t + f(u, x, t)\,u_x = \nu\,u_{xx} + s(u, x, t)$, $u(x, 0) = u_0(x)$.

    Space is $[0, L)$ with period $L$, time $[0, T]$. ``velocity="50"`` is linear convection,
    ``velocity="u"`` is Burgers. Strings are parsed at construction, so a bad expression fails
    before any training.

    Args:
        velocity: characteristic speed $f$, a sympy string in ``u``, ``x``, ``t``.
        nu: diffusivity $\nu \ge 0$.
        u0: initial condition, a sympy string in ``x``; must be $L$-periodic.
        source: source term $s$, a sympy string in ``u``, ``x``, ``t``.
        length: period $L$.
        t_final: final time $T$.
    """

    velocity: str = "50"
    nu: float = 0.0
    u0: str = "sin(x)"
    source: str = "0"
    length: float = 2 * math.pi
    t_final: float = 1.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.nu, self.length, self.t_final)):
            raise ValueError(
                "problem.nu, problem.length and problem.t_final must be finite, got "
                f"{self.nu}, {self.length} and {self.t_final}"
            )
        if self.nu < 0:
            raise ValueError(f"problem.nu must be >= 0, got {self.nu}")
        if self.length <= 0 or self.t_final <= 0:
            raise ValueError(
                f"problem.length and problem.t_final must be positive, "
                f"got {self.length} and {self.t_final}"
            )
        _ = self.velocity_expr, self.source_expr  # parse now: bad strings fail at construction
        x = np.linspace(0.0, self.length, 257)
        values = self.initial_numpy(x)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"problem.u0 = {self.u0!r} is not finite on [0, length]")
        if abs(values[0] - values[-1]) > 1e-8 * (1.0 + np.abs(values).max()):
            raise ValueError(
                f"problem.u0 = {self.u0!r} is not periodic: u0(0) = {values[0]:.6g} but "
                f"u0(length={self.length:.6g}) = {values[-1]:.6g}"
            )

    def __reduce__(self):
        # Pickle (and deep-copy) the settings only: the compiled functions cached on the instance
        # are lambdified code that cannot be pickled, and are rebuilt on demand.
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def from_equation(
        cls,
        equation: str,
        *,
        u0: str = "sin(x)",
        length: float = 2 * math.pi,
        t_final: float = 1.0,
        parameters: dict[str, float] | None = None,
    ) -> ConvectionDiffusion1D:
        """Build the problem from a whole equation, e.g. ``"u_t + u*u_x = 0.01*u_xx"``.

        Raises:
            SymbolicParseError: the equation is not of the convection-diffusion class.
        """
        terms = parse_convection_diffusion(equation, parameters=parameters)
        return cls(
            velocity=str(terms.velocity),
            nu=terms.nu,
            u0=u0,
            source=str(terms.source),
            length=length,
            t_final=t_final,
        )

    def poses_the_same_problem(self, other: ConvectionDiffusion1D) -> bool:
        """Equal up to how the expressions are written (``"30"`` and ``"30.0"``, ``"2*u"`` and
        ``"u + u"``) and to floating-point roundoff in the numbers."""
        numbers = ("nu", "length", "t_final")
        if not all(
            math.isclose(getattr(self, n), getattr(other, n), rel_tol=1e-12) for n in numbers
        ):
            return False
        pairs = (
            (self.velocity_expr, other.velocity_expr),
            (self.source_expr, other.source_expr),
            (self.u0_expr, other.u0_expr),
        )
        return all(sympy.simplify(a - b) == 0 for a, b in pairs)

    @cached_property
    def velocity_expr(self) -> sympy.Expr:
        return _parse(self.velocity, "problem.velocity", _FIELDS)

    @cached_property
    def source_expr(self) -> sympy.Expr:
        return _parse(self.source, "problem.source", _FIELDS)

    @cached_property
    def u0_expr(self) -> sympy.Expr:
        return _parse(self.u0, "problem.u0", ("x",))

    @property
    def is_linear_constant_speed(self) -> bool:
        """$f$ is a constant and there is no source: the Fourier multiplier is exact."""
        return not self.velocity_expr.free_symbols and self.source_expr == 0

    @property
    def is_burgers(self) -> bool:
        return self.velocity_expr == sympy.Symbol("u") and self.source_expr == 0

    @property
    def sine_offset(self) -> float | None:
        """$C$ if $u_0 = C + \\sin x$ on $[0, 2\\pi)$ (the Hopf-Cole case), else ``None``."""
        if not math.isclose(self.length, 2 * math.pi, rel_tol=1e-12):
            return None
        rest = sympy.simplify(self.u0_expr - sympy.sin(sympy.Symbol("x")))
        return float(rest) if not rest.free_symbols else None

    # --- compiled functions ---------------------------------------------------------------

    def initial_numpy(self, x: np.ndarray) -> np.ndarray:
        f = sympy.lambdify(sympy.Symbol("x"), self.u0_expr, "numpy")
        return np.broadcast_to(np.asarray(f(x), dtype=float), np.shape(x)).copy()

    def initial_torch(self, x: torch.Tensor) -> torch.Tensor:
        """$u_0(x)$ for a tensor ``x`` of any shape; differentiable."""
        return self._torch("u0")(torch.zeros((), dtype=x.dtype), x.unsqueeze(-1))[..., 0]

    def velocity_torch(self, u: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """$f(u, x, t)$ elementwise (broadcast shapes); differentiable."""
        return self._field_torch("velocity", u, x, t)

    def source_torch(self, u: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """$s(u, x, t)$ elementwise; differentiable."""
        return self._field_torch("source", u, x, t)

    def velocity_scale(self) -> float:
        r"""$\max_x |f(u_0(x), x, 0)|$, or 1 when the initial speed vanishes everywhere."""
        x = np.linspace(0.0, self.length, 1024, endpoint=False)
        f = to_numpy_function([self.velocity_expr], state=("u", "x"))
        speed = float(np.abs(f(0.0, np.stack([self.initial_numpy(x), x]))).max())
        return speed if speed > 0 else 1.0

    def _field_torch(self, name: str, u, x, t) -> torch.Tensor:
        u, x, t = torch.broadcast_tensors(u, x, torch.as_tensor(t, dtype=u.dtype))
        return self._torch(name)(t, torch.stack([u, x], -1))[..., 0]

    @cached_property
    def _torch_functions(self) -> dict[str, Callable]:
        return {
            "velocity": to_torch_function([self.velocity_expr], state=("u", "x")),
            "source": to_torch_function([self.source_expr], state=("u", "x")),
            "u0": to_torch_function([self.u0_expr], state=("x",)),
        }

    def _torch(self, name: str) -> Callable:
        return self._torch_functions[name]

    # --- reference solutions --------------------------------------------------------------

    def reference(
        self, x: np.ndarray, t: np.ndarray, *, method: ReferenceMethod = "auto"
    ) -> np.ndarray:
        """Reference solution ``(len(t), len(x))`` on the tensor grid of ``x`` and ``t``.

        ``"auto"`` picks the Fourier multiplier for constant-speed problems, the exact Hopf-Cole
        quadrature for Burgers with $u_0 = C + \\sin x$ and $\\nu > 0$, and the pseudo-spectral
        method of lines otherwise.
        """
        choices = ("auto", "fourier", "hopf_cole", "spectral")
        if method not in choices:
            raise ValueError(f"unknown reference method {method!r}; choose one of {choices}")
        if method == "auto":
            if self.is_linear_constant_speed:
                method = "fourier"
            elif self.is_burgers and self.nu > 0 and self.sine_offset is not None:
                method = "hopf_cole"
            else:
                method = "spectral"
        if method == "fourier":
            return fourier_multiplier_solution(self, x, t)
        if method == "hopf_cole":
            if not (self.is_burgers and self.nu > 0 and self.sine_offset is not None):
                raise ValueError(
                    "the Hopf-Cole reference needs Burgers (velocity='u', source='0'), nu > 0 "
                    "and u0 = C + sin(x) on [0, 2*pi)"
                )
            return hopf_cole_solution(x, t, nu=self.nu, offset=self.sine_offset)
        return spectral_mol_solution(self, x, t)


def _parse(text: str, where: str, variables: tuple[str, ...]) -> sympy.Expr:
    try:
        return parse_expressions([text], variables=variables, where=where)[0]
    except SymbolicParseError as err:
        raise SymbolicParseError(str(err).replace(f"{where}[0]", where)) from None


def _wavenumbers(n: int, length: float) -> np.ndarray:
    return 2 * np.pi / length * np.fft.rfftfreq(n, d=1.0 / n)


def fourier_interpolate(values: np.ndarray, x: np.ndarray, length: float) -> np.ndarray:
    """Evaluate the trigonometric interpolant of periodic samples at arbitrary points.

    Args:
        values: samples ``(..., N)`` on the uniform grid ``length * j / N``, ``j < N``.
        x: query points ``(M,)``, or ``(..., M)`` with the leading shape of ``values``.
        length: the period.

    Returns:
        ``(..., M)``; exact for band-limited data (spectral accuracy for smooth data).
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    coefficients = np.fft.rfft(values, axis=-1) / n
    weights = np.full(coefficients.shape[-1], 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    coefficients = coefficients * weights
    k = _wavenumbers(n, length)
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        return np.real(coefficients @ np.exp(1j * np.outer(k, x)))
    phases = np.exp(1j * k * x[..., None])  # (..., M, K)
    return np.real(np.einsum("...mk,...k->...m", phases, coefficients))


def fourier_multiplier_solution(
    problem: ConvectionDiffusion1D, x: np.ndarray, t: np.ndarray, *, n_modes: int = 1024
) -> np.ndarray:
    r"""Exact solution of $u_t + c\,u_x = \nu\,u_{xx}$ by the Fourier multiplier.

    Each mode evolves as $\hat u_k(t) = \hat u_k(0)\,e^{-\nu k^2 t - ick t}$.

    $u_0$ is sampled on ``n_modes`` points (exact for band-limited initial data) and the series is
    summed at ``x``. Returns ``(len(t), len(x))``.
    """
    if not problem.is_linear_constant_speed:
        raise ValueError(
            "the Fourier multiplier needs a constant velocity and no source, got "
            f"velocity={problem.velocity!r}, source={problem.source!r}"
        )
    c = float(problem.velocity_expr)
    grid = np.linspace(0.0, problem.length, n_modes, endpoint=False)
    k = _wavenumbers(n_modes, problem.length)
    t = np.asarray(t, dtype=float)
    spectrum = np.fft.rfft(problem.initial_numpy(grid))
    evolved = spectrum * np.exp(-(problem.nu * k**2 + 1j * c * k) * t[:, None])
    return fourier_interpolate(np.fft.irfft(evolved, n=n_modes, axis=-1), x, problem.length)


def spectral_mol_solution(
    problem: ConvectionDiffusion1D,
    x: np.ndarray,
    t: np.ndarray,
    *,
    n_points: int = 1024,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> np.ndarray:
    r"""Pseudo-spectral method of lines: $u_t = -f(u, x, t)\,u_x + \nu u_{xx} + s$ on ``n_points``.

    Derivatives are exact on the Fourier modes; time by ``solve_ivp(DOP853)``. Valid while the
    solution is resolved (no inviscid shock). Returns ``(len(t), len(x))`` by Fourier
    interpolation.
    """
    t = np.asarray(t, dtype=float)
    if np.any(np.diff(t) < 0) or t[0] < 0:
        raise ValueError("t must be non-negative and increasing")
    grid = np.linspace(0.0, problem.length, n_points, endpoint=False)
    k = _wavenumbers(n_points, problem.length)
    velocity = to_numpy_function([problem.velocity_expr], state=("u", "x"))
    source = to_numpy_function([problem.source_expr], state=("u", "x"))

    def rhs(time: float, u: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(u)
        u_x = np.fft.irfft(1j * k * spectrum, n=n_points)
        u_xx = np.fft.irfft(-(k**2) * spectrum, n=n_points)
        state = np.stack([u, grid])
        return -velocity(time, state)[0] * u_x + problem.nu * u_xx + source(time, state)[0]

    solution = solve_ivp(
        rhs,
        (0.0, float(t[-1])),
        problem.initial_numpy(grid),
        method="DOP853",
        t_eval=t,
        rtol=rtol,
        atol=atol,
    )
    if not solution.success:
        raise RuntimeError(f"spectral reference failed: {solution.message}")
    return fourier_interpolate(solution.y.T, x, problem.length)


def hopf_cole_solution(
    x: np.ndarray, t: np.ndarray, *, nu: float, offset: float = 0.0, ds: float = 2e-3
) -> np.ndarray:
    r"""Exact viscous Burgers solution for $u_0 = C + \sin x$ by heat-kernel quadrature.

    With $v$ the solution for $C = 0$, $u(x, t) = C + v(x - Ct, t)$ (Galilean shift) and, by
    Hopf-Cole, $v = \int (s/t)\,e^{-G/2\nu}\,ds \,/ \int e^{-G/2\nu}\,ds$ with
    $G(s) = s^2/(2t) + 1 - \cos(\xi - s)$, $\xi = x - Ct$. The exponent is shifted by its minimum
    over $s$, so nothing underflows at small $\nu$ (the Fourier-series form of Hopf-Cole does).

    Returns ``(len(t), len(x))``.
    """
    if nu <= 0:
        raise ValueError(f"Hopf-Cole needs nu > 0, got {nu}")
    x = np.asarray(x, dtype=float)
    out = np.empty((len(t), len(x)))
    for i, time in enumerate(np.asarray(t, dtype=float)):
        if time == 0:
            out[i] = offset + np.sin(x)
            continue
        half_width = 8 * np.sqrt(2 * nu * time) + 4
        s = np.arange(-half_width, half_width + ds / 2, ds)
        xi = (x - offset * time)[:, None]
        g = s**2 / (2 * time) + 1 - np.cos(xi - s)
        weights = np.exp(-(g - g.min(axis=1, keepdims=True)) / (2 * nu))
        out[i] = offset + (weights @ (s / time)) / weights.sum(axis=1)
    return out


class _Repeated(Dataset):
    """The single item of ``dataset``, ``times`` times: one epoch of full-batch steps."""

    def __init__(self, dataset: TensorDictDataset, times: int) -> None:
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return self.times

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.times:
            raise IndexError(index)
        return self.dataset[0]


class ConvectionDiffusionDataModule(ProblemDataModule):
    r"""Collocation points and reference solutions for a :class:`ConvectionDiffusion1D` problem.

    Every split is a single full batch (PINN training with L-BFGS needs the whole loss), a dict of
    tensors with leading dimension 1:

    * ``train``: collocation points ``x, t (1, N)`` (a tensor grid of ``n_x`` labels/positions
      times ``n_t`` times for ``sampling="grid"``, or ``n_collocation`` uniform random points),
      initial data ``x_initial, u_initial (1, n_initial)`` and boundary times
      ``t_boundary (1, n_boundary)`` (used by the Eulerian PINN's soft constraints);
    * ``val``: a coarse evaluation grid ``x (1, val_n_x)``, ``t (1, val_n_t)`` with the reference
      ``u (1, val_n_t, val_n_x)``;
    * ``test``: the same on ``test_n_x x test_n_t`` (default 256 x 100, x without the endpoint),
      computed only when testing.

    An epoch is ``steps_per_epoch`` steps on the same full batch, so validation and checkpoints
    happen every ``steps_per_epoch`` optimiser steps.

    Args:
        problem: the PDE.
        sampling: ``"grid"`` or ``"random"`` collocation points.
        n_x, n_t: grid collocation sizes (``t`` includes 0 and ``t_final``).
        n_collocation: number of random collocation points (``t`` in $(0, T]$).
        n_initial: initial-condition points (uniform grid on $[0, L)$).
        n_boundary: boundary times (uniform on $[0, T]$).
        val_n_x, val_n_t, test_n_x, test_n_t: evaluation grids.
        reference: reference solver (see :meth:`ConvectionDiffusion1D.reference`).
        steps_per_epoch: training steps per epoch.
    """

    _not_in_cache_key = ProblemDataModule._not_in_cache_key | {"steps_per_epoch"}

    def __init__(
        self,
        problem: ConvectionDiffusion1D = ConvectionDiffusion1D(),
        *,
        sampling: Literal["grid", "random"] = "grid",
        n_x: int = 64,
        n_t: int = 50,
        n_collocation: int = 1000,
        n_initial: int = 256,
        n_boundary: int = 100,
        val_n_x: int = 64,
        val_n_t: int = 11,
        test_n_x: int = 256,
        test_n_t: int = 100,
        reference: ReferenceMethod = "auto",
        steps_per_epoch: int = 100,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(seed=seed, batch_size=1, num_workers=num_workers, cache_dir=cache_dir)
        self.save_hyperparameters()
        self.problem = ConvectionDiffusion1D(**problem) if isinstance(problem, dict) else problem
        if sampling not in ("grid", "random"):
            raise ValueError(f"data.sampling must be 'grid' or 'random', got {sampling!r}")
        sizes = {
            "n_x": n_x,
            "n_t": n_t,
            "n_collocation": n_collocation,
            "n_initial": n_initial,
            "n_boundary": n_boundary,
            "val_n_x": val_n_x,
            "val_n_t": val_n_t,
            "test_n_x": test_n_x,
            "test_n_t": test_n_t,
        }
        small = {name: value for name, value in sizes.items() if value < 2}
        if small:
            raise ValueError(f"data sizes must be >= 2, got {small}")
        if steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def evaluation_grid(self, n_x: int, n_t: int) -> dict[str, torch.Tensor]:
        """``x (1, n_x)`` (no endpoint), ``t (1, n_t)``, the reference ``u (1, n_t, n_x)``."""
        x = np.linspace(0.0, self.problem.length, n_x, endpoint=False)
        t = np.linspace(0.0, self.problem.t_final, n_t)
        u = self.problem.reference(x, t, method=self.hparams.reference)
        return {
            "x": torch.as_tensor(x, dtype=torch.float32)[None],
            "t": torch.as_tensor(t, dtype=torch.float32)[None],
            "u": torch.as_tensor(u, dtype=torch.float64)[None],
        }

    def generate(self) -> dict[str, torch.Tensor]:
        hp, problem = self.hparams, self.problem
        length, t_final = problem.length, problem.t_final
        if hp.sampling == "grid":
            x_axis = np.linspace(0.0, length, hp.n_x, endpoint=False)
            t_axis = np.linspace(0.0, t_final, hp.n_t)
            t, x = (a.ravel() for a in np.meshgrid(t_axis, x_axis, indexing="ij"))
        else:
            rng = np.random.default_rng(hp.seed)
            x = rng.uniform(0.0, length, hp.n_collocation)
            t = t_final * (1.0 - rng.uniform(0.0, 1.0, hp.n_collocation))  # in (0, T]
        x_initial = np.linspace(0.0, length, hp.n_initial, endpoint=False)
        data = {
            "x": x,
            "t": t,
            "x_initial": x_initial,
            "u_initial": problem.initial_numpy(x_initial),
            "t_boundary": np.linspace(0.0, t_final, hp.n_boundary),
        }
        out = {f"train/{k}": torch.as_tensor(v, dtype=torch.float32)[None] for k, v in data.items()}
        val = self.evaluation_grid(hp.val_n_x, hp.val_n_t)
        out.update({f"val/{k}": v for k, v in val.items()})
        return out

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, Dataset]:
        splits = {}
        for name in ("train", "val"):
            prefix = f"{name}/"
            tensors = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
            splits[name] = TensorDictDataset(tensors)
        splits["train"] = _Repeated(splits["train"], self.hparams.steps_per_epoch)
        return splits

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in ("test", "predict", None) and "test" not in self.splits:
            # The fine reference is only needed for testing (Hopf-Cole on 256 x 100 takes seconds).
            grid = self.evaluation_grid(self.hparams.test_n_x, self.hparams.test_n_t)
            self.splits["test"] = TensorDictDataset(grid)
