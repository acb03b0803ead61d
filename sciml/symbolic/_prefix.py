r"""Sympy expressions as prefix (Polish) token sequences, PROSE / Lample-Charton style.

A vector field $f = (f_0, \dots, f_{d-1})$ is written as the prefix sequences of its components
joined by ``|``. Variables are ``u_0 .. u_{D-1}`` (and ``t``); operators are

* binary ``add mul pow``,
* unary ``neg inv pow2 pow3 sqrt sin cos tan exp log``,

integers are ``INT+``/``INT-`` followed by their decimal digits ``D0 .. D9``, and a float $x$
takes three tokens, sign, 3-digit mantissa and exponent, with $x = \pm m \cdot 10^{e}$,
$100 \le m \le 999$, e.g. ``28.0 -> + N280 E-1`` and ``2.67 -> + N267 E-2``. Decoding inverts
the encoding exactly for every expression of this grammar whose floats carry 3 significant
digits (other floats come back rounded to 3 digits, i.e. within half a mantissa unit).

A *skeleton* replaces each float (all 3 tokens, sign included) by one ``<C>`` placeholder, so it
keeps the structure of the equation but hides its constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sympy

from ._lambdify import to_numpy_function, to_torch_function

__all__ = [
    "PrefixDecodeError",
    "PrefixVocabulary",
    "corrupt_terms",
    "decode_float",
    "encode_float",
    "expressions_to_prefix",
    "prefix_to_expressions",
    "round_significant",
    "skeleton",
    "tokens_to_callables",
]

PAD, BOS, EOS, PLACEHOLDER, SEPARATOR = "<pad>", "<bos>", "<eos>", "<C>", "|"
BINARY = ("add", "mul", "pow")
UNARY = ("neg", "inv", "pow2", "pow3", "sqrt", "sin", "cos", "tan", "exp", "log")
_FUNCTIONS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "exp": sympy.exp}
_MANTISSA_DIGITS = 3


class PrefixDecodeError(ValueError):
    """A token sequence that is not a well-formed prefix expression of the grammar."""


def encode_float(value: float, *, max_exponent: int = 10) -> list[str]:
    """``value`` as ``[sign, mantissa, exponent]`` tokens, rounded to 3 significant digits.

    Zero is ``+ N000 E0``; magnitudes below ``100 * 10**-max_exponent`` also encode as zero.

    Raises:
        ValueError: ``value`` is not finite or too large for ``max_exponent``.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot encode the non-finite float {value}")
    sign = "-" if value < 0 else "+"
    magnitude = abs(value)
    if magnitude == 0:
        return ["+", "N000", "E0"]
    exponent = math.floor(math.log10(magnitude)) - (_MANTISSA_DIGITS - 1)
    mantissa = round(magnitude / 10.0**exponent)
    if mantissa >= 10**_MANTISSA_DIGITS:  # 999.6 rounds up to 1000: renormalise
        mantissa, exponent = mantissa // 10, exponent + 1
    elif mantissa < 10 ** (_MANTISSA_DIGITS - 1):  # log10 rounding just below a power of 10
        exponent -= 1
        mantissa = round(magnitude / 10.0**exponent)
    if exponent < -max_exponent:
        return ["+", "N000", "E0"]
    if exponent > max_exponent:
        raise ValueError(f"float {value} needs exponent {exponent} > max_exponent={max_exponent}")
    return [sign, f"N{mantissa:03d}", f"E{exponent}"]


def decode_float(tokens: Sequence[str]) -> float:
    """Inverse of :func:`encode_float` for one ``[sign, mantissa, exponent]`` triple."""
    if len(tokens) != 3:
        raise PrefixDecodeError(f"a float takes 3 tokens (sign, mantissa, exponent), got {tokens}")
    sign, mantissa, exponent = tokens
    if sign not in ("+", "-") or not _is_mantissa(mantissa) or not _is_exponent(exponent):
        raise PrefixDecodeError(f"{list(tokens)} is not a sign/mantissa/exponent float")
    # Via the decimal string, so that decoding gives the double nearest to the 3-digit value.
    return float(f"{sign}{int(mantissa[1:])}e{int(exponent[1:])}")


def round_significant(value: float, *, max_exponent: int = 10) -> float:
    """``value`` rounded to what its float tokens represent (3 significant digits)."""
    return decode_float(encode_float(value, max_exponent=max_exponent))


def _is_mantissa(token: str) -> bool:
    return len(token) == 1 + _MANTISSA_DIGITS and token[0] == "N" and token[1:].isdigit()


