import math

import pytest
import torch

from sciml.regularizers import AbstractRegularizer


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
    with pytest.raises(ValueError, match="weight must be >= 0"):
        _Square(weight=-1.0)
    with pytest.raises(ValueError, match="weight_final > 0"):
        _Square(weight=1.0, weight_final=0.0)
    with pytest.raises(ValueError, match="total step count"):
        _Square(weight=1.0, weight_final=0.5).weight_at(3)
