"""Multilayer perceptrons and small wrappers used as vector fields."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "TimeConcat", "activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """Instantiate an activation by name; raises ``ValueError`` listing the valid names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


class MLP(nn.Sequential):
    """Fully connected network ``in_dim -> hidden_dims... -> out_dim``.

    Input ``(..., in_dim)``, output ``(..., out_dim)``. The activation follows every hidden layer;
    ``final_activation`` (default none) follows the last.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        activation_name: str = "tanh",
        final_activation: str = "identity",
    ) -> None:
        if in_dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden_dims):
            raise ValueError(
                f"MLP sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}, "
                f"hidden_dims={list(hidden_dims)}"
            )
        widths = [in_dim, *hidden_dims, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            is_last = i == len(widths) - 2
            layers.append(activation(final_activation if is_last else activation_name))
        super().__init__(*layers)


class TimeConcat(nn.Module):
    """Vector field ``f(t, y) = net([y, t])`` (time-dependent) or ``net(y)`` (autonomous).

    ``y`` has shape ``(..., d)``; ``t`` is a scalar tensor. For time dependence ``net`` takes
    ``d + 1`` inputs.
    """

    def __init__(self, net: nn.Module, *, time_dependent: bool = False) -> None:
        super().__init__()
        self.net = net
        self.time_dependent = time_dependent

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.time_dependent:
            return self.net(y)
        t_column = torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(*y.shape[:-1], 1)
        return self.net(torch.cat([y, t_column], dim=-1))
