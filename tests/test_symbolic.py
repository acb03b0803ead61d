import numpy as np
import pytest
import sympy
import torch

from sciml.symbolic import (
    SymbolicParseError,
    parse_expressions,
    to_numpy_function,
    to_torch_function,
)


def test_parse_substitutes_parameters():
    (expr,) = parse_expressions(["-k*y + sin(t)"], variables=["t", "y"], parameters={"k": 2.0})
    assert sympy.simplify(expr - (-2 * sympy.Symbol("y") + sympy.sin(sympy.Symbol("t")))) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x +* 2", "not a valid expression"),
        ("x + z", "unknown symbols \\['z'\\]"),
        ("x < 1", "not a scalar"),
        # a forgotten parameter named like a sympy constant is never taken for the constant
        ("E*x", "unknown symbols \\['E'\\]"),
        ("I*x", "unknown symbols \\['I'\\]"),
        ("f(x) + 1", "unknown functions \\['f'\\]"),
        # sympy would evaluate these to 0 (u does not depend on x as a symbol)
        ("Derivative(x, x, 2)", "unknown functions \\['Derivative'\\]"),
        ("diff(x**2, x)", "unknown functions \\['diff'\\]"),
        ("1/0*x", "not finite"),
        ("sqrt(-1)*x", "complex"),
        ("__import__('os')", "unknown functions"),
    ],
)
def test_parse_errors_name_the_input(text, message):
    with pytest.raises(SymbolicParseError, match=message) as info:
        parse_expressions([text], variables=["x"], where="data.init_args.rhs")
    assert "data.init_args.rhs[0]" in str(info.value)


def test_numpy_and_torch_functions_agree_and_differentiate():
    exprs = parse_expressions(
        ["v", "-omega**2*sin(x) + 0*t", "3"], variables=["t", "x", "v"], parameters={"omega": 1.5}
    )
    f_np = to_numpy_function(exprs, state=["x", "v"])
    f_torch = to_torch_function(exprs, state=["x", "v"])
    y = np.array([[0.3, -1.0], [0.5, 2.0]])  # (d, k): two points at once, as scipy vectorizes
    expected = np.array([[0.5, 2.0], -(1.5**2) * np.sin([0.3, -1.0]), [3.0, 3.0]])
    np.testing.assert_allclose(f_np(0.0, y), expected)
    y_torch = torch.tensor(y.T, dtype=torch.float64, requires_grad=True)  # (k, d)
    out = f_torch(torch.tensor(0.0), y_torch)
    np.testing.assert_allclose(out.detach().numpy(), expected.T)
    out[:, 1].sum().backward()
    np.testing.assert_allclose(y_torch.grad[:, 0].numpy(), -(1.5**2) * np.cos([0.3, -1.0]))


def test_torch_function_matches_numpy_on_constants_and_special_functions():
    texts = [
        "sqrt(2)*x + exp(-1) + sin(1)*y",
        "log(x**2 + 1, 2)",
        "sign(y)*x + Abs(y)",
        "Heaviside(x)*y + Heaviside(y, 1)",
        "Min(x, 1) + Max(1, x, y)",
        "asinh(x) + atanh(y/2) + erf(x)",
        "ceiling(x) + floor(y) + atan2(y, x) + pi",
    ]
    exprs = parse_expressions(texts, variables=["x", "y"])
    y = torch.tensor([[0.3, 0.7], [-1.5, -0.2], [0.0, 0.1], [2.5, -1.0]], dtype=torch.float64)
    expected = sympy.lambdify(sympy.symbols("x y"), exprs, modules=["scipy", "numpy"])(*y.numpy().T)
    got = to_torch_function(exprs, state=["x", "y"])(torch.tensor(0.0), y)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), np.stack(expected, -1), rtol=1e-14, atol=1e-14)
    y.requires_grad_(True)
    to_torch_function(exprs, state=["x", "y"])(torch.tensor(0.0), y).sum().backward()
    assert torch.isfinite(y.grad).all()
