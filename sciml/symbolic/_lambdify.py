"""Turn sympy expressions, given as strings, into numpy and torch callables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy
import torch
from sympy.core.function import AppliedUndef
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations
from sympy.printing.pycode import PythonCodePrinter

__all__ = ["SymbolicParseError", "parse_expressions", "to_numpy_function", "to_torch_function"]


class SymbolicParseError(ValueError):
    """A string could not be parsed into a sympy expression over the allowed symbols."""


#: the functions an expression may call, by the names it may call them with
_FUNCTIONS: dict[str, type[sympy.Function]] = {
    **{
        name: getattr(sympy, name)
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
            "asin",
            "acos",
            "atan",
            "atan2",
            "asinh",
            "acosh",
            "atanh",
            "Abs",
            "sign",
            "floor",
            "ceiling",
            "Max",
            "Min",
            "Heaviside",
            "erf",
        )
    },
    "abs": sympy.Abs,
    "ln": sympy.log,
}

#: what the parser's generated code may name besides the functions: numbers, symbols, pi
_NAMESPACE: dict[str, Any] = {
    "Integer": sympy.Integer,
    "Float": sympy.Float,
    "Rational": sympy.Rational,
    "Symbol": sympy.Symbol,
    "Function": sympy.Function,
    "pi": sympy.pi,
    **_FUNCTIONS,
}

_TRANSFORMATIONS = (*standard_transformations, convert_xor)


def _with_tensor_arguments(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``function`` accepting Python numbers beside tensors (e.g. ``Max(1, x)``)."""

    def call(*args: Any) -> torch.Tensor:
        like = next((a for a in args if isinstance(a, torch.Tensor)), None)
        dtype = like.dtype if like is not None and like.is_floating_point() else None
        device = like.device if like is not None else None
        return function(*(torch.as_tensor(a, dtype=dtype, device=device) for a in args))

    return call


