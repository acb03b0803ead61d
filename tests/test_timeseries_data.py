import hashlib
import itertools

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline as ScipySpline

from sciml.data import (
    STOCKS_SHA256,
    MinMaxScaler,
    TimeSeriesDataModule,
    drop_rows,
    sine_sequences,
    sliding_windows,
)
from sciml.nn import CubicSpline, natural_cubic_spline_coeffs

from .conftest import SHARED

STOCKS = SHARED / "data" / "timeseries" / "stock_data.csv"
needs_stocks = pytest.mark.skipif(not STOCKS.is_file(), reason="shared stock_data.csv not found")


def _timegan_sines(no, seq_len, dim):
    """TimeGAN's data_loading.sine_data_generation, drawing from the global numpy state."""
    data = []
    for _ in range(no):
        temp = []
        for _ in range(dim):
            freq = np.random.uniform(0, 0.1)  # noqa: NPY002 (TimeGAN's global state)
            phase = np.random.uniform(0, 0.1)  # noqa: NPY002
            temp.append([np.sin(freq * j + phase) for j in range(seq_len)])
        temp = np.transpose(np.asarray(temp))
        data.append((temp + 1) * 0.5)
    return np.stack(data)


def test_sines_match_timegan_draw_for_draw():
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(7)  # noqa: NPY002
        expected = _timegan_sines(30, 24, 5)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    np.testing.assert_allclose(sine_sequences(30, 24, 5, seed=7), expected, rtol=0, atol=1e-15)


def test_sines_module_shapes_splits_and_determinism():
    data = TimeSeriesDataModule("sines", n_samples=200, seed=3)
    data.setup()
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": 160, "val": 20, "test": 20}
    x = data.splits["train"].tensors["x"]
    assert x.shape == (160, 24, 5) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, data.splits["train"].tensors["x_full"])
    assert torch.equal(data.splits["train"].tensors["mask"], torch.ones(160, 24))
    assert "coeffs" not in data.splits["train"].tensors  # regular data need no spline
    # sines are not rescaled by default: x equals TimeGAN's values
    np.testing.assert_allclose(x.numpy(), sine_sequences(200, 24, 5, 3)[:160], atol=1e-7)
    again = TimeSeriesDataModule("sines", n_samples=200, seed=3)
    again.setup()
    assert torch.equal(again.splits["test"].tensors["x"], data.splits["test"].tensors["x"])


@pytest.mark.parametrize(("rate", "dropped"), [(0.3, 7), (0.5, 12), (0.7, 16)])
def test_sines_missing_rows_exact_count_and_spline(rate, dropped):
    data = TimeSeriesDataModule("sines", n_samples=60, missing_rate=rate)
    data.setup()
    t = data.splits["train"].tensors
    x, mask = t["x"], t["mask"].bool()
    assert ((~mask).sum(dim=1) == dropped).all()
    assert torch.isnan(x[~mask]).all() and torch.isfinite(x[mask]).all()
    assert torch.equal(x[mask], t["x_full"][mask])
    assert torch.isfinite(t["x_full"]).all()
    coeffs = t["coeffs"]
    assert coeffs.shape == (len(x), 23, 4, 5) and torch.isfinite(coeffs).all()
    spline = CubicSpline(coeffs.double())
    values = torch.stack([spline.evaluate(k) for k in range(24)], dim=1).float()
    torch.testing.assert_close(values[mask], x[mask], atol=1e-5, rtol=0)


def test_missing_rows_follow_the_seeded_generator():
    x = torch.zeros(5, 24, 2)
    first = drop_rows(x, 0.5, generator=torch.Generator().manual_seed(56789), per_sequence=True)
    second = drop_rows(x, 0.5, generator=torch.Generator().manual_seed(56789), per_sequence=True)
    assert torch.equal(torch.isnan(first), torch.isnan(second))
    generator = torch.Generator().manual_seed(56789)
    expected = torch.randperm(24, generator=generator)[:12]
    assert torch.isnan(first[0, expected]).all() and torch.isnan(first[0]).sum() == 24
    series = drop_rows(torch.zeros(100, 3), 0.3, generator=generator, per_sequence=False)
    assert torch.isnan(series).all(dim=1).sum() == 30
    with pytest.raises(ValueError, match="missing_rate"):
        drop_rows(x, 1.0, generator=generator, per_sequence=True)


