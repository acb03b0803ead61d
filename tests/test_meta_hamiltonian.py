import csv
import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from sciml.cli import main
from sciml.data import HamiltonianMetaDataModule
from sciml.metrics import linear_cka
from sciml.models import (
    MetaHamiltonian,
    NonFiniteLossError,
    hamiltonian_derivative_loss,
    learned_vector_field,
    maml_inner_step,
)
from sciml.nn import HamiltonianGraphNetwork, symplectic_gradient

from .conftest import PROBLEMS, retest_saved_run


class KnownEnergy(nn.Module):
    """H = sum_i |p_i|^2 / 2 + w^2 |q_i|^2 / 2 + g (1 - cos q_i,x), as an energy network."""

    def __init__(self, omega: float = 1.0, gravity: float = 0.0) -> None:
        super().__init__()
        self.omega, self.gravity = omega, gravity

    def forward(self, x: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        q, p = x.chunk(2, dim=-1)
        per_node = (p**2).sum(-1) / 2 + self.omega**2 * (q**2).sum(-1) / 2
        per_node = per_node + self.gravity * (1 - torch.cos(q[..., 0]))
        return (per_node * node_mask).sum(-1)


def _tiny_network() -> HamiltonianGraphNetwork:
    torch.manual_seed(0)
    return HamiltonianGraphNetwork(4, hidden_dims=(5,), message_dim=3, activation="tanh").double()


def _task(n_points: int, seed: int, n_nodes: int = 2) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_points, n_nodes, 4, generator=generator, dtype=torch.float64)
    dx = torch.randn(n_points, n_nodes, 4, generator=generator, dtype=torch.float64)
    mask = torch.ones(n_nodes, 4, dtype=torch.float64)
    return x, dx, mask


def test_known_hamiltonian_gives_hamiltons_equations_exactly():
    x = torch.randn(7, 2, 4, dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.float64)
    field = learned_vector_field(KnownEnergy(omega=1.5), {}, x, mask)
    q, p = x.chunk(2, dim=-1)
    torch.testing.assert_close(field, torch.cat([p, -(1.5**2) * q], dim=-1), rtol=0, atol=1e-14)


def test_learned_vector_field_is_divergence_free_and_symplectic():
    network = _tiny_network()
    mask = torch.ones(2, 4, dtype=torch.float64)
    x0 = torch.randn(2, 4, dtype=torch.float64)

    def field(flat: torch.Tensor) -> torch.Tensor:
        return learned_vector_field(
            network, dict(network.named_parameters()), flat.view(2, 4), mask, create_graph=True
        ).reshape(-1)

    jacobian = torch.autograd.functional.jacobian(field, x0.reshape(-1))  # (8, 8)
    assert abs(float(torch.trace(jacobian))) < 1e-12
    # Per node the features are (q_i, p_i); reorder to (q, p) of the whole system, where the
    # Jacobian of J grad H is J Hess H, so J^T A = Hess H must be symmetric (and not zero).
    order = [0, 1, 4, 5, 2, 3, 6, 7]
    a = jacobian[order][:, order]
    eye, zero = torch.eye(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
    j = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0)
    hessian = j.T @ a
    torch.testing.assert_close(hessian, hessian.T, rtol=0, atol=1e-12)
    assert hessian.abs().max() > 1e-3


def test_graph_energy_is_permutation_invariant_and_padding_free():
    network = _tiny_network()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    energy = network(x)
    torch.testing.assert_close(network(x[:, [2, 0, 1]]), energy)
    # A padded (masked) node changes nothing: a 2-body system inside a 3-node batch.
    padded = torch.cat([x[:, :2], torch.randn(6, 1, 4, dtype=torch.float64)], dim=1)
    node_mask = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(network(padded, node_mask), network(x[:, :2]))
    # And the field permutes with the particles.
    field = symplectic_gradient(network, x)
    torch.testing.assert_close(symplectic_gradient(network, x[:, [2, 0, 1]]), field[:, [2, 0, 1]])


def test_graph_network_rejects_non_smooth_activations():
    with pytest.raises(ValueError, match="smooth"):
        HamiltonianGraphNetwork(4, activation="relu")
    with pytest.raises(ValueError, match="mode"):
        MetaHamiltonian(mode="protonet")


