"""The implicit midpoint rule: a symplectic integrator for any (also non-separable) Hamiltonian."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from ._checks import ShapeCheckedOnce, check_callable, check_state, check_times
from ._fixed import _check_step_size, _shape, _substep_sizes
from ._stats import Solution, SolverStats

__all__ = ["IMPLICIT_ITERATIONS", "ImplicitSolveError", "implicit_midpoint"]

IMPLICIT_ITERATIONS = ("fixed_point", "newton")


class ImplicitSolveError(RuntimeError):
    """The nonlinear equation of an implicit step did not converge within its iteration budget."""


def implicit_midpoint(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    step_size: float | None = None,
    iteration: Literal["fixed_point", "newton"] = "fixed_point",
    rtol: float | None = None,
    atol: float | None = None,
    max_iterations: int = 100,
) -> Solution:
    r"""The implicit midpoint rule on the grid ``t``.

    Each step of size $h$ from $(t_n, y_n)$ solves for the midpoint $m$ and updates

    $$ m = y_n + \tfrac h2 f\big(t_n + \tfrac h2, m\big),\qquad y_{n+1} = 2m - y_n
       \quad\Big(= y_n + h f\big(t_n + \tfrac h2, \tfrac{y_n + y_{n+1}}2\big)\Big). $$

    It is the one-stage Gauss–Legendre Runge–Kutta method: second order, time-symmetric,
    **symplectic** for every Hamiltonian vector field $f = J\nabla H$ (separable or not, unlike
    :func:`leapfrog`), and it conserves every quadratic first integral exactly (so the energy of
    a linear system, up to the solve tolerance and roundoff).

    The midpoint equation is solved by

    * ``"fixed_point"``: $m_{k+1} = y_n + \frac h2 f(m_k)$, a contraction when
      $\frac h2 \mathrm{Lip}(f) < 1$; one evaluation of ``func`` per iteration;
    * ``"newton"``: $m_{k+1} = m_k - (I - \frac h2 \partial_y f)^{-1}(m_k - y_n - \frac h2
      f(m_k))$ with the dense Jacobian from autograd (``func`` must be differentiable w.r.t.
      ``y``; state size $d$ costs a $d \times d$ solve), quadratic convergence and no step-size
      limit from the contraction.

    Both start from the explicit Euler guess $m_0 = y_n + \frac h2 f(t_n, y_n)$ and stop when
    $\max|m_{k+1} - m_k| \le$ ``atol`` $+$ ``rtol`` $\max|m_{k+1}|$. The iterations are plain
    torch operations, so gradients w.r.t. ``y0`` and ``func``'s parameters flow through them
    (an unrolled approximation of the implicit derivative, accurate to the tolerance).

    Args:
        func: vector field ``f(t, y)`` (``t`` a 0-d tensor of ``y0``'s dtype).
        y0: initial state of any shape.
        t: 1-D output times, strictly monotone.
        step_size: if given, each output interval is split into
            ``ceil(|t[i+1] - t[i]| / step_size)`` equal sub-steps.
        iteration: ``"fixed_point"`` or ``"newton"``.
        rtol, atol: tolerances of the midpoint solve; default ``64 * eps`` of ``y0``'s dtype
            (about 1.4e-14 in float64, 7.6e-6 in float32).
        max_iterations: iteration budget per step; exceeding it raises
            :class:`ImplicitSolveError` (with the step, time and last update size).

    Returns:
        :class:`Solution` with ``ys`` of shape ``(len(t), *y0.shape)``; ``stats.nfe_forward``
        counts every evaluation of ``func``: per step one for the guess, plus one per
        fixed-point iteration or two per Newton iteration (the residual, and the evaluation
        whose ``d`` backward passes give the Jacobian).

    Raises:
        ImplicitSolveError: a step's iteration did not converge (reduce ``step_size``, loosen the
            tolerances, or use ``iteration="newton"``).
    """
    check_callable(func, "func")
    check_state(y0, "y0")
    check_times(t, "t")
    _check_step_size(step_size)
    if iteration not in IMPLICIT_ITERATIONS:
        raise ValueError(f"iteration must be one of {IMPLICIT_ITERATIONS}, got {iteration!r}")
    if not isinstance(max_iterations, int) or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    default_tol = 64 * torch.finfo(y0.dtype).eps
    rtol = default_tol if rtol is None else rtol
    atol = default_tol if atol is None else atol
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be zero (the iteration could never stop)")
    field = ShapeCheckedOnce(func, "func(t, y)", _shape)
    intervals = _substep_sizes(t, step_size)

    ys = [y0]
    y = y0
    nfe = 0
    steps = 0
    for start, sizes in zip(t.tolist()[:-1], intervals, strict=True):
        for j, h in enumerate(sizes):
            t_n = torch.tensor(start + j * h, dtype=y0.dtype, device=y0.device)
            t_mid = t_n + 0.5 * h
            midpoint, evaluations = _solve_midpoint(
                field, y, t_n, t_mid, h, iteration, rtol, atol, max_iterations, steps
            )
            y = 2 * midpoint - y
            nfe += evaluations
            steps += 1
        ys.append(y)
    step_sizes = torch.tensor([h for sizes in intervals for h in sizes], dtype=torch.float64)
    stats = SolverStats(nfe_forward=nfe, n_accepted=steps, step_sizes=step_sizes)
    return Solution(torch.stack(ys), stats)


def _solve_midpoint(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    t_n: torch.Tensor,
    t_mid: torch.Tensor,
    h: float,
    iteration: str,
    rtol: float,
    atol: float,
    max_iterations: int,
    step: int,
) -> tuple[torch.Tensor, int]:
    """$m = y + (h/2) f(t_{mid}, m)$ by fixed-point or Newton iteration; returns ``(m, nfe)``."""
    half = 0.5 * h
    midpoint = y + half * field(t_n, y)
    evaluations = 1
    update = math.inf
    for _ in range(max_iterations):
        if iteration == "fixed_point":
            new = y + half * field(t_mid, midpoint)
            evaluations += 1
        else:
            new = _newton_update(field, y, t_mid, midpoint, half)
            evaluations += 2
        update = float((new - midpoint).detach().abs().max())
        midpoint = new
        if update <= atol + rtol * float(midpoint.detach().abs().max()):
            return midpoint, evaluations
        if not math.isfinite(update):
            break
    raise ImplicitSolveError(
        f"implicit_midpoint: the {iteration} iteration did not converge at step {step} "
        f"(t = {float(t_n):.6g}, h = {h:.4g}): last update {update:.3g} > atol {atol:.3g} + "
        f"rtol {rtol:.3g} * |m| after {max_iterations} iterations; reduce step_size, loosen "
        "rtol/atol, raise max_iterations, or use iteration='newton'"
    )


def _newton_update(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    t_mid: torch.Tensor,
    midpoint: torch.Tensor,
    half: float,
) -> torch.Tensor:
    r"""One Newton step on $g(m) = m - y - \frac h2 f(m)$: $m - (I - \frac h2 f'(m))^{-1} g(m)$."""
    # The Jacobian (a constant of the update, hence detached) from d backward passes through
    # one evaluation at a fresh leaf; the residual below keeps the graph to func's parameters.
    with torch.enable_grad():
        point = midpoint.detach().requires_grad_(True)
        flat = field(t_mid, point).reshape(-1)
        if not flat.requires_grad:
            raise ImplicitSolveError(
                "implicit_midpoint: iteration='newton' needs func(t, y) differentiable w.r.t. y "
                "(its output has no autograd graph); use iteration='fixed_point'"
            )
        # materialize_grads: a component independent of y gives a zero row, on y's device
        rows = [
            torch.autograd.grad(flat[i], point, retain_graph=True, materialize_grads=True)[0]
            for i in range(flat.numel())
        ]
    jacobian = torch.stack([r.reshape(-1) for r in rows])
    identity = torch.eye(midpoint.numel(), dtype=midpoint.dtype, device=midpoint.device)
    residual = (midpoint - y - half * field(t_mid, midpoint)).reshape(-1)
    correction = torch.linalg.solve(identity - half * jacobian, residual.unsqueeze(-1))
    return midpoint - correction.reshape(midpoint.shape)
