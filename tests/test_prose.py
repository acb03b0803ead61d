"""PROSE: transformer masks, operator-query independence, data module, metrics, training."""

from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import sympy
import torch

from sciml.cli import main
from sciml.data import CHAOTIC_FAMILIES, ODEOperatorDataModule
from sciml.metrics import continuation_rel_l2, score_equations, solve_equation
from sciml.models import PROSE, OptimizerConfig, ProseSizes
from sciml.nn import OperatorDecoder, SymbolDecoder
from sciml.symbolic import PrefixVocabulary, prefix_to_expressions

from .conftest import PROBLEMS, retest_saved_run

TINY = ProseSizes(
    width=32,
    heads=2,
    ffn=64,
    data_encoder=1,
    symbol_encoder=1,
    fusion=1,
    data_decoder=2,
    symbol_decoder=2,
)


@pytest.fixture(scope="module")
def mixed_data():
    """Families of state dimension 1, 2 and 3 in one data set."""
    data = ODEOperatorDataModule(
        ["exponential_decay", "lotka_volterra", "rossler"],
        ic_range=(-2.0, 2.0),
        n_train=24,
        n_val=6,
        n_test=6,
        n_times=48,
        batch_size=6,
        seed=3,
    )
    data.setup()
    return data


def test_symbol_decoder_never_peeks_at_future_tokens():
    decoder = SymbolDecoder(vocab_size=50, width=32, heads=4, layers=2, ffn=64, max_len=20).eval()
    memory = torch.randn(3, 7, 32)
    ids = torch.randint(4, 50, (3, 12))
    logits = decoder(ids, memory)
    for k in range(11):
        changed = ids.clone()
        changed[:, k + 1 :] = torch.randint(4, 50, (3, 11 - k))
        torch.testing.assert_close(decoder(changed, memory)[:, : k + 1], logits[:, : k + 1])
        assert not torch.allclose(decoder(changed, memory)[:, k + 1 :], logits[:, k + 1 :])


def test_operator_queries_are_independent_of_each_other():
    decoder = OperatorDecoder(width=32, heads=4, layers=3, ffn=64, out_dim=3).eval()
    memory = torch.randn(2, 9, 32)
    t = torch.linspace(2, 6, 10).expand(2, 10).clone()
    out = decoder(t, memory)
    perturbed = t.clone()
    perturbed[:, 4] += 0.37
    moved = decoder(perturbed, memory)
    keep = torch.arange(10) != 4
    torch.testing.assert_close(moved[:, keep], out[:, keep])
    assert not torch.allclose(moved[:, 4], out[:, 4])
    # any subset of query times gives the same outputs as the full set
    torch.testing.assert_close(decoder(t[:, [7, 2]], memory), out[:, [7, 2]])


def test_prose_outputs_at_query_times_are_independent(mixed_data):
    model = PROSE(max_dim=3, sizes=TINY).eval()
    batch = next(iter(mixed_data.test_dataloader()))
    t = batch["t_out"].clone()
    u, _ = model(batch["t_in"], batch["u_in"], t, batch["symbols"])
    t[:, 5] = 3.14159
    v, _ = model(batch["t_in"], batch["u_in"], t, batch["symbols"])
    keep = torch.arange(t.shape[1]) != 5
    torch.testing.assert_close(u[:, keep], v[:, keep])


def test_shapes_for_variable_state_dimension(mixed_data):
    batch = next(iter(mixed_data.train_dataloader()))
    assert mixed_data.max_dim == 3
    dims = batch["dim"]
    assert set(dims.tolist()) == {1, 2, 3}
    for i, d in enumerate(dims.tolist()):
        assert torch.all(batch["u_in"][i, :, d:] == 0) and torch.all(batch["u_out"][i, :, d:] == 0)
        assert batch["mask"][i].tolist() == [1.0] * d + [0.0] * (3 - d)
    assert batch["t_in"].max() < 2 <= batch["t_out"].min() and batch["t_out"].max() == 6
    model = PROSE(max_dim=3, sizes=TINY)
    u_hat, logits = model(
        batch["t_in"], batch["u_in"], batch["t_out"][:, :5], batch["symbols"], batch["target"]
    )
    assert u_hat.shape == (6, 5, 3)
    assert logits.shape == (*batch["target"][:, 1:].shape, len(PrefixVocabulary(max_dim=3)))
    loss, terms = model.compute_loss(batch, "val")
    assert torch.isfinite(loss) and 0 <= terms["valid_fraction"] <= 1
    data_only = PROSE(max_dim=3, sizes=TINY, multimodal=False)
    assert data_only.parameter_count() < model.parameter_count()
    assert data_only(batch["t_in"], batch["u_in"], batch["t_out"])[0].shape == (6, 48 - 16, 3)