def test_one_inner_step_equals_a_hand_computed_sgd_step():
    network = _tiny_network()
    x, dx, mask = _task(9, seed=1)
    params = dict(network.named_parameters())
    adapted = maml_inner_step(network, params, x, dx, mask, lr=0.1)
    # By hand: the loss J grad H vs dx, backward into .grad, then theta - lr * grad.
    network.zero_grad()
    x_leaf = x.clone().requires_grad_(True)
    energy = network(x_leaf).sum()
    (grad_x,) = torch.autograd.grad(energy, x_leaf, create_graph=True)
    dq, dp = grad_x.chunk(2, dim=-1)
    prediction = torch.cat([dp, -dq], dim=-1)
    loss = ((prediction - dx) ** 2).sum() / (x.shape[0] * mask.sum())
    loss.backward()
    for name, parameter in network.named_parameters():
        grad = torch.zeros_like(parameter) if parameter.grad is None else parameter.grad
        torch.testing.assert_close(adapted[name], parameter - 0.1 * grad, rtol=0, atol=1e-13)
    assert any(not torch.equal(adapted[n], p) for n, p in network.named_parameters())


def _meta_loss(network, flat, shapes, names, support, query, lr, first_order=False):
    params, offset = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = math.prod(shape)
        params[name] = flat[offset : offset + size].view(shape)
        offset += size
    adapted = maml_inner_step(network, params, *support, lr=lr, first_order=first_order)
    return hamiltonian_derivative_loss(network, adapted, *query)


