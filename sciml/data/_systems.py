"""A registry of dynamical systems defined by sympy right-hand sides given as strings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from ..symbolic import parse_expressions, to_numpy_function, to_torch_function

__all__ = ["SYSTEMS", "DynamicalSystem", "get_system", "list_systems", "register_system"]


@dataclass(frozen=True)
class DynamicalSystem:
    r"""An ODE $\dot y = f(t, y)$, optionally an Ito SDE $dy = f\,dt + \mathrm{diag}(g)\,dW$.

    Args:
        name: registry key.
        state: names of the state components, e.g. ``("x", "y")``.
        rhs: drift, one sympy string per state component, in the state names, ``t`` and parameters.
        parameters: default numeric values of the parameters used in ``rhs``/``diffusion``.
        y0_low, y0_high: box from which initial conditions are drawn uniformly.
        t_span: default time interval.
        diffusion: optional diagonal noise amplitudes $g_i(t, y)$, one string per component.
        description: one line shown by :func:`list_systems`.
    """

    name: str
    state: tuple[str, ...]
    rhs: tuple[str, ...]
    y0_low: tuple[float, ...]
    y0_high: tuple[float, ...]
    t_span: tuple[float, float]
    parameters: Mapping[str, float] = field(default_factory=dict)
    diffusion: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        d = len(self.state)
        for label, values in (
            ("rhs", self.rhs),
            ("y0_low", self.y0_low),
            ("y0_high", self.y0_high),
        ):
            if len(values) != d:
                raise ValueError(
                    f"system {self.name!r}: {label} has {len(values)} entries, state has {d}"
                )
        if self.diffusion is not None and len(self.diffusion) != d:
            raise ValueError(
                f"system {self.name!r}: diffusion has {len(self.diffusion)} entries, state has {d}"
            )
        if any(lo > hi for lo, hi in zip(self.y0_low, self.y0_high, strict=True)):
            raise ValueError(f"system {self.name!r}: y0_low must not exceed y0_high")
        if not self.t_span[1] > self.t_span[0]:
            raise ValueError(f"system {self.name!r}: t_span must be increasing, got {self.t_span}")
        if "t" in self.state:
            raise ValueError(f"system {self.name!r}: 't' is reserved for time")
        # Parse eagerly so a bad string fails at registration, not in the middle of data generation.
        _ = self.drift_expressions, self.diffusion_expressions

    @property
    def dim(self) -> int:
        return len(self.state)

    @property
    def is_stochastic(self) -> bool:
        return self.diffusion is not None

    def _parse(
        self, expressions: Sequence[str], where: str, parameters: Mapping[str, float] | None
    ):
        values = {**self.parameters, **(parameters or {})}
        return parse_expressions(
            expressions, variables=("t", *self.state), parameters=values, where=where
        )

    @cached_property
    def drift_expressions(self) -> list:
        return self._parse(self.rhs, f"system {self.name!r} rhs", None)

    @cached_property
    def diffusion_expressions(self) -> list | None:
        if self.diffusion is None:
            return None
        return self._parse(self.diffusion, f"system {self.name!r} diffusion", None)

    def with_parameters(self, parameters: Mapping[str, float]) -> DynamicalSystem:
        """A copy with some parameter values replaced; unknown names raise ``ValueError``."""
        unknown = sorted(set(parameters) - set(self.parameters))
        if unknown:
            raise ValueError(
                f"system {self.name!r} has no parameters {unknown}; "
                f"its parameters are {sorted(self.parameters)}"
            )
        return DynamicalSystem(
            name=self.name,
            state=self.state,
            rhs=self.rhs,
            y0_low=self.y0_low,
            y0_high=self.y0_high,
            t_span=self.t_span,
            parameters={**self.parameters, **parameters},
            diffusion=self.diffusion,
            description=self.description,
        )

    def numpy_drift(self) -> Callable[[float, np.ndarray], np.ndarray]:
        """``f(t, y)`` with ``y`` of shape ``(d,)`` or ``(d, k)``, for scipy."""
        return to_numpy_function(self.drift_expressions, state=self.state)

    def numpy_diffusion(self) -> Callable[[float, np.ndarray], np.ndarray]:
        if self.diffusion_expressions is None:
            raise ValueError(f"system {self.name!r} is deterministic (no diffusion)")
        return to_numpy_function(self.diffusion_expressions, state=self.state)

    def torch_drift(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``f(t, y)`` with ``y`` of shape ``(..., d)``; differentiable."""
        return to_torch_function(self.drift_expressions, state=self.state)

    def torch_diffusion(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.diffusion_expressions is None:
            raise ValueError(f"system {self.name!r} is deterministic (no diffusion)")
        return to_torch_function(self.diffusion_expressions, state=self.state)


SYSTEMS: dict[str, DynamicalSystem] = {}


def register_system(
    name: str,
    *,
    state: Sequence[str],
    rhs: Sequence[str],
    y0_low: Sequence[float],
    y0_high: Sequence[float],
    t_span: tuple[float, float],
    parameters: Mapping[str, float] | None = None,
    diffusion: Sequence[str] | None = None,
    description: str = "",
    overwrite: bool = False,
) -> DynamicalSystem:
    """Define a system from sympy strings and add it to :data:`SYSTEMS`.

    Example:
        >>> register_system("logistic", state=["x"], rhs=["r*x*(1 - x)"], parameters={"r": 2.0},
        ...                 y0_low=[0.1], y0_high=[0.5], t_span=(0.0, 5.0))  # doctest: +ELLIPSIS
        DynamicalSystem(name='logistic', ...)
    """
    if name in SYSTEMS and not overwrite:
        raise ValueError(
            f"system {name!r} is already registered; pass overwrite=True to replace it"
        )
    system = DynamicalSystem(
        name=name,
        state=tuple(state),
        rhs=tuple(rhs),
        y0_low=tuple(float(v) for v in y0_low),
        y0_high=tuple(float(v) for v in y0_high),
        t_span=(float(t_span[0]), float(t_span[1])),
        parameters={k: float(v) for k, v in (parameters or {}).items()},
        diffusion=None if diffusion is None else tuple(diffusion),
        description=description,
    )
    SYSTEMS[name] = system
    return system


def get_system(name: str) -> DynamicalSystem:
    """Look a system up by name; the error lists the registered names."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise KeyError(f"unknown system {name!r}; registered systems: {sorted(SYSTEMS)}") from None


def list_systems() -> dict[str, str]:
    """``{name: description}`` of every registered system."""
    return {name: system.description for name, system in sorted(SYSTEMS.items())}


# The built-in zoo. Parameter values follow the usual textbook / neural-ODE literature choices.
register_system(
    "exponential_decay",
    state=["y"],
    rhs=["-k*y"],
    parameters={"k": 0.5},
    y0_low=[0.5],
    y0_high=[2.0],
    t_span=(0.0, 5.0),
    description="dy/dt = -k y (exact: y0 exp(-k t))",
)
register_system(
    "harmonic_oscillator",
    state=["x", "v"],
    rhs=["v", "-omega**2*x"],
    parameters={"omega": 1.0},
    y0_low=[-1.0, -1.0],
    y0_high=[1.0, 1.0],
    t_span=(0.0, 10.0),
    description="undamped oscillator x'' = -omega^2 x",
)
register_system(
    "damped_oscillator",
    state=["x", "v"],
    rhs=["v", "-omega**2*x - 2*zeta*omega*v"],
    parameters={"omega": 1.0, "zeta": 0.1},
    y0_low=[-1.0, -1.0],
    y0_high=[1.0, 1.0],
    t_span=(0.0, 10.0),
    description="x'' + 2 zeta omega x' + omega^2 x = 0",
)
register_system(
    "lotka_volterra",
    state=["x", "y"],
    rhs=["alpha*x - beta*x*y", "delta*x*y - gamma*y"],
    parameters={"alpha": 1.5, "beta": 1.0, "delta": 1.0, "gamma": 3.0},
    y0_low=[1.0, 1.0],
    y0_high=[3.0, 3.0],
    t_span=(0.0, 5.0),
    description="predator-prey model",
)
register_system(
    "van_der_pol",
    state=["x", "y"],
    rhs=["y", "mu*(1 - x**2)*y - x"],
    parameters={"mu": 1.0},
    y0_low=[-2.0, -2.0],
    y0_high=[2.0, 2.0],
    t_span=(0.0, 10.0),
    description="relaxation oscillator with a limit cycle",
)
register_system(
    "van_der_pol_mu03",
    state=["x", "y"],
    rhs=["y", "mu*(1 - x**2)*y - x"],
    parameters={"mu": 0.3},
    y0_low=[-2.0, -2.0],
    y0_high=[2.0, 2.0],
    t_span=(0.0, 10.0),
    # Over t < 2 its orbit is nearly the damped oscillator's circle (one slowly growing, the
    # other slowly decaying) while the skeletons differ: PROSE's "confusable pair".
    description="Van der Pol oscillator with weak nonlinearity (mu = 0.3)",
)
register_system(
    "spiral",
    state=["x", "y"],
    rhs=["a11*x**3 + a21*y**3", "a12*x**3 + a22*y**3"],
    parameters={"a11": -0.1, "a12": 2.0, "a21": -2.0, "a22": -0.1},
    y0_low=[2.0, 0.0],
    y0_high=[2.0, 0.0],
    t_span=(0.0, 25.0),
    description="cubic spiral dy/dt = (y**3) A, A = [[-0.1, 2], [-2, -0.1]] (torchdiffeq demo)",
)
register_system(
    "lorenz",
    state=["x", "y", "z"],
    rhs=["sigma*(y - x)", "x*(rho - z) - y", "x*y - beta*z"],
    parameters={"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0},
    y0_low=[-10.0, -10.0, 15.0],
    y0_high=[10.0, 10.0, 35.0],
    t_span=(0.0, 2.0),
    description="Lorenz-63 chaotic attractor",
)
register_system(
    "pendulum",
    state=["theta", "omega"],
    rhs=["omega", "-(g/L)*sin(theta)"],
    parameters={"g": 9.81, "L": 1.0},
    y0_low=[-2.0, -1.0],
    y0_high=[2.0, 1.0],
    t_span=(0.0, 5.0),
    description="nonlinear pendulum",
)
register_system(
    "duffing",
    state=["x", "v"],
    rhs=["v", "-delta*v - alpha*x - beta*x**3 + gamma*cos(omega*t)"],
    parameters={"alpha": -1.0, "beta": 1.0, "delta": 0.3, "gamma": 0.37, "omega": 1.2},
    y0_low=[-1.5, -1.0],
    y0_high=[1.5, 1.0],
    t_span=(0.0, 10.0),
    description="forced double-well Duffing oscillator",
)
register_system(
    "ornstein_uhlenbeck",
    state=["x"],
    rhs=["theta*(mu - x)"],
    diffusion=["sigma"],
    parameters={"theta": 1.0, "mu": 0.0, "sigma": 0.5},
    y0_low=[-2.0],
    y0_high=[2.0],
    t_span=(0.0, 5.0),
    description="dx = theta (mu - x) dt + sigma dW",
)
register_system(
    "geometric_brownian_motion",
    state=["x"],
    rhs=["mu*x"],
    diffusion=["sigma*x"],
    parameters={"mu": 0.1, "sigma": 0.3},
    y0_low=[0.5],
    y0_high=[1.5],
    t_span=(0.0, 2.0),
    description="dx = mu x dt + sigma x dW",
)
register_system(
    "stochastic_oscillator",
    state=["x", "v"],
    rhs=["v", "-omega**2*x - 2*zeta*omega*v"],
    diffusion=["0", "sigma"],
    parameters={"omega": 1.0, "zeta": 0.1, "sigma": 0.3},
    y0_low=[-1.0, -1.0],
    y0_high=[1.0, 1.0],
    t_span=(0.0, 10.0),
    description="damped oscillator driven by additive white noise on the velocity",
)
