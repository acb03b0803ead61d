"""Fixed-step integrators written in plain torch: classic RK4 and Störmer–Verlet leapfrog."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import NamedTuple

import torch

from ._checks import ShapeCheckedOnce, check_callable, check_state, check_times
from ._stats import Solution, SolverStats

__all__ = ["SymplecticSolution", "leapfrog", "rk4"]


class SymplecticSolution(NamedTuple):
    """Result of :func:`leapfrog`: ``qs`` and ``ps`` of shape ``(len(t), *q0.shape)``."""

    qs: torch.Tensor
    ps: torch.Tensor
    stats: SolverStats


def _substep_sizes(t: torch.Tensor, step_size: float | None) -> list[list[float]]:
    """Step sizes within each output interval ``[t_i, t_{i+1}]``.

    Without ``step_size`` every interval is one step. Otherwise it is split into
    ``ceil(|t_{i+1} - t_i| / step_size)`` equal sub-steps, so output times are hit exactly
    (no interpolation) and no sub-step exceeds ``step_size``.
    """
    times = t.tolist()
    sizes = []
    for start, end in pairwise(times):
        span = end - start
        # The 1e-9 keeps e.g. 1.0 / 0.1 = 10.000000000000002 from becoming 11 sub-steps.
        n = 1 if step_size is None else max(1, math.ceil(abs(span) / step_size - 1e-9))
        sizes.append([span / n] * n)
    return sizes


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_step_size(step_size: float | None) -> None:
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number or None, got {step_size}")


def rk4(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    step_size: float | None = None,
) -> Solution:
    r"""Classic fourth-order Runge–Kutta on the grid ``t``.

    Each step of size $h$ from $(t_n, y_n)$:

    $$ k_1 = f(t_n, y_n),\ k_2 = f(t_n + \tfrac h2, y_n + \tfrac h2 k_1),\
       k_3 = f(t_n + \tfrac h2, y_n + \tfrac h2 k_2),\ k_4 = f(t_n + h, y_n + h k_3), $$
    $$ y_{n+1} = y_n + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4). $$

    Global error $O(h^4)$. Differentiable through all operations (w.r.t. ``y0`` and the
    parameters of ``func``; not w.r.t. ``t``).

    Args:
        func: vector field ``f(t, y)`` (``t`` a 0-d tensor of ``y0``'s dtype).
        y0: initial state of any shape.
        t: 1-D output times, strictly monotone.
        step_size: if given, each output interval is split into
            ``ceil(|t[i+1] - t[i]| / step_size)`` equal sub-steps.

    Returns:
        :class:`Solution` with ``ys`` of shape ``(len(t), *y0.shape)``; ``stats.nfe_forward``
        is ``4 * n_accepted``.
    """
    check_callable(func, "func")
    check_state(y0, "y0")
    check_times(t, "t")
    _check_step_size(step_size)
    field = ShapeCheckedOnce(func, "func(t, y)", _shape)
    intervals = _substep_sizes(t, step_size)

    # All stage times (t_n, t_n + h/2, t_n + h) as one tensor, unbound into 0-d views once.
    stage_times = []
    for start, sizes in zip(t.tolist()[:-1], intervals, strict=True):
        for j, h in enumerate(sizes):
            t_n = start + j * h
            stage_times += [t_n, t_n + 0.5 * h, t_n + h]
    times = torch.tensor(stage_times, dtype=y0.dtype, device=y0.device).unbind(0)

    ys = [y0]
    y = y0
    step = 0
    for sizes in intervals:
        for h in sizes:
            t_n, t_mid, t_next = times[3 * step : 3 * step + 3]
            k1 = field(t_n, y)
            k2 = field(t_mid, y + (0.5 * h) * k1)
            k3 = field(t_mid, y + (0.5 * h) * k2)
            k4 = field(t_next, y + h * k3)
            y = y + (h / 6) * (k1 + 2 * (k2 + k3) + k4)
            step += 1
        ys.append(y)
    step_sizes = torch.tensor([h for sizes in intervals for h in sizes], dtype=torch.float64)
    stats = SolverStats(nfe_forward=4 * step, n_accepted=step, step_sizes=step_sizes)
    return Solution(torch.stack(ys), stats)


def leapfrog(
    dH_dq: Callable[[torch.Tensor], torch.Tensor],
    dH_dp: Callable[[torch.Tensor], torch.Tensor],
    q0: torch.Tensor,
    p0: torch.Tensor,
    t: torch.Tensor,
    *,
    step_size: float | None = None,
) -> SymplecticSolution:
    r"""Störmer–Verlet (kick-drift-kick leapfrog) for a separable Hamiltonian $H = T(p) + V(q)$.

    Solves $\dot q = \partial H/\partial p$, $\dot p = -\partial H/\partial q$ with, per step
    of size $h$,

    $$ p_{n+1/2} = p_n - \tfrac h2 \partial_q H(q_n),\quad
       q_{n+1} = q_n + h\, \partial_p H(p_{n+1/2}),\quad
       p_{n+1} = p_{n+1/2} - \tfrac h2 \partial_q H(q_{n+1}). $$

    The map is symplectic and time-reversible (a step with $-h$ undoes a step with $h$), second
    order, and keeps the energy error bounded over long times instead of drifting. The force
    $\partial_q H(q_{n+1})$ is reused by the next step. Differentiable through all operations.

    Args:
        dH_dq: $\partial H/\partial q$ as a function of ``q`` alone (i.e. $V'(q)$).
        dH_dp: $\partial H/\partial p$ as a function of ``p`` alone (i.e. $T'(p)$).
        q0, p0: initial positions and momenta, same shape (any, e.g. ``(batch, n)``).
        t: 1-D output times, strictly monotone (decreasing integrates backwards).
        step_size: if given, each output interval is split into
            ``ceil(|t[i+1] - t[i]| / step_size)`` equal sub-steps.

    Returns:
        :class:`SymplecticSolution` ``(qs, ps, stats)``, each trajectory of shape
        ``(len(t), *q0.shape)``. ``stats.nfe_forward`` counts calls of ``dH_dq`` and ``dH_dp``
        together: ``2 * n_accepted + 1``.
    """
    check_callable(dH_dq, "dH_dq")
    check_callable(dH_dp, "dH_dp")
    check_state(q0, "q0")
    check_state(p0, "p0")
    if q0.shape != p0.shape:
        raise ValueError(
            f"q0 and p0 must have the same shape, got {tuple(q0.shape)} and {tuple(p0.shape)}"
        )
    check_times(t, "t")
    _check_step_size(step_size)
    force = ShapeCheckedOnce(dH_dq, "dH_dq(q)", _shape)
    velocity = ShapeCheckedOnce(dH_dp, "dH_dp(p)", _shape)
    intervals = _substep_sizes(t, step_size)

    qs, ps = [q0], [p0]
    q, p = q0, p0
    f = force(q)
    steps = 0
    for sizes in intervals:
        for h in sizes:
            p_half = p - (0.5 * h) * f
            q = q + h * velocity(p_half)
            f = force(q)
            p = p_half - (0.5 * h) * f
            steps += 1
        qs.append(q)
        ps.append(p)
    step_sizes = torch.tensor([h for sizes in intervals for h in sizes], dtype=torch.float64)
    stats = SolverStats(nfe_forward=2 * steps + 1, n_accepted=steps, step_sizes=step_sizes)
    return SymplecticSolution(torch.stack(qs), torch.stack(ps), stats)