def test_spline_matches_scipy_natural_spline_and_fills_gaps():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(20, 24, 3, generator=generator, dtype=torch.float64)
    x[:, [2, 3, 9, 15, 16, 17]] = float("nan")
    coeffs = natural_cubic_spline_coeffs(x)
    spline = CubicSpline(coeffs)
    observed = np.array([k for k in range(24) if k not in (2, 3, 9, 15, 16, 17)])
    for b, d in [(0, 0), (7, 2), (19, 1)]:
        reference = ScipySpline(observed, x[b, observed, d].numpy(), bc_type="natural")
        for time in (0.0, 2.5, 9.0, 15.3, 16.9, 23.0):
            assert spline.evaluate(time)[b, d].item() == pytest.approx(reference(time), abs=1e-12)
            assert spline.derivative(time)[b, d].item() == pytest.approx(
                reference(time, 1), abs=1e-12
            )
    with pytest.raises(ValueError, match="at least one finite"):
        natural_cubic_spline_coeffs(torch.full((1, 5, 1), float("nan")))


def test_leading_and_trailing_gaps_hold_the_nearest_observation():
    x = torch.tensor([[[float("nan")], [1.0], [3.0], [2.0], [float("nan")]]], dtype=torch.float64)
    spline = CubicSpline(natural_cubic_spline_coeffs(x))
    assert spline.evaluate(0.0).item() == pytest.approx(1.0)
    assert spline.evaluate(4.0).item() == pytest.approx(2.0)


