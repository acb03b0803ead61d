r"""Regularizers of an ODE solve, and the solve that applies them.

A neural ODE layer solves $\dot y = f_\theta(t, y)$, $y(t_0) = y_0$ with ``y0`` of shape
``(B, d)`` on output times ``t (T,)``. An :class:`AbstractODERegularizer` may change that solve in
three additive ways, all declared before it runs:

* ask for states at extra output times (:meth:`~AbstractODERegularizer.begin`); dense output gives
  them without extra evaluations;
* watch the solver's accepted steps (:meth:`~AbstractODERegularizer.on_accept_step`, fed by
  torchdiffeq's ``callback_accept_step``);
* integrate running costs as extra state columns (:attr:`~AbstractODERegularizer.augmented_dim`,
  :meth:`~AbstractODERegularizer.augmented_rates`).

After the solve, :meth:`~AbstractODERegularizer.forward` turns an :class:`ODESolveRecord` into the
unweighted penalty $R$ and the vector-field evaluations it spent. :func:`solve_regularized` runs
the whole protocol for a list of regularizers.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..solvers import ODESolverConfig, SolverStats
from ._base import AbstractRegularizer

__all__ = ["AbstractODERegularizer", "ODESolveRecord", "RegularizedSolution", "solve_regularized"]

VectorField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ODESolveRecord:
    """What an ODE regularizer sees after the main solve.

    Attributes:
        func: the vector field $f(t, y)$ of the model (not the solver's wrapper, so its calls
            are not counted as forward evaluations).
        t: the model's output times ``(T,)``.
        ys: the states at ``t``, ``(T, B, d)``.
        extra_t: the times this regularizer asked for in :meth:`AbstractODERegularizer.begin`,
            ``(E,)``.
        extra_ys: the states at ``extra_t``, ``(E, B, d)``.
        integrals: the final values $\\int_{t_0}^{t_{T-1}} r\\,dt$ of this regularizer's
            augmented columns, ``(B, augmented_dim)``.
        stats: statistics of the main solve (accepted step sizes included).
        solver: the solver settings (tolerances, method, adjoint).
    """

    func: VectorField
    t: torch.Tensor
    ys: torch.Tensor
    extra_t: torch.Tensor
    extra_ys: torch.Tensor
    integrals: torch.Tensor
    stats: SolverStats
    solver: ODESolverConfig


class AbstractODERegularizer(AbstractRegularizer):
    """A penalty computed from (and possibly riding along) an ODE solve.

    Subclasses implement :meth:`forward` and override the hooks they need. Per-solve state (a
    sampled time, a reservoir, Hutchinson noise) is reset in :meth:`begin`, so one instance
    serves every training step.
    """

    #: extra state columns integrated alongside ``y`` (running costs)
    augmented_dim: ClassVar[int] = 0
    #: whether :meth:`augmented_rates` differentiates ``f`` with respect to ``y``
    needs_input_grad: ClassVar[bool] = False

    def begin(self, t: torch.Tensor, y0: torch.Tensor, solver: ODESolverConfig) -> torch.Tensor:
        """Reset per-solve state; return the extra output times wanted, 1-D (may be empty)."""
        return t.new_zeros(0)

    def on_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        """Called after each accepted step from ``(t0, y0 (B, d))`` of size ``dt``."""

    def augmented_rates(self, t: torch.Tensor, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Rates ``(B, augmented_dim)`` of the running costs at ``(t, y)``; ``f = f(t, y)``."""
        raise NotImplementedError(f"{type(self).__name__} integrates no running cost")

    @abc.abstractmethod
    def forward(self, record: ODESolveRecord) -> tuple[torch.Tensor, int]:
        """The unweighted penalty $R$ (0-d) and the vector-field evaluations spent on it."""