def test_two_to_one_variant_reads_the_skeleton_but_predicts_only_the_data(mixed_data):
    batch = next(iter(mixed_data.test_dataloader()))
    torch.manual_seed(0)
    model = PROSE(max_dim=3, sizes=TINY, symbol_output=False).eval()
    assert not hasattr(model, "symbol_decoder") and hasattr(model, "symbol_encoder")
    args = batch["t_in"], batch["u_in"], batch["t_out"]
    u_hat, logits = model(*args, batch["symbols"], batch["target"])
    assert logits is None
    # the continuation depends on the symbol input
    other = batch["skeletons"][:, 1]
    assert not torch.equal(other, batch["symbols"])
    assert not torch.allclose(model(*args, other)[0], u_hat)
    loss, terms = model.compute_loss(batch, "test")
    assert set(terms) == {
        "data_loss",
        "rel_l2",
        "rel_l2_noisy",
        "last_value_rel_l2",
        "rel_l2_corrupted",
    }
    torch.testing.assert_close(loss, model.hparams.data_loss_weight * terms["data_loss"])
    # without the symbol input the flag changes nothing: still the data-only model
    data_only = PROSE(max_dim=3, sizes=TINY, multimodal=False, symbol_output=False)
    assert (
        data_only.parameter_count()
        == PROSE(max_dim=3, sizes=TINY, multimodal=False).parameter_count()
    )
    assert (
        data_only.parameter_count()
        < model.parameter_count()
        < PROSE(max_dim=3, sizes=TINY).parameter_count()
    )


def test_data_module_targets_are_the_exact_equations_of_the_trajectories(mixed_data):
    test = mixed_data.splits["test"].tensors
    vocab = mixed_data.vocabulary
    t_out = test["t_out"][0].double().numpy()
    times = np.concatenate([[0.0], t_out])
    for i in range(len(test["dim"])):
        d = int(test["dim"][i])
        field = prefix_to_expressions(vocab.decode(test["target"][i]), dim=d)
        path = solve_equation(
            field, test["y0"][i, :d].double().numpy(), times, rtol=1e-8, atol=1e-10
        )
        truth = test["u_out"][i, :, :d].double().numpy()
        assert np.linalg.norm(path[1:] - truth) / np.linalg.norm(truth) < 1e-4
        skeleton = vocab.decode(test["symbols"][i])
        assert "<C>" in skeleton and not any(tok.startswith("N") for tok in skeleton)
    # 2 % relative noise (PROSE's definition, over the whole trajectory)
    noise = test["u_out_noisy"] - test["u_out"]
    assert 0.005 < float(noise.norm() / test["u_out"].norm()) < 0.05


def test_renoised_test_set_has_the_requested_relative_noise(mixed_data):
    test = mixed_data.splits["test"].tensors
    clean = torch.cat([test["u_in_clean"], test["u_out"]], 1)
    assert not torch.equal(test["u_in"], test["u_in_clean"])
    exact = mixed_data.with_noise("test", 0.0).tensors
    torch.testing.assert_close(exact["u_in"], test["u_in_clean"])
    for level in (0.02, 0.1):
        noisy = mixed_data.with_noise("test", level, seed=1).tensors
        observed = torch.cat([noisy["u_in"], noisy["u_out_noisy"]], 1)
        relative = (observed - clean).flatten(1).norm(dim=1) / clean.flatten(1).norm(dim=1)
        torch.testing.assert_close(relative, torch.full_like(relative, level))
        padded = test["mask"] == 0  # padding stays exactly zero
        assert (observed.transpose(1, 2)[padded] == 0).all()
        assert torch.equal(noisy["symbols"], test["symbols"])
    with pytest.raises(ValueError, match="split"):
        mixed_data.with_noise("validation", 0.1)


