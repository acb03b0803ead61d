"""Regularizers: one abstract base, composable penalties for every model family."""

from ._base import AbstractRegularizer, as_regularizer
from ._global_error import GlobalErrorRegularizer
from ._local import LocalRegularizer, initial_step_size
from ._local_sde import LocalSDERegularizer, SDEPenalty
from ._ode import AbstractODERegularizer, ODESolveRecord, RegularizedSolution, solve_regularized
from ._rnode import JacobianFrobeniusRegularizer, KineticEnergyRegularizer
from ._spectral import (
    EigenvalueModulusRegularizer,
    PrescribedEigenvalueRegularizer,
    safe_eigvals,
)

__all__ = [
    "AbstractODERegularizer",
    "AbstractRegularizer",
    "EigenvalueModulusRegularizer",
    "GlobalErrorRegularizer",
    "JacobianFrobeniusRegularizer",
    "KineticEnergyRegularizer",
    "LocalRegularizer",
    "LocalSDERegularizer",
    "ODESolveRecord",
    "PrescribedEigenvalueRegularizer",
    "RegularizedSolution",
    "SDEPenalty",
    "as_regularizer",
    "initial_step_size",
    "safe_eigvals",
    "solve_regularized",
]
