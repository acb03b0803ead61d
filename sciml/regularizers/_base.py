"""The one base class of every regularizer: a weighted penalty with an optional decay schedule."""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["AbstractRegularizer"]


class AbstractRegularizer(nn.Module, abc.ABC):
    r"""A penalty $R$ that a task adds to its loss as $\lambda(\text{step})\,R$.

    The weight is constant, or decays exponentially from ``weight`` ($\lambda_0$) to
    ``weight_final`` ($\lambda_1$) over the run:
    $\lambda(s) = \lambda_0 \exp(-k s)$ with $k = \log(\lambda_0/\lambda_1) / S$ for $S$ total
    steps.

    Subclasses set :attr:`name` (the key under which the value is logged, e.g. ``train/reg_local``)
    and implement :meth:`forward`, whose inputs depend on the family of regularizer (a solve of a
    neural ODE, a linear operator, ...) and are stated in each subclass's docstring. Constructor
    arguments are plain data so a regularizer can be given in YAML.

    Args:
        weight: $\lambda_0$, must be >= 0.
        weight_final: $\lambda_1$ for the exponential decay; ``None`` keeps the weight constant.
    """

    name: ClassVar[str] = "reg"

    def __init__(self, *, weight: float = 1.0, weight_final: float | None = None) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        if weight_final is not None and (weight_final <= 0 or weight <= 0):
            raise ValueError(
                f"{type(self).__name__}: an exponential decay needs weight > 0 and "
                "weight_final > 0, "
                f"got {weight} -> {weight_final}"
            )
        self.weight = weight
        self.weight_final = weight_final

    def weight_at(self, step: int, total_steps: int | None = None) -> float:
        """$\\lambda$ at optimisation step ``step`` of ``total_steps``."""
        if self.weight_final is None:
            return self.weight
        if not total_steps or total_steps <= 0:
            raise ValueError(f"{type(self).__name__}: a decaying weight needs the total step count")
        rate = math.log(self.weight / self.weight_final) / total_steps
        return self.weight * math.exp(-rate * min(step, total_steps))

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The unweighted penalty $R$ (a scalar tensor, differentiable in the model parameters)."""
