"""Hamiltonian systems from sympy strings, and few-shot tasks over system types for meta-learning.

A *system type* is a Hamiltonian $H(q, p; \\lambda)$ with ranges for its parameters $\\lambda$; a
*task* is one type with parameters drawn from those ranges, observed as phase points $x = (q, p)$
with their exact time derivatives $\\dot x = J \\nabla H(x)$ (from the symbolic $H$). States are
stored as graphs: one node per body with features $(q_i, p_i) \\in \\mathbb{R}^{2D}$, padded with
zeros (and a mask) to the largest body count and spatial dimension of the data module, so systems
with different numbers of particles share one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import sympy
import torch
from scipy.integrate import solve_ivp

from ..symbolic import SymbolicHamiltonian, parse_expressions, parse_hamiltonian
from ._base import ProblemDataModule, TensorDictDataset

__all__ = [
    "HAMILTONIAN_SYSTEMS",
    "HamiltonianMetaDataModule",
    "HamiltonianSystem",
    "get_hamiltonian_system",
    "make_hamiltonian_system",
    "register_hamiltonian_system",
]

INITIAL_STATES = ("box", "orbits")


@dataclass(frozen=True)
class HamiltonianSystem:
    r"""A family of Hamiltonian systems $H(q, p; \lambda)$ given as a sympy string.

    Coordinates are listed body by body (``("x1", "y1", "x2", "y2")`` for two bodies in the
    plane), momenta in the same order; each body then has ``D = len(coordinates) // n_bodies``
    coordinates. The flat state is $y = (q, p)$, the graph state ``(n_bodies, 2D)`` has rows
    $(q_i, p_i)$.

    Args:
        name: registry key / label.
        hamiltonian: $H$ as a sympy string in the coordinates, momenta and parameters.
        coordinates, momenta: names of $q$ and $p$ (equal length).
        parameters: ``{name: (low, high)}`` ranges a task draws from uniformly, or a float for a
            fixed value.
        n_bodies: number of graph nodes (particles).
        initial_state: ``"box"`` draws $q$ uniformly in ``[q_low, q_high]`` and $p$ in
            ``[p_low, p_high]`` per component; ``"orbits"`` (planar n-body problems) puts the
            bodies on a circle of radius in ``[q_low, q_high]`` with 0.8-1.0 times the speed
            of a circular orbit, total momentum removed.
        max_energy: optional sympy string in the parameters; initial states with
            $H \geq$ it are redrawn (keeps orbits bounded, e.g. ``"0.8*D"`` for Morse).
        t_span: simulated time interval of each trajectory.
        description: one line describing the system.
    """

    name: str
    hamiltonian: str
    coordinates: tuple[str, ...]
    momenta: tuple[str, ...]
    parameters: Mapping[str, float | tuple[float, float]] = field(default_factory=dict)
    n_bodies: int = 1
    initial_state: Literal["box", "orbits"] = "box"
    q_low: float = -1.0
    q_high: float = 1.0
    p_low: float = -1.0
    p_high: float = 1.0
    max_energy: str | None = None
    t_span: tuple[float, float] = (0.0, 5.0)
    description: str = ""

    def __post_init__(self) -> None:
        where = f"Hamiltonian system {self.name!r}"
        if self.n_bodies < 1 or len(self.coordinates) % self.n_bodies:
            raise ValueError(
                f"{where}: n_bodies={self.n_bodies} must be >= 1 and divide the number of "
                f"coordinates ({len(self.coordinates)})"
            )
        if self.initial_state not in INITIAL_STATES:
            raise ValueError(
                f"{where}: initial_state={self.initial_state!r}; choose one of {INITIAL_STATES}"
            )
        if self.initial_state == "orbits" and (self.body_dim != 2 or self.n_bodies < 2):
            raise ValueError(f"{where}: initial_state='orbits' needs >= 2 bodies in the plane")
        for name, value in self.parameters.items():
            low, high = _range(value)
            if low > high:
                raise ValueError(f"{where}: parameter {name!r} has low {low} > high {high}")
        if self.q_low > self.q_high or self.p_low > self.p_high:
            raise ValueError(f"{where}: q_low/p_low must not exceed q_high/p_high")
        if not self.t_span[1] > self.t_span[0]:
            raise ValueError(f"{where}: t_span must be increasing, got {self.t_span}")
        _ = self.symbolic, self._energy_bound  # parse now: bad strings fail at construction

    @property
    def dof(self) -> int:
        """Degrees of freedom $n$ (the flat state has $2n$ components)."""
        return len(self.coordinates)

    @property
    def body_dim(self) -> int:
        """Coordinates per body $D$."""
        return self.dof // self.n_bodies

    @cached_property
    def symbolic(self) -> SymbolicHamiltonian:
        return parse_hamiltonian(
            self.hamiltonian,
            coordinates=self.coordinates,
            momenta=self.momenta,
            parameters=tuple(self.parameters),
            where=f"Hamiltonian system {self.name!r}: hamiltonian",
        )

    @cached_property
    def _energy_bound(self) -> Callable[..., float] | None:
        if self.max_energy is None:
            return None
        symbols = [sympy.Symbol(name) for name in self.parameters]
        (expr,) = parse_expressions(
            [self.max_energy],
            variables=(),
            parameters=dict(zip(self.parameters, symbols, strict=True)),
            where=f"system {self.name!r}: max_energy",
        )
        return sympy.lambdify(symbols, expr, modules="numpy")

    @cached_property
    def _compiled(self) -> tuple[Callable, Callable]:
        sym = self.symbolic
        return (
            sympy.lambdify(sym.symbols, sym.energy, modules="numpy"),
            sympy.lambdify(sym.symbols, sym.vector_field, modules="numpy"),
        )

    def sample_parameters(self, rng: np.random.Generator) -> dict[str, float]:
        """One task's parameters, uniform in the ranges (in declaration order)."""
        return {name: float(rng.uniform(*_range(v))) for name, v in self.parameters.items()}

    def _args(self, y: np.ndarray, parameters: Mapping[str, float]) -> list:
        missing = sorted(set(self.parameters) - set(parameters))
        if missing:
            raise ValueError(f"system {self.name!r}: missing parameter values {missing}")
        return [*np.moveaxis(y, -1, 0), *(parameters[name] for name in self.parameters)]

    def energy(self, y: np.ndarray, parameters: Mapping[str, float]) -> np.ndarray:
        """$H(y)$ for flat states ``(..., 2n)``; returns ``(...)``."""
        y = np.asarray(y, dtype=float)
        return np.broadcast_to(self._compiled[0](*self._args(y, parameters)), y.shape[:-1]).copy()

    def derivatives(self, y: np.ndarray, parameters: Mapping[str, float]) -> np.ndarray:
        r"""Exact $\dot y = J \nabla H(y)$ for flat states ``(..., 2n)``; same shape."""
        y = np.asarray(y, dtype=float)
        values = self._compiled[1](*self._args(y, parameters))
        return np.stack([np.broadcast_to(v, y.shape[:-1]) for v in values], axis=-1)

    def simulate(
        self,
        y0: np.ndarray,
        t: np.ndarray,
        parameters: Mapping[str, float],
        *,
        rtol: float = 1e-10,
        atol: float = 1e-10,
    ) -> np.ndarray:
        """Trajectories ``(k, T, 2n)`` from ``y0 (k, 2n)`` on the times ``t (T,)`` (DOP853).

        All ``k`` trajectories are integrated as one stacked system, so one call is one solve.
        """
        y0 = np.asarray(y0, dtype=float)
        k, d = y0.shape

        def rhs(time: float, flat: np.ndarray) -> np.ndarray:
            return self.derivatives(flat.reshape(k, d), parameters).reshape(-1)

        solution = solve_ivp(
            rhs, (t[0], t[-1]), y0.reshape(-1), method="DOP853", t_eval=t, rtol=rtol, atol=atol
        )
        if not solution.success:
            raise RuntimeError(f"system {self.name!r} with {parameters}: {solution.message}")
        return solution.y.T.reshape(len(t), k, d).transpose(1, 0, 2)

    def sample_initial_states(
        self, rng: np.random.Generator, parameters: Mapping[str, float], n: int
    ) -> np.ndarray:
        """``n`` flat initial states ``(n, 2n_dof)``, redrawn while $H \\geq$ ``max_energy``."""
        bound = (
            np.inf
            if self._energy_bound is None
            else float(self._energy_bound(*(parameters[k] for k in self.parameters)))
        )
        states: list[np.ndarray] = []
        for _ in range(1000):
            draw = self._draw(rng, parameters, n)
            states.extend(draw[self.energy(draw, parameters) < bound])
            if len(states) >= n:
                return np.stack(states[:n])
        raise RuntimeError(
            f"system {self.name!r}: fewer than {n} initial states below max_energy "
            f"{self.max_energy} = {bound:.4g} after 1000 draws; widen q/p ranges or the bound"
        )

    def _draw(self, rng: np.random.Generator, parameters: Mapping[str, float], n: int):
        if self.initial_state == "box":
            q = rng.uniform(self.q_low, self.q_high, (n, self.dof))
            p = rng.uniform(self.p_low, self.p_high, (n, self.dof))
            return np.concatenate([q, p], axis=-1)
        # Bodies evenly spaced on a circle (random radius and rotation, jittered), moving
        # tangentially at 0.8-1 times the circular speed |p| = sqrt(m r |F_radial|).
        b = self.n_bodies
        radius = rng.uniform(self.q_low, self.q_high, (n, 1))
        angle = 2 * np.pi * np.arange(b) / b + rng.uniform(0, 2 * np.pi, (n, 1))
        angle = angle + rng.normal(0.0, 0.05, (n, b))
        direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (n, b, 2)
        q = radius[..., None] * direction
        zeros = np.zeros((n, self.dof))
        force = self.derivatives(np.concatenate([q.reshape(n, -1), zeros], -1), parameters)
        force = force[:, self.dof :].reshape(n, b, 2)
        # Inverse masses from dq/dt = M^{-1} p, probed with a unit momentum on x of every body.
        probe = np.concatenate([q.reshape(n, -1), np.tile([1.0, 0.0], (n, b))], -1)
        inverse_mass = self.derivatives(probe, parameters)[:, : self.dof].reshape(n, b, 2)[..., 0]
        mass = 1.0 / np.maximum(inverse_mass, 1e-12)
        radial = np.maximum(-(force * direction).sum(-1), 0.0)
        speed = rng.uniform(0.8, 1.0, (n, 1)) * np.sqrt(mass * radius * radial)
        tangent = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)
        p = speed[..., None] * tangent
        p -= mass[..., None] / mass.sum(-1)[:, None, None] * p.sum(1, keepdims=True)
        return np.concatenate([q.reshape(n, -1), p.reshape(n, -1)], axis=-1)

    def to_nodes(self, y: np.ndarray, n_nodes: int, node_dim: int) -> np.ndarray:
        """Flat states ``(..., 2n)`` as zero-padded graph states ``(..., n_nodes, 2*node_dim)``."""
        q = y[..., : self.dof].reshape(*y.shape[:-1], self.n_bodies, self.body_dim)
        p = y[..., self.dof :].reshape(*y.shape[:-1], self.n_bodies, self.body_dim)
        out = np.zeros((*y.shape[:-1], n_nodes, 2 * node_dim))
        out[..., : self.n_bodies, : self.body_dim] = q
        out[..., : self.n_bodies, node_dim : node_dim + self.body_dim] = p
        return out

    def from_nodes(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_nodes`: ``(..., n_nodes, 2*node_dim)`` to flat ``(..., 2n)``."""
        node_dim = x.shape[-1] // 2
        q = x[..., : self.n_bodies, : self.body_dim]
        p = x[..., : self.n_bodies, node_dim : node_dim + self.body_dim]
        flat = (*x.shape[:-2], self.dof)
        return np.concatenate([q.reshape(flat), p.reshape(flat)], axis=-1)

    def node_mask(self, n_nodes: int, node_dim: int) -> np.ndarray:
        """``(n_nodes, 2*node_dim)``: 1 where a graph feature is a real $q$ or $p$ component."""
        return self.to_nodes(np.ones(2 * self.dof), n_nodes, node_dim)


def _range(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = value
    return float(low), float(high)


HAMILTONIAN_SYSTEMS: dict[str, HamiltonianSystem] = {}


def register_hamiltonian_system(
    name: str, *, overwrite: bool = False, **settings: Any
) -> HamiltonianSystem:
    """Define a :class:`HamiltonianSystem` (keyword arguments as its fields) and register it."""
    if name in HAMILTONIAN_SYSTEMS and not overwrite:
        raise ValueError(f"Hamiltonian system {name!r} exists; pass overwrite=True to replace it")
    system = make_hamiltonian_system({"name": name, **settings})
    HAMILTONIAN_SYSTEMS[name] = system
    return system


def get_hamiltonian_system(name: str) -> HamiltonianSystem:
    """Look a system up by name; the error lists the registered names."""
    try:
        return HAMILTONIAN_SYSTEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown Hamiltonian system {name!r}; registered: {sorted(HAMILTONIAN_SYSTEMS)}"
        ) from None


def make_hamiltonian_system(spec: str | Mapping[str, Any] | HamiltonianSystem) -> HamiltonianSystem:
    """A system from a registry name, a mapping of its fields (e.g. from YAML), or itself."""
    if isinstance(spec, HamiltonianSystem):
        return spec
    if isinstance(spec, str):
        return get_hamiltonian_system(spec)
    spec = dict(spec)
    if "hamiltonian" not in spec or "coordinates" not in spec or "momenta" not in spec:
        raise ValueError(
            "a Hamiltonian system given as a mapping needs 'hamiltonian', 'coordinates' and "
            f"'momenta' (and optionally 'name', 'parameters', ...); got keys {sorted(spec)}"
        )
    spec.setdefault("name", spec["hamiltonian"])
    where = f"Hamiltonian system {spec['name']!r}"
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ValueError(
            f"{where}: parameters must map each name to a value or a [low, high] range, e.g. "
            f"{{k: [0.5, 2.0]}}; got {parameters!r}"
        )
    spec["parameters"] = {k: _parameter_range(k, v, where) for k, v in parameters.items()}
    for key in ("coordinates", "momenta"):
        if isinstance(spec[key], str):
            raise ValueError(f"{where}: {key} must be a list of names, got {spec[key]!r}")
    for key in ("coordinates", "momenta", "t_span"):
        if key in spec:
            spec[key] = tuple(spec[key])
    return HamiltonianSystem(**spec)


def _parameter_range(name: str, value: Any, where: str) -> float | tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(
        f"{where}: parameter {name!r} must be a number or a [low, high] range, got {value!r}"
    )


# The built-in zoo. All constants are of order one, following the HNN / meta-HNN literature.
register_hamiltonian_system(
    "mass_spring",
    hamiltonian="p**2/(2*m) + k*q**2/2",
    coordinates=("q",),
    momenta=("p",),
    parameters={"m": (0.5, 2.0), "k": (0.5, 2.0)},
    description="harmonic oscillator",
)
register_hamiltonian_system(
    "planar_spring",
    hamiltonian="(px**2 + py**2)/(2*m) + (kx*x**2 + ky*y**2)/2",
    coordinates=("x", "y"),
    momenta=("px", "py"),
    parameters={"m": (0.5, 2.0), "kx": (0.5, 2.0), "ky": (0.5, 2.0)},
    description="anisotropic harmonic oscillator in the plane (the HNN papers' 2-D spring)",
)
register_hamiltonian_system(
    "pendulum",
    hamiltonian="p**2/2 + g*(1 - cos(q))",
    coordinates=("q",),
    momenta=("p",),
    parameters={"g": (0.5, 2.0)},
    q_low=-2.0,
    q_high=2.0,
    max_energy="1.8*g",
    description="pendulum in angle coordinates, librations only (E < 1.8 g < 2 g)",
)
register_hamiltonian_system(
    "duffing",
    hamiltonian="p**2/2 + a*q**2/2 + b*q**4/4",
    coordinates=("q",),
    momenta=("p",),
    parameters={"a": (0.5, 1.5), "b": (0.1, 1.0)},
    description="hardening Duffing oscillator (no forcing, no damping)",
)
register_hamiltonian_system(
    "morse",
    hamiltonian="p**2/2 + D*(1 - exp(-alpha*q))**2",
    coordinates=("q",),
    momenta=("p",),
    parameters={"D": (0.5, 2.0), "alpha": (0.7, 1.3)},
    q_low=-0.5,
    q_high=1.5,
    max_energy="0.8*D",
    description="Morse oscillator (anharmonic bond), bound orbits E < 0.8 D",
)
register_hamiltonian_system(
    "henon_heiles",
    hamiltonian="(px**2 + py**2)/2 + (x**2 + y**2)/2 + lam*(x**2*y - y**3/3)",
    coordinates=("x", "y"),
    momenta=("px", "py"),
    parameters={"lam": (0.7, 1.0)},
    q_low=-0.5,
    q_high=0.5,
    p_low=-0.5,
    p_high=0.5,
    max_energy="0.12/lam**2",
    description="Henon-Heiles, below the escape energy 1/(6 lam^2)",
)
register_hamiltonian_system(
    "magnetic_mirror",
    hamiltonian="(px**2 + (py - b*(x + x**3/3))**2)/(2*m)",
    coordinates=("x", "y"),
    momenta=("px", "py"),
    parameters={"b": (0.5, 1.5), "m": (0.8, 1.2)},
    description="charge in B_z = b(1 + x^2) (A = (0, b(x + x^3/3))): non-separable H",
)
register_hamiltonian_system(
    "coupled_springs",
    hamiltonian=(
        "(px1**2 + py1**2 + px2**2 + py2**2)/(2*m) + k*(x1**2 + y1**2 + x2**2 + y2**2)/2"
        " + c*((x1 - x2)**2 + (y1 - y2)**2)/2"
    ),
    coordinates=("x1", "y1", "x2", "y2"),
    momenta=("px1", "py1", "px2", "py2"),
    parameters={"m": (0.5, 2.0), "k": (0.5, 1.5), "c": (0.2, 1.0)},
    n_bodies=2,
    description="two anchored particles in the plane joined by a spring",
)
register_hamiltonian_system(
    "two_body",
    hamiltonian=(
        "(px1**2 + py1**2)/(2*m1) + (px2**2 + py2**2)/(2*m2)"
        " - G*m1*m2/sqrt((x1 - x2)**2 + (y1 - y2)**2 + eps**2)"
    ),
    coordinates=("x1", "y1", "x2", "y2"),
    momenta=("px1", "py1", "px2", "py2"),
    parameters={"m1": (0.8, 1.2), "m2": (0.8, 1.2), "G": 1.0, "eps": 0.1},
    n_bodies=2,
    initial_state="orbits",
    q_low=0.5,
    q_high=1.5,
    max_energy="0",
    description="planar two-body gravity (softening eps), bound orbits",
)
register_hamiltonian_system(
    "three_body",
    hamiltonian=(
        "(px1**2 + py1**2)/(2*m1) + (px2**2 + py2**2)/(2*m2) + (px3**2 + py3**2)/(2*m3)"
        " - G*m1*m2/sqrt((x1 - x2)**2 + (y1 - y2)**2 + eps**2)"
        " - G*m1*m3/sqrt((x1 - x3)**2 + (y1 - y3)**2 + eps**2)"
        " - G*m2*m3/sqrt((x2 - x3)**2 + (y2 - y3)**2 + eps**2)"
    ),
    coordinates=("x1", "y1", "x2", "y2", "x3", "y3"),
    momenta=("px1", "py1", "px2", "py2", "px3", "py3"),
    parameters={"m1": (0.8, 1.2), "m2": (0.8, 1.2), "m3": (0.8, 1.2), "G": 1.0, "eps": 0.1},
    n_bodies=3,
    initial_state="orbits",
    q_low=0.8,
    q_high=1.5,
    max_energy="0",
    t_span=(0.0, 3.0),
    description="planar three-body gravity (softening eps), near-circular start",
)


class HamiltonianMetaDataModule(ProblemDataModule):
    r"""Few-shot tasks over Hamiltonian system types, for meta-learning.

    Each task draws one system type, its parameters, and ``n_trajectories`` initial states; the
    trajectories are solved on ``n_times`` points of the system's ``t_span`` (DOP853 at rtol =
    atol = 1e-10), and the exact derivatives $\dot x = J\nabla H(x)$ are evaluated from the
    symbolic $H$. The *support* set (``support_size`` points for adaptation) comes from the first
    half of the trajectories, the *query* set (``query_size`` points) from the second half, and the
    first query trajectory is kept whole for rollouts. Training tasks use ``train_systems``,
    validation and test tasks the held-out ``test_systems``.

    Args:
        train_systems: system types for meta-training: registry names (see
            ``HAMILTONIAN_SYSTEMS``) or mappings of :class:`HamiltonianSystem` fields (a new
            ``hamiltonian`` string with its ``coordinates``, ``momenta`` and ``parameters``).
        test_systems: held-out system types, same format.
        support_size, query_size: phase points per task for adaptation / evaluation.
        n_train_tasks, n_val_tasks, n_test_tasks: tasks per split (spread evenly over the types).
        n_trajectories: trajectories per task (at least 2: support and query use different ones).
        n_times: points per trajectory.
        max_bodies, body_dim: graph padding; default the largest over all systems.
        seed, batch_size (tasks per meta-batch), eval_batch_size, num_workers, cache_dir: see
            :class:`ProblemDataModule`.

    Shapes (one task; loaders stack ``B`` tasks in front), ``N = max_bodies``, ``F = 2*body_dim``:
        ``support_x, support_dx (K, N, F)``, ``query_x, query_dx (Q, N, F)``, ``mask (N, F)``,
        ``rollout_x (T, N, F)``, ``rollout_t (T,)``, ``system (,)`` (index into
        :attr:`systems`), ``parameters (P,)`` (values in declaration order, zero-padded).
    """

    def __init__(
        self,
        train_systems: Sequence[str | dict[str, Any]] = ("mass_spring", "pendulum", "duffing"),
        test_systems: Sequence[str | dict[str, Any]] = ("morse",),
        support_size: int = 50,
        query_size: int = 50,
        n_train_tasks: int = 200,
        n_val_tasks: int = 10,
        n_test_tasks: int = 20,
        n_trajectories: int = 4,
        n_times: int = 50,
        max_bodies: int | None = None,
        body_dim: int | None = None,
        seed: int = 0,
        batch_size: int = 10,
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
        if not train_systems or not test_systems:
            raise ValueError("train_systems and test_systems must each name at least one system")
        self.train_system_list = [make_hamiltonian_system(s) for s in train_systems]
        self.test_system_list = [make_hamiltonian_system(s) for s in test_systems]
        for label, value in (
            ("support_size", support_size),
            ("query_size", query_size),
            ("n_train_tasks", n_train_tasks),
            ("n_val_tasks", n_val_tasks),
            ("n_test_tasks", n_test_tasks),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        if n_trajectories < 2:
            raise ValueError(f"n_trajectories must be >= 2, got {n_trajectories}")
        half = n_trajectories // 2
        for label, size, trajectories in (
            ("support_size", support_size, half),
            ("query_size", query_size, n_trajectories - half),
        ):
            if size > trajectories * n_times:
                raise ValueError(
                    f"{label}={size} exceeds the {trajectories * n_times} points available "
                    f"({trajectories} trajectories x n_times={n_times})"
                )
        everything = self.systems
        self.max_bodies = max_bodies or max(s.n_bodies for s in everything)
        self.body_dim = body_dim or max(s.body_dim for s in everything)
        too_big = [
            s.name for s in everything if s.n_bodies > self.max_bodies or s.body_dim > self.body_dim
        ]
        if too_big:
            raise ValueError(
                f"systems {too_big} do not fit max_bodies={self.max_bodies}, "
                f"body_dim={self.body_dim}"
            )

    @property
    def systems(self) -> list[HamiltonianSystem]:
        """Training systems then test systems; ``batch["system"]`` indexes this list."""
        return [*self.train_system_list, *self.test_system_list]

    def make_task(
        self, system: HamiltonianSystem, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """One task of ``system`` (arrays as in the class docstring, without the leading batch)."""
        hp = self.hparams
        parameters = system.sample_parameters(rng)
        y0 = system.sample_initial_states(rng, parameters, hp.n_trajectories)
        t = np.linspace(*system.t_span, hp.n_times)
        ys = system.simulate(y0, t, parameters)  # (n_trajectories, T, 2n)
        half = hp.n_trajectories // 2
        support = ys[:half].reshape(-1, ys.shape[-1])
        query = ys[half:].reshape(-1, ys.shape[-1])
        support = support[rng.choice(len(support), hp.support_size, replace=False)]
        query = query[rng.choice(len(query), hp.query_size, replace=False)]
        nodes = lambda y: system.to_nodes(y, self.max_bodies, self.body_dim)  # noqa: E731
        values = np.zeros(max(len(s.parameters) for s in self.systems))
        values[: len(parameters)] = list(parameters.values())
        return {
            "support_x": nodes(support),
            "support_dx": nodes(system.derivatives(support, parameters)),
            "query_x": nodes(query),
            "query_dx": nodes(system.derivatives(query, parameters)),
            "mask": system.node_mask(self.max_bodies, self.body_dim),
            "rollout_x": nodes(ys[half]),
            "rollout_t": t - t[0],
            "system": np.asarray(self.systems.index(system)),
            "parameters": values,
        }

    def _tasks(self, systems: list[HamiltonianSystem], n: int, stream: int) -> dict:
        rng = np.random.default_rng([self.seed, stream])
        tasks = [self.make_task(systems[i % len(systems)], rng) for i in range(n)]
        return {
            key: torch.as_tensor(
                np.stack([task[key] for task in tasks]),
                dtype=torch.long if key == "system" else torch.float32,
            )
            for key in tasks[0]
        }

    def generate(self) -> dict[str, torch.Tensor]:
        hp = self.hparams
        splits = {
            "train": self._tasks(self.train_system_list, hp.n_train_tasks, 0),
            "val": self._tasks(self.test_system_list, hp.n_val_tasks, 1),
            "test": self._tasks(self.test_system_list, hp.n_test_tasks, 2),
        }
        return {f"{split}/{k}": v for split, data in splits.items() for k, v in data.items()}

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        return {
            split: TensorDictDataset(
                {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(f"{split}/")}
            )
            for split in ("train", "val", "test")
        }
