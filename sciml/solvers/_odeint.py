"""``odeint``: torchdiffeq's solvers with validation and solver statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torchdiffeq
from torch import nn

from ._checks import (
    check_callable,
    check_output_shape,
    check_state,
    check_times,
    check_tolerances,
)
from ._stats import Solution, SolverStats

__all__ = ["ODE_METHODS", "MaxStepsError", "StepSizeUnderflowError", "odeint"]

_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
_FIXED_GRID_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "implicit_adams",
)
# torchdiffeq 0.2.5's explicit_adams returns wrong solutions (y' = -y on [0, 1] with step 0.01
# gives 0.735 instead of 0.368), so it is refused with that reason rather than offered.
_BROKEN_METHODS = {"explicit_adams": "torchdiffeq's explicit_adams returns wrong solutions"}

ODE_METHODS: tuple[str, ...] = _ADAPTIVE_METHODS + _FIXED_GRID_METHODS
"""Methods accepted by :func:`odeint` (torchdiffeq's names): embedded adaptive pairs first,
then fixed-grid methods. torchdiffeq's ``"rk4"`` is the 3/8-rule variant; :func:`sciml.solvers.rk4`
is the classic scheme."""

# torchdiffeq's default for RK adaptive solvers (`max_num_steps=2**31 - 1`).
_TORCHDIFFEQ_MAX_NUM_STEPS = 2**31 - 1


class MaxStepsError(RuntimeError):
    """An adaptive solve needed more steps than ``options["max_num_steps"]`` allows."""


class StepSizeUnderflowError(RuntimeError):
    """An adaptive solve's step size shrank below what the time's dtype can resolve (typically a
    solution that blows up in finite time)."""


class _CountingField(nn.Module):
    """``func`` plus call counters; torchdiffeq calls it in place of ``func``.

    Calls made before ``backward_phase`` is set count as forward evaluations, later ones (the
    adjoint's backward solve) as backward evaluations. The first forward output's shape is
    checked, so a wrong vector field fails before the first step without an extra evaluation.
    Subclasses add the torchdiffeq step callbacks valid for their solver family (torchdiffeq
    warns about the others).
    """

    def __init__(
        self, func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], stats: SolverStats
    ):
        super().__init__()
        self.func = func  # registered as a submodule when it is an nn.Module
        self.stats = stats
        self.backward_phase = False
        self.step_sizes: list[torch.Tensor] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dy = self.func(t, y)
        stats = self.stats
        if self.backward_phase:
            stats.nfe_backward += 1
        else:
            stats.nfe_forward += 1
            if stats.nfe_forward == 1:
                check_output_shape(dy, tuple(y.shape), "func(t, y)")
        return dy

    # The solver calls this wrapper several times per step and it never carries hooks, so skip
    # nn.Module.__call__'s hook dispatch.
    __call__ = forward

    def _pass_on(self, name: str, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        """Call ``func``'s own torchdiffeq step callback ``name`` if it defines one.

        This keeps torchdiffeq's callback protocol working through the counting wrapper, e.g.
        for regularizers that record the accepted steps (``y0`` carries the autograd graph
        unless the solve runs without one, as the adjoint's forward pass does).
        """
        callback = getattr(self.func, name, None)
        if callback is not None:
            callback(t0, y0, dt)


class _AdaptiveCountingField(_CountingField):
    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.stats.n_accepted += 1
        self.step_sizes.append(dt)
        self._pass_on("callback_accept_step", t0, y0, dt)

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.stats.n_rejected += 1
        self._pass_on("callback_reject_step", t0, y0, dt)


class _FixedGridCountingField(_CountingField):
    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.stats.n_accepted += 1
        self.step_sizes.append(dt)
        self._pass_on("callback_step", t0, y0, dt)


def _check_method(method: object) -> str:
    if method in _BROKEN_METHODS:
        raise ValueError(
            f"ODE method {method!r} is not offered: {_BROKEN_METHODS[method]}; use "
            "'implicit_adams' or 'rk4'"
        )
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {list(ODE_METHODS)}")
    return method  # type: ignore[return-value]


def odeint(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    adjoint: bool = False,
    adjoint_params: Iterable[torch.Tensor] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Solution:
    r"""Solve $\dot y = f(t, y)$, $y(t_0) = y_0$ with torchdiffeq and count what the solver did.

    Args:
        func: vector field ``f(t, y)`` returning a tensor shaped like ``y``; ``t`` is a 0-d
            tensor.
        y0: initial state of any shape.
        t: 1-D output times, strictly increasing or strictly decreasing; ``t[0]`` is the initial
            time.
        method: one of :data:`ODE_METHODS`.
        rtol, atol: tolerances of adaptive methods (error norm: :func:`error_ratio`).
        adjoint: backpropagate with the continuous adjoint (``torchdiffeq.odeint_adjoint``)
            instead of through the solver's operations.
        adjoint_params: tensors to differentiate in the adjoint; defaults to
            ``func.parameters()`` when ``func`` is an ``nn.Module`` and is required otherwise
            (pass ``()`` when there are none).
        options: torchdiffeq solver options, e.g. ``{"step_size": h}`` for fixed-grid methods or
            ``{"max_num_steps": n, "first_step": h0}`` for adaptive ones. ``max_num_steps`` bounds
            the attempted (accepted + rejected) steps between two consecutive output times,
            as torchdiffeq 0.2.5 counts them.

    Returns:
        :class:`Solution` ``(ys, stats)`` with ``ys`` of shape ``(len(t), *y0.shape)``.
        ``stats.nfe_forward`` counts every call of ``func`` in the forward solve; for
        ``dopri5`` it is ``2 + 6 * (n_accepted + n_rejected)`` (one evaluation at ``t0`` and one
        in the initial step-size heuristic, then six new stages per attempted step thanks to
        FSAL). For fixed-grid methods ``n_accepted`` is the number of grid steps taken.
        ``stats.step_sizes`` sums to ``t[-1] - t[0]`` for fixed-grid methods; adaptive methods
        step past ``t[-1]`` and interpolate back, so their sum reaches beyond it. With
        ``adjoint=True``, ``stats.nfe_backward`` grows when backward runs.

    Raises:
        ValueError: unknown method, invalid ``t``, non-finite ``y0``, ``func`` output shaped
            unlike ``y0``, or ``adjoint=True`` with a plain callable and no ``adjoint_params``.
        TypeError: non-tensor inputs or non-callable ``func``.
        MaxStepsError: the solver exceeded ``max_num_steps``.
        StepSizeUnderflowError: the adaptive step size underflowed.
    """
    check_callable(func, "func")
    method = _check_method(method)
    check_state(y0, "y0")
    direction = check_times(t, "t")
    check_tolerances(rtol, atol)
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping, got {type(options).__name__}")
    options = dict(options) if options is not None else {}
    if adjoint:
        if adjoint_params is None:
            if not isinstance(func, nn.Module):
                raise ValueError(
                    "adjoint=True with a plain callable needs adjoint_params (the tensors to "
                    "differentiate; pass () if there are none)"
                )
            adjoint_params = func.parameters()
        adjoint_params = tuple(adjoint_params)

    stats = SolverStats()
    field_type = _AdaptiveCountingField if method in _ADAPTIVE_METHODS else _FixedGridCountingField
    field = field_type(func, stats)
    try:
        if adjoint:
            ys = torchdiffeq.odeint_adjoint(
                field,
                y0,
                t,
                rtol=rtol,
                atol=atol,
                method=method,
                options=options,
                adjoint_params=adjoint_params,
            )
        else:
            ys = torchdiffeq.odeint(
                field, y0, t, rtol=rtol, atol=atol, method=method, options=options
            )
    except AssertionError as error:
        if "underflow in dt" in str(error):
            raise StepSizeUnderflowError(
                f"{method}'s step size underflowed after {stats.n_accepted} accepted and "
                f"{stats.n_rejected} rejected steps: the solution probably blows up in finite "
                "time, or the tolerances are below what the dtype resolves"
            ) from error
        if "max_num_steps exceeded" not in str(error):
            raise
        limit = options.get("max_num_steps", _TORCHDIFFEQ_MAX_NUM_STEPS)
        raise MaxStepsError(
            f"{method} exceeded max_num_steps={limit} attempted steps between two output times "
            f"({stats.n_accepted} accepted, {stats.n_rejected} rejected in total, "
            f"{stats.nfe_forward} evaluations); loosen rtol/atol, raise "
            "options['max_num_steps'], or check the vector field for stiffness or blow-up"
        ) from error
    field.backward_phase = True
    if field.step_sizes:
        steps = torch.stack(field.step_sizes).detach().to(device="cpu", dtype=torch.float64)
        # torchdiffeq integrates decreasing t as increasing -t; report signed steps.
        stats.step_sizes = steps * direction
    return Solution(ys, stats)
