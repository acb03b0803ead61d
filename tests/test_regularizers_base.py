import math

import pytest
import pytorch_lightning as pl
import torch

from sciml.models import KoopmanVAE, NeuralODE
from sciml.regularizers import (
    AbstractRegularizer,
    EigenvalueModulusRegularizer,
    KineticEnergyRegularizer,
    LocalRegularizer,
    PrescribedEigenvalueRegularizer,
    as_regularizer,
)


class _Square(AbstractRegularizer):
    name = "square"

    def forward(self, x):
        return (x**2).sum()


def test_constant_and_exponentially_decaying_weights():
    assert _Square(weight=0.3).weight_at(500, 1000) == 0.3
    decay = _Square(weight=2.5, weight_final=1.0)
    assert decay.weight_at(0, 1000) == pytest.approx(2.5)
    assert decay.weight_at(1000, 1000) == pytest.approx(1.0)
    assert decay.weight_at(500, 1000) == pytest.approx(math.sqrt(2.5))  # geometric midpoint
    assert decay.weight_at(5000, 1000) == pytest.approx(1.0)  # held at the final value
    assert _Square()(torch.tensor([1.0, 2.0])) == 5.0


def test_invalid_weights_raise():
    with pytest.raises(ValueError, match="weight must be finite and >= 0"):
        _Square(weight=-1.0)
    with pytest.raises(ValueError, match="weight must be finite"):
        _Square(weight=float("nan"))
    with pytest.raises(ValueError, match="weight_final finite"):
        _Square(weight=1.0, weight_final=float("inf"))
    growth = _Square(weight=0.1, weight_final=1.0)  # a warm-up of the penalty is allowed
    assert growth.weight_at(0, 10) == pytest.approx(0.1)
    assert growth.weight_at(10, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weight_final > 0"):
        _Square(weight=1.0, weight_final=0.0)
    with pytest.raises(ValueError, match="total step count"):
        _Square(weight=1.0, weight_final=0.5).weight_at(3)


class _Scaled(_Square):
    def __init__(self, scale, *, weight=1.0):
        super().__init__(weight=weight)
        self.scale = scale


def test_config_records_the_concrete_class_arguments_and_rebuilds_it():
    regularizer = LocalRegularizer(kind="stiffness", weight=0.3, weight_final=0.1)
    config = regularizer.config()
    assert config["class_path"] == "sciml.regularizers.LocalRegularizer"
    assert config["init_args"]["kind"] == "stiffness"
    rebuilt = as_regularizer(config)
    assert type(rebuilt) is LocalRegularizer and rebuilt.config() == config
    assert rebuilt.weight_at(5, 10) == regularizer.weight_at(5, 10)
    # arguments of the outermost constructor win over the ones it passes to super().__init__
    scaled = as_regularizer(_Scaled(2.5, weight=0.4).config())
    assert (scaled.scale, scaled.weight) == (2.5, 0.4)
    # tuples become lists, so the config reads the same from YAML or a checkpoint
    prescribed = PrescribedEigenvalueRegularizer([(0.9, 0.1)], weight=2.0).config()
    assert prescribed["init_args"]["eigenvalues"] == [[0.9, 0.1]]
    assert as_regularizer(regularizer) is regularizer


def test_as_regularizer_rejects_what_is_not_a_regularizer():
    with pytest.raises(TypeError, match="class_path"):
        as_regularizer({"weight": 1.0})
    with pytest.raises(TypeError, match="not an AbstractRegularizer"):
        as_regularizer({"class_path": "torch.nn.Linear", "init_args": {}})


def test_checkpoints_rebuild_the_regularizers(tmp_path):
    model = NeuralODE(
        state_dim=2, hidden_dims=[8], regularizers=[KineticEnergyRegularizer(weight=0.2)]
    )
    vae = KoopmanVAE(num_layers=1, spectral=EigenvalueModulusRegularizer(n_unit=2, weight=3.0))
    for original in (model, vae):
        path = tmp_path / f"{type(original).__name__}.ckpt"
        checkpoint = {
            "state_dict": original.state_dict(),
            "hyper_parameters": dict(original.hparams),
            "pytorch-lightning_version": pl.__version__,
        }
        original.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, path)
        reloaded = type(original).load_from_checkpoint(path, weights_only=True)
        before = [r.config() for r in original.modules() if isinstance(r, AbstractRegularizer)]
        after = [r.config() for r in reloaded.modules() if isinstance(r, AbstractRegularizer)]
        assert before == after and len(after) == 1
