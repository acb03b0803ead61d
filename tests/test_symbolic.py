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
