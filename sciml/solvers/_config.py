"""Frozen, plain-typed solver settings for configs (jsonargparse / YAML) and hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torchsde

from ._odeint import _ADAPTIVE_METHODS, _check_method, odeint
from ._sdeint import SDE, SDE_METHODS, sdeint
from ._stats import Solution

__all__ = ["ODESolverConfig", "SDESolverConfig"]


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class ODESolverConfig:
    """Settings of :func:`sciml.solvers.odeint`.

    Attributes:
        method: one of :data:`ODE_METHODS`.
        rtol, atol: tolerances of adaptive methods.
        adjoint: backpropagate with the continuous adjoint.
        step_size: step of fixed-grid methods (``None``: the output grid ``t``); only valid for
            fixed-grid methods.
        max_num_steps: limit on attempted steps between two output times; only valid for
            adaptive methods.
    """

    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-8
    adjoint: bool = False
    step_size: float | None = None
    max_num_steps: int | None = None

    def __post_init__(self) -> None:
        _check_method(self.method)
        _check_positive("rtol", self.rtol)
        _check_positive("atol", self.atol)
        adaptive = self.method in _ADAPTIVE_METHODS
        if self.step_size is not None:
            _check_positive("step_size", self.step_size)
            if adaptive:
                raise ValueError(f"step_size applies to fixed-grid methods, not {self.method!r}")
        if self.max_num_steps is not None:
            if isinstance(self.max_num_steps, bool) or not isinstance(self.max_num_steps, int):
                raise ValueError(f"max_num_steps must be an int, got {self.max_num_steps!r}")
            _check_positive("max_num_steps", self.max_num_steps)
            if not adaptive:
                raise ValueError(f"max_num_steps applies to adaptive methods, not {self.method!r}")

    @property
    def steps_on_output_times(self) -> bool:
        """Whether the solver's steps are the gaps between the output times (a fixed-grid
        method without ``step_size``), so that an extra output time changes the solve."""
        return self.method not in _ADAPTIVE_METHODS and self.step_size is None

    def solve(
        self,
        func: Any,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        adjoint_params: Iterable[torch.Tensor] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Solution:
        """``odeint(func, y0, t, ...)`` with these settings; ``options`` adds solver options."""
        merged = dict(options or {})
        if self.step_size is not None:
            merged["step_size"] = self.step_size
        if self.max_num_steps is not None:
            merged["max_num_steps"] = self.max_num_steps
        return odeint(
            func,
            y0,
            t,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            adjoint_params=adjoint_params,
            options=merged,
        )


@dataclass(frozen=True)
class SDESolverConfig:
    """Settings of :func:`sciml.solvers.sdeint`.

    Attributes:
        method: one of :data:`SDE_METHODS`, or ``None`` for the default of the SDE's type.
        dt: (initial) step size.
        adaptive: torchsde's step-doubling adaptivity (always runs in torchsde).
        rtol, atol: tolerances of the adaptive mode.
    """

    method: str | None = None
    dt: float = 1e-2
    adaptive: bool = False
    rtol: float = 1e-5
    atol: float = 1e-4

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in SDE_METHODS:
            raise ValueError(
                f"unknown SDE method {self.method!r}; choose one of {list(SDE_METHODS)}"
            )
        _check_positive("dt", self.dt)
        _check_positive("rtol", self.rtol)
        _check_positive("atol", self.atol)

    def solve(
        self,
        sde: SDE,
        y0: torch.Tensor,
        ts: torch.Tensor,
        *,
        bm: torchsde.BaseBrownian | None = None,
        generator: torch.Generator | None = None,
        dW: torch.Tensor | None = None,
    ) -> Solution:
        """``sdeint(sde, y0, ts, ...)`` with these settings."""
        return sdeint(
            sde,
            y0,
            ts,
            method=self.method,
            dt=self.dt,
            bm=bm,
            adaptive=self.adaptive,
            rtol=self.rtol,
            atol=self.atol,
            generator=generator,
            dW=dW,
        )