def _is_exponent(token: str) -> bool:
    return token[:1] == "E" and token[1:].lstrip("-").isdigit()


@dataclass(frozen=True)
class PrefixVocabulary:
    """Token <-> id map of the prefix grammar.

    Args:
        max_dim: number of state variables ``u_0 .. u_{max_dim-1}``.
        max_exponent: float exponents range over ``E-max_exponent .. E{max_exponent}``.

    The first ids are ``<pad>=0, <bos>=1, <eos>=2, <C>=3``.
    """

    max_dim: int = 5
    max_exponent: int = 10

    def __post_init__(self) -> None:
        if self.max_dim < 1:
            raise ValueError(f"max_dim must be >= 1, got {self.max_dim}")
        if self.max_exponent < 0:
            raise ValueError(f"max_exponent must be >= 0, got {self.max_exponent}")

    @cached_property
    def tokens(self) -> tuple[str, ...]:
        return (
            PAD,
            BOS,
            EOS,
            PLACEHOLDER,
            SEPARATOR,
            *BINARY,
            *UNARY,
            *self.variables,
            "t",
            "pi",
            "INT+",
            "INT-",
            *(f"D{k}" for k in range(10)),
            "+",
            "-",
            *(f"N{k:03d}" for k in range(10**_MANTISSA_DIGITS)),
            *(f"E{k}" for k in range(-self.max_exponent, self.max_exponent + 1)),
        )

    @cached_property
    def variables(self) -> tuple[str, ...]:
        return tuple(f"u_{i}" for i in range(self.max_dim))

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    def encode(self, tokens: Sequence[str], *, length: int | None = None) -> list[int]:
        """``<bos> tokens <eos>`` as ids, right-padded with ``<pad>`` to ``length``.

        Raises:
            ValueError: unknown token, or the sequence does not fit in ``length``.
        """
        unknown = [tok for tok in tokens if tok not in self.index]
        if unknown:
            raise ValueError(f"tokens {unknown[:5]} are not in the vocabulary")
        ids = [self.bos_id, *(self.index[tok] for tok in tokens), self.eos_id]
        if length is not None:
            if len(ids) > length:
                raise ValueError(
                    f"sequence of {len(ids)} ids (with <bos>/<eos>) exceeds length={length}"
                )
            ids += [self.pad_id] * (length - len(ids))
        return ids

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Token strings of ``ids``, dropping a leading ``<bos>`` and stopping at ``<eos>``/pad."""
        out = []
        for k, i in enumerate(int(i) for i in ids):
            if i < 0 or i >= len(self.tokens):
                raise PrefixDecodeError(f"id {i} is outside the vocabulary of {len(self)} tokens")
            if k == 0 and i == self.bos_id:
                continue
            if i in (self.eos_id, self.pad_id):
                break
            out.append(self.tokens[i])
        return out


def _variable_map(variables: Sequence[str] | None, expressions) -> dict[sympy.Symbol, str]:
    if variables is None:
        found = set().union(*(e.free_symbols for e in expressions)) - {sympy.Symbol("t")}
        variables = sorted(str(s) for s in found)
        if any(not name.startswith("u_") for name in variables):
            raise ValueError(
                f"symbols {variables} need an explicit `variables` list (state names in order)"
            )
        return {sympy.Symbol(name): name for name in variables}
    return {sympy.Symbol(name): f"u_{i}" for i, name in enumerate(variables)}


def _integer_tokens(value: int) -> list[str]:
    return ["INT+" if value >= 0 else "INT-", *(f"D{c}" for c in str(abs(value)))]


def _encode(expr: sympy.Expr, names: dict, max_exponent: int) -> list[str]:
    if expr.is_Symbol:
        if expr in names:
            return [names[expr]]
        if str(expr) == "t":
            return ["t"]
        raise ValueError(f"symbol {expr} is not a state variable (known: {list(names)}) nor t")
    if expr.is_Integer:
        return _integer_tokens(int(expr))
    if expr.is_Rational:
        return ["mul", *_integer_tokens(expr.p), "inv", *_integer_tokens(expr.q)]
    if expr.is_Float:
        return encode_float(float(expr), max_exponent=max_exponent)
    if expr is sympy.pi:
        return ["pi"]
    if expr is sympy.E:
        return ["exp", *_integer_tokens(1)]
    if expr.is_Add or expr.is_Mul:
        operator = "add" if expr.is_Add else "mul"
        args = [_encode(a, names, max_exponent) for a in expr.args]
        out = []
        for arg in args[:-1]:
            out += [operator, *arg]
        return out + args[-1]
    if expr.is_Pow:
        base, exponent = expr.args
        base_tokens = _encode(base, names, max_exponent)
        special = {-1: "inv", 2: "pow2", 3: "pow3", sympy.Rational(1, 2): "sqrt"}
        for value, name in special.items():
            if exponent == value:
                return [name, *base_tokens]
        return ["pow", *base_tokens, *_encode(exponent, names, max_exponent)]
    if isinstance(expr, sympy.log) and len(expr.args) == 1:
        return ["log", *_encode(expr.args[0], names, max_exponent)]
    for name, function in _FUNCTIONS.items():
        if isinstance(expr, function):
            return [name, *_encode(expr.args[0], names, max_exponent)]
    raise ValueError(f"{expr} ({type(expr).__name__}) is outside the prefix grammar")


def expressions_to_prefix(
    expressions: Sequence[sympy.Expr | str],
    *,
    variables: Sequence[str] | None = None,
    max_exponent: int = 10,
) -> list[str]:
    """Prefix tokens of a vector field, components joined by ``|``.

    Args:
        expressions: one sympy expression (or string) per component.
        variables: state names in order; they become ``u_0, u_1, ...``. Default: the expressions
            already use ``u_i`` names.
        max_exponent: largest float exponent.

    Example:
        >>> expressions_to_prefix(["28.0*x - y"], variables=["x", "y"])
        ['add', 'mul', '+', 'N280', 'E-1', 'u_0', 'mul', 'INT-', 'D1', 'u_1']
    """
    exprs = [sympy.sympify(e) if isinstance(e, str) else e for e in expressions]
    names = _variable_map(variables, exprs)
    tokens: list[str] = []
    for i, expr in enumerate(exprs):
        if i:
            tokens.append(SEPARATOR)
        tokens += _encode(expr, names, max_exponent)
    return tokens


class _Reader:
    """Recursive-descent parser over one component's tokens."""

    def __init__(self, tokens: Sequence[str], symbols: dict[str, sympy.Symbol], offset: int):
        self.tokens, self.symbols, self.offset, self.position = tokens, symbols, offset, 0

    def fail(self, message: str) -> PrefixDecodeError:
        return PrefixDecodeError(f"{message} (at token {self.offset + self.position})")

    def next(self) -> str:
        if self.position >= len(self.tokens):
            raise self.fail("the sequence ends where an operand is expected")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def integer(self, sign: str) -> sympy.Integer:
        digits = ""
        while self.position < len(self.tokens) and self.tokens[self.position][:1] == "D":
            digits += self.tokens[self.position][1:]
            self.position += 1
        if not digits.isdigit():
            raise self.fail(f"{sign} is not followed by digit tokens D0..D9")
        return sympy.Integer(int(digits) * (-1 if sign == "INT-" else 1))

    def read(self) -> sympy.Expr:
        token = self.next()
        if token in BINARY:
            left, right = self.read(), self.read()
            if token == "add":
                return left + right
            return left * right if token == "mul" else left**right
        if token in UNARY:
            arg = self.read()
            unary = {
                "neg": lambda a: -a,
                "inv": lambda a: 1 / a,
                "pow2": lambda a: a**2,
                "pow3": lambda a: a**3,
                "sqrt": sympy.sqrt,
                "log": sympy.log,
                **_FUNCTIONS,
            }
            return unary[token](arg)
        if token in self.symbols:
            return self.symbols[token]
        if token == "pi":
            return sympy.pi
        if token in ("INT+", "INT-"):
            return self.integer(token)
        if token in ("+", "-"):
            triple = [token, self.next(), self.next()]
            try:
                return sympy.Float(decode_float(triple))
            except PrefixDecodeError as err:
                raise self.fail(str(err)) from None
        if token == PLACEHOLDER:
            raise self.fail("a skeleton placeholder <C> has no value")
        raise self.fail(f"unexpected token {token!r}")