def _heaviside(x: torch.Tensor, at_zero: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Step function with derivative 0 (``torch.heaviside`` has no backward)."""
    at_zero = torch.as_tensor(at_zero, dtype=x.dtype, device=x.device)
    return torch.where(x > 0, torch.ones_like(x), torch.where(x < 0, torch.zeros_like(x), at_zero))


def _torch_modules() -> list[dict[str, Any] | str]:
    """Name mapping for :func:`sympy.lambdify` so that generated code calls torch functions."""
    names = ("sin", "cos", "tan", "exp", "log", "sqrt", "tanh", "sinh", "cosh", "abs", "sign")
    names += ("asin", "acos", "atan", "atan2", "asinh", "acosh", "atanh", "floor", "ceil", "erf")
    mapping: dict[str, Any] = {name: _with_tensor_arguments(getattr(torch, name)) for name in names}
    mapping.update(
        Abs=mapping["abs"],
        pi=torch.pi,
        Max=_with_tensor_arguments(torch.maximum),
        Min=_with_tensor_arguments(torch.minimum),
        Heaviside=_with_tensor_arguments(_heaviside),
    )
    return [mapping, "math"]


class _TorchPrinter(PythonCodePrinter):
    """Prints ``sign``, ``Heaviside``, ``Min`` and ``Max`` as calls of the torch mapping; the
    default printer writes Python conditionals and builtins, which cannot act on tensors."""

    def _print_sign(self, expr: sympy.Expr) -> str:
        return f"sign({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr: sympy.Expr) -> str:
        return f"Heaviside({', '.join(self._print(a) for a in expr.args)})"

    def _nested(self, name: str, args: Sequence[sympy.Expr]) -> str:
        first, *rest = args
        if not rest:
            return self._print(first)
        return f"{name}({self._print(first)}, {self._nested(name, rest)})"

    def _print_Min(self, expr: sympy.Expr) -> str:
        return self._nested("Min", expr.args)

    def _print_Max(self, expr: sympy.Expr) -> str:
        return self._nested("Max", expr.args)


def _fold_numbers(expr: sympy.Expr) -> sympy.Expr:
    """Number-only subexpressions such as ``sqrt(2)`` or ``exp(-1)`` as floats, so compiled code
    multiplies by a constant instead of calling a tensor function on a Python number."""
    constants = {
        sub: sympy.Float(sub.evalf(17), 17)
        for sub in sympy.preorder_traversal(expr)
        if sub.is_number and not sub.is_Atom
    }
    return expr.xreplace(constants)


def _parse_one(text: str, allowed: dict[str, sympy.Symbol], label: str) -> sympy.Expr:
    try:
        expr = parse_expr(
            text,
            local_dict=dict(allowed),
            global_dict={"__builtins__": {}, **_NAMESPACE},
            transformations=_TRANSFORMATIONS,
        )
    except Exception as err:  # any failure of the parser means the text is not an expression
        raise SymbolicParseError(f"{label} = {text!r} is not a valid expression: {err}") from err
    if not isinstance(expr, sympy.Expr):
        raise SymbolicParseError(f"{label} = {text!r} is not a scalar expression")
    undefined = sorted({str(f.func) for f in expr.atoms(AppliedUndef)})
    if undefined:
        raise SymbolicParseError(
            f"{label} = {text!r} calls unknown functions {undefined}; known: {sorted(_FUNCTIONS)}"
        )
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise SymbolicParseError(f"{label} = {text!r} is not finite ({expr})")
    if expr.has(sympy.I):
        raise SymbolicParseError(f"{label} = {text!r} is complex ({expr}); expressions are real")
    return expr


def parse_expressions(
    expressions: Sequence[str],
    *,
    variables: Sequence[str],
    parameters: Mapping[str, float | sympy.Expr] | None = None,
    where: str = "expression",
) -> list[sympy.Expr]:
    """Parse strings into sympy expressions, substituting parameter values.

    The strings may use numbers, the variables and parameters, ``pi``, ``^`` or ``**`` for
    powers, and the functions ``sin cos tan exp log ln sqrt tanh sinh cosh asin acos atan atan2
    asinh acosh atanh Abs abs sign floor ceiling Max Min Heaviside erf``. Every other name is an
    error, including sympy's ``E`` and ``I`` (write ``exp(1)``), so that a forgotten parameter is
    never silently taken for a constant, and so is an expression that is infinite or complex.

    Args:
        expressions: one string per output component, e.g. ``["y", "-x - 0.1*y"]``.
        variables: names the expressions may use freely (state names and ``t``).
        parameters: ``{name: value}`` substituted before returning; a value may be a sympy
            expression, e.g. the parameter's own symbol to keep it symbolic.
        where: how the caller names the input in error messages (e.g. ``"data.init_args.rhs"``).

    Raises:
        SymbolicParseError: unparseable string, a free symbol that is neither a variable nor a
            parameter, an unknown function, or an infinite or complex value.
    """
    parameters = dict(parameters or {})
    allowed = {name: sympy.Symbol(name) for name in (*variables, *parameters)}
    parsed = []
    for i, text in enumerate(expressions):
        if not isinstance(text, str):
            raise SymbolicParseError(f"{where}[{i}] must be a string, got {type(text).__name__}")
        expr = _parse_one(text, allowed, f"{where}[{i}]")
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
    modules = _torch_modules()
    # the settings lambdify gives its own printer: bare names, looked up in the torch mapping
    printer = _TorchPrinter(
        {
            "fully_qualified_modules": False,
            "inline": True,
            "allow_unknown_functions": True,
            "user_functions": {name: name for name in modules[0]},
        }
    )
    compiled = sympy.lambdify(
        symbols, [_fold_numbers(e) for e in expressions], modules=modules, printer=printer
    )

    def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        values = compiled(t, *y.unbind(-1))
        shape = y.shape[:-1]
        return torch.stack(
            [torch.as_tensor(v, dtype=y.dtype, device=y.device).expand(shape) for v in values], -1
        )

    return rhs
