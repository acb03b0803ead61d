import numpy as np
import pytest
import torch

from sciml.data import (
    SYSTEMS,
    TrajectoryDataModule,
    get_system,
    list_systems,
    register_system,
    simulate_sde,
    solve_trajectories,
)
from sciml.symbolic import SymbolicParseError

REQUIRED = [
    "exponential_decay",
    "damped_oscillator",
    "harmonic_oscillator",
    "lotka_volterra",
    "van_der_pol",
    "spiral",
    "lorenz",
    "pendulum",
    "duffing",
]


def test_registry_holds_the_zoo():
    assert set(REQUIRED) <= set(list_systems())
    with pytest.raises(KeyError, match="registered systems"):
        get_system("nope")


def test_reference_solver_matches_exact_solutions():
    t = np.linspace(0, 5, 11)
    decay = solve_trajectories(get_system("exponential_decay"), np.array([[1.0], [2.0]]), t)
    np.testing.assert_allclose(
        decay[:, :, 0], np.array([[1.0], [2.0]]) * np.exp(-0.5 * t), rtol=1e-8
    )
    t = np.linspace(0, 10, 21)
    osc = solve_trajectories(get_system("harmonic_oscillator"), np.array([[1.0, 0.0]]), t)
    np.testing.assert_allclose(osc[0, :, 0], np.cos(t), atol=1e-8)
    np.testing.assert_allclose(osc[0, :, 1], -np.sin(t), atol=1e-8)


def test_lotka_volterra_conserves_its_first_integral():
    t = np.linspace(0, 5, 101)
    path = solve_trajectories(get_system("lotka_volterra"), np.array([[2.0, 1.5]]), t)[0]
    x, y = path[:, 0], path[:, 1]
    invariant = (
        1.0 * x - 3.0 * np.log(x) + 1.0 * y - 1.5 * np.log(y)
    )  # delta x - gamma ln x + beta y - alpha ln y
    assert np.ptp(invariant) < 1e-8


def test_sde_simulation_matches_ou_moments():
    system = get_system("ornstein_uhlenbeck")  # theta=1, mu=0, sigma=0.5
    t = np.linspace(0, 2, 5)
    paths = simulate_sde(
        system, np.full((20000, 1), 1.0), t, rng=np.random.default_rng(0), substeps=100
    )
    final = paths[:, -1, 0]
    mean, var = np.exp(-2.0), 0.25 / 2 * (1 - np.exp(-4.0))
    assert abs(final.mean() - mean) < 0.01
    assert abs(final.var() - var) / var < 0.05


def test_register_system_from_strings():
    name = "logistic_test"
    system = register_system(
        name,
        state=["x"],
        rhs=["r*x*(1 - x)"],
        parameters={"r": 2.0},
        y0_low=[0.1],
        y0_high=[0.1],
        t_span=(0.0, 3.0),
        overwrite=True,
    )
    try:
        t = np.linspace(0, 3, 7)
        sol = solve_trajectories(system, np.array([[0.1]]), t)[0, :, 0]
        exact = 1 / (1 + 9 * np.exp(-2 * t))
        np.testing.assert_allclose(sol, exact, rtol=1e-8)
        with pytest.raises(ValueError, match="already registered"):
            register_system(name, state=["x"], rhs=["x"], y0_low=[0], y0_high=[1], t_span=(0, 1))
    finally:
        SYSTEMS.pop(name)


def test_bad_strings_fail_at_definition():
    with pytest.raises(SymbolicParseError, match="unknown symbols"):
        TrajectoryDataModule(
            "mine", rhs=["a*x"], state_names=["x"], y0_low=[0], y0_high=[1], t_span=(0, 1)
        )
    with pytest.raises(ValueError, match=r"also needs data\.state_names"):
        TrajectoryDataModule("mine", rhs=["x"])
    with pytest.raises(ValueError, match="has no parameters \\['nope'\\]"):
        TrajectoryDataModule("lotka_volterra", parameters={"nope": 1.0})


def test_datamodule_is_deterministic_and_splits_whole_trajectories(tmp_path):
    kwargs = dict(n_trajectories=16, n_times=12, noise_std=0.05, seed=3, batch_size=4)
    a, b = (
        TrajectoryDataModule("van_der_pol", **kwargs),
        TrajectoryDataModule("van_der_pol", **kwargs),
    )
    a.setup("fit")
    b.setup("fit")
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].tensors["y"], b.splits[split].tensors["y"])
    assert [len(a.splits[s]) for s in ("train", "val", "test")] == [12, 2, 2]
    noise = a.splits["train"].tensors["y"] - a.splits["train"].tensors["y_true"]
    assert abs(noise.std().item() - 0.05) < 0.01
    other = TrajectoryDataModule("van_der_pol", **{**kwargs, "seed": 4})
    other.setup("fit")
    assert not torch.equal(other.splits["train"].tensors["y"], a.splits["train"].tensors["y"])


def test_segments_are_windows_of_the_trajectories():
    dm = TrajectoryDataModule(
        "damped_oscillator", n_trajectories=8, n_times=10, segment_length=4, batch_size=5
    )
    dm.setup("fit")
    train = dm.splits["train"].tensors
    assert train["y"].shape == (6 * 7, 4, 2)
    full = dm.load_or_generate()
    assert torch.equal(train["y"][3], full["y"][0, 3:7])
    assert torch.equal(train["t"][8], full["t"][1, 1:5])
    batch = next(iter(dm.train_dataloader()))
    assert batch["y"].shape == (5, 4, 2)


def test_cache_is_reused(tmp_path, monkeypatch):
    dm = TrajectoryDataModule("pendulum", n_trajectories=8, n_times=5, cache_dir=str(tmp_path))
    dm.prepare_data()
    assert dm.cache_path().exists()
    calls = []
    monkeypatch.setattr(TrajectoryDataModule, "generate", lambda self: calls.append(1))
    again = TrajectoryDataModule(
        "pendulum", n_trajectories=8, n_times=5, cache_dir=str(tmp_path), batch_size=2
    )
    again.setup("fit")
    assert calls == []  # batch_size is not part of the cache key
    assert len(again.splits["train"]) == 6


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="empty split"):
        TrajectoryDataModule(n_trajectories=3)
    with pytest.raises(ValueError, match="segment_length"):
        TrajectoryDataModule(n_times=5, segment_length=9)