def prefix_to_expressions(
    tokens: Sequence[str], *, variables: Sequence[str] | None = None, dim: int | None = None
) -> list[sympy.Expr]:
    """Sympy components of a ``|``-separated prefix sequence (inverse of
    :func:`expressions_to_prefix`).

    Args:
        tokens: token strings (no ``<bos>``/``<eos>``).
        variables: names given to ``u_0, u_1, ...`` (default: keep ``u_i``).
        dim: expected number of components.

    Raises:
        PrefixDecodeError: empty component, missing operand, trailing tokens, unknown or misplaced
            token, or not ``dim`` components. The message names the token position.
    """
    components: list[list[str]] = [[]]
    for token in tokens:
        if token == SEPARATOR:
            components.append([])
        else:
            components[-1].append(token)
    if dim is not None and len(components) != dim:
        raise PrefixDecodeError(
            f"expected {dim} components separated by '|', got {len(components)}"
        )
    used = {tok for tok in tokens if tok.startswith("u_") and tok[2:].isdigit()}
    symbols = {tok: sympy.Symbol(tok) for tok in used}
    for i, name in enumerate(variables or ()):
        symbols[f"u_{i}"] = sympy.Symbol(name)
    symbols["t"] = sympy.Symbol("t")
    expressions, offset = [], 0
    for component in components:
        if not component:
            raise PrefixDecodeError(f"empty component at token {offset}")
        reader = _Reader(component, symbols, offset)
        expr = reader.read()
        if reader.position != len(component):
            raise reader.fail(f"{len(component) - reader.position} trailing tokens")
        expressions.append(expr)
        offset += len(component) + 1
    return expressions


