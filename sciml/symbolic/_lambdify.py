"""Turn sympy expressions, given as strings, into numpy and torch callables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sympy
import torch

__all__ = ["SymbolicParseError", "parse_expressions", "to_numpy_function", "to_torch_function"]


class SymbolicParseError(ValueError):
    """A string could not be parsed into a sympy expression over the allowed symbols."""


def _torch_modules() -> list[dict[str, Callable]]:
    """Name mapping for :func:`sympy.lambdify` so that generated code calls torch functions."""
    mapping: dict[str, Callable] = {
        name: getattr(torch, name)
        for name in (
            "sin",
            "cos",
            "tan",
            "exp",
            "log",
            "sqrt",
            "tanh",
            "sinh",
            "cosh",
            "abs",
            "sign",
            "asin",
            "acos",
            "atan",
            "atan2",
            "floor",
            "ceil",
        )
    }
    mapping.update(
        Abs=torch.abs,
        pi=torch.pi,
        E=torch.e,
        Max=torch.maximum,
        Min=torch.minimum,
        Heaviside=lambda x, h0=0.5: torch.heaviside(x, torch.as_tensor(h0, dtype=x.dtype)),
    )
    return [mapping, "math"]


def parse_expressions(
    expressions: Sequence[str],
    *,
    variables: Sequence[str],
    parameters: Mapping[str, float | sympy.Expr] | None = None,
    where: str = "expression",
) -> list[sympy.Expr]:
    """Parse strings into sympy expressions, substituting parameter values.

    Args:
        expressions: one string per output component, e.g. ``["y", "-x - 0.1*y"]``.
        variables: names the expressions may use freely (state names and ``t``).
        parameters: ``{name: value}`` substituted before returning; a value may be a sympy
            expression, e.g. the parameter's own symbol to keep it symbolic.
        where: how the caller names the input in error messages (e.g. ``"data.init_args.rhs"``).

    Raises:
        SymbolicParseError: unparseable string, or a free symbol that is neither a variable nor a
            parameter.
    """
    parameters = dict(parameters or {})
    allowed = {name: sympy.Symbol(name) for name in (*variables, *parameters)}
    parsed = []
    for i, text in enumerate(expressions):
        if not isinstance(text, str):
            raise SymbolicParseError(f"{where}[{i}] must be a string, got {type(text).__name__}")
        try:
            expr = sympy.sympify(text, locals=allowed)
        except (sympy.SympifyError, SyntaxError, TypeError) as err:
            raise SymbolicParseError(
                f"{where}[{i}] = {text!r} is not a valid expression: {err}"
            ) from err
        if not isinstance(expr, sympy.Expr):
            raise SymbolicParseError(f"{where}[{i}] = {text!r} is not a scalar expression")
        unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in allowed)
        if unknown:
            raise SymbolicParseError(
                f"{where}[{i}] = {text!r} uses unknown symbols {unknown}; "
                f"allowed: variables {list(variables)} and parameters {sorted(parameters)}"
            )
        parsed.append(expr.subs({allowed[k]: v for k, v in parameters.items()}))
    return parsed


def to_numpy_function(
    expressions: Sequence[sympy.Expr], *, state: Sequence[str], time: str = "t"
) -> Callable[[float, np.ndarray], np.ndarray]:
    """``f(t, y)`` for :func:`scipy.integrate.solve_ivp`; ``y`` is ``(d,)`` or ``(d, k)``."""
    symbols = [sympy.Symbol(time), *(sympy.Symbol(s) for s in state)]
    compiled = sympy.lambdify(symbols, list(expressions), modules="numpy")

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        values = compiled(t, *y)
        return np.array([np.broadcast_to(v, np.shape(y[0])) for v in values], dtype=float)

    return rhs


def to_torch_function(
    expressions: Sequence[sympy.Expr], *, state: Sequence[str], time: str = "t"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Compile ``f(t, y)`` acting on torch tensors of shape ``(..., d)``; differentiable."""
    symbols = [sympy.Symbol(time), *(sympy.Symbol(s) for s in state)]
    compiled = sympy.lambdify(symbols, list(expressions), modules=_torch_modules())

    def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        values = compiled(t, *y.unbind(-1))
        shape = y.shape[:-1]
        return torch.stack(
            [torch.as_tensor(v, dtype=y.dtype, device=y.device).expand(shape) for v in values], -1
        )

    return rhs
