r"""Scores for models that output both a solution and its governing equation (PROSE).

* continuation error: per-sample relative L2 $\|\hat u - u\| / \|u\|$ over the query times;
* valid fraction: decoded token sequences that parse into a ``dim``-component field whose values
  are finite at the check states;
* RHS error: $\|\hat f(x) - f(x)\| / \|f(x)\|$ over random states $x$;
* solved-equation error: the decoded ODE solved by scipy from the true initial state, compared with
  the true trajectory. Solver failures and blow-ups ($|u| > 10^3$) are counted, never raised.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy
import torch
from scipy.integrate import solve_ivp

from ..symbolic import PrefixDecodeError, prefix_to_expressions, to_numpy_function

__all__ = [
    "EquationScores",
    "continuation_rel_l2",
    "decode_valid_equation",
    "rhs_rel_l2",
    "score_equations",
    "solve_equation",
]


def continuation_rel_l2(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Per-sample $\sqrt{\sum m(\hat u - u)^2 / \sum m u^2}$ over times and components.

    Args:
        prediction, target: ``(B, T, D)``.
        mask: ``(B, D)`` (or broadcastable to ``(B, T, D)``) weights, 0 on padded components.

    Returns:
        ``(B,)``.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"shape mismatch: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}"
        )
    if mask is None:
        mask = torch.ones_like(target)
    elif mask.ndim == 2:
        mask = mask[:, None, :]
    error = ((prediction - target) ** 2 * mask).sum((1, 2))
    scale = (target**2 * mask).sum((1, 2)).clamp_min(1e-12)
    return (error / scale).sqrt()


def _numpy_field(expressions: Sequence[sympy.Expr], dim: int):
    return to_numpy_function(expressions, state=[f"u_{i}" for i in range(dim)])


def decode_valid_equation(
    tokens: Sequence[str], dim: int, check_states: np.ndarray
) -> list[sympy.Expr] | None:
    """The decoded field if it is valid, else ``None``.

    Valid means: it parses as ``dim`` prefix components over ``u_0 .. u_{dim-1}`` (and ``t``) and
    its values at ``check_states (n, dim)`` are all finite.
    """
    try:
        expressions = prefix_to_expressions(tokens, dim=dim)
    except PrefixDecodeError:
        return None
    allowed = {sympy.Symbol(f"u_{i}") for i in range(dim)} | {sympy.Symbol("t")}
    if any(not e.free_symbols <= allowed for e in expressions):
        return None
    if any(e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo, sympy.I) for e in expressions):
        return None
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = _numpy_field(expressions, dim)(0.0, check_states.T)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError):
        return None
    return expressions if np.all(np.isfinite(values)) else None


def rhs_rel_l2(
    prediction: Sequence[sympy.Expr], truth: Sequence[sympy.Expr], states: np.ndarray
) -> float:
    r"""$\|\hat f(X) - f(X)\|_F / \|f(X)\|_F$ at states ``X (n, d)`` (autonomous fields, t=0)."""
    dim = states.shape[1]
    with np.errstate(all="ignore"):
        predicted = _numpy_field(prediction, dim)(0.0, states.T)
        true = _numpy_field(truth, dim)(0.0, states.T)
    error = float(np.linalg.norm(predicted - true) / max(np.linalg.norm(true), 1e-12))
    return error if np.isfinite(error) else float("inf")


def solve_equation(
    expressions: Sequence[sympy.Expr],
    y0: np.ndarray,
    t_eval: np.ndarray,
    *,
    bound: float = 1e3,
    method: str = "LSODA",
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> np.ndarray | None:
    """Solve the field from ``y0 (d,)`` on ``t_eval (T,)``; ``(T, d)`` or ``None`` on failure.

    A failure is a solver error or exception, a non-finite value, or ``|u| > bound`` (the
    integration stops there instead of chasing a blow-up).
    """
    rhs = _numpy_field(expressions, len(y0))

    def blow_up(t, y):
        return bound - np.max(np.abs(y))

    blow_up.terminal = True
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solution = solve_ivp(
                rhs,
                (float(t_eval[0]), float(t_eval[-1])),
                np.asarray(y0, dtype=float),
                method=method,
                t_eval=t_eval,
                rtol=rtol,
                atol=atol,
                events=blow_up,
            )
    except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError, RuntimeError):
        return None
    if solution.status != 0 or solution.y.shape[1] != len(t_eval):
        return None
    values = solution.y.T
    return values if np.all(np.isfinite(values)) else None


@dataclass(frozen=True)
class EquationScores:
    """Per-sample symbolic scores (``nan`` where a score does not apply).

    Attributes:
        valid: ``(n,)`` decoded equation valid.
        rhs_error: ``(n,)`` RHS relative L2 (valid samples).
        solve_error: ``(n,)`` solved-equation relative L2 (valid samples whose solve succeeded).
        solve_failed: ``(n,)`` valid samples whose solve failed or blew up.
    """

    valid: np.ndarray
    rhs_error: np.ndarray
    solve_error: np.ndarray
    solve_failed: np.ndarray

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean())

    @property
    def failure_fraction(self) -> float:
        """Failed solves among valid equations."""
        return float(self.solve_failed[self.valid].mean()) if self.valid.any() else 0.0

    def summary(self) -> dict[str, float]:
        """Means and medians over the samples where each score applies (``nan`` if none)."""

        def stat(values: np.ndarray, reduce) -> float:
            finite = values[np.isfinite(values)]
            return float(reduce(finite)) if len(finite) else float("nan")

        return {
            "valid_fraction": self.valid_fraction,
            "rhs_rel_l2_mean": stat(self.rhs_error, np.mean),
            "rhs_rel_l2_median": stat(self.rhs_error, np.median),
            "solve_rel_l2_mean": stat(self.solve_error, np.mean),
            "solve_rel_l2_median": stat(self.solve_error, np.median),
            "solve_failure_fraction": self.failure_fraction,
        }


def score_equations(
    predicted: Sequence[Sequence[str]],
    truth: Sequence[Sequence[str]],
    dims: Sequence[int],
    *,
    y0: np.ndarray,
    t_solve: np.ndarray,
    targets: np.ndarray,
    target_times: np.ndarray,
    rng: np.random.Generator,
    n_states: int = 50,
    solve: bool = True,
) -> EquationScores:
    """Score decoded token sequences against the true ones.

    Args:
        predicted, truth: token strings per sample (no ``<bos>``/``<eos>``).
        dims: state dimension per sample.
        y0: ``(n, D)`` true initial states (padded; the first ``dims[i]`` entries are used).
        t_solve: ``(T,)`` increasing times from the initial time, containing ``target_times``.
        targets: ``(n, Q, D)`` true states at ``target_times (Q,)``.
        rng: draws the ``n_states`` check states uniformly in each sample's target bounding box
            enlarged by 10 %.
        solve: also compute the solved-equation error (the expensive part).
    """
    n = len(predicted)
    valid = np.zeros(n, dtype=bool)
    rhs_error, solve_error = np.full(n, np.nan), np.full(n, np.nan)
    failed = np.zeros(n, dtype=bool)
    index = np.searchsorted(t_solve, target_times)
    for i in range(n):
        d = int(dims[i])
        states_true = targets[i, :, :d]
        low, high = states_true.min(0), states_true.max(0)
        margin = 0.1 * (high - low) + 1e-3
        states = rng.uniform(low - margin, high + margin, size=(n_states, d))
        expressions = decode_valid_equation(predicted[i], d, states)
        if expressions is None:
            continue
        valid[i] = True
        true_expressions = prefix_to_expressions(truth[i], dim=d)
        rhs_error[i] = rhs_rel_l2(expressions, true_expressions, states)
        if not solve:
            continue
        path = solve_equation(expressions, y0[i, :d], t_solve)
        if path is None:
            failed[i] = True
            continue
        error = np.linalg.norm(path[index] - states_true) / max(np.linalg.norm(states_true), 1e-12)
        solve_error[i] = error
    return EquationScores(valid, rhs_error, solve_error, failed)
