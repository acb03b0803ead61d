"""Time-series benchmarks for generative models: TimeGAN sines, stocks, simulated systems, arrays.

Every dataset ends up as sequences ``(N, T, D)`` scaled per feature to [0, 1], optionally with
whole time rows missing (NaN), the irregular-sampling protocol of GT-GAN and KoVAE.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..nn import natural_cubic_spline_coeffs
from ._base import ProblemDataModule, TensorDictDataset
from ._systems import get_system
from ._trajectories import solve_trajectories

__all__ = [
    "STOCKS_SHA256",
    "TIMESERIES_DATASETS",
    "MinMaxScaler",
    "TimeSeriesDataModule",
    "drop_rows",
    "sine_sequences",
    "sliding_windows",
]

TIMESERIES_DATASETS = ("sines", "stocks", "csv", "system", "array")
#: sha256 of TimeGAN's ``stock_data.csv`` (Google daily prices 2004-2019, 6 columns)
STOCKS_SHA256 = "134b8a00eb4eefa3242dd7ae85144082da80dedf75a1a656d5d08f97cd95277a"


def sine_sequences(n: int, seq_len: int, dim: int, seed: int) -> np.ndarray:
    r"""TimeGAN's sine benchmark, draw for draw.

    For each sequence, for each feature (in this loop order): $f \sim U(0, 0.1)$,
    $\phi \sim U(0, 0.1)$, $x_j = (\sin(f j + \phi) + 1)/2$ for $j = 0..T-1$, drawn from
    ``np.random.RandomState(seed)`` exactly as TimeGAN's ``sine_data_generation`` draws from
    the global numpy state after ``np.random.seed(seed)``.

    Returns:
        ``(n, seq_len, dim)`` float64 array in [0, 1].
    """
    rng = np.random.RandomState(seed)
    steps = np.arange(seq_len)
    out = np.empty((n, seq_len, dim))
    for i in range(n):
        for k in range(dim):
            freq = rng.uniform(0, 0.1)
            phase = rng.uniform(0, 0.1)
            out[i, :, k] = np.sin(freq * steps + phase)
    return (out + 1) * 0.5


class MinMaxScaler:
    r"""Per-feature min-max scaling $x \mapsto (x - m)/(M - m + 10^{-7})$ (TimeGAN's), invertible.

    NaN entries are ignored when fitting and stay NaN.

    Args:
        minimum: per-feature $m$, ``(D,)``.
        scale: per-feature $M - m + 10^{-7}$, ``(D,)``.
    """

    def __init__(self, minimum: torch.Tensor, scale: torch.Tensor) -> None:
        self.minimum, self.scale = minimum, scale

    @classmethod
    def fit(cls, x: torch.Tensor) -> MinMaxScaler:
        """Fit on ``(..., D)`` data."""
        flat = x.reshape(-1, x.shape[-1])
        finite = torch.isfinite(flat)
        low = torch.where(finite, flat, torch.full_like(flat, float("inf"))).min(dim=0).values
        high = torch.where(finite, flat, torch.full_like(flat, -float("inf"))).max(dim=0).values
        return cls(low, high - low + 1e-7)

    @classmethod
    def identity(cls, dim: int) -> MinMaxScaler:
        return cls(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.minimum.to(x)) / self.scale.to(x)

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Back to the original units: $x (M - m + 10^{-7}) + m$."""
        return x * self.scale.to(x) + self.minimum.to(x)


def sliding_windows(series: torch.Tensor, seq_len: int, stride: int = 1) -> torch.Tensor:
    """All windows of ``seq_len`` consecutive rows of ``(L, D)``: ``(n_windows, seq_len, D)``."""
    if not 1 <= seq_len <= len(series):
        raise ValueError(f"seq_len must lie in [1, {len(series)}], got {seq_len}")
    return series.unfold(0, seq_len, stride).movedim(-1, 1).contiguous()


def drop_rows(
    x: torch.Tensor, rate: float, *, generator: torch.Generator, per_sequence: bool
) -> torch.Tensor:
    """Set whole time rows to NaN.

    ``per_sequence=True`` (GT-GAN's sine protocol): ``x (N, T, D)``, exactly ``int(T * rate)``
    rows of every sequence, one ``randperm(T)`` per sequence. ``per_sequence=False`` (KoVAE's
    long-series protocol, before windowing): ``x (L, D)``, the first ``int(L * rate)`` indices of
    one ``randperm(L)``.

    Returns:
        A copy of ``x`` with the dropped rows NaN.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"missing_rate must lie in [0, 1), got {rate}")
    out = x.clone()
    if per_sequence:
        length = x.shape[1]
        count = int(length * rate)
        for i in range(len(x)):
            out[i, torch.randperm(length, generator=generator)[:count]] = float("nan")
    else:
        count = int(len(x) * rate)
        out[torch.randperm(len(x), generator=generator)[:count]] = float("nan")
    return out


def _resolve(csv_path: str) -> Path:
    """``csv_path`` as given, or relative to the project root (the folder holding ``problems/``).

    The shipped YAML problems name their files relative to the project root, so that
    ``sciml fit -c problems/...`` works from any directory.
    """
    path = Path(csv_path)
    candidates = [path] if path.is_absolute() else [path, _PROJECT_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"data.csv_path={csv_path!r} does not exist (looked in {[str(c) for c in candidates]})"
    )


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class TimeSeriesDataModule(ProblemDataModule):
    r"""Fixed-length sequences for time-series generative models (TimeGAN/KoVAE benchmarks).

    Datasets:

    * ``"sines"``: TimeGAN's sines (:func:`sine_sequences`), ``n_samples`` x ``seq_len`` x
      ``dim``; already in [0, 1], so not rescaled unless ``scaling="minmax"``.
    * ``"stocks"``: TimeGAN's Google stock file at ``csv_path``, verified against
      :data:`STOCKS_SHA256`; rows reversed as TimeGAN does (``ori_data[::-1]``), min-max scaled,
      every window of ``seq_len`` rows (stride 1), shuffled.
    * ``"csv"``: any numeric CSV with a header row at ``csv_path`` (``csv_sha256`` optional),
      treated like stocks but in file order. A cell written ``nan`` marks its whole row as
      missing (``mask`` 0; the other values of that row are not used).
    * ``"system"``: ``n_samples`` trajectories of a registered ODE (:mod:`sciml.data` registry,
      ``system``, ``system_parameters``) sampled every ``dt`` from initial conditions uniform in
      the system's box, min-max scaled.
    * ``"array"``: the user's data, via :meth:`from_array`.

    ``missing_rate > 0`` drops whole time rows: exactly ``int(seq_len * rate)`` per sequence for
    sequence datasets (sines, system, 3-D arrays) and a random fraction of the long series
    before windowing for series datasets (stocks, csv, 2-D arrays); windows with no observed row
    are discarded. The generator is ``torch.Generator().manual_seed(missing_seed)`` (56789 in
    the reference protocol).

    Batches are dicts: ``"x" (B, T, D)`` with NaN rows where missing, ``"x_full" (B, T, D)``
    complete (metrics always compare against it), ``"mask" (B, T)`` 1 where observed and, when
    rows are missing, ``"coeffs" (B, T-1, 4, D)``, natural cubic spline coefficients of ``x``
    (:func:`sciml.nn.natural_cubic_spline_coeffs`), computed once and cached.

    Args:
        dataset: one of :data:`TIMESERIES_DATASETS`.
        seq_len: sequence length ``T``.
        n_samples: sequences to generate (sines, system).
        dim: features of the sines.
        csv_path: file for ``"stocks"`` / ``"csv"``; a relative path is looked up from the
            working directory, then from the project root.
        csv_sha256: expected checksum for ``"csv"`` (``"stocks"`` always checks its own).
        system: registered system name for ``"system"``.
        system_parameters: parameter overrides of the system.
        dt: sampling interval of ``"system"`` trajectories.
        missing_rate: fraction of time rows to drop, in [0, 1).
        missing_seed: seed of the row-dropping generator.
        scaling: ``"auto"`` (min-max except for sines), ``"minmax"`` or ``"none"``.
        val_fraction, test_fraction: fractions of sequences held out.
        series_split: how a long series (stocks, csv, 2-D arrays) is split. ``"shuffled"``
            follows TimeGAN: the overlapping windows are shuffled, then split, so validation and
            test windows share rows with training windows (their scores measure fidelity to the
            data, not generalisation). ``"chronological"``: training, validation and test are
            consecutive stretches of the series, with the ``seq_len - 1`` windows that straddle
            two stretches dropped, so no row is in two splits.
        seed, batch_size, eval_batch_size, num_workers, cache_dir: see
            :class:`ProblemDataModule`.
    """

    def __init__(
        self,
        dataset: Literal["sines", "stocks", "csv", "system", "array"] = "sines",
        *,
        seq_len: int = 24,
        n_samples: int = 10000,
        dim: int = 5,
        csv_path: str | None = None,
        csv_sha256: str | None = None,
        system: str = "pendulum",
        system_parameters: dict[str, float] | None = None,
        dt: float = 0.1,
        missing_rate: float = 0.0,
        missing_seed: int = 56789,
        scaling: Literal["auto", "minmax", "none"] = "auto",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        series_split: Literal["shuffled", "chronological"] = "shuffled",
        seed: int = 0,
        batch_size: int = 64,
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
        if dataset not in TIMESERIES_DATASETS:
            raise ValueError(f"data.dataset must be one of {TIMESERIES_DATASETS}, got {dataset!r}")
        if scaling not in ("auto", "minmax", "none"):
            raise ValueError(f"data.scaling must be 'auto', 'minmax' or 'none', got {scaling!r}")
        if seq_len < 2:
            raise ValueError(f"data.seq_len must be >= 2, got {seq_len}")
        if series_split not in ("shuffled", "chronological"):
            raise ValueError(
                f"data.series_split must be 'shuffled' or 'chronological', got {series_split!r}"
            )
        if not 0 <= missing_rate < 1:
            raise ValueError(f"data.missing_rate must lie in [0, 1), got {missing_rate}")
        if dataset in ("stocks", "csv") and csv_path is None:
            raise ValueError(
                f"data.dataset={dataset!r} needs data.csv_path (TimeGAN's stock_data.csv for "
                "'stocks', from github.com/jsyoon0823/TimeGAN/tree/master/data)"
            )
        if dataset == "system":
            get_system(system)  # a KeyError listing the registered systems, before any work
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 0.5:
                raise ValueError(f"data.{name} must lie in (0, 0.5), got {value}")
        self._array: np.ndarray | None = None
        self.scaler: MinMaxScaler | None = None

    @classmethod
    def from_array(
        cls,
        data: np.ndarray | torch.Tensor,
        *,
        seq_len: int | None = None,
        scaling: Literal["minmax", "none"] = "minmax",
        **kwargs,
    ) -> TimeSeriesDataModule:
        """A data module over the user's own data (not cached).

        Args:
            data: a long series ``(L, D)``, cut into sliding windows of ``seq_len``, or sequences
                ``(N, T, D)``. NaN rows count as missing (``x_full`` then holds them too).
            seq_len: window length for a long series (ignored for sequences).
            scaling: ``"minmax"`` per feature or ``"none"``.
            **kwargs: other :class:`TimeSeriesDataModule` arguments (``missing_rate``,
                ``batch_size``, ``seed``, ...).
        """
        array = np.asarray(data, dtype=np.float64)
        if array.ndim == 3:
            seq_len = array.shape[1]
        elif array.ndim != 2 or seq_len is None:
            raise ValueError(
                "data must be a series (L, D) with seq_len given, or sequences (N, T, D); "
                f"got shape {array.shape} and seq_len={seq_len}"
            )
        module = cls("array", seq_len=seq_len, scaling=scaling, **{**kwargs, "cache_dir": None})
        module._array = array
        return module

    @property
    def n_features(self) -> int:
        """``D`` (generates the data if needed)."""
        self.setup()
        return self.splits["train"].tensors["x"].shape[-1]

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled model-space sequences back to the original units."""
        self.setup()
        return self.scaler.inverse_transform(x)

    def cache_key(self) -> str:
        key = super().cache_key()
        if self.hparams.dataset not in ("stocks", "csv"):
            return key
        # The path does not identify the data: an edited file must not be served from the cache.
        digest = hashlib.sha256(_resolve(self.hparams.csv_path).read_bytes()).hexdigest()
        return hashlib.sha256(f"{key}:{digest}".encode()).hexdigest()[:16]

    def _read_csv(self) -> np.ndarray:
        hp = self.hparams
        path = _resolve(hp.csv_path)
        expected = STOCKS_SHA256 if hp.dataset == "stocks" else hp.csv_sha256
        if expected is not None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != expected:
                raise ValueError(
                    f"data.csv_path={str(path)!r} has sha256 {digest}, expected {expected}"
                )
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        return table[::-1].copy() if hp.dataset == "stocks" else table

    def _raw(self) -> tuple[torch.Tensor, bool]:
        """The unscaled data and whether it is a long series (else sequences)."""
        hp = self.hparams
        if hp.dataset == "sines":
            return torch.from_numpy(
                sine_sequences(hp.n_samples, hp.seq_len, hp.dim, hp.seed)
            ), False
        if hp.dataset in ("stocks", "csv"):
            return torch.from_numpy(self._read_csv()), True
        if hp.dataset == "system":
            spec = get_system(hp.system)
            if hp.system_parameters:
                spec = spec.with_parameters(hp.system_parameters)
            rng = np.random.default_rng(hp.seed)
            y0 = rng.uniform(spec.y0_low, spec.y0_high, size=(hp.n_samples, spec.dim))
            t = hp.dt * np.arange(hp.seq_len)
            return torch.from_numpy(solve_trajectories(spec, y0, t, rtol=1e-9, atol=1e-9)), False
        if self._array is None:
            raise ValueError("data.dataset='array' is built with TimeSeriesDataModule.from_array")
        return torch.from_numpy(self._array), self._array.ndim == 2

    def generate(self) -> dict[str, torch.Tensor]:
        hp = self.hparams
        raw, is_series = self._raw()
        if hp.scaling == "minmax" or (hp.scaling == "auto" and hp.dataset != "sines"):
            scaler = MinMaxScaler.fit(raw)
        else:
            scaler = MinMaxScaler.identity(raw.shape[-1])
        full = scaler.transform(raw)
        generator = torch.Generator().manual_seed(hp.missing_seed)
        if is_series:
            observed = full
            if hp.missing_rate > 0:
                observed = drop_rows(full, hp.missing_rate, generator=generator, per_sequence=False)
            x_full, x = sliding_windows(full, hp.seq_len), sliding_windows(observed, hp.seq_len)
            if hp.series_split == "shuffled":  # TimeGAN shuffles the (overlapping) windows
                order = torch.from_numpy(np.random.RandomState(hp.seed).permutation(len(x)))
                x_full, x = x_full[order], x[order]
        else:
            x_full = full
            x = full
            if hp.missing_rate > 0:
                x = drop_rows(full, hp.missing_rate, generator=generator, per_sequence=True)
        mask = torch.isfinite(x).all(dim=-1)
        keep = mask.any(dim=1)
        x, x_full, mask = x[keep], x_full[keep], mask[keep]
        data = {
            "x": x.float(),
            "x_full": x_full.float(),
            "mask": mask.float(),
            "scaler_minimum": scaler.minimum.float(),
            "scaler_scale": scaler.scale.float(),
            # windows dropped between two chronological splits, so that none shares a row
            "split_gap": torch.tensor(
                hp.seq_len - 1 if is_series and hp.series_split == "chronological" else 0
            ),
        }
        if not bool(mask.all()):
            data["coeffs"] = natural_cubic_spline_coeffs(x).float()
        return data

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        data = dict(data)
        self.scaler = MinMaxScaler(data.pop("scaler_minimum"), data.pop("scaler_scale"))
        gap = int(data.pop("split_gap", 0))
        n = len(data["x"])
        n_val = max(1, round(self.hparams.val_fraction * (n - 2 * gap)))
        n_test = max(1, round(self.hparams.test_fraction * (n - 2 * gap)))
        n_train = n - n_val - n_test - 2 * gap
        if n_train < 1:
            raise ValueError(
                f"{n} sequences are too few for a train/val/test split"
                + (f" with {gap} windows dropped between splits" if gap else "")
            )
        bounds = {
            "train": slice(0, n_train),
            "val": slice(n_train + gap, n_train + gap + n_val),
            "test": slice(n - n_test, n),
        }
        return {
            name: TensorDictDataset({k: v[s] for k, v in data.items()})
            for name, s in bounds.items()
        }
