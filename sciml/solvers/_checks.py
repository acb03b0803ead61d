"""Input validation shared by the integrators; every check runs before the first step."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch

__all__ = [
    "ShapeCheckedOnce",
    "check_callable",
    "check_output_shape",
    "check_state",
    "check_times",
    "check_tolerances",
]


def check_callable(func: object, name: str) -> None:
    if not callable(func):
        raise TypeError(f"{name} must be callable, got {type(func).__name__}")


def check_state(y: object, name: str) -> None:
    """``y`` must be a finite floating-point tensor."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if not torch.is_floating_point(y):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {y.dtype}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")


def check_tolerances(rtol: float | torch.Tensor, atol: float | torch.Tensor) -> None:
    """``rtol`` and ``atol`` must be finite and >= 0, and not both zero (a negative tolerance
    makes the error ratio negative, so every step is accepted whatever its error)."""
    values = {"rtol": torch.as_tensor(rtol), "atol": torch.as_tensor(atol)}
    for name, value in values.items():
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0, got {value.tolist()}")
    if not bool((values["rtol"] + values["atol"] > 0).all()):
        raise ValueError("rtol and atol must not both be zero")


def check_times(t: object, name: str, *, increasing_only: bool = False) -> float:
    """Validate a 1-D time grid; return the direction of integration, ``+1.0`` or ``-1.0``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor, got {type(t).__name__}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if len(t) < 2:
        raise ValueError(f"{name} must hold at least two time points, got {len(t)}")
    # One device-to-host copy, then cheap Python checks.
    times = t.tolist()
    if not all(math.isfinite(x) for x in times):
        raise ValueError(f"{name} contains non-finite values")
    if all(a < b for a, b in pairwise(times)):
        return 1.0
    if not increasing_only and all(a > b for a, b in pairwise(times)):
        return -1.0
    wanted = "strictly increasing" if increasing_only else "strictly increasing or decreasing"
    raise ValueError(f"{name} must be {wanted}, got {times}")


class ShapeCheckedOnce:
    """Calls ``fn(*args)`` and checks the shape of its first output only.

    The expected shape is ``expected(args[-1])`` (the state argument), so the check holds for
    whatever state the first call sees; later calls skip it (one attribute test), which keeps
    fixed-step loops cheap.
    """

    __slots__ = ("expected", "fn", "name", "pending")

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        name: str,
        expected: Callable[[torch.Tensor], tuple[int, ...]],
    ) -> None:
        self.fn = fn
        self.name = name
        self.expected = expected
        self.pending = True

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.fn(*args)
        if self.pending:
            check_output_shape(out, self.expected(args[-1]), self.name)
            self.pending = False
        return out


def check_output_shape(out: object, expected: tuple[int, ...], name: str) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(expected):
        raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(expected)}")
