"""Symbolic tools: sympy strings to numpy/torch callables."""

from ._lambdify import SymbolicParseError, parse_expressions, to_numpy_function, to_torch_function

__all__ = ["SymbolicParseError", "parse_expressions", "to_numpy_function", "to_torch_function"]
