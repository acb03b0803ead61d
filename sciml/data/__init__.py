"""The dataset zoo: registered dynamical systems, reference solvers and Lightning data modules."""

from ._base import EpochSeededSampler, ProblemDataModule, TensorDictDataset
from ._digits import DigitsDataModule
from ._hamiltonian import (
    HAMILTONIAN_SYSTEMS,
    HamiltonianMetaDataModule,
    HamiltonianSystem,
    get_hamiltonian_system,
    make_hamiltonian_system,
    register_hamiltonian_system,
)
from ._operators import (
    CHAOTIC_FAMILIES,
    CLASSIC_FAMILIES,
    EquationFamily,
    ODEOperatorDataModule,
)
from ._pde import (
    ConvectionDiffusion1D,
    ConvectionDiffusionDataModule,
    fourier_interpolate,
    fourier_multiplier_solution,
    hopf_cole_solution,
    spectral_mol_solution,
)
from ._snapshots import SNAPSHOT_SYSTEMS, SnapshotDataModule, SnapshotSystem
from ._systems import SYSTEMS, DynamicalSystem, get_system, list_systems, register_system
from ._timeseries import (
    STOCKS_SHA256,
    TIMESERIES_DATASETS,
    MinMaxScaler,
    TimeSeriesDataModule,
    drop_rows,
    sine_sequences,
    sliding_windows,
)
from ._trajectories import TrajectoryDataModule, simulate_sde, solve_trajectories

__all__ = [
    "CHAOTIC_FAMILIES",
    "CLASSIC_FAMILIES",
    "HAMILTONIAN_SYSTEMS",
    "SNAPSHOT_SYSTEMS",
    "STOCKS_SHA256",
    "SYSTEMS",
    "TIMESERIES_DATASETS",
    "ConvectionDiffusion1D",
    "ConvectionDiffusionDataModule",
    "DigitsDataModule",
    "DynamicalSystem",
    "EpochSeededSampler",
    "EquationFamily",
    "HamiltonianMetaDataModule",
    "HamiltonianSystem",
    "MinMaxScaler",
    "ODEOperatorDataModule",
    "ProblemDataModule",
    "SnapshotDataModule",
    "SnapshotSystem",
    "TensorDictDataset",
    "TimeSeriesDataModule",
    "TrajectoryDataModule",
    "drop_rows",
    "fourier_interpolate",
    "fourier_multiplier_solution",
    "get_hamiltonian_system",
    "get_system",
    "hopf_cole_solution",
    "list_systems",
    "make_hamiltonian_system",
    "register_hamiltonian_system",
    "register_system",
    "simulate_sde",
    "sine_sequences",
    "sliding_windows",
    "solve_trajectories",
    "spectral_mol_solution",
]
