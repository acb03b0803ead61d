"""Hamiltonians given as sympy strings: parsing and Hamilton's equations, derived symbolically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sympy

from ._lambdify import SymbolicParseError, parse_expressions

__all__ = ["SymbolicHamiltonian", "parse_hamiltonian"]


class SymbolicHamiltonian(NamedTuple):
    r"""A parsed Hamiltonian and its exact symplectic gradient.

    Attributes:
        energy: $H(q, p; \lambda)$, parameters $\lambda$ left symbolic.
        vector_field: Hamilton's equations $\dot q = \partial H/\partial p$,
            $\dot p = -\partial H/\partial q$ as one list (all $\dot q_i$, then all $\dot p_i$),
            i.e. $J \nabla H$ with $J = \begin{pmatrix} 0 & I \\ -I & 0 \end{pmatrix}$.
        symbols: the argument symbols in order $(q_1..q_n, p_1..p_n, \lambda_1..\lambda_m)$.
    """

    energy: sympy.Expr
    vector_field: list[sympy.Expr]
    symbols: list[sympy.Symbol]


def parse_hamiltonian(
    hamiltonian: str,
    *,
    coordinates: Sequence[str],
    momenta: Sequence[str],
    parameters: Sequence[str] = (),
    where: str = "hamiltonian",
) -> SymbolicHamiltonian:
    """Parse ``H(q, p; parameters)`` and derive Hamilton's equations by symbolic differentiation.

    Args:
        hamiltonian: e.g. ``"p**2/(2*m) + k*q**2/2"``.
        coordinates, momenta: names of $q_i$ and $p_i$, paired by position (same length).
        parameters: names of the physical parameters, kept as symbols (values vary per task).
        where: how the caller names the input in error messages.

    Raises:
        SymbolicParseError: unparseable string, unknown symbols, or mismatched names.
    """
    coordinates, momenta, parameters = list(coordinates), list(momenta), list(parameters)
    if len(coordinates) != len(momenta) or not coordinates:
        raise SymbolicParseError(
            f"{where}: need as many momenta as coordinates (at least one), got "
            f"coordinates={coordinates}, momenta={momenta}"
        )
    names = [*coordinates, *momenta, *parameters]
    if len(set(names)) != len(names):
        raise SymbolicParseError(
            f"{where}: coordinate, momentum and parameter names repeat: {names}"
        )
    symbols = [sympy.Symbol(name) for name in names]
    (energy,) = parse_expressions(
        [hamiltonian],
        variables=[*coordinates, *momenta],
        parameters={name: sympy.Symbol(name) for name in parameters},
        where=where,
    )
    # Differentiate with real symbols, so that d|q|/dq is sign(q) rather than an expression in
    # re(q) and im(q), then return to the plain symbols the rest of sciml uses.
    real = {s: sympy.Symbol(s.name, real=True) for s in symbols}
    back = {r: s for s, r in real.items()}
    real_energy = energy.xreplace(real)
    q = [real[s] for s in symbols[: len(coordinates)]]
    p = [real[s] for s in symbols[len(coordinates) : 2 * len(coordinates)]]
    field = [sympy.diff(real_energy, pi) for pi in p] + [-sympy.diff(real_energy, qi) for qi in q]
    return SymbolicHamiltonian(energy, [f.xreplace(back) for f in field], symbols)
