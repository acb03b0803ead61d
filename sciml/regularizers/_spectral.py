"""Spectral constraints on a linear (e.g. Koopman) operator: penalties on its eigenvalues."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment

from ._base import AbstractRegularizer

__all__ = ["EigenvalueModulusRegularizer", "PrescribedEigenvalueRegularizer", "safe_eigvals"]


def safe_eigvals(operator: torch.Tensor, *, min_gap: float = 1e-6) -> torch.Tensor:
    r"""Eigenvalues of a square matrix with gradients that stay finite.

    The backward pass of an eigendecomposition divides by $\lambda_i - \lambda_j$, which is
    infinite at repeated eigenvalues (e.g. an identity operator). When two eigenvalues are closer
    than ``min_gap``, the eigenvalues of $C + \varepsilon\,\mathrm{diag}(0, 1, \dots, k-1)/k$
    with $\varepsilon = $ ``min_gap`` are returned instead, which splits the usual degeneracies;
    any non-finite gradient that is left is set to zero.

    Args:
        operator: ``(k, k)`` real matrix.
        min_gap: degeneracy threshold and perturbation size.

    Returns:
        ``(k,)`` complex eigenvalues.
    """
    if operator.ndim != 2 or operator.shape[0] != operator.shape[1]:
        raise ValueError(f"operator must be a square matrix, got shape {tuple(operator.shape)}")
    k = operator.shape[0]
    with torch.no_grad():
        values = torch.linalg.eigvals(operator)
        gaps = (values[:, None] - values[None, :]).abs() + torch.eye(
            k, device=values.device
        ) * float("inf")
        degenerate = k > 1 and bool(gaps.min() < min_gap)
    if degenerate:
        ramp = torch.arange(k, dtype=operator.dtype, device=operator.device) / k
        operator = operator + min_gap * torch.diag(ramp)
    if operator.requires_grad:
        operator = operator.clone()
        operator.register_hook(torch.nan_to_num)
    return torch.linalg.eigvals(operator)


class EigenvalueModulusRegularizer(AbstractRegularizer):
    r"""Put the ``n_unit`` largest eigenvalue moduli on the unit circle, keep the rest inside.

    With $|\lambda|_{(1)} \ge |\lambda|_{(2)} \ge \dots$ the sorted moduli of the operator $C$:

    $$ R = \frac1{n_u}\sum_{i \le n_u} (|\lambda|_{(i)} - 1)^2
       + \frac1{k - n_u}\sum_{i > n_u} \mathrm{relu}(|\lambda|_{(i)} - r)^2, $$

    i.e. $n_u$ persistent (undamped) modes and the others decaying at least as fast as radius
    $r$. ``n_unit=0`` is a pure stability constraint $|\lambda| \le r$; ``n_unit=k`` pushes every
    mode onto the unit circle (KoVAE's ``eig_loss`` mode 4; modes 2/3 are ``n_unit=2/3`` with
    ``radius=inf``).

    Args:
        n_unit: number of eigenvalues pushed to modulus 1.
        radius: bound $r$ on the remaining moduli (``float("inf")`` leaves them free).
        weight, weight_final: see :class:`AbstractRegularizer`.

    Shapes:
        ``forward(operator (k, k)) -> ()``.
    """

    name = "reg_spectral"

    def __init__(
        self,
        n_unit: int = 0,
        radius: float = 1.0,
        *,
        weight: float = 1.0,
        weight_final: float | None = None,
    ) -> None:
        super().__init__(weight=weight, weight_final=weight_final)
        if n_unit < 0:
            raise ValueError(f"EigenvalueModulusRegularizer: n_unit must be >= 0, got {n_unit}")
        if radius <= 0:
            raise ValueError(f"EigenvalueModulusRegularizer: radius must be > 0, got {radius}")
        self.n_unit, self.radius = n_unit, radius

    def forward(self, operator: torch.Tensor) -> torch.Tensor:
        k = operator.shape[0]
        if self.n_unit > k:
            raise ValueError(
                f"EigenvalueModulusRegularizer: n_unit={self.n_unit} exceeds the operator size {k}"
            )
        moduli = safe_eigvals(operator).abs().sort(descending=True).values
        penalty = operator.new_zeros(())
        if self.n_unit > 0:
            penalty = penalty + torch.mean((moduli[: self.n_unit] - 1.0) ** 2)
        if self.n_unit < k:
            penalty = penalty + torch.mean(torch.relu(moduli[self.n_unit :] - self.radius) ** 2)
        return penalty


class PrescribedEigenvalueRegularizer(AbstractRegularizer):
    r"""Pull eigenvalues of the operator onto user-prescribed values.

    Each prescribed $\mu_j$ is matched to a distinct eigenvalue $\lambda_{\pi(j)}$ by minimum-cost
    assignment (Hungarian algorithm on the detached distances); the penalty is
    $R = \frac1m \sum_j |\lambda_{\pi(j)} - \mu_j|^2$. The other eigenvalues are free. Give
    complex conjugate pairs for oscillatory modes of a real operator.

    Args:
        eigenvalues: prescribed values as ``[real, imag]`` pairs (plain data for YAML).
        weight, weight_final: see :class:`AbstractRegularizer`.

    Shapes:
        ``forward(operator (k, k)) -> ()``, needs ``k >= m``.
    """

    name = "reg_eigenvalues"

    def __init__(
        self,
        eigenvalues: Sequence[Sequence[float]],
        *,
        weight: float = 1.0,
        weight_final: float | None = None,
    ) -> None:
        super().__init__(weight=weight, weight_final=weight_final)
        pairs = [tuple(float(v) for v in pair) for pair in eigenvalues]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise ValueError(
                "PrescribedEigenvalueRegularizer: eigenvalues must be a non-empty list of "
                f"[real, imag] pairs, got {eigenvalues!r}"
            )
        target = torch.tensor([complex(re, im) for re, im in pairs], dtype=torch.complex128)
        self.register_buffer("target", target, persistent=False)

    def forward(self, operator: torch.Tensor) -> torch.Tensor:
        values = safe_eigvals(operator)
        if len(self.target) > len(values):
            raise ValueError(
                f"PrescribedEigenvalueRegularizer: {len(self.target)} prescribed eigenvalues "
                f"for an operator of size {len(values)}"
            )
        target = self.target.to(values.dtype)
        distance = (values[None, :] - target[:, None]).abs() ** 2  # (m, k)
        rows, cols = linear_sum_assignment(distance.detach().cpu().numpy())
        return distance[torch.as_tensor(rows), torch.as_tensor(cols)].mean()
