r"""Schrödinger-bridge building blocks: linear-SDE transitions, static SB couplings, bridge paths.

For a reference SDE $dX = (AX + c)\,dt + \sigma\,dW$ everything is closed form:

* transition $X_t \mid X_0 = x \sim \mathcal N(F_t x + m_t, \Sigma_t)$ with $F_t = e^{tA}$,
  $\Sigma_t = \int_0^t e^{sA} S e^{sA^\top} ds$, $S = \sigma\sigma^\top$ and
  $m_t = \int_0^t e^{sA} ds\, c$ (Van Loan's block exponentials; valid for any $A$, not only
  Hurwitz ones);
* the static Schrödinger bridge between two empirical marginals over a gap $\Delta$ is entropic
  optimal transport with the log-transition cost
  $C(x, y) = \tfrac12 r^\top \Sigma_\Delta^{-1} r$, $r = y - F_\Delta x - m_\Delta$,
  and regularisation 1 (Brownian case: $\|y - x\|^2 / (2\sigma^2\Delta)$);
* the dynamic bridge between pinned end points is a Gaussian (OU) bridge sampled step by step.

For a general drift, :func:`sciml.nn.ipf_bridge` solves the two-marginal bridge by iterative
proportional fitting with neural drifts, on paths from :func:`simulate_euler_maruyama`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ot
import torch

__all__ = [
    "LinearTransition",
    "diffusion_matrix",
    "entropic_plan",
    "linear_bridge_cost",
    "linear_bridge_marginal",
    "linear_bridge_paths",
    "linear_transition",
    "sample_partners",
    "simulate_euler_maruyama",
]

# exp(-x) underflows float64 near x = 745: beyond that the kernel-domain Sinkhorn loses entries.
_KERNEL_DOMAIN_LIMIT = 500.0


def diffusion_matrix(
    sigma: float | torch.Tensor, dim: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""$S = \sigma\sigma^\top$ as a ``(d, d)`` float64 matrix.

    Args:
        sigma: a scalar (isotropic), a ``(d,)`` vector (diagonal) or a ``(d, d)`` matrix.
        dim: state dimension ``d``.
        device: where ``S`` lives (default: ``sigma``'s device, the CPU for a number).
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=device)
    if sigma.ndim == 0:
        return sigma**2 * torch.eye(dim, dtype=torch.float64, device=sigma.device)
    if sigma.shape == (dim,):
        return torch.diag(sigma**2)
    if sigma.shape == (dim, dim):
        return sigma @ sigma.T
    raise ValueError(
        f"sigma must be a scalar, ({dim},) or ({dim}, {dim}); got {tuple(sigma.shape)}"
    )


@dataclass(frozen=True)
class LinearTransition:
    r"""Moments of $X_t \mid X_0 = x \sim \mathcal N(F_t x + m_t, \Sigma_t)$ at ``T`` times.

    Attributes:
        flow: $F_t = e^{tA}$, ``(T, d, d)``.
        cov: $\Sigma_t$, ``(T, d, d)``.
        shift: $m_t = \int_0^t e^{sA}ds\,c$, ``(T, d)``.
    """

    flow: torch.Tensor
    cov: torch.Tensor
    shift: torch.Tensor


def linear_transition(
    A: torch.Tensor,
    sigma: float | torch.Tensor,
    times: torch.Tensor | float,
    c: torch.Tensor | None = None,
) -> LinearTransition:
    r"""Transition moments of $dX = (AX + c)dt + \sigma dW$ by Van Loan's method, in float64.

    $\exp\!\big(\begin{bmatrix}-A & S\\ 0 & A^\top\end{bmatrix} t\big)
    = \begin{bmatrix}\cdot & G\\ 0 & H\end{bmatrix}$ gives $F_t = H^\top$ and $\Sigma_t = F_t G$;
    $\exp\!\big(\begin{bmatrix}A & c\\ 0 & 0\end{bmatrix} t\big)$ has $m_t$ as its last column.

    Args:
        A: drift matrix ``(d, d)``.
        sigma: diffusion (see :func:`diffusion_matrix`).
        times: scalar or ``(T,)`` non-negative times.
        c: constant drift ``(d,)`` (default zero).

    Returns:
        :class:`LinearTransition` with a leading time axis ``T`` (``T = 1`` for a scalar time).
    """
    A = torch.as_tensor(A, dtype=torch.float64)
    d = A.shape[-1]
    if A.shape != (d, d):
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    t = torch.as_tensor(times, dtype=torch.float64, device=A.device).reshape(-1)
    if (t < 0).any():
        raise ValueError(f"times must be >= 0, got {t.tolist()}")
    S = diffusion_matrix(sigma, d, device=A.device)
    block = A.new_zeros(2 * d, 2 * d)
    block[:d, :d] = -A
    block[:d, d:] = S
    block[d:, d:] = A.T
    exp_block = torch.linalg.matrix_exp(block * t[:, None, None])
    flow = exp_block[:, d:, d:].transpose(-1, -2)
    cov = flow @ exp_block[:, :d, d:]
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    if c is None:
        shift = A.new_zeros(len(t), d)
    else:
        affine = A.new_zeros(d + 1, d + 1)
        affine[:d, :d] = A
        affine[:d, d] = torch.as_tensor(c, dtype=torch.float64, device=A.device)
        shift = torch.linalg.matrix_exp(affine * t[:, None, None])[:, :d, d]
    return LinearTransition(flow=flow, cov=cov, shift=shift)


def linear_bridge_cost(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    sigma: float | torch.Tensor,
    gap: float,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Negative log-transition cost $C_{ij} = \tfrac12 r_{ij}^\top\Sigma_\Delta^{-1}r_{ij}$,
    $r_{ij} = y_j - F_\Delta x_i - m_\Delta$.

    Entropic OT with this cost and regularisation 1 is the static Schrödinger bridge over ``gap``.

    Args:
        x: sources ``(n, d)``; y: targets ``(m, d)``.

    Returns:
        ``(n, m)`` float64 cost.
    """
    if gap <= 0:
        raise ValueError(f"gap must be positive, got {gap}")
    moments = linear_transition(A, sigma, gap, c)
    pushed = x.double() @ moments.flow[0].T + moments.shift[0]  # (n, d)
    chol = torch.linalg.cholesky(moments.cov[0])
    # Whitening by the Cholesky factor turns the Mahalanobis cost into a squared Euclidean one.
    white_x = torch.linalg.solve_triangular(chol, pushed.T, upper=False).T
    white_y = torch.linalg.solve_triangular(chol, y.double().T, upper=False).T
    return 0.5 * torch.cdist(white_x, white_y).square()


