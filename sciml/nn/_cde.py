r"""Natural cubic splines through partly missing data and a neural controlled differential equation.

These replace ``torchcde`` (not a dependency): the spline is the control path $X(t)$ of the CDE
$dh = f(h)\,dX(t)$.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["CubicSpline", "NeuralCDE", "natural_cubic_spline_coeffs"]


def _neighbour_knots(knot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the previous (``< j``) and next (``> j``) knot of every position ``j``.

    ``knot (N, T)`` bool. Missing neighbours are reported as ``j`` itself (only endpoints lack one,
    and their equations do not use it).
    """
    n, length = knot.shape
    position = torch.arange(length).expand(n, length)
    before = torch.where(knot, position, torch.full_like(position, -1)).cummax(dim=1).values
    previous = torch.cat([before.new_full((n, 1), -1), before[:, :-1]], dim=1)
    after_flipped = torch.where(knot, length - 1 - position, torch.full_like(position, -1))
    after = length - 1 - after_flipped.flip(1).cummax(dim=1).values.flip(1)
    following = torch.cat([after[:, 1:], after.new_full((n, 1), length)], dim=1)
    previous = torch.where(previous < 0, position, previous)
    following = torch.where(following >= length, position, following)
    return previous, following


def natural_cubic_spline_coeffs(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    r"""Coefficients of the natural cubic spline through the finite entries of ``x``, per channel.

    Each channel of each sequence is interpolated through its observed (finite) values; NaN
    entries are filled by the spline. Leading/trailing gaps hold the first/last observed value
    (they become knots), so every channel's spline spans the whole grid. With knots
    $\tau_0 < \dots < \tau_m$, values $y_i$ and second derivatives $M_i$ ($M_0 = M_m = 0$), the
    natural spline solves
    $h_{i-1} M_{i-1} + 2(h_{i-1} + h_i) M_i + h_i M_{i+1}
    = 6\big(\frac{y_{i+1} - y_i}{h_i} - \frac{y_i - y_{i-1}}{h_{i-1}}\big)$; the knots differ
    between sequences, so all systems are written on the full grid (identity rows at non-knots)
    and solved as one batch. The result is re-expanded on every grid interval
    $[t_k, t_{k+1}]$ as $a + b s + c s^2 + d s^3$, $s = t - t_k$.

    Args:
        x: ``(B, T, D)`` with NaN where unobserved; every channel needs at least one finite value.
        t: grid ``(T,)``, strictly increasing; default ``0, 1, ..., T-1``.

    Returns:
        ``(B, T-1, 4, D)``: ``[a, b, c, d]`` per interval and channel. At observed entries the
        spline equals ``x`` exactly (up to rounding).
    """
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(f"x must have shape (B, T >= 2, D), got {tuple(x.shape)}")
    batch, length, channels = x.shape
    t = torch.arange(length, dtype=x.dtype) if t is None else t.to(x.dtype)
    if t.shape != (length,) or not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"t must be strictly increasing with shape ({length},)")
    series = x.permute(0, 2, 1).reshape(-1, length)  # (N, T), one row per channel
    observed = torch.isfinite(series)
    if not bool(observed.any(dim=1).all()):
        raise ValueError("every channel of every sequence needs at least one finite value")
    position = torch.arange(length).expand_as(series)
    first = torch.where(observed, position, length).min(dim=1).values
    last = torch.where(observed, position, -1).max(dim=1).values
    rows = torch.arange(len(series))
    values = torch.where(observed, series, torch.zeros_like(series))
    lead = position < first[:, None]
    trail = position > last[:, None]
    values = torch.where(lead, series[rows, first][:, None], values)
    values = torch.where(trail, series[rows, last][:, None], values)
    knot = observed | lead | trail  # now includes positions 0 and T-1

    previous, following = _neighbour_knots(knot)
    interior = knot & (position > 0) & (position < length - 1)
    h_prev = (t[position] - t[previous]).masked_fill(~interior, 1.0)
    h_next = (t[following] - t[position]).masked_fill(~interior, 1.0)
    y_prev, y_next = values.gather(1, previous), values.gather(1, following)
    rhs = 6 * ((y_next - values) / h_next - (values - y_prev) / h_prev)
    rhs = torch.where(interior, rhs, torch.zeros_like(rhs))
    system = torch.zeros(len(series), length, length, dtype=x.dtype)
    diagonal = torch.where(interior, 2 * (h_prev + h_next), torch.ones_like(h_prev))
    system.scatter_(2, position[..., None], diagonal[..., None])
    off = torch.zeros_like(h_prev)
    system.scatter_add_(2, previous[..., None], torch.where(interior, h_prev, off)[..., None])
    system.scatter_add_(2, following[..., None], torch.where(interior, h_next, off)[..., None])
    second = torch.linalg.solve(system, rhs[..., None])[..., 0]  # M at knots, 0 elsewhere

    # Interval k lies inside the spline piece between knots p = last knot <= k, q = next > k.
    start = position[:, :-1]
    p = torch.where(knot[:, :-1], start, previous[:, :-1])
    q = following[:, :-1]
    width = t[q] - t[p]
    m_p, m_q = second.gather(1, p), second.gather(1, q)
    y_p, y_q = values.gather(1, p), values.gather(1, q)
    u, v = t[q] - t[start], t[start] - t[p]
    slope_p, slope_q = y_p / width - m_p * width / 6, y_q / width - m_q * width / 6
    a = m_p * u**3 / (6 * width) + m_q * v**3 / (6 * width) + slope_p * u + slope_q * v
    b = -m_p * u**2 / (2 * width) + m_q * v**2 / (2 * width) - slope_p + slope_q
    c = (m_p * u / width + m_q * v / width) / 2
    d = (m_q - m_p) / (6 * width)
    coeffs = torch.stack([a, b, c, d], dim=-1)  # (N, T-1, 4)
    return coeffs.reshape(batch, channels, length - 1, 4).permute(0, 2, 3, 1)