def skeleton(tokens: Sequence[str]) -> list[str]:
    """Replace every 3-token float by the placeholder ``<C>`` (its sign is hidden too)."""
    out, k = [], 0
    while k < len(tokens):
        if tokens[k] in ("+", "-") and k + 2 < len(tokens) and _is_mantissa(tokens[k + 1]):
            out.append(PLACEHOLDER)
            k += 3
        else:
            out.append(tokens[k])
            k += 1
    return out


def corrupt_terms(
    expressions: Sequence[sympy.Expr],
    mode: int,
    rng: np.random.Generator,
    *,
    variables: Sequence[str],
) -> list[sympy.Expr]:
    r"""Add or delete one additive term of a vector field (the PROSE symbol-corruption model).

    Args:
        expressions: components, each a sum of terms.
        mode: ``0`` returns them unchanged, ``+1`` adds $c$, $c\,u_i$ or $c\,u_i u_j$ (random
            indices, $c \sim \pm U[0.1, 1]$ rounded to 3 digits) to a random component, ``-1``
            deletes a random term of a random component that has at least two terms (unchanged
            when none has).
        rng: numpy generator.
        variables: state names the new terms may use.
    """
    if mode not in (-1, 0, 1):
        raise ValueError(f"mode must be -1, 0 or 1, got {mode}")
    out = list(expressions)
    if mode == 0:
        return out
    if mode == 1:
        symbols = [sympy.Symbol(v) for v in variables]
        coefficient = round_significant(float(rng.choice([-1, 1]) * rng.uniform(0.1, 1.0)))
        for _ in range(100):  # a monomial the component lacks, so the term count grows by one
            monomial = sympy.Mul(
                *(symbols[int(rng.integers(len(symbols)))] for _ in range(rng.integers(0, 3)))
            )
            i = int(rng.integers(len(out)))
            present = {t.as_independent(*symbols)[1] for t in sympy.Add.make_args(out[i])}
            if monomial not in present:
                out[i] = out[i] + sympy.Float(coefficient) * monomial
                return out
        return out
    candidates = [i for i, e in enumerate(out) if len(sympy.Add.make_args(e)) >= 2]
    if not candidates:
        return out
    i = candidates[int(rng.integers(len(candidates)))]
    terms = list(sympy.Add.make_args(out[i]))
    del terms[int(rng.integers(len(terms)))]
    out[i] = sympy.Add(*terms)
    return out


def tokens_to_callables(
    tokens: Sequence[str], *, dim: int
) -> tuple[
    list[sympy.Expr],
    Callable[[float, np.ndarray], np.ndarray],
    Callable,
]:
    """Decoded tokens -> ``(expressions, numpy f(t, y), torch f(t, y))``.

    The numpy function takes ``y`` of shape ``(d,)`` or ``(d, k)`` (for scipy), the torch one
    ``(..., d)``; both are vectorised over the trailing/leading batch dimensions.

    Raises:
        PrefixDecodeError: the tokens are not a valid ``dim``-component field over ``u_0..``.
    """
    expressions = prefix_to_expressions(tokens, dim=dim)
    state = [f"u_{i}" for i in range(dim)]
    extra = set().union(*(e.free_symbols for e in expressions)) - {
        sympy.Symbol(s) for s in (*state, "t")
    }
    if extra:
        raise PrefixDecodeError(
            f"variables {sorted(map(str, extra))} exceed the state dimension {dim}"
        )
    return (
        expressions,
        to_numpy_function(expressions, state=state),
        to_torch_function(expressions, state=state),
    )