def entropic_plan(
    cost: torch.Tensor,
    reg: float = 1.0,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    max_iter: int = 2000,
    tol: float = 1e-9,
) -> torch.Tensor:
    r"""Entropic OT plan $\arg\min_\pi \langle\pi, C\rangle + \varepsilon\sum\pi\log\pi$ by POT's
    Sinkhorn, uniform marginals by default.

    The cost is first shifted by its row and then column minima (this leaves the plan unchanged
    and keeps a unit entry of the kernel in every row and column); if the shifted cost still
    exceeds ``500 * reg``, the log-domain solver is used.

    Args:
        cost: ``(n, m)``.
        reg: $\varepsilon$.
        a, b: marginal weights ``(n,)``, ``(m,)`` summing to 1.

    Returns:
        ``(n, m)`` float64 plan.
    """
    if reg <= 0:
        raise ValueError(f"reg must be positive, got {reg}")
    cost = cost.double()
    n, m = cost.shape
    a = cost.new_full((n,), 1.0 / n) if a is None else a.double()
    b = cost.new_full((m,), 1.0 / m) if b is None else b.double()
    shifted = cost - cost.min(dim=1, keepdim=True).values
    shifted = shifted - shifted.min(dim=0, keepdim=True).values
    method = "sinkhorn_log" if float(shifted.max()) > _KERNEL_DOMAIN_LIMIT * reg else "sinkhorn"
    return ot.sinkhorn(a, b, shifted, reg, method=method, numItermax=max_iter, stopThr=tol)