def test_minmax_scaler_is_invertible_and_ignores_nan():
    generator = torch.Generator().manual_seed(0)
    raw = 5 + 3 * torch.randn(100, 4, generator=generator, dtype=torch.float64)
    raw[10] = float("nan")
    scaler = MinMaxScaler.fit(raw)
    scaled = scaler.transform(raw)
    finite = torch.isfinite(raw)
    assert float(scaled[finite].min()) == pytest.approx(0.0, abs=1e-12)
    assert float(scaled[finite].max()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(scaler.inverse_transform(scaled)[finite], raw[finite])


def test_sliding_windows():
    series = torch.arange(10.0)[:, None].repeat(1, 2)
    windows = sliding_windows(series, 4)
    assert windows.shape == (7, 4, 2)
    assert torch.equal(windows[3, :, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    with pytest.raises(ValueError, match="seq_len"):
        sliding_windows(series, 11)


@needs_stocks
def test_stocks_windows_checksum_and_inverse_scaling(tmp_path):
    data = TimeSeriesDataModule("stocks", csv_path=str(STOCKS))
    data.setup()
    raw = np.loadtxt(STOCKS, delimiter=",", skiprows=1)[::-1]  # TimeGAN reverses the rows
    n_windows = len(raw) - 24 + 1
    assert sum(len(s) for s in data.splits.values()) == n_windows
    x = data.splits["train"].tensors["x"]
    assert x.shape[1:] == (24, 6) and float(x.min()) >= 0 and float(x.max()) <= 1
    # every window is a run of 24 consecutive (reversed) rows, recovered by the inverse scaling
    original = data.inverse_transform(x[0].double()).numpy()
    start = int(np.argmin(np.abs(raw[:, 0] - original[0, 0]) + np.abs(raw[:, 5] - original[0, 5])))
    np.testing.assert_allclose(original, raw[start : start + 24], rtol=1e-5)

    tampered = tmp_path / "stock_data.csv"
    tampered.write_bytes(STOCKS.read_bytes().replace(b"49.676899", b"49.676898", 1))
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() != STOCKS_SHA256
    with pytest.raises(ValueError, match="sha256"):
        TimeSeriesDataModule("stocks", csv_path=str(tampered)).setup()


@needs_stocks
def test_stocks_missing_rows_are_dropped_before_windowing():
    data = TimeSeriesDataModule("stocks", csv_path=str(STOCKS), missing_rate=0.5)
    data.setup()
    t = data.splits["train"].tensors
    per_window = (t["mask"] == 0).sum(dim=1).float()
    assert 0.4 < float(per_window.mean()) / 24 < 0.6
    assert float(per_window.std()) > 1  # the count varies between windows
    assert torch.isfinite(t["x_full"]).all() and torch.isfinite(t["coeffs"]).all()


def test_system_dataset_and_from_array():
    data = TimeSeriesDataModule("system", system="pendulum", n_samples=20, dt=0.2, seq_len=12)
    data.setup()
    x = data.splits["train"].tensors["x"]
    assert x.shape == (16, 12, 2) and float(x.min()) >= 0 and float(x.max()) <= 1

    series = np.stack([np.sin(0.1 * np.arange(200)), np.cos(0.05 * np.arange(200))], axis=1)
    from_series = TimeSeriesDataModule.from_array(series, seq_len=24, batch_size=8)
    assert from_series.n_features == 2
    total = sum(len(s) for s in from_series.splits.values())
    assert total == 200 - 24 + 1
    restored = from_series.inverse_transform(from_series.splits["val"].tensors["x"].double())
    assert float(restored.min()) >= -1 - 1e-6 and float(restored.max()) <= 1 + 1e-6

    sequences = np.random.default_rng(0).random((50, 10, 3))
    from_sequences = TimeSeriesDataModule.from_array(sequences, missing_rate=0.3)
    from_sequences.setup()
    assert from_sequences.hparams.seq_len == 10
    assert ((from_sequences.splits["train"].tensors["mask"] == 0).sum(dim=1) == 3).all()


def test_cache_roundtrip(tmp_path):
    data = TimeSeriesDataModule("sines", n_samples=50, missing_rate=0.5, cache_dir=str(tmp_path))
    data.setup()
    assert data.cache_path().exists()
    cached = TimeSeriesDataModule("sines", n_samples=50, missing_rate=0.5, cache_dir=str(tmp_path))
    cached.setup()
    for key, value in data.splits["train"].tensors.items():
        assert torch.equal(value.nan_to_num(-1), cached.splits["train"].tensors[key].nan_to_num(-1))
    assert torch.equal(data.scaler.scale, cached.scaler.scale)


def test_cache_of_a_csv_follows_the_file_contents(tmp_path):
    table = tmp_path / "series.csv"
    table.write_text("a,b\n" + "\n".join(f"{i},{i % 7}" for i in range(60)))
    settings = dict(csv_path=str(table), seq_len=5, scaling="none", cache_dir=str(tmp_path))
    first = TimeSeriesDataModule("csv", **settings)
    first.setup()
    first_path = first.cache_path()
    table.write_text("a,b\n" + "\n".join(f"{10 * i},{i % 7}" for i in range(60)))
    edited = TimeSeriesDataModule("csv", **settings)
    edited.setup()
    assert edited.cache_path() != first_path
    assert float(edited.splits["train"].tensors["x"][..., 0].max()) > 100


def test_chronological_split_of_a_series_shares_no_row_between_splits():
    series = np.stack([np.arange(200.0), np.arange(200.0) % 7], axis=1)  # row i holds i

    def rows(split):
        data = TimeSeriesDataModule.from_array(
            series, seq_len=6, scaling="none", series_split=split
        )
        data.setup()
        return {k: set(v.tensors["x"][..., 0].flatten().tolist()) for k, v in data.splits.items()}

    chronological = rows("chronological")
    for a, b in itertools.combinations(chronological.values(), 2):
        assert not a & b
    assert set().union(*chronological.values()) == set(range(200))  # nothing else is lost
    shuffled = rows("shuffled")  # TimeGAN's protocol: held-out windows overlap training ones
    assert shuffled["test"] & shuffled["train"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dataset"):
        TimeSeriesDataModule("energy")
    with pytest.raises(ValueError, match="csv_path"):
        TimeSeriesDataModule("stocks")
    with pytest.raises(ValueError, match="missing_rate"):
        TimeSeriesDataModule("sines", missing_rate=1.2)
    with pytest.raises(KeyError, match="registered systems"):
        TimeSeriesDataModule("system", system="not_a_system")
    with pytest.raises(FileNotFoundError, match="csv_path"):
        TimeSeriesDataModule("csv", csv_path="no/such/file.csv").setup()
    with pytest.raises(ValueError, match="seq_len"):
        TimeSeriesDataModule.from_array(np.zeros((30, 2)))
