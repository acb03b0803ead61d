"""Differential-equation solvers that report what they did.

* :func:`odeint` — torchdiffeq's ODE solvers (optionally with the adjoint) plus validation and
  :class:`SolverStats`.
* :func:`sdeint` — Euler–Maruyama, Milstein, Heun and Euler–Heun as a plain torch loop on a fixed
  grid, with ``torchsde.sdeint`` as the fallback; :class:`GridBrownian` replays the increments.
* :func:`rk_step` / :func:`error_ratio` — one embedded Runge–Kutta step with its local error
  estimate, for regularizers; :data:`TABLEAUS` of :class:`ButcherTableau`.
* :func:`rk4`, :func:`leapfrog` — fixed-step classic RK4 and symplectic Störmer–Verlet.
* :func:`implicit_midpoint` — fixed-step symplectic implicit midpoint rule for any (also
  non-separable) Hamiltonian field; :class:`ImplicitSolveError` when its iteration fails.
* :class:`ODESolverConfig`, :class:`SDESolverConfig` — frozen settings for configs.
* :func:`linear_transition` (Van Loan), :func:`linear_bridge_cost`, :func:`entropic_plan`,
  :func:`linear_bridge_paths` — Schrödinger-bridge building blocks.
"""

from ._bridges import (
    LinearTransition,
    diffusion_matrix,
    entropic_plan,
    linear_bridge_cost,
    linear_bridge_marginal,
    linear_bridge_paths,
    linear_transition,
    sample_partners,
    simulate_euler_maruyama,
)
from ._brownian import GridBrownian
from ._config import ODESolverConfig, SDESolverConfig
from ._fixed import SymplecticSolution, leapfrog, rk4
from ._implicit_midpoint import IMPLICIT_ITERATIONS, ImplicitSolveError, implicit_midpoint
from ._odeint import ODE_METHODS, MaxStepsError, StepSizeUnderflowError, odeint
from ._rk import RKStepResult, error_ratio, rk_step
from ._sdeint import SDE, SDE_METHODS, sdeint
from ._stats import Solution, SolverStats
from ._tableaus import TABLEAUS, ButcherTableau

__all__ = [
    "IMPLICIT_ITERATIONS",
    "ODE_METHODS",
    "SDE",
    "SDE_METHODS",
    "TABLEAUS",
    "ButcherTableau",
    "GridBrownian",
    "ImplicitSolveError",
    "LinearTransition",
    "MaxStepsError",
    "ODESolverConfig",
    "RKStepResult",
    "SDESolverConfig",
    "Solution",
    "SolverStats",
    "StepSizeUnderflowError",
    "SymplecticSolution",
    "diffusion_matrix",
    "entropic_plan",
    "error_ratio",
    "implicit_midpoint",
    "leapfrog",
    "linear_bridge_cost",
    "linear_bridge_marginal",
    "linear_bridge_paths",
    "linear_transition",
    "odeint",
    "rk4",
    "rk_step",
    "sample_partners",
    "sdeint",
    "simulate_euler_maruyama",
]