def sample_partners(plan: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One column index per row, drawn from the row's conditional ``plan[i] / plan[i].sum()``.

    A seeded generator draws on its own device (the CPU for ``torch.Generator()``), so one seed
    gives the same partners on the CPU and on a GPU.

    Returns:
        ``(n,)`` long tensor on ``plan``'s device.
    """
    weights = plan.clamp_min(0.0).to(_draw_device(generator, plan))
    return torch.multinomial(weights, 1, generator=generator).squeeze(1).to(plan.device)


def _draw_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def _standard_normal(
    shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal draws with ``like``'s dtype and device.

    A seeded generator draws on its own device (the CPU for ``torch.Generator()``) and the
    numbers are then moved, so one seed gives the same paths on the CPU and on a GPU.
    """
    draws = torch.randn(shape, generator=generator, dtype=like.dtype,
                        device=_draw_device(generator, like))  # fmt: skip
    return draws.to(like.device)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of (batched) positive semidefinite matrices, clipping roundoff."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0.0).sqrt()) @ vectors.transpose(-1, -2)


def linear_bridge_paths(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    sigma: float | torch.Tensor,
    grid: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Paths of the linear-SDE bridge pinned at $X_0 = x$ and $X_\Delta = y$ on a time grid.

    Markov bridge, one step at a time: from $z$ at $s_j$, with step $\delta = s_{j+1} - s_j$ and
    $r = \Delta - s_j$ left, $X_{s_{j+1}}$ is Gaussian with mean
    $F_\delta z + m_\delta + \Sigma_\delta F_{r-\delta}^\top\Sigma_r^{-1}(y - F_r z - m_r)$ and
    covariance $\Sigma_\delta - \Sigma_\delta F_{r-\delta}^\top\Sigma_r^{-1}F_{r-\delta}
    \Sigma_\delta$; the last point is $y$.

    Args:
        x, y: pinned end points ``(n, d)`` (row ``i`` of ``x`` is joined to row ``i`` of ``y``).
        grid: increasing times ``(N + 1,)`` from 0 to $\Delta$, ``N >= 1`` (need not be uniform).

    Returns:
        ``(n, N + 1, d)`` float64 paths.
    """
    grid = torch.as_tensor(grid, dtype=torch.float64, device=x.device)
    if grid.ndim != 1 or len(grid) < 2 or grid[0] != 0 or not bool((grid.diff() > 0).all()):
        raise ValueError("grid must increase from 0 to the gap with at least 2 points")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n_steps = len(grid) - 1
    remaining = grid[-1] - grid  # r_j = gap - s_j, so r_j - delta_j = r_{j+1}
    steps = linear_transition(A, sigma, grid.diff(), c)
    rest = linear_transition(A, sigma, remaining, c)
    x, y = x.double(), y.double()
    paths = x.new_empty(len(x), n_steps + 1, x.shape[1])
    paths[:, 0], paths[:, -1] = x, y
    z = x
    for j in range(n_steps - 1):
        F_step, cov_step, shift_step = steps.flow[j], steps.cov[j], steps.shift[j]
        gain = cov_step @ rest.flow[j + 1].T @ torch.linalg.inv(rest.cov[j])
        mean = z @ F_step.T + shift_step + (y - z @ rest.flow[j].T - rest.shift[j]) @ gain.T
        step_cov = cov_step - gain @ rest.flow[j + 1] @ cov_step
        noise = _standard_normal(z.shape, z, generator)
        z = mean + noise @ _sqrt_psd(0.5 * (step_cov + step_cov.T)).T
        paths[:, j + 1] = z
    return paths


def linear_bridge_marginal(
    x: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    sigma: float | torch.Tensor,
    gap: float,
    s: float,
    c: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""One draw of $X_s$ for each pinned pair $(x_i, y_i)$ of the linear-SDE bridge over
    $[0, \Delta]$, $0 \le s \le \Delta$ (mean and covariance as in :func:`linear_bridge_paths`).

    Returns:
        ``(n, d)`` float64 samples.
    """
    if not 0.0 <= s <= gap:
        raise ValueError(f"s must lie in [0, gap={gap}], got {s}")
    if s == 0.0:
        return x.double().clone()
    if s == gap:
        return y.double().clone()
    moments = linear_transition(A, sigma, [s, gap - s, gap], c)
    (F_s, F_rest, F_gap), (cov_s, _, cov_gap) = moments.flow, moments.cov
    x, y = x.double(), y.double()
    gain = cov_s @ F_rest.T @ torch.linalg.inv(cov_gap)
    mean = x @ F_s.T + moments.shift[0] + (y - x @ F_gap.T - moments.shift[2]) @ gain.T
    cov = cov_s - gain @ F_rest @ cov_s
    noise = _standard_normal(x.shape, mean, generator)
    return mean + noise @ _sqrt_psd(0.5 * (cov + cov.T)).T


def _noise_scale(sigma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim > 1:
        raise ValueError("simulated bridges take a scalar or diagonal (d,) sigma")
    return sigma


def simulate_euler_maruyama(
    drift,
    start: torch.Tensor,
    times: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    backward: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Euler–Maruyama paths of $dX = b(X, t)\,dt + \sigma\,dW$ on the grid ``times``.

    Forward: start at ``times[0]``, $X_{j+1} = X_j + b(X_j, t_j)h_j + \sigma\sqrt{h_j}\xi$.
    Backward (``backward=True``): start at ``times[-1]`` and step down with the backward drift,
    $X_j = X_{j+1} + b(X_{j+1}, t_{j+1})h_j + \sigma\sqrt{h_j}\xi$.

    Args:
        drift: callable ``(x (n, d), t float) -> (n, d)``.
        start: ``(n, d)``.
        times: increasing ``(N + 1,)``.
        sigma: scalar or diagonal ``(d,)``.

    Returns:
        ``(n, N + 1, d)`` paths indexed by ``times`` (in both directions).
    """
    scale = _noise_scale(sigma, start)
    n_points = len(times)
    paths = start.new_empty(len(start), n_points, start.shape[1])
    order = range(n_points - 1, 0, -1) if backward else range(n_points - 1)
    z = start
    paths[:, n_points - 1 if backward else 0] = z
    with torch.no_grad():
        for j in order:
            nxt = j - 1 if backward else j + 1
            h = abs(float(times[nxt] - times[j]))
            noise = _standard_normal(z.shape, z, generator)
            z = z + drift(z, float(times[j])) * h + scale * math.sqrt(h) * noise
            paths[:, nxt] = z
    return paths
