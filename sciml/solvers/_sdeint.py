"""``sdeint``: fixed-grid SDE schemes in plain torch, with torchsde as the general fallback."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import ClassVar, Protocol

import torch
import torchsde

from ._brownian import GridBrownian
from ._checks import ShapeCheckedOnce, check_state, check_times, check_tolerances
from ._stats import Solution, SolverStats

__all__ = ["SDE_METHODS", "sdeint"]

SDE_METHODS: tuple[str, ...] = (
    "euler",
    "milstein",
    "heun",
    "euler_heun",
    "srk",
    "midpoint",
    "reversible_heun",
    "log_ode",
)
"""Methods accepted by :func:`sdeint` (torchsde's names). ``euler``, ``milstein`` (Itô),
``heun`` and ``euler_heun`` have the fast fixed-grid path; the others always run in torchsde."""

_NOISE_TYPES = ("diagonal", "additive", "scalar", "general")
_SDE_TYPES = ("ito", "stratonovich")
_DEFAULT_METHOD = {"ito": "euler", "stratonovich": "heun"}
# torchsde's own choice of Brownian information per method when it builds the Brownian motion.
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}


class SDE(Protocol):
    """The torchsde-style SDE interface: drift ``f``, diffusion ``g`` and two type tags.

    ``f(t, y)`` returns ``(batch, d)``; ``g(t, y)`` returns ``(batch, d)`` for diagonal noise and
    ``(batch, d, m)`` otherwise (``m = 1`` for scalar noise).
    """

    noise_type: str
    sde_type: str

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


_Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _GridScheme(abc.ABC):
    r"""A one-step scheme $y_{k+1} = \Phi(t_k, t_{k+1}, y_k, \Delta W_k)$ on a uniform grid.

    The increments of the whole solve are known up front, so each scheme precomputes what it
    needs from them once and the step loop only does the per-step arithmetic. $g\,\Delta W$ is
    elementwise for diagonal noise and a batched matrix-vector product otherwise.
    """

    sde_type: ClassVar[str]
    noise_types: ClassVar[tuple[str, ...]]
    drift_evals: ClassVar[int]
    """Drift evaluations per step."""
    diffusion_evals: ClassVar[int]
    """Diffusion evaluations per step."""

    def __init__(
        self, drift: _Field, diffusion: _Field, noise_type: str, dt: float, dW: torch.Tensor
    ):
        self.drift = drift
        self.diffusion = diffusion
        self.dt = dt
        self.diagonal = noise_type == "diagonal"
        # Unbind once: a tuple lookup per step is cheaper than indexing a tensor.
        self.noise = (dW if self.diagonal else dW.unsqueeze(-1)).unbind(0)

    def g_dw(self, g: torch.Tensor, k: int) -> torch.Tensor:
        if self.diagonal:
            return g * self.noise[k]
        return torch.bmm(g, self.noise[k]).squeeze(-1)

    def add_g_dw(self, x: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
        """``x + g_dw(g, k)`` as one fused kernel (one autograd node instead of two)."""
        if self.diagonal:
            return torch.addcmul(x, g, self.noise[k])
        return torch.baddbmm(x.unsqueeze(-1), g, self.noise[k]).squeeze(-1)

    @abc.abstractmethod
    def step(self, k: int, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Advance ``y (batch, d)`` from ``t0`` to ``t1 = t0 + dt`` with increment ``k``."""


class _EulerMaruyama(_GridScheme):
    r"""Itô Euler–Maruyama, $y_{k+1} = y_k + f\,\Delta t + g\,\Delta W_k$ (strong order 1/2;
    1 for additive noise)."""

    sde_type = "ito"
    noise_types = _NOISE_TYPES
    drift_evals = 1
    diffusion_evals = 1

    def step(self, k: int, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_drift = torch.add(y, self.drift(t0, y), alpha=self.dt)
        return self.add_g_dw(y_drift, self.diffusion(t0, y), k)


class _Milstein(_GridScheme):
    r"""Itô Milstein, strong order 1 for diagonal, scalar and additive noise:

    $$ y_{k+1} = y_k + f\,\Delta t + g\,\Delta W_k
       + \tfrac12\,(\partial_y g)\,g\,(\Delta W_k^2 - \Delta t). $$

    For diagonal noise, where $g_i$ depends on $y_i$ only, the last term is
    $\tfrac12 g_i\,\partial_{y_i} g_i\,(\Delta W_i^2 - \Delta t)$: one vector-Jacobian product
    by autograd, the same expression as torchsde's default ``milstein``. For scalar noise
    ($g$ of shape ``(batch, d, 1)``) it is the Jacobian-vector product $(\partial_y g)\,g$,
    computed from two vector-Jacobian products; torchsde's ``milstein`` applies the transposed
    Jacobian there as well, which is right only when $\partial_y g$ is symmetric and otherwise
    leaves the scheme at strong order 1/2. No extra diffusion evaluation; with gradients
    enabled the term is built with ``create_graph`` so training differentiates
    through it. It vanishes for additive noise, which then skips it.
    """

    sde_type = "ito"
    noise_types = ("diagonal", "scalar", "additive")
    drift_evals = 1
    diffusion_evals = 1

    def __init__(
        self, drift: _Field, diffusion: _Field, noise_type: str, dt: float, dW: torch.Tensor
    ):
        super().__init__(drift, diffusion, noise_type, dt, dW)
        self.additive = noise_type == "additive"
        half_v = 0.5 * (dW**2 - dt)
        self.half_v = (half_v if self.diagonal else half_v.unsqueeze(-2)).unbind(0)

    def step(self, k: int, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_drift = torch.add(y, self.drift(t0, y), alpha=self.dt)
        if self.additive:
            return self.add_g_dw(y_drift, self.diffusion(t0, y), k)
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            y_in = y if y.requires_grad else y.detach().requires_grad_()
            g = self.diffusion(t0, y_in)
            if self.diagonal:
                (g_dg,) = torch.autograd.grad(
                    g, y_in, g * self.half_v[k], create_graph=create_graph, allow_unused=True
                )
            else:
                g_dg = self._scalar_correction(g, y_in, k, create_graph)
        y1 = self.add_g_dw(y_drift, g, k)
        return y1 if g_dg is None else y1 + g_dg

    def _scalar_correction(
        self, g: torch.Tensor, y: torch.Tensor, k: int, create_graph: bool
    ) -> torch.Tensor | None:
        r"""$\tfrac12 (\partial_y g)\,g\,(\Delta W_k^2 - \Delta t)$ for ``g (batch, d, 1)``:
        $u(v) = (\partial_y g)^\top v$ is linear in $v$, so $\partial_v \langle u, g\rangle
        = (\partial_y g)\,g$."""
        probe = torch.zeros_like(g, requires_grad=True)
        (transposed,) = torch.autograd.grad(g, y, probe, create_graph=True, allow_unused=True)
        if transposed is None:  # g does not depend on y
            return None
        (jacobian_g,) = torch.autograd.grad(transposed, probe, g[..., 0], create_graph=create_graph)
        return (jacobian_g * self.half_v[k]).squeeze(-1)


class _Heun(_GridScheme):
    r"""Stratonovich Heun (trapezoidal predictor-corrector), strong order 1 for commutative
    noise:

    $$ \tilde y = y_k + f_k \Delta t + g_k \Delta W_k, \quad
       y_{k+1} = y_k + \tfrac12\big[(f_k + \tilde f)\Delta t + (g_k + \tilde g)\Delta W_k\big] $$

    with $\tilde f, \tilde g$ evaluated at $(t_{k+1}, \tilde y)$.
    """

    sde_type = "stratonovich"
    noise_types = _NOISE_TYPES
    drift_evals = 2
    diffusion_evals = 2

    def step(self, k: int, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f0 = self.drift(t0, y)
        g0_dw = self.g_dw(self.diffusion(t0, y), k)
        y_pred = y + self.dt * f0 + g0_dw
        f1 = self.drift(t1, y_pred)
        g1_dw = self.g_dw(self.diffusion(t1, y_pred), k)
        return y + (self.dt * (f0 + f1) + g0_dw + g1_dw) * 0.5


class _EulerHeun(_GridScheme):
    r"""Stratonovich Euler–Heun: Euler in the drift, trapezoidal in the noise,

    $$ \tilde y = y_k + g_k \Delta W_k, \quad
       y_{k+1} = y_k + f_k \Delta t + \tfrac12\big(g_k + g(t_{k+1}, \tilde y)\big)\Delta W_k. $$
    """

    sde_type = "stratonovich"
    noise_types = _NOISE_TYPES
    drift_evals = 1
    diffusion_evals = 2

    def step(self, k: int, t0: torch.Tensor, t1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f0 = self.drift(t0, y)
        g0_dw = self.g_dw(self.diffusion(t0, y), k)
        g1_dw = self.g_dw(self.diffusion(t1, y + g0_dw), k)
        return y + self.dt * f0 + (g0_dw + g1_dw) * 0.5


_SCHEMES: dict[str, type[_GridScheme]] = {
    "euler": _EulerMaruyama,
    "milstein": _Milstein,
    "heun": _Heun,
    "euler_heun": _EulerHeun,
}


class _CountingSDE:
    """Exposes ``sde.f``/``sde.g`` with call counters (and the resolved type tags) to torchsde."""

    def __init__(self, sde: SDE, noise_type: str, sde_type: str, stats: SolverStats) -> None:
        self.sde = sde
        self.noise_type = noise_type
        self.sde_type = sde_type
        self.stats = stats

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.stats.nfe_forward += 1
        return self.sde.f(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.stats.nfe_diffusion += 1
        return self.sde.g(t, y)


class _RecordingBrownian(torchsde.BaseBrownian):
    """Passes queries through to ``inner`` and records each ``(ta, tb)``.

    Every torchsde step makes exactly one ``bm(ta, tb)`` query, so the record is the sequence of
    steps the solver took.
    """

    def __init__(self, inner: torchsde.BaseBrownian) -> None:
        self.inner = inner
        self.queries: list[tuple[torch.Tensor | float, torch.Tensor | float]] = []

    def __call__(
        self,
        ta: torch.Tensor | float,
        tb: torch.Tensor | float | None = None,
        return_U: bool = False,
        return_A: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if tb is not None:
            self.queries.append((ta, tb))
        return self.inner(ta, tb, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"_RecordingBrownian({self.inner!r})"

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def shape(self) -> torch.Size:
        return self.inner.shape

    @property
    def levy_area_approximation(self) -> str:
        return self.inner.levy_area_approximation


def _resolve_type(given: str | None, sde: object, attribute: str, valid: Sequence[str]) -> str:
    value = given if given is not None else getattr(sde, attribute, None)
    if value not in valid:
        raise ValueError(f"{attribute} must be one of {list(valid)}, got {value!r}")
    return value  # type: ignore[return-value]


def _grid_tolerance(ts: torch.Tensor, dt: float) -> float:
    """How far (in time) an output time may sit from the grid and still count as on it: 64 ulps
    of the largest time in ``ts``'s dtype, the roundoff of building ``ts`` with linspace/arange."""
    return 64 * torch.finfo(ts.dtype).eps * max(abs(float(ts[0])), abs(float(ts[-1])), dt)


def _grid_steps(ts: torch.Tensor, dt: float) -> list[int] | None:
    """Grid index ``k_i`` with ``ts[i] = ts[0] + k_i * dt`` for each output time, or ``None``
    if some ``ts[i]`` is off the grid."""
    tol = _grid_tolerance(ts, dt)
    times = ts.tolist()
    offsets = [t - times[0] for t in times]
    steps = [round(x / dt) for x in offsets]
    on_grid = all(abs(x - k * dt) <= tol for x, k in zip(offsets, steps, strict=True))
    increasing = all(a < b for a, b in pairwise(steps))
    return steps if on_grid and increasing else None


def _noise_dim(
    sde: SDE, noise_type: str, t0: torch.Tensor, y0: torch.Tensor, stats: SolverStats
) -> int:
    """Number ``m`` of Brownian channels.

    Diagonal and scalar noise fix it; for additive and general noise it is read from one
    diffusion evaluation (counted in ``stats.nfe_diffusion``).
    """
    if noise_type == "diagonal":
        return y0.shape[1]
    if noise_type == "scalar":
        return 1
    with torch.no_grad():
        g = sde.g(t0, y0)
    stats.nfe_diffusion += 1
    if not isinstance(g, torch.Tensor) or g.ndim != 3 or tuple(g.shape[:2]) != tuple(y0.shape):
        shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(
            f"sde.g(t, y) must return (batch, d, m) for {noise_type} noise, got {shape}"
        )
    return g.shape[2]


def sdeint(
    sde: SDE,
    y0: torch.Tensor,
    ts: torch.Tensor | Sequence[float],
    *,
    method: str | None = None,
    dt: float,
    bm: torchsde.BaseBrownian | None = None,
    noise_type: str | None = None,
    sde_type: str | None = None,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    generator: torch.Generator | None = None,
    dW: torch.Tensor | None = None,
) -> Solution:
    r"""Solve $dy = f(t, y)\,dt + g(t, y) \circ_{\text{Itô/Strat.}} dW$ on the output times ``ts``.

    **Fast path.** With ``method`` in ``euler``, ``milstein`` (Itô), ``heun``, ``euler_heun``
    (Stratonovich), fixed steps (``adaptive=False``), every ``ts[i]`` on the grid
    ``ts[0] + k * dt`` (up to the roundoff of building ``ts``) and no Brownian object other than
    increments (``bm=None``, ``dW``, or a :class:`GridBrownian` on the same grid), the scheme
    runs as a plain torch loop. The increments are drawn up front as one tensor
    ``dW = sqrt(dt) * randn(n_steps, batch, m, generator=generator)`` unless ``dW`` is given.

    **Fallback.** Anything else runs ``torchsde.sdeint`` (off-grid ``ts`` included: torchsde
    steps from ``ts[0]`` by ``dt``, clips the last step at ``ts[-1]`` and interpolates outputs
    linearly). When ``bm`` is not given it gets a ``torchsde.BrownianInterval`` seeded from
    ``generator`` (or torch's global generator), or a :class:`GridBrownian` of ``dW``.

    Both paths agree to roundoff when fed the same increments (see :class:`GridBrownian`).

    Args:
        sde: object with ``f(t, y)``, ``g(t, y)`` and ``noise_type`` / ``sde_type`` attributes
            (see :class:`SDE`).
        y0: initial state ``(batch, d)``.
        ts: output times, strictly increasing.
        method: one of :data:`SDE_METHODS`; default ``"euler"`` for Itô and ``"heun"`` for
            Stratonovich SDEs.
        dt: (initial) step size.
        bm: a torchsde Brownian motion of shape ``(batch, m)``.
        noise_type, sde_type: override the attributes of ``sde``.
        adaptive, rtol, atol: torchsde's step-doubling adaptivity (fallback only).
        generator: random generator for the increments.
        dW: increments ``(n_steps, batch, m)`` on the grid ``ts[0] + k * dt``;
            ``ts[-1] - ts[0]`` must then be a multiple of ``dt``. Mutually exclusive with ``bm``.

    Returns:
        :class:`Solution` with ``ys`` of shape ``(len(ts), batch, d)``. ``stats.nfe_forward``
        counts drift evaluations and ``stats.nfe_diffusion`` diffusion evaluations (for
        additive/general noise without ``dW``/``bm``, plus one evaluation that reads the noise
        dimension ``m``). On the fallback they include the one ``f`` and one ``g`` call torchsde
        makes to check shapes; adaptive solves also report ``n_rejected``. Per fast-path step:
        euler and milstein 1 drift + 1 diffusion, heun 2 + 2, euler_heun 1 + 2.

    Raises:
        ValueError: invalid types/shapes/times/method, non-finite ``y0``, both ``bm`` and
            ``dW``, or ``dW`` with ``adaptive=True``.
    """
    noise_type = _resolve_type(noise_type, sde, "noise_type", _NOISE_TYPES)
    sde_type = _resolve_type(sde_type, sde, "sde_type", _SDE_TYPES)
    for name in ("f", "g"):
        if not callable(getattr(sde, name, None)):
            raise TypeError(f"sde must have a callable `{name}(t, y)`")
    check_state(y0, "y0")
    if y0.ndim != 2:
        raise ValueError(f"y0 must have shape (batch, d), got {tuple(y0.shape)}")
    ts = torch.as_tensor(ts, dtype=y0.dtype, device=y0.device)
    check_times(ts, "ts", increasing_only=True)
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be positive and finite, got {dt}")
    if method is None:
        method = _DEFAULT_METHOD[sde_type]
    if method not in SDE_METHODS:
        raise ValueError(f"unknown SDE method {method!r}; choose one of {list(SDE_METHODS)}")
    if adaptive:
        check_tolerances(rtol, atol)
    if dW is not None:
        if bm is not None:
            raise ValueError("pass either bm or dW, not both")
        if adaptive:
            raise ValueError(
                "dW fixes the Brownian path on the dt grid only; adaptive stepping needs a "
                "Brownian motion that can be refined (e.g. bm=torchsde.BrownianInterval(...))"
            )

    stats = SolverStats()
    steps = _grid_steps(ts, dt)
    if dW is not None:
        end = _grid_steps(ts[[0, -1]], dt)
        if end is None:
            raise ValueError(f"with dW, ts[-1] - ts[0] must be a multiple of dt={dt}")
        dW = _check_increments(dW, end[-1], y0, noise_type)
    scheme = _SCHEMES.get(method)
    fast = (
        scheme is not None
        and scheme.sde_type == sde_type
        and noise_type in scheme.noise_types
        and not adaptive
        and steps is not None
    )
    if fast and isinstance(bm, GridBrownian):
        dW = _grid_increments(bm, ts, dt, steps[-1], y0, noise_type)
        fast = dW is not None
    elif bm is not None:
        fast = False
    if fast:
        ys = _solve_on_grid(scheme, sde, noise_type, y0, ts, dt, steps, dW, generator, stats)
    else:
        if method == "milstein" and noise_type == "scalar" and y0.shape[1] > 1:
            raise ValueError(
                "Milstein with scalar noise and more than one state dimension runs only on the "
                "fast path (fixed steps, ts on the dt grid, no adaptive stepping): torchsde's "
                "milstein uses the transposed Jacobian of g there and is strong order 1/2"
            )
        if dW is not None:
            bm = GridBrownian(dW, float(ts[0]), dt)
        ys = _solve_with_torchsde(
            sde,
            noise_type,
            sde_type,
            y0,
            ts,
            method,
            dt,
            bm,
            adaptive,
            rtol,
            atol,
            generator,
            stats,
        )
    return Solution(ys, stats)


def _check_increments(
    dW: torch.Tensor, n_steps: int, y0: torch.Tensor, noise_type: str
) -> torch.Tensor:
    if not isinstance(dW, torch.Tensor) or dW.ndim != 3:
        raise ValueError("dW must be a tensor of shape (n_steps, batch, m)")
    batch, d = y0.shape
    m = {"diagonal": d, "scalar": 1}.get(noise_type, dW.shape[2])
    if tuple(dW.shape) != (n_steps, batch, m):
        raise ValueError(
            f"dW must have shape {(n_steps, batch, m)} for these ts and dt, got {tuple(dW.shape)}"
        )
    return dW.to(dtype=y0.dtype, device=y0.device)


def _grid_increments(
    bm: GridBrownian, ts: torch.Tensor, dt: float, n_steps: int, y0: torch.Tensor, noise_type: str
) -> torch.Tensor | None:
    """The first ``n_steps`` increments of ``bm`` if its grid is the solve's grid, else ``None``."""
    tol = _grid_tolerance(ts, dt)
    same_grid = abs(bm.t0 - float(ts[0])) <= tol and abs(bm.dt - dt) * n_steps <= tol
    if not same_grid or bm.n_steps < n_steps:
        return None
    return _check_increments(bm.increments[:n_steps], n_steps, y0, noise_type)


def _solve_on_grid(
    scheme_type: type[_GridScheme],
    sde: SDE,
    noise_type: str,
    y0: torch.Tensor,
    ts: torch.Tensor,
    dt: float,
    steps: list[int],
    dW: torch.Tensor | None,
    generator: torch.Generator | None,
    stats: SolverStats,
) -> torch.Tensor:
    n_steps = steps[-1]
    batch, d = y0.shape
    if dW is None:
        m = _noise_dim(sde, noise_type, ts[0], y0, stats)
        dW = torch.randn(n_steps, batch, m, generator=generator, dtype=y0.dtype, device=y0.device)
        dW.mul_(math.sqrt(dt))
    g_shape = (batch, d) if noise_type == "diagonal" else (batch, d, dW.shape[2])
    drift = ShapeCheckedOnce(sde.f, "sde.f(t, y)", lambda y: tuple(y.shape))
    diffusion = ShapeCheckedOnce(sde.g, "sde.g(t, y)", lambda y: g_shape)
    scheme = scheme_type(drift, diffusion, noise_type, dt, dW)
    times = (ts[0] + dt * torch.arange(n_steps + 1, dtype=ts.dtype, device=ts.device)).unbind(0)

    ys = [y0]
    y = y0
    for start, end in pairwise(steps):
        for k in range(start, end):
            y = scheme.step(k, times[k], times[k + 1], y)
        ys.append(y)
    stats.nfe_forward += scheme_type.drift_evals * n_steps
    stats.nfe_diffusion += scheme_type.diffusion_evals * n_steps
    stats.n_accepted = n_steps
    stats.step_sizes = torch.full((n_steps,), dt, dtype=torch.float64)
    return torch.stack(ys)


def _solve_with_torchsde(
    sde: SDE,
    noise_type: str,
    sde_type: str,
    y0: torch.Tensor,
    ts: torch.Tensor,
    method: str,
    dt: float,
    bm: torchsde.BaseBrownian | None,
    adaptive: bool,
    rtol: float,
    atol: float,
    generator: torch.Generator | None,
    stats: SolverStats,
) -> torch.Tensor:
    if bm is None:
        m = _noise_dim(sde, noise_type, ts[0], y0, stats)
        device = generator.device if generator is not None else None
        entropy = int(torch.randint(0, 2**31 - 1, (), generator=generator, device=device))
        bm = torchsde.BrownianInterval(
            t0=float(ts[0]),
            t1=float(ts[-1]),
            size=(y0.shape[0], m),
            dtype=y0.dtype,
            device=y0.device,
            entropy=entropy,
            levy_area_approximation=_LEVY_AREA.get(method, "none"),
        )
    recorder = _RecordingBrownian(bm)
    ys = torchsde.sdeint(
        _CountingSDE(sde, noise_type, sde_type, stats),
        y0,
        ts,
        bm=recorder,
        method=method,
        dt=dt,
        adaptive=adaptive,
        rtol=rtol,
        atol=atol,
    )
    _record_steps(recorder.queries, adaptive, stats)
    return ys


def _record_steps(queries: list, adaptive: bool, stats: SolverStats) -> None:
    """Accepted/rejected steps from torchsde's Brownian queries.

    Fixed stepping queries once per step. Step doubling queries three times per attempt: the
    full step ``(a, b)`` and its halves ``(a, mid)``, ``(mid, b)``; an attempt was rejected iff
    the next attempt starts from the same ``a`` (the last attempt is always accepted, since the
    loop ends only after accepting a step onto ``ts[-1]``).
    """
    intervals = torch.tensor([[float(a), float(b)] for a, b in queries], dtype=torch.float64)
    if adaptive:
        full = intervals[0::3]
        rejected = full[1:, 0] == full[:-1, 0]
        accepted = torch.cat([~rejected, torch.ones(1, dtype=torch.bool)])
        stats.n_rejected = int(rejected.sum())
        intervals = full[accepted]
    stats.n_accepted = len(intervals)
    stats.step_sizes = intervals[:, 1] - intervals[:, 0]
