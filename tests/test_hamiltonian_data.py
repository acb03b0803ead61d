import numpy as np
import pytest
import torch

from sciml.data import (
    HAMILTONIAN_SYSTEMS,
    HamiltonianMetaDataModule,
    HamiltonianSystem,
    get_hamiltonian_system,
    make_hamiltonian_system,
)
from sciml.symbolic import SymbolicParseError, parse_hamiltonian

REQUIRED = {
    "mass_spring",
    "pendulum",
    "duffing",
    "morse",
    "henon_heiles",
    "magnetic_mirror",
    "two_body",
    "three_body",
}


def test_registry_has_the_required_systems_and_a_non_separable_one():
    assert set(HAMILTONIAN_SYSTEMS) >= REQUIRED
    mirror = get_hamiltonian_system("magnetic_mirror").symbolic
    symbols = {str(s): s for s in mirror.symbols}
    # Non-separable: H is not T(p) + V(q), the mixed derivative d2H/dx dpy does not vanish.
    assert mirror.energy.diff(symbols["x"]).diff(symbols["py"]) != 0
    assert get_hamiltonian_system("three_body").n_bodies == 3


@pytest.mark.parametrize("name", sorted(HAMILTONIAN_SYSTEMS))
def test_symbolic_derivatives_match_finite_differences(name):
    system = HAMILTONIAN_SYSTEMS[name]
    rng = np.random.default_rng(1)
    parameters = system.sample_parameters(rng)
    y = system.sample_initial_states(rng, parameters, 5)
    exact = system.derivatives(y, parameters)
    h = 1e-6
    n = system.dof
    gradient = np.empty_like(y)
    for i in range(2 * n):
        step = np.zeros(2 * n)
        step[i] = h
        gradient[:, i] = (
            system.energy(y + step, parameters) - system.energy(y - step, parameters)
        ) / (2 * h)
    hamilton = np.concatenate([gradient[:, n:], -gradient[:, :n]], axis=-1)  # J grad H
    np.testing.assert_allclose(exact, hamilton, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(HAMILTONIAN_SYSTEMS))
def test_trajectories_conserve_energy_and_stay_bounded(name):
    system = HAMILTONIAN_SYSTEMS[name]
    rng = np.random.default_rng(2)
    parameters = system.sample_parameters(rng)
    y0 = system.sample_initial_states(rng, parameters, 3)
    ys = system.simulate(y0, np.linspace(*system.t_span, 40), parameters)
    assert ys.shape == (3, 40, 2 * system.dof)
    np.testing.assert_allclose(ys[:, 0], y0, atol=1e-12)
    energy = system.energy(ys, parameters)
    assert np.abs(energy - energy[:, :1]).max() < 1e-7 * (1 + np.abs(energy).max())
    assert np.abs(ys).max() < 10


def test_max_energy_bound_and_orbit_initial_states():
    morse = get_hamiltonian_system("morse")
    rng = np.random.default_rng(3)
    parameters = morse.sample_parameters(rng)
    y0 = morse.sample_initial_states(rng, parameters, 200)
    assert morse.energy(y0, parameters).max() < 0.8 * parameters["D"]
    gravity = get_hamiltonian_system("three_body")
    parameters = gravity.sample_parameters(rng)
    y0 = gravity.sample_initial_states(rng, parameters, 50)
    assert gravity.energy(y0, parameters).max() < 0  # bound
    masses = np.array([parameters[f"m{i}"] for i in (1, 2, 3)])
    momentum = y0[:, 6:].reshape(50, 3, 2).sum(1)
    np.testing.assert_allclose(momentum, 0.0, atol=1e-12)
    assert masses.min() > 0


def test_graph_layout_round_trip_and_mask():
    system = get_hamiltonian_system("two_body")
    y = np.arange(8.0)  # x1 y1 x2 y2 px1 py1 px2 py2
    nodes = system.to_nodes(y, n_nodes=3, node_dim=3)
    np.testing.assert_array_equal(nodes[0], [0, 1, 0, 4, 5, 0])
    np.testing.assert_array_equal(nodes[1], [2, 3, 0, 6, 7, 0])
    np.testing.assert_array_equal(nodes[2], 0)
    np.testing.assert_array_equal(system.from_nodes(nodes), y)
    mask = system.node_mask(3, 3)
    np.testing.assert_array_equal(mask.sum(-1), [4, 4, 0])