def test_data_module_is_deterministic_and_cached(tmp_path):
    kwargs = dict(n_train=8, n_val=2, n_test=2, seed=5, cache_dir=str(tmp_path))
    first = ODEOperatorDataModule(**kwargs).load_or_generate()
    assert len(list(tmp_path.iterdir())) == 1
    again = ODEOperatorDataModule(**{**kwargs, "cache_dir": None}).generate()
    for key, value in first.items():
        assert torch.equal(value, again[key]), key


def test_bad_arguments_name_the_setting():
    with pytest.raises(ValueError, match=r"unknown.*registered"):
        ODEOperatorDataModule(["no_such_system"])
    with pytest.raises(ValueError, match="stochastic"):
        ODEOperatorDataModule(["ornstein_uhlenbeck"])
    with pytest.raises(ValueError, match="parameters inside"):
        ODEOperatorDataModule(["duffing"])  # forcing cos(omega t): omega inside a function
    with pytest.raises(ValueError, match="symbol_length"):
        ODEOperatorDataModule(["lorenz"], n_train=1, n_val=1, n_test=1, symbol_length=10).generate()
    with pytest.raises(ValueError, match="divisible"):
        ProseSizes(width=30, heads=4)


def test_chaotic_families_generate():
    data = ODEOperatorDataModule(
        list(CHAOTIC_FAMILIES),
        ic_range=(-2.0, 2.0),
        n_train=7,
        n_val=1,
        n_test=1,
        symbol_length=128,
    ).generate()
    assert data["u_out"].shape == (9, 64, 3) and torch.isfinite(data["u_out"]).all()


def test_equation_scores_and_blow_up_guards():
    truth = [["mul", "-", "N500", "E-3", "u_0"]]
    t = np.linspace(0, 6, 61)
    targets = np.exp(-0.5 * t)[None, 20:, None]
    common = dict(
        y0=np.ones((1, 1)),
        t_solve=t,
        targets=targets,
        target_times=t[20:],
        rng=np.random.default_rng(0),
    )
    exact = score_equations(truth, truth, [1], **common)
    assert exact.valid.all() and exact.rhs_error[0] == 0 and exact.solve_error[0] < 1e-3
    # u' = u^2 from u(0) = 1 blows up at t = 1: counted as a failure, not raised
    blow_up = score_equations([["pow2", "u_0"]], truth, [1], **common)
    assert blow_up.valid.all() and blow_up.solve_failed.all() and blow_up.failure_fraction == 1
    assert solve_equation([sympy.Symbol("u_0") ** 2], np.ones(1), t) is None
    # truncated sequence, variable beyond the state dimension, non-finite at the check states
    bad = [["add", "u_0"], ["u_1"], ["inv", "mul", "INT+", "D0", "u_0"]]
    invalid = score_equations(
        bad, truth * 3, [1, 1, 1], **{**common, "y0": np.ones((3, 1)), "targets": targets[[0] * 3]}
    )
    assert not invalid.valid.any() and invalid.summary()["valid_fraction"] == 0
    prediction = torch.ones(2, 5, 2)
    prediction[:, :, 1] = 99.0  # padded component: masked out
    target = torch.ones(2, 5, 2) * 2
    target[:, :, 1] = 0
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(continuation_rel_l2(prediction, target, mask), torch.full((2,), 0.5))


def test_prose_learns_the_equation_of_a_small_training_set():
    """Overfitting 16 samples: teacher-forced token accuracy and data error must improve a lot."""
    pl.seed_everything(0)
    data = ODEOperatorDataModule(
        ["damped_oscillator", "lotka_volterra"], n_train=16, n_val=16, n_test=16, batch_size=16
    )
    data.setup()
    data.splits["val"] = data.splits["test"] = data.splits["train"]  # memorisation check
    model = PROSE(
        max_dim=2,
        sizes=ProseSizes(width=48, heads=4, ffn=96, data_encoder=1, symbol_encoder=1, fusion=1),
        optimizer=OptimizerConfig(lr=2e-3),
        warmup_steps=10,
        decode_in_val=False,
    )
    batch = next(iter(data.val_dataloader()))
    _, before = model.compute_loss(batch, "val")
    trainer = pl.Trainer(
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        inference_mode=False,
    )
    trainer.fit(model, data)
    model.eval()
    _, after = model.compute_loss(batch, "val")
    assert after["token_accuracy"] > 0.8 > before["token_accuracy"]
    assert after["rel_l2"] < 0.5 * before["rel_l2"]
    metrics = trainer.test(model, data, verbose=False)[0]
    for key in ("rel_l2", "last_value_rel_l2", "valid_fraction", "rel_l2_corrupted"):
        assert np.isfinite(metrics[f"test/{key}"])
    assert metrics["test/rel_l2"] < metrics["test/last_value_rel_l2"]
    if metrics["test/valid_fraction"] > 0:
        assert {"test/rhs_rel_l2", "test/solve_failures"} <= set(metrics)


