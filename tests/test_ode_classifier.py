"""ODEClassifier, DigitsDataModule, and regularizers inside the neural-ODE Lightning modules."""

import math

import pytest
import pytorch_lightning as pl
import torch

from sciml.cli import main
from sciml.data import DigitsDataModule
from sciml.models import NeuralODE, ODEClassifier
from sciml.regularizers import KineticEnergyRegularizer, LocalRegularizer
from sciml.solvers import ODESolverConfig

from .conftest import PROBLEMS


def _trainer(**kwargs):
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        **kwargs,
    )


def test_digits_splits_are_deterministic_disjoint_and_scaled():
    first, second = DigitsDataModule(seed=3), DigitsDataModule(seed=3)
    first.setup(), second.setup()
    sizes = {name: len(split) for name, split in first.splits.items()}
    assert sizes == {"test": 359, "val": 180, "train": 1258}
    for name in sizes:
        assert torch.equal(first.splits[name].tensors["x"], second.splits[name].tensors["x"])

    # The splits partition the 1797 images: every (image, label) row is used exactly once.
    def rows(tensors):
        return sorted(
            (*x.tolist(), int(y)) for x, y in zip(tensors["x"], tensors["y"], strict=True)
        )

    split_rows = sorted(r for s in first.splits.values() for r in rows(s.tensors))
    assert split_rows == rows(first.generate())
    assert sum(sizes.values()) == 1797
    x = torch.cat([s.tensors["x"] for s in first.splits.values()])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(first.splits["train"].tensors["y"].tolist()) == set(range(10))
    # Evaluation loaders give the whole split as one batch by default.
    assert len(first.test_dataloader()) == 1
    other = DigitsDataModule(seed=4)
    other.setup()
    assert not torch.equal(other.splits["test"].tensors["y"], first.splits["test"].tensors["y"])
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(test_fraction=0.0)


def test_evaluation_is_identical_with_and_without_regularizers():
    plain = ODEClassifier()
    regularized = ODEClassifier(regularizers=[LocalRegularizer(weight=10.0)])
    regularized.load_state_dict(plain.state_dict())
    data = DigitsDataModule()
    data.setup()
    batch = data.splits["val"].tensors
    for stage in ("val", "test"):
        loss_a, _ = plain.compute_loss(batch, stage)
        loss_b, terms_b = regularized.compute_loss(batch, stage)
        assert float(loss_a.detach()) == float(loss_b.detach())
        assert "reg" not in terms_b
    assert torch.equal(plain(batch["x"]), regularized(batch["x"]))
    # Training adds lambda * R on top of the same cross-entropy.
    torch.manual_seed(0)
    loss, terms = regularized.compute_loss(batch, "train")
    assert float(loss.detach()) == pytest.approx(float(terms["ce"] + 10.0 * terms["reg_local"]))
    assert terms["nfe_reg"] == 7


def test_test_nfe_is_one_solve_over_the_whole_test_set():
    model = ODEClassifier()
    results = []
    for eval_batch_size in (None, 50):
        data = DigitsDataModule(eval_batch_size=eval_batch_size)
        results.append(_trainer().test(model, datamodule=data, verbose=False)[0])
    assert results[0]["test/nfe"] == results[1]["test/nfe"]
    assert results[0]["test/acc"] == pytest.approx(results[1]["test/acc"], abs=1e-6)
    data.setup()
    with torch.no_grad():
        model(data.splits["test"].tensors["x"])
    assert results[0]["test/nfe"] == model.last_stats.nfe_forward
    (logits,) = _trainer().predict(model, datamodule=DigitsDataModule())
    assert logits.shape == (359, 10)
    assert float((logits.argmax(-1) == data.splits["test"].tensors["y"]).float().mean()) == (
        pytest.approx(results[0]["test/acc"], abs=1e-6)
    )


def test_training_logs_regularizer_and_nfe_terms_with_the_adjoint():
    model = ODEClassifier(
        solver=ODESolverConfig(rtol=1e-4, atol=1e-4, adjoint=True),
        regularizers=[LocalRegularizer(sampling="biased"), KineticEnergyRegularizer(weight=0.01)],
    )
    trainer = _trainer(max_steps=2, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    metrics = trainer.callback_metrics
    for key in ("train/reg", "train/reg_local", "train/reg_kinetic", "train/nfe_reg"):
        assert math.isfinite(float(metrics[key])), key
    assert float(metrics["train/nfe_reg"]) == 7
    assert float(metrics["train/nfe"]) > 0 and float(metrics["train/nfe_backward"]) > 0


def test_inputs_of_the_wrong_size_are_named():
    with pytest.raises(ValueError, match="input_dim"):
        ODEClassifier(input_dim=64)(torch.zeros(2, 8, 7))
    images = torch.rand(3, 1, 8, 8)  # image batches flatten to input_dim
    assert ODEClassifier(input_dim=64, state_dim=16)(images).shape == (3, 10)


def test_neural_ode_regularizers_from_yaml_train_only(in_tmp_dir):
    regularizers = (
        '[{"class_path": "sciml.regularizers.LocalRegularizer",'
        ' "init_args": {"sampling": "biased", "weight": 0.5}},'
        ' {"class_path": "sciml.regularizers.KineticEnergyRegularizer",'
        ' "init_args": {"weight": 0.01}}]'
    )
    cli = main(
        [
            "fit",
            "-c",
            str(PROBLEMS / "neural_ode" / "spiral.yaml"),
            "--trainer.fast_dev_run=true",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.n_trajectories=16",
            f"--model.init_args.regularizers={regularizers}",
        ]
    )
    model = cli.model
    assert [type(r).__name__ for r in model.regularizers] == [
        "LocalRegularizer",
        "KineticEnergyRegularizer",
    ]
    assert model.regularizers[0].weight == 0.5
    metrics = cli.trainer.callback_metrics
    assert {"train/reg", "train/reg_local", "train/reg_kinetic", "train/nfe_reg"} <= set(metrics)
    assert "val/reg" not in metrics
    # Validation is the plain solve: a copy without regularizers gives the same loss.
    plain = NeuralODE(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})
    plain.load_state_dict(model.state_dict())
    batch = next(iter(cli.datamodule.val_dataloader()))
    assert float(plain.compute_loss(batch, "val")[0].detach()) == float(
        model.compute_loss(batch, "val")[0].detach()
    )