class CubicSpline:
    """Piecewise cubic path from :func:`natural_cubic_spline_coeffs`; value and derivative at ``t``.

    Args:
        coeffs: ``(B, T-1, 4, D)``.
        t: grid ``(T,)``; default ``0, ..., T-1``.
    """

    def __init__(self, coeffs: torch.Tensor, t: torch.Tensor | None = None) -> None:
        self.coeffs = coeffs
        length = coeffs.shape[1] + 1
        self.t = torch.arange(length, dtype=coeffs.dtype) if t is None else t.to(coeffs.dtype)
        self._grid = self.t.tolist()

    def _locate(self, time: float) -> tuple[torch.Tensor, float]:
        # The last interval whose start is <= time (clamped): at a knot both sides agree up to
        # the second derivative, so either choice is exact.
        index = 0
        while index < len(self._grid) - 2 and self._grid[index + 1] <= time:
            index += 1
        return self.coeffs[:, index], time - self._grid[index]

    def evaluate(self, time: float | torch.Tensor) -> torch.Tensor:
        """$X(t)$, shape ``(B, D)``."""
        c, s = self._locate(float(time))
        return c[:, 0] + s * (c[:, 1] + s * (c[:, 2] + s * c[:, 3]))

    def derivative(self, time: float | torch.Tensor) -> torch.Tensor:
        """$dX/dt$, shape ``(B, D)``."""
        c, s = self._locate(float(time))
        return c[:, 1] + s * (2 * c[:, 2] + 3 * s * c[:, 3])


class NeuralCDE(nn.Module):
    r"""Neural CDE encoder $h(t_0) = W X(t_0) + b$, $dh = f_\theta(h)\,\frac{dX}{dt}\,dt$.

    $f_\theta$ maps ``(B, H)`` to an ``(B, H, D)`` matrix: ``Linear(H, H)``, ReLU,
    ``num_layers - 1`` times ``[Linear(H, H), ReLU]``, ``Linear(H, H D)``, tanh (bounded, so the
    hidden state cannot blow up). Integrated on the spline's grid by classic fixed-step RK4 with
    ``substeps`` steps per interval (one, as the KoVAE reference). The loop is written here
    rather than taken from :mod:`sciml.solvers`, which itself builds on :mod:`sciml.nn`.

    Args:
        input_dim: ``D``, channels of the path.
        hidden_dim: ``H``.
        num_layers: hidden layers of $f_\theta$.
        substeps: RK4 steps per grid interval.

    Shapes:
        ``forward(coeffs (B, T-1, 4, D)) -> (B, T, H)``, the hidden state at every grid time.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, num_layers: int = 1, substeps: int = 1
    ) -> None:
        super().__init__()
        if substeps < 1:
            raise ValueError(f"NeuralCDE: substeps must be >= 1, got {substeps}")
        self.input_dim, self.hidden_dim, self.substeps = input_dim, hidden_dim, substeps
        self.initial = nn.Linear(input_dim, hidden_dim)
        layers: list[nn.Module] = [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        layers += [nn.Linear(hidden_dim, hidden_dim * input_dim), nn.Tanh()]
        self.field = nn.Sequential(*layers)

    def forward(self, coeffs: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        spline = CubicSpline(coeffs, t)

        def vector_field(time: float, h: torch.Tensor) -> torch.Tensor:
            matrix = self.field(h).view(*h.shape[:-1], self.hidden_dim, self.input_dim)
            return (matrix @ spline.derivative(time)[..., None])[..., 0]

        grid = spline.t.tolist()
        h = self.initial(spline.evaluate(grid[0]))
        states = [h]
        for start, end in itertools.pairwise(grid):
            step = (end - start) / self.substeps
            for j in range(self.substeps):
                time = start + j * step
                k1 = vector_field(time, h)
                k2 = vector_field(time + step / 2, h + step / 2 * k1)
                k3 = vector_field(time + step / 2, h + step / 2 * k2)
                k4 = vector_field(time + step, h + step * k3)
                h = h + step / 6 * (k1 + 2 * (k2 + k3) + k4)
            states.append(h)
        return torch.stack(states, dim=1)
