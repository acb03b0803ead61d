"""The dataset zoo: registered dynamical systems, reference solvers and Lightning data modules."""

from ._base import EpochSeededSampler, ProblemDataModule, TensorDictDataset
from ._systems import SYSTEMS, DynamicalSystem, get_system, list_systems, register_system
from ._trajectories import TrajectoryDataModule, simulate_sde, solve_trajectories

__all__ = [
    "SYSTEMS",
    "DynamicalSystem",
    "EpochSeededSampler",
    "ProblemDataModule",
    "TensorDictDataset",
    "TrajectoryDataModule",
    "get_system",
    "list_systems",
    "register_system",
    "simulate_sde",
    "solve_trajectories",
]