def _training_symbols(data):
    return torch.cat([batch["symbols"] for batch in data.train_dataloader()])


def test_training_corruptions_restart_with_every_training_loader():
    data = ODEOperatorDataModule(
        ["exponential_decay", "lotka_volterra"],
        n_train=60,
        n_val=2,
        n_test=2,
        batch_size=12,
        add_term_prob=0.3,
        delete_term_prob=0.3,
        seed=4,
    )
    data.setup()
    train = data.splits["train"]
    first = _training_symbols(data)
    # a fit that consumed the stream before must not change the next fit's corruptions
    for index in range(len(train)):
        train[index]
    assert torch.equal(_training_symbols(data), first)
    # every drawn symbol input is one of the sample's three skeletons, and all three occur
    order = list(data.train_dataloader().sampler)
    skeletons = train.tensors["skeletons"][order]
    mode = (skeletons == first[:, None]).all(-1).float().argmax(-1)
    assert (skeletons[torch.arange(len(order)), mode] == first).all()
    assert set(mode.tolist()) == {0, 1, 2}
    # worker processes draw from streams of their own, each restarted per loader
    data.num_workers = 2
    with_workers = _training_symbols(data)
    assert torch.equal(_training_symbols(data), with_workers)
    assert not torch.equal(with_workers, first)


def test_fit_then_test_from_the_saved_config_and_checkpoint(in_tmp_dir):
    config = PROBLEMS / "prose" / "classic_cpu.yaml"
    overrides = [
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--data.init_args.n_train=12",
        "--data.init_args.n_val=4",
        "--data.init_args.n_test=6",
        "--data.init_args.batch_size=6",
        "--data.init_args.cache_dir=null",
        "--trainer.enable_progress_bar=false",
    ]
    fit = main(["fit", "-c", str(config), *overrides])
    expected = fit.trainer.test(fit.model, datamodule=fit.datamodule, verbose=False)[0]
    assert {"test/rel_l2", "test/valid_fraction"} <= set(expected), sorted(expected)
    rebuilt = retest_saved_run(fit)
    got = {k: float(v) for k, v in rebuilt.trainer.callback_metrics.items()}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6, nan_ok=True), name
    assert rebuilt.model.hparams.sizes == fit.model.hparams.sizes


def test_equation_scores_of_a_batch_do_not_depend_on_earlier_calls():
    # val/test scores must be the same right after fit and from `sciml test --ckpt_path`
    data = ODEOperatorDataModule(["exponential_decay"], n_train=4, n_val=4, n_test=4, batch_size=4)
    data.setup()
    batch = next(iter(data.test_dataloader()))
    model = PROSE(max_dim=1, sizes=TINY)
    tokens = [["u_0"]] * len(batch["target"])  # u' = u: valid, and wrong at the check states
    first = model.score(batch, tokens, solve=False)
    assert first["valid_fraction"] == 1 and first["rhs_rel_l2"] > 0
    assert first == model.score(batch, tokens, solve=False)


def test_warm_up_combines_with_the_per_epoch_exponential_decay():
    model = PROSE(
        max_dim=2,
        sizes=TINY,
        optimizer=OptimizerConfig(lr=1e-3, scheduler="exponential", gamma=0.5),
        warmup_steps=4,
    )
    model.trainer = SimpleNamespace(estimated_stepping_batches=100, current_epoch=0)
    scheduler = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.get_last_lr()[0] == pytest.approx(2.5e-4)  # first warm-up step
    model.trainer.current_epoch = 3
    for _ in range(5):
        scheduler.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.5**3)