def test_user_hamiltonian_from_a_mapping_and_clear_errors():
    system = make_hamiltonian_system(
        {
            "hamiltonian": "p**2/2 + c*q**4",
            "coordinates": ["q"],
            "momenta": ["p"],
            "parameters": {"c": [0.5, 1.0]},
            "name": "quartic",
        }
    )
    assert system.parameters == {"c": (0.5, 1.0)}
    np.testing.assert_allclose(system.derivatives(np.array([1.0, 2.0]), {"c": 0.5}), [2.0, -2.0])
    unknown_w = r"unknown symbols \['w'\]; allowed: variables \['q', 'p'\] and parameters \['c'\]"
    with pytest.raises(SymbolicParseError, match=unknown_w):
        make_hamiltonian_system(
            {
                "hamiltonian": "p**2 + c*w*q",
                "coordinates": ["q"],
                "momenta": ["p"],
                "parameters": {"c": [0.5, 1.0]},
            }
        )
    with pytest.raises(SymbolicParseError, match="not a valid expression"):
        parse_hamiltonian("p**2 +* q", coordinates=["q"], momenta=["p"])
    # |q| differentiates to sign(q) (the coordinates are real), not to re/im expressions
    v_shaped = make_hamiltonian_system(
        {
            "hamiltonian": "p**2/2 + k*Abs(q)",
            "coordinates": ["q"],
            "momenta": ["p"],
            "parameters": {"k": [1.0, 2.0]},
            "name": "v_shaped",
        }
    )
    states = np.array([[0.5, 1.0], [-0.5, 2.0]])
    np.testing.assert_allclose(v_shaped.derivatives(states, {"k": 1.5}), [[1.0, -1.5], [2.0, 1.5]])
    with pytest.raises(ValueError, match="registered"):
        get_hamiltonian_system("no_such_system")
    with pytest.raises(ValueError, match="needs 'hamiltonian'"):
        make_hamiltonian_system({"coordinates": ["q"]})
    base = {"hamiltonian": "p**2 + k*q**2", "coordinates": ["q"], "momenta": ["p"]}
    with pytest.raises(ValueError, match=r"parameters must map each name"):
        make_hamiltonian_system({**base, "parameters": ["k"]})
    with pytest.raises(ValueError, match=r"parameter 'k' must be a number or a \[low, high\]"):
        make_hamiltonian_system({**base, "parameters": {"k": [1, 2, 3]}})
    with pytest.raises(ValueError, match="coordinates must be a list of names"):
        make_hamiltonian_system({**base, "coordinates": "q", "parameters": {"k": 1.0}})
    with pytest.raises(ValueError, match="initial_state"):
        HamiltonianSystem(
            name="x", hamiltonian="p**2", coordinates=("q",), momenta=("p",), initial_state="grid"
        )


def _data(**overrides):
    settings = dict(
        train_systems=["mass_spring", "two_body"],
        test_systems=[
            "henon_heiles",
            {
                "hamiltonian": "p**2/2 + c*q**4",
                "coordinates": ["q"],
                "momenta": ["p"],
                "parameters": {"c": [0.5, 1.0]},
            },
        ],
        support_size=20,
        query_size=30,
        n_train_tasks=4,
        n_val_tasks=2,
        n_test_tasks=4,
        n_times=20,
        batch_size=2,
    )
    return HamiltonianMetaDataModule(**{**settings, **overrides})


def test_meta_data_module_shapes_targets_and_determinism():
    data = _data()
    data.setup()
    assert (data.max_bodies, data.body_dim) == (2, 2)
    test = data.splits["test"].tensors
    assert test["support_x"].shape == (4, 20, 2, 4)
    assert test["query_dx"].shape == (4, 30, 2, 4)
    assert test["rollout_x"].shape == (4, 20, 2, 4)
    # Held-out tasks alternate over the test systems; targets are the exact derivatives.
    assert [data.systems[i].name for i in test["system"]][:2] == ["henon_heiles", "p**2/2 + c*q**4"]
    for i in range(4):
        system = data.systems[int(test["system"][i])]
        values = test["parameters"][i].tolist()[: len(system.parameters)]
        parameters = dict(zip(system.parameters, values, strict=True))
        flat = system.from_nodes(test["query_x"][i].double().numpy())
        expected = system.to_nodes(system.derivatives(flat, parameters), 2, 2)
        np.testing.assert_allclose(test["query_dx"][i].numpy(), expected, rtol=1e-5, atol=1e-6)
        # Padded features are zero in states and targets.
        mask = test["mask"][i]
        assert torch.all(test["query_x"][i] * (1 - mask) == 0)
    again = _data()
    again.setup()
    for key, value in data.splits["train"].tensors.items():
        assert torch.equal(value, again.splits["train"].tensors[key]), key
    batch = next(iter(data.train_dataloader()))
    assert batch["support_x"].shape == (2, 20, 2, 4)


def test_meta_data_module_rejects_bad_settings():
    with pytest.raises(ValueError, match="support_size"):
        _data(support_size=0)
    with pytest.raises(ValueError, match="exceeds"):
        _data(support_size=500)
    with pytest.raises(ValueError, match="n_trajectories"):
        _data(n_trajectories=1)
    with pytest.raises(ValueError, match="do not fit"):
        _data(max_bodies=1)
    with pytest.raises(ValueError, match="at least one"):
        _data(test_systems=[])
