"""One embedded explicit Runge–Kutta step with its local error estimate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ._tableaus import TABLEAUS, ButcherTableau

__all__ = ["RKStepResult", "error_ratio", "rk_step"]


class RKStepResult(NamedTuple):
    r"""Result of :func:`rk_step`; every tensor has the shape of ``y``.

    Attributes:
        y1: the solution $y_1 = y + h\sum_i b_i k_i$.
        y_error: the local error estimate $y_1 - \hat y_1 = h \sum_i (b_i - \hat b_i) k_i$.
        stages: the stage derivatives $k_1..k_s$.
        stage_states: the stage states $Y_1..Y_s$ with $k_i = f(t + c_i h, Y_i)$; ``Y_1`` is
            ``y``. For an FSAL tableau ``Y_s`` is ``y1``, so the stiffness estimate
            $h|\lambda| \approx h\,\|k_s - k_{s-1}\| / \|Y_s - Y_{s-1}\|$ needs no extra
            evaluation.
    """

    y1: torch.Tensor
    y_error: torch.Tensor
    stages: list[torch.Tensor]
    stage_states: list[torch.Tensor]


def _combine(coefficients: Sequence[float], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""$\sum_j c_j x_j$ over the nonzero coefficients (tableaus are sparse)."""
    total: torch.Tensor | None = None
    for coefficient, tensor in zip(coefficients, tensors, strict=True):
        if coefficient == 0.0:
            continue
        total = coefficient * tensor if total is None else total.add(tensor, alpha=coefficient)
    if total is None:
        return torch.zeros_like(tensors[0])
    return total


def rk_step(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: float | torch.Tensor,
    y: torch.Tensor,
    h: float | torch.Tensor,
    *,
    tableau: str | ButcherTableau = "dopri5",
    k1: torch.Tensor | None = None,
) -> RKStepResult:
    """Take one explicit embedded Runge–Kutta step of size ``h`` from ``(t, y)``.

    The step is built from differentiable tensor operations, so the outputs carry gradients to
    the parameters of ``func`` (and to ``y``, ``h`` where those require grad). Nothing is
    accepted or rejected here; combine ``y_error`` with :func:`error_ratio` for the controller's
    criterion.

    Args:
        func: vector field ``f(t, y)``; ``t`` is passed as a 0-d tensor of ``y``'s dtype.
        t: start time.
        y: state of any shape.
        h: step size (float or 0-d tensor; may be negative).
        tableau: a key of :data:`TABLEAUS` or a :class:`ButcherTableau`.
        k1: ``f(t, y)`` if already known (e.g. the FSAL stage of the previous step); it then
            costs ``s - 1`` evaluations instead of ``s``.

    Returns:
        :class:`RKStepResult` ``(y1, y_error, stages, stage_states)``.
    """
    if isinstance(tableau, str):
        try:
            tableau = TABLEAUS[tableau]
        except KeyError:
            raise ValueError(
                f"unknown tableau {tableau!r}; choose one of {sorted(TABLEAUS)}"
            ) from None
    t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
    stages = [func(t, y) if k1 is None else k1]
    stage_states = [y]
    for c_i, a_i in zip(tableau.c[1:], tableau.a[1:], strict=True):
        state = y + h * _combine(a_i, stages)
        stage_states.append(state)
        stages.append(func(t + c_i * h, state))
    # With FSAL the last stage state already is y + h * sum(b_i k_i), computed identically.
    y1 = stage_states[-1] if tableau.fsal else y + h * _combine(tableau.b, stages)
    y_error = h * _combine(tableau.b_error, stages)
    return RKStepResult(y1, y_error, stages, stage_states)


def error_ratio(
    y_error: torch.Tensor,
    y0: torch.Tensor,
    y1: torch.Tensor,
    *,
    rtol: float | torch.Tensor,
    atol: float | torch.Tensor,
) -> torch.Tensor:
    r"""Scaled RMS error norm that step-size controllers compare against 1.

    $$ \mathrm{EEst} = \sqrt{\operatorname{mean}_i\Big(\frac{e_i}
    {\mathrm{atol} + \mathrm{rtol}\,\max(|y_{0,i}|, |y_{1,i}|)}\Big)^2} $$

    over all entries of the (batched) state, as torchdiffeq's default RMS norm does. A step is
    accepted when ``EEst <= 1``. Returns a 0-d tensor, differentiable in all inputs.
    """
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return torch.sqrt(torch.mean((y_error / scale) ** 2))
