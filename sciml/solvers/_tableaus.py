r"""Butcher tableaus of explicit embedded Runge–Kutta pairs.

References:
    * J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae", J. Comput. Appl.
      Math. 6 (1980) 19–26 (the 5th-order ``dopri5`` solution).
    * L. F. Shampine, "Some practical Runge-Kutta formulas", Math. Comp. 46 (1986) 135–150 (the
      4th-order embedded weights of ``dopri5`` used here, which torchdiffeq also uses).
    * Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the first column
      simplifying assumption", Comput. Math. Appl. 62 (2011) 770–775 (``tsit5``).
    * P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas", Appl. Math. Lett. 2
      (1989) 321–325 (``bosh3``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TABLEAUS", "ButcherTableau"]


@dataclass(frozen=True)
class ButcherTableau:
    r"""An explicit embedded Runge–Kutta pair with $s$ stages.

    One step of size $h$ from $(t, y)$ computes the stages

    $$ Y_i = y + h \sum_{j<i} a_{ij} k_j, \qquad k_i = f(t + c_i h, Y_i), \qquad i = 1..s, $$

    the solution $y_1 = y + h \sum_i b_i k_i$ (order ``order``) and the local error estimate
    $y_1 - \hat y_1 = h \sum_i (b_i - \hat b_i) k_i$ of the embedded solution (order
    ``order - 1``).

    Attributes:
        a: the strictly lower-triangular matrix $A$ by rows; row $i$ holds its $i$ entries
            $a_{i0}..a_{i,i-1}$ (row 0 is empty).
        b: solution weights $b$, length $s$.
        b_error: $b - \hat b$, length $s$; it sums to zero.
        c: nodes, $c_i = \sum_j a_{ij}$.
        order: classical order of $b$.
        fsal: "first same as last": the last row of $A$ equals $b$ (and $c_s = 1$), so the last
            stage state is $y_1$ and $k_s = f(t + h, y_1)$ is the next step's $k_1$.
        stability_size: length of the stability interval on the negative real axis, i.e. the
            largest $x$ with $|R(-\xi)| \le 1$ for all $\xi \in [0, x]$, where
            $R(z) = 1 + z\, b^\top (I - zA)^{-1} \mathbf 1$ is the stability polynomial. The
            stiffness estimate $h|\lambda|$ is compared against it.
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    fsal: bool
    stability_size: float

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError("`a` must hold rows of lengths 0, 1, ..., s-1 for s = len(c)")
        if len(self.b) != s or len(self.b_error) != s:
            raise ValueError("`b` and `b_error` must have one entry per stage")
        for i, row in enumerate(self.a):
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(f"row {i} of `a` does not sum to c[{i}]")
        if self.fsal and (tuple(self.a[-1]) != tuple(self.b[:-1]) or self.b[-1] != 0.0):
            raise ValueError("fsal=True requires the last row of `a` to equal `b` (and b[-1] == 0)")

    @property
    def n_stages(self) -> int:
        return len(self.c)


_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_B_HAT = (1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60)

_DOPRI5 = ButcherTableau(
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:-1],
    ),
    b=_DOPRI5_B,
    b_error=tuple(bi - bh for bi, bh in zip(_DOPRI5_B, _DOPRI5_B_HAT, strict=True)),
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    order=5,
    fsal=True,
    stability_size=3.3065678926,
)

_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
_TSIT5_B_HAT = (
    0.09468075576583945,
    0.009183565540343254,
    0.4877705284247616,
    1.234297566930479,
    -2.7077123499835256,
    1.866628418170587,
    1 / 66,
)

_TSIT5 = ButcherTableau(
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        _TSIT5_B[:-1],
    ),
    b=_TSIT5_B,
    b_error=tuple(bi - bh for bi, bh in zip(_TSIT5_B, _TSIT5_B_HAT, strict=True)),
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    order=5,
    fsal=True,
    stability_size=3.5068469938,
)

_BOSH3 = ButcherTableau(
    a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    order=3,
    fsal=True,
    stability_size=2.5127453266,
)

# Heun's method (trapezoidal predictor-corrector) with explicit Euler as the embedded solution.
_HEUN_EULER = ButcherTableau(
    a=((), (1.0,)),
    b=(1 / 2, 1 / 2),
    b_error=(-1 / 2, 1 / 2),
    c=(0.0, 1.0),
    order=2,
    fsal=False,
    stability_size=2.0,
)

TABLEAUS: dict[str, ButcherTableau] = {
    "dopri5": _DOPRI5,
    "tsit5": _TSIT5,
    "bosh3": _BOSH3,
    "heun_euler": _HEUN_EULER,
}
