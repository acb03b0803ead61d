"""Symbolic tools: sympy strings to numpy/torch callables."""

from ._hamiltonian import SymbolicHamiltonian, parse_hamiltonian
from ._lambdify import SymbolicParseError, parse_expressions, to_numpy_function, to_torch_function
from ._pde import ConvectionDiffusionTerms, parse_convection_diffusion
from ._prefix import (
    PrefixDecodeError,
    PrefixVocabulary,
    corrupt_terms,
    decode_float,
    encode_float,
    expressions_to_prefix,
    prefix_to_expressions,
    round_significant,
    skeleton,
    tokens_to_callables,
)

__all__ = [
    "ConvectionDiffusionTerms",
    "PrefixDecodeError",
    "PrefixVocabulary",
    "SymbolicHamiltonian",
    "SymbolicParseError",
    "corrupt_terms",
    "decode_float",
    "encode_float",
    "expressions_to_prefix",
    "parse_convection_diffusion",
    "parse_expressions",
    "parse_hamiltonian",
    "prefix_to_expressions",
    "round_significant",
    "skeleton",
    "to_numpy_function",
    "to_torch_function",
    "tokens_to_callables",
]