class RegularizedSolution(NamedTuple):
    """Result of :func:`solve_regularized`.

    Attributes:
        ys: states at the requested times, ``(T, B, d)`` (extra times and columns removed).
        stats: statistics of the main solve.
        penalties: unweighted penalty of each regularizer, keyed by a unique name
            (``name``, then ``name_1``, ... for repeats).
        nfe_reg: vector-field evaluations spent by the regularizers outside the main solve.
    """

    ys: torch.Tensor
    stats: SolverStats
    penalties: dict[str, torch.Tensor]
    nfe_reg: int

    def weighted_penalty(
        self,
        regularizers: Sequence[AbstractRegularizer],
        step: int,
        total_steps: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        r"""$\sum_i \lambda_i(\text{step}) R_i$ and the terms to log: ``reg`` (that sum) and
        ``reg_<name>`` (each unweighted $R_i$)."""
        total = self.ys.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for regularizer, (name, penalty) in zip(regularizers, self.penalties.items(), strict=True):
            total = total + regularizer.weight_at(step, total_steps) * penalty
            terms[f"reg_{name}"] = penalty.detach()
        terms["reg"] = total.detach()
        return total, terms


class _RegularizedField(nn.Module):
    """The solver-facing field: ``f`` plus augmented rates, and the accepted-step fan-out."""

    def __init__(
        self, func: VectorField, regularizers: Sequence[AbstractODERegularizer], state_dim: int
    ) -> None:
        super().__init__()
        self.func = func  # registered as a submodule when it is one: the adjoint needs its params
        self.regularizers = list(regularizers)
        self.augmenting = [r for r in regularizers if r.augmented_dim > 0]
        self.needs_input_grad = any(r.needs_input_grad for r in self.augmenting)
        self.state_dim = state_dim

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if not self.augmenting:
            return self.func(t, state)
        y = state[..., : self.state_dim]
        grad_context = torch.enable_grad() if self.needs_input_grad else contextlib.nullcontext()
        with grad_context:
            if self.needs_input_grad and not y.requires_grad:
                # The adjoint's forward pass runs without a graph; the rates still need dy.
                y = y.detach().requires_grad_()
            f = self.func(t, y)
            rates = [r.augmented_rates(t, y, f) for r in self.augmenting]
        return torch.cat([f, *rates], dim=-1)

    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        for regularizer in self.regularizers:
            regularizer.on_accept_step(t0, y0[..., : self.state_dim], dt)


def _unique_names(regularizers: Sequence[AbstractRegularizer]) -> list[str]:
    names: list[str] = []
    for regularizer in regularizers:
        name, suffix = regularizer.name, 1
        while name in names:
            name = f"{regularizer.name}_{suffix}"
            suffix += 1
        names.append(name)
    return names


def solve_regularized(
    solver: ODESolverConfig,
    func: VectorField,
    y0: torch.Tensor,
    t: torch.Tensor,
    regularizers: Sequence[AbstractODERegularizer],
) -> RegularizedSolution:
    """Solve $\\dot y = f(t, y)$ from ``y0 (B, d)`` on ``t (T,)`` and evaluate ``regularizers``.

    One solve serves the model and every regularizer: extra output times are merged into ``t``
    and augmented columns appended to ``y0`` (starting at 0), then stripped from the result.
    With no regularizers this is exactly ``solver.solve(func, y0, t)``.

    Raises:
        ValueError: a regularizer that is not an :class:`AbstractODERegularizer`, ``y0`` not 2-D,
            or ``t`` not strictly increasing.
    """
    if not regularizers:
        ys, stats = solver.solve(func, y0, t)
        return RegularizedSolution(ys, stats, {}, 0)
    for regularizer in regularizers:
        if not isinstance(regularizer, AbstractODERegularizer):
            raise ValueError(
                f"{type(regularizer).__name__} does not regularize an ODE solve; use a subclass "
                "of sciml.regularizers.AbstractODERegularizer"
            )
    if y0.ndim != 2:
        raise ValueError(f"regularized solves need y0 of shape (B, d), got {tuple(y0.shape)}")
    if t.ndim != 1 or len(t) < 2 or not bool(torch.all(t[1:] > t[:-1])):
        raise ValueError("regularized solves need strictly increasing output times t (T >= 2)")
    n_times, state_dim = len(t), y0.shape[1]
    extra = [r.begin(t, y0, solver).to(t) for r in regularizers]
    # Output times must be strictly increasing: merge, deduplicate, and remember where each went.
    times, where = torch.unique(torch.cat([t, *extra]), sorted=True, return_inverse=True)
    field = _RegularizedField(func, regularizers, state_dim)
    n_augmented = sum(r.augmented_dim for r in regularizers)
    start = torch.cat([y0, y0.new_zeros(len(y0), n_augmented)], dim=-1) if n_augmented else y0
    ys_all, stats = solver.solve(field, start, times)
    states = ys_all[..., :state_dim]
    ys = states[where[:n_times]]
    penalties: dict[str, torch.Tensor] = {}
    nfe_reg, offset, column = 0, n_times, state_dim
    for name, regularizer, times_wanted in zip(
        _unique_names(regularizers), regularizers, extra, strict=True
    ):
        rows = where[offset : offset + len(times_wanted)]
        offset += len(times_wanted)
        integrals = ys_all[-1, :, column : column + regularizer.augmented_dim]
        column += regularizer.augmented_dim
        record = ODESolveRecord(
            func=func,
            t=t,
            ys=ys,
            extra_t=times_wanted,
            extra_ys=states[rows],
            integrals=integrals,
            stats=stats,
            solver=solver,
        )
        penalty, nfe = regularizer(record)
        penalties[name] = penalty
        nfe_reg += nfe
    return RegularizedSolution(ys, stats, penalties, nfe_reg)