def test_second_order_maml_gradient_matches_finite_differences():
    network = _tiny_network()
    names = [n for n, _ in network.named_parameters()]
    shapes = [p.shape for _, p in network.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in network.parameters()])
    support, query = _task(6, seed=2), _task(6, seed=3)
    lr = 0.2

    def meta_loss(flat, first_order=False):
        if not flat.requires_grad:  # the inner step differentiates w.r.t. the parameters
            flat = flat.clone().requires_grad_(True)
        return _meta_loss(network, flat, shapes, names, support, query, lr, first_order)

    leaf = theta.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(meta_loss(leaf), leaf)
    generator = torch.Generator().manual_seed(4)
    h = 1e-5
    for _ in range(4):
        direction = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        numeric = (meta_loss(theta + h * direction) - meta_loss(theta - h * direction)).detach() / (
            2 * h
        )
        assert float(gradient @ direction) == pytest.approx(float(numeric), rel=1e-6, abs=1e-9)
    # First-order MAML drops the second-order term, so it must differ from the exact gradient,
    # and equal the query gradient evaluated at the adapted parameters.
    leaf = theta.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(meta_loss(leaf, first_order=True), leaf)
    assert torch.linalg.vector_norm(first - gradient) > 1e-6 * torch.linalg.vector_norm(gradient)
    adapted = maml_inner_step(
        network, dict(network.named_parameters()), *support, lr=lr, differentiable=False
    )
    query_loss = hamiltonian_derivative_loss(network, adapted, *query)
    at_adapted = torch.autograd.grad(query_loss, list(adapted.values()), allow_unused=True)
    expected = torch.cat(
        [
            torch.zeros(math.prod(s), dtype=torch.float64) if g is None else g.reshape(-1)
            for g, s in zip(at_adapted, shapes, strict=True)
        ]
    )
    torch.testing.assert_close(first, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gravity", [0.0, 2.0])
def test_rollout_of_a_known_hamiltonian_conserves_energy(gravity):
    model = MetaHamiltonian(node_dim=4, rollout_step_size=0.01).double()
    model.network = KnownEnergy(omega=1.3, gravity=gravity)
    x0 = torch.tensor([[0.5, -0.2, 0.1, 0.7]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    t = torch.linspace(0, 10, 51, dtype=torch.float64)
    path = model.rollout({}, x0, mask, t)
    assert path.shape == (51, 1, 4)
    energy = model.energy({}, path, mask)
    assert float((energy - energy[0]).abs().max()) < 1e-9
    if gravity == 0.0:  # exact solution of the harmonic part: q(t) = q0 cos(wt) + p0/w sin(wt)
        w = 1.3
        exact_q = x0[0, :2] * torch.cos(w * t[-1]) + x0[0, 2:] / w * torch.sin(w * t[-1])
        torch.testing.assert_close(path[-1, 0, :2], exact_q, rtol=0, atol=1e-8)


def _data() -> HamiltonianMetaDataModule:
    return HamiltonianMetaDataModule(
        train_systems=["mass_spring", "duffing"],
        test_systems=["pendulum"],
        support_size=25,
        query_size=25,
        n_train_tasks=16,
        n_val_tasks=2,
        n_test_tasks=3,
        n_times=25,
        batch_size=4,
    )


def _trainer(max_steps: int, **overrides) -> pl.Trainer:
    settings = dict(
        max_steps=max_steps,
        max_epochs=-1,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    return pl.Trainer(**{**settings, **overrides})


def test_modes_train_as_documented_and_test_logs_adapted_errors_per_k():
    data = _data()
    data.setup()
    results = {}
    for mode in ("maml", "pretrained", "scratch"):
        torch.manual_seed(0)
        model = MetaHamiltonian(
            node_dim=2,
            hidden_dims=(32, 32),
            mode=mode,
            inner_lr=0.05,
            eval_steps=(0, 1, 5, 10),
            optimizer={"lr": 1e-2},
        )
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        steps = 60 if mode == "maml" else 2  # the baselines only need to show their update rule
        trainer = _trainer(max_steps=steps)
        trainer.fit(model, data)
        assert trainer.global_step == steps
        changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
        assert changed == (mode != "scratch")
        results[mode] = trainer.test(model, data, verbose=False)[0]
    for mode, metrics in results.items():
        for k in (0, 1, 5, 10):
            for name in ("deriv_mse", "traj_rel_err", "energy_drift", "energy_err"):
                assert math.isfinite(metrics[f"test/{name}_k{k}"]), (mode, name, k)
        # representation similarity to the unadapted network (one-body systems: node layers)
        assert 0.0 < metrics["test/cka_node1_k10"] <= 1.0 and "test/cka_edge1_k10" not in metrics
    meta = results["maml"]
    # Adapting on the support set lowers the held-out query error, and meta-training beats
    # the untouched random initialisation.
    assert meta["test/deriv_mse_k10"] < meta["test/deriv_mse_k0"]
    assert meta["test/deriv_mse_k10"] < 0.5 * results["scratch"]["test/deriv_mse_k10"]
    # The learned field is Hamiltonian: its own energy is (nearly) conserved along RK4 rollouts.
    assert meta["test/energy_drift_k10"] < 1e-3


def test_non_finite_meta_loss_stops_training_before_the_update():
    data = _data()
    data.setup()
    model = MetaHamiltonian(node_dim=2, hidden_dims=(8,))
    batch = next(iter(data.train_dataloader()))
    batch["query_dx"][0, 0, 0, 0] = float("nan")
    trainer = _trainer(max_steps=1)
    trainer.strategy.connect(model)
    model.trainer = trainer
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="deriv_mse"):
        model.training_step(batch, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_cli_fit_then_test_on_a_user_hamiltonian_logs_errors_per_k(in_tmp_dir):
    config = PROBLEMS / "meta_hamiltonian" / "custom_hamiltonian.yaml"
    small = [
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.n_train_tasks=8",
        "--data.init_args.n_test_tasks=2",
        "--model.init_args.hidden_dims=[16]",
    ]
    fit = main(["fit", "-c", str(config), *small])
    rebuilt = retest_saved_run(fit)
    assert rebuilt.datamodule.test_system_list[0].name == "quartic"
    metrics = rebuilt.trainer.callback_metrics
    for k in (0, 1, 5, 10):
        assert math.isfinite(float(metrics[f"test/deriv_mse_k{k}"]))
        assert math.isfinite(float(metrics[f"test/energy_err_k{k}"]))


def test_node_dim_must_match_the_data_padding():
    model = MetaHamiltonian(node_dim=4)
    with pytest.raises(ValueError, match="node_dim=4 but the data has body_dim=1"):
        _trainer(max_steps=1).fit(model, _data())


def test_relative_loss_divides_by_the_target_mean_square():
    network = _tiny_network()
    x, dx, mask = _task(5, seed=6)
    params = dict(network.named_parameters())
    plain = hamiltonian_derivative_loss(network, params, x, dx, mask)
    relative = hamiltonian_derivative_loss(network, params, x, dx, mask, relative=True)
    torch.testing.assert_close(relative, plain / (dx**2).mean())
    # Scaling the task's derivatives and the energy together leaves the relative loss unchanged.
    scaled = {n: p * 3.0 if n == "node_mlp.2.weight" else p for n, p in params.items()}
    field = learned_vector_field(network, params, x, mask)
    fit = hamiltonian_derivative_loss(network, params, x, field + dx, mask, relative=True)
    fit_scaled = hamiltonian_derivative_loss(
        network, scaled, x, 3 * (field + dx), mask, relative=True
    )
    torch.testing.assert_close(fit, fit_scaled)


def test_meta_sgd_and_anil_inner_steps_update_as_documented():
    network = _tiny_network()
    x, dx, mask = _task(7, seed=7)
    params = dict(network.named_parameters())
    plain = maml_inner_step(network, params, x, dx, mask, lr=0.1, differentiable=False)
    # Meta-SGD: a rate per parameter entry; theta - alpha * g elementwise.
    generator = torch.Generator().manual_seed(8)
    rates = {
        n: torch.rand(p.shape, generator=generator, dtype=torch.float64) for n, p in params.items()
    }
    meta_sgd = maml_inner_step(network, params, x, dx, mask, lr=rates, differentiable=False)
    for n, p in params.items():
        gradient = (p - plain[n]) / 0.1
        torch.testing.assert_close(meta_sgd[n], p - rates[n] * gradient, rtol=0, atol=1e-12)
    # ANIL: only the readout moves.
    readout = network.readout_parameter_names()
    assert readout == ["node_mlp.2.weight", "node_mlp.2.bias"]
    anil = maml_inner_step(network, params, x, dx, mask, lr=0.1, adapted=readout)
    for n, p in params.items():
        if n in readout:
            torch.testing.assert_close(anil[n], plain[n], rtol=0, atol=1e-13)
        else:
            assert anil[n] is p
    assert not torch.equal(anil["node_mlp.2.weight"], params["node_mlp.2.weight"])


def test_meta_sgd_rate_gradient_matches_finite_differences():
    network = _tiny_network()
    params = {n: p.detach() for n, p in network.named_parameters()}
    support, query = _task(6, seed=9), _task(6, seed=10)
    name = "node_mlp.0.weight"

    def meta_loss(log_rate: torch.Tensor) -> torch.Tensor:
        leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        rates = {n: torch.full_like(p, 0.05) for n, p in params.items()}
        rates[name] = log_rate.exp()
        adapted = maml_inner_step(network, leaves, *support, lr=rates)
        return hamiltonian_derivative_loss(network, adapted, *query)

    log_rate = torch.full_like(params[name], math.log(0.2)).requires_grad_(True)
    (gradient,) = torch.autograd.grad(meta_loss(log_rate), log_rate)
    direction = torch.randn(log_rate.shape, generator=torch.Generator().manual_seed(11)).double()
    h = 1e-6
    with torch.no_grad():
        shifted = log_rate + h * direction, log_rate - h * direction
    numeric = (meta_loss(shifted[0]) - meta_loss(shifted[1])).detach() / (2 * h)
    assert float((gradient * direction).sum()) == pytest.approx(float(numeric), rel=1e-6)


def test_meta_sgd_rates_are_meta_trained_and_options_are_validated():
    data = _data()
    data.setup()
    torch.manual_seed(0)
    model = MetaHamiltonian(
        node_dim=2, hidden_dims=(16,), learn_inner_lr=True, adapt="readout", inner_lr=0.05
    )
    before = {n: r.detach().clone() for n, r in model.inner_lrs().items()}
    torch.testing.assert_close(before["node_mlp.2.weight"], torch.full((1, 16), 0.05))
    _trainer(max_steps=3).fit(model, data)
    after = model.inner_lrs()
    assert not torch.equal(after["node_mlp.2.weight"], before["node_mlp.2.weight"])
    # ANIL adapts the readout only, so the other rates get no gradient and stay put.
    torch.testing.assert_close(after["node_mlp.0.weight"], before["node_mlp.0.weight"])
    task = data.splits["test"][0]
    metrics = model.adapt_and_evaluate(task, steps=(0, 2), rollout_steps=[2])
    assert metrics["deriv_mse_k2"] != metrics["deriv_mse_k0"]
    qdx = task["query_dx"]
    # deriv_rel_mse = MSE / (mean square of the targets over the query points and real features)
    assert metrics["deriv_rel_mse_k2"] == pytest.approx(
        metrics["deriv_mse_k2"]
        / float((qdx**2 * task["mask"]).sum() / (len(qdx) * task["mask"].sum())),
        rel=1e-5,
    )
    with pytest.raises(ValueError, match="learn_inner_lr"):
        MetaHamiltonian(mode="pretrained", learn_inner_lr=True)
    with pytest.raises(ValueError, match="inner_lr_lr_factor"):
        MetaHamiltonian(inner_lr_lr_factor=0.0)
    with pytest.raises(ValueError, match="adapt must be one of"):
        MetaHamiltonian(adapt="head")
    with pytest.raises(ValueError, match="rollout_method must be one of"):
        MetaHamiltonian(rollout_method="euler")


def _reptile_gradient(mode: str, inner_steps: int, batch: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = MetaHamiltonian(
        node_dim=2, hidden_dims=(8,), mode=mode, inner_lr=0.05, inner_steps=inner_steps
    ).double()
    model.zero_grad()
    loss, _ = model.compute_loss(batch, "train")
    loss.backward()
    # a parameter the field never sees (the energy's offset) has no gradient: zero direction
    return {
        n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for n, p in model.network.named_parameters()
    }


def test_reptile_direction_is_the_mean_gradient_along_the_inner_path():
    data = _data()
    data.setup()
    batch = {k: v.double() for k, v in next(iter(data.train_dataloader())).items()}
    # One inner step: the Reptile direction (theta - phi) / lr is the pooled-loss gradient,
    # i.e. Reptile with k = 1 is multi-task pretraining.
    one_step, pretrained = (
        _reptile_gradient("reptile", 1, batch),
        _reptile_gradient("pretrained", 1, batch),
    )
    assert one_step.keys() == pretrained.keys()
    for name in pretrained:
        torch.testing.assert_close(one_step[name], pretrained[name], rtol=1e-10, atol=1e-13)
    # Three steps, by hand: three SGD steps per task, then mean over tasks of (theta - phi) / 3a.
    torch.manual_seed(0)
    model = MetaHamiltonian(node_dim=2, hidden_dims=(8,), inner_lr=0.05).double()
    theta = {n: p.detach().clone() for n, p in model.network.named_parameters()}
    expected = {n: torch.zeros_like(p) for n, p in theta.items()}
    tasks = len(batch["mask"])
    for i in range(tasks):
        x = torch.cat([batch["support_x"][i], batch["query_x"][i]])
        dx = torch.cat([batch["support_dx"][i], batch["query_dx"][i]])
        phi = {n: p.clone().requires_grad_(True) for n, p in theta.items()}
        for _ in range(3):
            loss = hamiltonian_derivative_loss(model.network, phi, x, dx, batch["mask"][i])
            grads = torch.autograd.grad(loss, list(phi.values()), allow_unused=True)
            phi = {
                n: (p if g is None else p - 0.05 * g).detach().requires_grad_(True)
                for (n, p), g in zip(phi.items(), grads, strict=True)
            }
        for n in theta:
            expected[n] += (theta[n] - phi[n].detach()) / (3 * 0.05 * tasks)
    three_steps = _reptile_gradient("reptile", 3, batch)
    for name, value in expected.items():
        torch.testing.assert_close(three_steps[name], value, rtol=1e-9, atol=1e-12)
    assert any(not torch.allclose(three_steps[n], pretrained[n], rtol=1e-3) for n in pretrained)
    with pytest.raises(ValueError, match="reptile"):
        MetaHamiltonian(mode="reptile", adapt="readout")


def test_reptile_meta_training_learns_and_reports_its_inner_loop():
    data = _data()
    data.setup()
    torch.manual_seed(0)
    model = MetaHamiltonian(
        node_dim=2,
        hidden_dims=(32, 32),
        mode="reptile",
        inner_lr=0.05,
        inner_steps=5,
        optimizer={"lr": 1e-2},
    )
    batch = next(iter(data.train_dataloader()))
    _, terms = model.compute_loss(batch, "train")
    # Five SGD steps on the task's own points lower its loss from the shared initialisation.
    assert terms["deriv_mse_after_adaptation"] < terms["deriv_mse"]
    first = float(terms["deriv_mse"])
    _trainer(max_steps=40).fit(model, data)
    _, terms = model.compute_loss(batch, "train")
    assert float(terms["deriv_mse"]) < 0.5 * first


def test_meta_sgd_rates_get_their_own_outer_learning_rate():
    model = MetaHamiltonian(
        node_dim=2,
        hidden_dims=(8,),
        learn_inner_lr=True,
        inner_lr_lr_factor=20.0,
        optimizer={"lr": 1e-3},
    )
    optimizer = model.configure_optimizers()
    weights, rates = optimizer.param_groups
    assert weights["lr"] == 1e-3 and rates["lr"] == pytest.approx(0.02)
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters()}
    assert {id(p) for p in rates["params"]} == {id(p) for p in model.log_inner_lrs.parameters()}
    # Without Meta-SGD there is one group: every parameter at optimizer.lr.
    (only,) = MetaHamiltonian(node_dim=2, hidden_dims=(8,)).configure_optimizers().param_groups
    assert only["lr"] == 5e-4


def test_implicit_midpoint_rollout_conserves_a_quadratic_energy_exactly():
    model = MetaHamiltonian(node_dim=4, rollout_step_size=0.25).double()
    model.network = KnownEnergy(omega=1.3)
    x0 = torch.tensor([[0.5, -0.2, 0.1, 0.7]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    t = torch.linspace(0, 50, 201, dtype=torch.float64)
    drift = {}
    for method in ("rk4", "implicit_midpoint"):
        energy = model.energy({}, model.rollout({}, x0, mask, t, method), mask)
        drift[method] = float((energy - energy[0]).abs().max())
    assert drift["implicit_midpoint"] < 1e-11 < 1e-5 < drift["rk4"]


def test_hidden_features_cover_real_nodes_and_edges_and_cka_tracks_adaptation():
    torch.manual_seed(0)
    model = MetaHamiltonian(node_dim=4, hidden_dims=(6, 5), message_dim=3).double()
    params = model.params()
    x, _, mask = _task(7, seed=12, n_nodes=3)
    mask[2] = 0  # a padded third particle: 2 real nodes, 2 real (ordered) edges per state
    features = model.hidden_features(params, x, mask)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "edge1": (14, 6),
        "edge2": (14, 5),
        "node1": (14, 6),
        "node2": (14, 5),
    }
    # the rows are the activations of the real nodes: recompute node1 by hand for state 0
    network = model.network
    q = x[0, :2, :2]
    offset = q[:, None] - q[None, :]
    distance = torch.sqrt((offset**2).sum(-1, keepdim=True) + 1e-6)
    edges = torch.cat([x[0, :2, None].expand(2, 2, 4), x[0, None, :2].expand(2, 2, 4)], -1)
    messages = network.edge_mlp(torch.cat([edges, offset, distance], -1))
    aggregated = messages.sum(1) - messages.diagonal().T  # leave out i == j
    node1 = network.node_mlp[1](network.node_mlp[0](torch.cat([x[0, :2], aggregated], -1)))
    torch.testing.assert_close(features["node1"][:2], node1)
    # one-body systems have no edges, so no edge layers
    one_body = model.hidden_features(params, x[:, :1], mask[:1])
    assert set(one_body) == {"node1", "node2"}

    task = {
        "support_x": x,
        "support_dx": torch.randn_like(x),
        "query_x": x.flip(0),
        "query_dx": torch.randn_like(x),
        "mask": mask,
    }
    metrics = model.adapt_and_evaluate(task, steps=(0, 1, 10), lr=0.2, representation_steps=(0, 10))
    adapted = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    for _ in range(10):
        adapted = maml_inner_step(
            model.network, adapted, x, task["support_dx"], mask, lr=0.2, differentiable=False
        )
    after = model.hidden_features(adapted, task["query_x"], mask)
    before = model.hidden_features(params, task["query_x"], mask)
    for layer in features:
        assert metrics[f"cka_{layer}_k0"] == pytest.approx(1.0, abs=1e-12)
        expected = linear_cka(before[layer], after[layer])
        assert metrics[f"cka_{layer}_k10"] == pytest.approx(expected, rel=1e-9)
        assert expected < 1.0
    assert "cka_node1_k1" not in metrics


@pytest.mark.parametrize(("mode", "diagnostic"), [("maml", "before"), ("reptile", "after")])
def test_adaptation_diagnostics_are_computed_on_the_written_steps_only(tmp_path, mode, diagnostic):
    data = _data()
    torch.manual_seed(0)
    model = MetaHamiltonian(node_dim=2, hidden_dims=(16,), mode=mode, inner_steps=2)
    name = f"train/deriv_mse_{diagnostic}_adaptation"
    computed_at = []
    compute_loss = model.compute_loss

    def recording(batch, stage):
        loss, terms = compute_loss(batch, stage)
        if stage == "train" and name.removeprefix("train/") in terms:
            computed_at.append(model.global_step)
        return loss, terms

    model.compute_loss = recording
    logger = CSVLogger(tmp_path)
    _trainer(max_steps=7, logger=logger, log_every_n_steps=3).fit(model, data)
    with open(f"{logger.log_dir}/metrics.csv") as f:
        written = [int(row["step"]) for row in csv.DictReader(f) if row.get(name)]
    # Of the 7 steps, the 3rd and the 6th reach the logger (global steps 2 and 5).
    assert computed_at == written == [2, 5]
