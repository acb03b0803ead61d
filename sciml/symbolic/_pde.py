"""Parse scalar 1-D convection-diffusion equations written as sympy strings."""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ._lambdify import SymbolicParseError, parse_expressions

__all__ = ["ConvectionDiffusionTerms", "parse_convection_diffusion"]

#: names an equation may use: the unknown, its derivatives and the coordinates
_DERIVATIVES = ("u_t", "u_x", "u_xx")
_FIELDS = ("u", "x", "t")


@dataclass(frozen=True)
class ConvectionDiffusionTerms:
    r"""The parts of $u_t + f(u, x, t)\,u_x = \nu\,u_{xx} + s(u, x, t)$.

    Attributes:
        velocity: the characteristic speed $f$, a sympy expression in ``u, x, t``.
        nu: the constant diffusivity $\nu \ge 0$.
        source: the source $s$, a sympy expression in ``u, x, t``.
    """

    velocity: sympy.Expr
    nu: float
    source: sympy.Expr


def parse_convection_diffusion(
    equation: str, *, parameters: dict[str, float] | None = None
) -> ConvectionDiffusionTerms:
    r"""Split an equation into speed, diffusivity and source, rejecting anything outside the class.

    The class is $a\,u_t + f(u, x, t)\,u_x = \nu\,u_{xx} + s(u, x, t)$ with constants $a \ne 0$ and
    $\nu \ge 0$ (the equation is divided by $a$). Both sides may hold any terms; ``"lhs = rhs"`` or
    an expression meaning ``expr = 0`` are accepted.

    Args:
        equation: e.g. ``"u_t + u*u_x = 0.01*u_xx"`` or ``"u_t + 50*u_x"``.
        parameters: numeric values of extra symbols, e.g. ``{"beta": 50.0}``.

    Raises:
        SymbolicParseError: unparseable text, unknown symbols, or an equation outside the class
            (no $u_t$, nonlinear in a derivative, a product of derivatives, a non-constant or
            negative diffusivity); the message says which.
    """
    if not isinstance(equation, str):
        raise SymbolicParseError(f"equation must be a string, got {type(equation).__name__}")
    sides = equation.split("=")
    if len(sides) > 2:
        raise SymbolicParseError(f"equation {equation!r} has more than one '='")
    parsed = parse_expressions(
        sides, variables=(*_DERIVATIVES, *_FIELDS), parameters=parameters, where="equation"
    )
    expr = sympy.expand(parsed[0] - (parsed[1] if len(parsed) == 2 else 0))
    u_t, u_x, u_xx = (sympy.Symbol(name) for name in _DERIVATIVES)
    derivatives = (u_t, u_x, u_xx)
    for d in derivatives:
        if sympy.diff(expr, d, 2) != 0:
            raise SymbolicParseError(
                f"equation {equation!r} is nonlinear in {d}; the convection-diffusion class "
                "u_t + f(u, x, t)*u_x = nu*u_xx + s(u, x, t) is linear in every derivative"
            )
    for i, a in enumerate(derivatives):
        for b in derivatives[i + 1 :]:
            if sympy.diff(expr, a, b) != 0:
                raise SymbolicParseError(
                    f"equation {equation!r} multiplies {a} by {b}, which the class "
                    "u_t + f(u, x, t)*u_x = nu*u_xx + s(u, x, t) does not allow"
                )
    time_coefficient = expr.coeff(u_t)
    if time_coefficient == 0:
        raise SymbolicParseError(f"equation {equation!r} has no u_t term")
    if time_coefficient.free_symbols:
        raise SymbolicParseError(
            f"equation {equation!r}: the coefficient of u_t must be a constant, "
            f"got {time_coefficient}"
        )
    expr = sympy.expand(expr / time_coefficient)
    velocity = sympy.simplify(expr.coeff(u_x))
    diffusion = -expr.coeff(u_xx)
    if diffusion.free_symbols:
        raise SymbolicParseError(
            f"equation {equation!r}: the diffusivity (coefficient of u_xx on the right-hand "
            f"side) must be a constant, got {diffusion}"
        )
    nu = float(diffusion)
    if nu < 0:
        raise SymbolicParseError(
            f"equation {equation!r} has a negative diffusivity nu = {nu} "
            "(ill-posed forward in time)"
        )
    source = sympy.simplify(-(expr - u_t - velocity * u_x + nu * u_xx))
    for name, term in (("velocity", velocity), ("source", source)):
        inside = sorted(str(d) for d in term.free_symbols & set(derivatives))
        if inside:
            raise SymbolicParseError(
                f"equation {equation!r}: the {name} {term} contains {inside}; the class "
                "u_t + f(u, x, t)*u_x = nu*u_xx + s(u, x, t) is linear in every derivative"
            )
    return ConvectionDiffusionTerms(velocity=velocity, nu=nu, source=source)
