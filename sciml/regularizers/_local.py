r"""Local regularization of neural ODEs (Pal, Edelman & Rackauckas, ICML 2023).

At one random time $t_1$ of the solve, take a single embedded Runge–Kutta step from the detached
state $z(t_1)$ and penalise the adaptive solver's own cost heuristics for that step. Minimising
them makes the learned dynamics cheap for the solver everywhere, at the price of one step per
training iteration, whatever the main solve's gradient method.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..solvers import TABLEAUS, ODESolverConfig, error_ratio, rk_step
from ._ode import AbstractODERegularizer, ODESolveRecord, VectorField

__all__ = ["LocalRegularizer", "initial_step_size"]

_KINDS = ("error", "stiffness")
_SAMPLINGS = ("unbiased", "biased")
_STEP_SIZES = ("solver", "heuristic")
_LOCAL_TABLEAUS = ("dopri5", "tsit5")


def _rms(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.mean(x**2))


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"LocalRegularizer: {name} must be one of {list(choices)}, got {value!r}")


def initial_step_size(
    func: VectorField,
    t0: torch.Tensor,
    y0: torch.Tensor,
    f0: torch.Tensor,
    *,
    order: int,
    rtol: float,
    atol: float,
) -> float:
    r"""The Hairer–Wanner starting step size (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4).

    With $\mathrm{sc} = \mathrm{atol} + \mathrm{rtol}\,|y_0|$, $d_0 = \|y_0/\mathrm{sc}\|$,
    $d_1 = \|f_0/\mathrm{sc}\|$ (RMS norms): $h_0 = 0.01\,d_0/d_1$ (or $10^{-6}$ if either is
    below $10^{-5}$); one Euler step gives
    $d_2 = \|(f(t_0 + h_0, y_0 + h_0 f_0) - f_0)/\mathrm{sc}\| / h_0$; then
    $h = \min(100 h_0, (0.01/\max(d_1, d_2))^{1/(p+1)})$ with ``order`` $= p$.
    This is the choice of the reference implementation (via OrdinaryDiffEq's ``init``) and of
    torchdiffeq's first step. Costs one evaluation of ``func`` besides ``f0``. Computed without
    gradients: the step size is a constant of the regularizer.
    """
    with torch.no_grad():
        scale = atol + rtol * y0.abs()
        d0, d1 = float(_rms(y0 / scale)), float(_rms(f0 / scale))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = func(t0 + h0, y0 + h0 * f0)
        d2 = float(_rms((f1 - f0) / scale)) / h0
        if max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)


class LocalRegularizer(AbstractODERegularizer):
    r"""One-step local error or stiffness penalty at a random time of the solve.

    Given the main solve on $[t_0, t_{\text{end}}]$, pick $(t_1, z(t_1), h)$:

    * ``sampling="unbiased"``: $t_1 \sim U(t_0, t_{\text{end}})$; $z(t_1)$ comes from the main
      solve's dense output ($t_1$ is added to its output times; no extra evaluations);
    * ``sampling="biased"``: $t_1$ is the start of one of the solver's accepted steps, chosen
      uniformly by reservoir sampling during the solve (O(1) memory). Steps are dense where the
      dynamics are costly, so these samples concentrate there.

    and take one step of the embedded pair ``tableau`` from $z = z(t_1)$ (detached) with stages
    $k_1..k_7$, stage states $Y_1..Y_7$ and $z_1 = Y_7$:

    * ``kind="error"``: $R_E = h\cdot\mathrm{EEst}$ with
      $\mathrm{EEst} = \mathrm{rms}\big(e / (\mathrm{atol} + \mathrm{rtol}\max(|z|, |z_1|))\big)$,
      $e = h \sum_j (b_j - \hat b_j) k_j$: the quantity the step-size controller compares with 1;
    * ``kind="stiffness"``: $R_S = \big(\mathrm{rms}(k_7 - k_6) / (\mathrm{rms}(z_1 - Y_6) +
      \varepsilon)\big) / x_{\text{stab}}$, Shampine's estimate of the dominant eigenvalue
      $|\lambda|$ over the size $x_{\text{stab}}$ of the pair's real stability interval (3.5068
      for Tsit5, 3.3066 for Dopri5).

    $z(t_1)$ and $h$ are constants, so gradients reach the parameters only through the stages and
    the main solve may use backprop or the adjoint. The mean in the RMS runs over all entries of
    the batched state, as in the solver's own norm: one $h$ and one scalar per batch.

    **Step size.** ``step_size="solver"`` (default) uses the step the solver actually took: the
    accepted step covering $t_1$ (unbiased) or the sampled step (biased, which makes the
    regularization step *the* solver's step when ``tableau`` matches ``dopri5``).
    ``step_size="heuristic"`` uses the Hairer–Wanner starting step at $(t_1, z(t_1))$
    (:func:`initial_step_size`), as the reference Julia code does. In a float32 pilot on the
    digits classifier (dopri5, tol 1e-6) the heuristic gave $h \approx 0.01$–$0.025$ against
    solver steps of about $0.1$; $R \approx 10^{-5}$ was mostly rounding noise and no weight in
    100–10000 cut the test NFE (ratios 0.9–1.9), while the solver's step gave 0.42–0.46x NFE at
    weight 1. ``benchmarks/local_regularization.py`` confirms it over three seeds (heuristic at
    weight 100: 1.00x NFE; solver step at weight 1: 0.42x; see ``docs/benchmarks.md``).

    **Cost.** ``tableau.n_stages`` (7) evaluations of ``f`` per call; one more with
    ``step_size="heuristic"``. The Monte-Carlo estimate is noisy; weigh it by ``weight`` (and
    optionally decay it to ``weight_final``).

    Args:
        kind: ``"error"`` or ``"stiffness"``.
        sampling: ``"unbiased"`` or ``"biased"``.
        step_size: ``"solver"`` or ``"heuristic"``.
        tableau: ``"dopri5"`` (default: the pair of sciml's default adaptive solver, so the
            estimate is the controller's own) or ``"tsit5"`` (the reference code's choice).
        weight: $\lambda_0$.
        weight_final: $\lambda_1$ of an exponential decay, or ``None``.
        eps: $\varepsilon$ of the stiffness quotient.
    """

    name = "local"

    def __init__(
        self,
        kind: Literal["error", "stiffness"] = "error",
        sampling: Literal["unbiased", "biased"] = "unbiased",
        step_size: Literal["solver", "heuristic"] = "solver",
        tableau: Literal["dopri5", "tsit5"] = "dopri5",
        weight: float = 1.0,
        weight_final: float | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(weight=weight, weight_final=weight_final)
        _check_choice("kind", kind, _KINDS)
        _check_choice("sampling", sampling, _SAMPLINGS)
        _check_choice("step_size", step_size, _STEP_SIZES)
        _check_choice("tableau", tableau, _LOCAL_TABLEAUS)
        self.kind = kind
        self.sampling = sampling
        self.step_size = step_size
        self.tableau = TABLEAUS[tableau]
        self.eps = eps
        self._reservoir: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._n_seen = 0
        #: ``(t1, z(t1), h)`` of the last evaluation (``h`` as used, so the heuristic's with
        #: ``step_size="heuristic"``), for inspection
        self.last_sample: tuple[torch.Tensor, torch.Tensor, float] | None = None

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, sampling={self.sampling!r}, step_size={self.step_size!r}, "
            f"weight={self.weight}, weight_final={self.weight_final}"
        )

    def begin(self, t: torch.Tensor, y0: torch.Tensor, solver: ODESolverConfig) -> torch.Tensor:
        self._reservoir, self._n_seen = None, 0
        if self.sampling == "biased":
            return t.new_zeros(0)
        if solver.steps_on_output_times:
            raise ValueError(
                f"LocalRegularizer(sampling='unbiased') adds a random output time, which with "
                f"{solver.method!r} and no step_size would become an extra step of the training "
                "solve: set solver.step_size, use an adaptive method, or sampling='biased'"
            )
        return t[:1] + (t[-1] - t[0]) * torch.rand(1, dtype=t.dtype, device=t.device)

    def on_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        if self.sampling != "biased":
            return
        # Reservoir of size one: keep the n-th step with probability 1/n, so each is kept with
        # probability 1/N after N steps.
        self._n_seen += 1
        if float(torch.rand(())) * self._n_seen < 1.0:
            self._reservoir = (t0.detach().clone(), y0.detach().clone(), float(dt.detach()))

    def sample(self, record: ODESolveRecord) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The sampled ``(t1, z(t1) (B, d) detached, solver step size h)`` of the last solve."""
        if self.sampling == "biased":
            if self._reservoir is None:
                raise ValueError(
                    "LocalRegularizer(sampling='biased') saw no accepted step; it needs an "
                    "adaptive solver method (e.g. dopri5)"
                )
            return self._reservoir
        t1, z1 = record.extra_t[0], record.extra_ys[0].detach()
        steps = record.stats.step_sizes
        if len(steps) == 0:
            raise ValueError("LocalRegularizer: the main solve reported no step sizes")
        ends = float(record.t[0]) + torch.cumsum(steps, 0)
        index = min(int(torch.searchsorted(ends, float(t1), right=True)), len(steps) - 1)
        return t1, z1, float(steps[index])

    def forward(self, record: ODESolveRecord) -> tuple[torch.Tensor, int]:
        t1, z, h = self.sample(record)
        solver = record.solver
        nfe = 0
        k1 = None
        if self.step_size == "heuristic":
            k1 = record.func(t1, z)
            h = initial_step_size(
                record.func,
                t1,
                z,
                k1.detach(),
                order=self.tableau.order - 1,
                rtol=solver.rtol,
                atol=solver.atol,
            )
            nfe += 2
        self.last_sample = (t1, z, h)
        step = rk_step(record.func, t1, z, h, tableau=self.tableau, k1=k1)
        nfe += self.tableau.n_stages - (k1 is not None)
        if self.kind == "error":
            ratio = error_ratio(step.y_error, z, step.y1, rtol=solver.rtol, atol=solver.atol)
            return h * ratio, nfe
        k, states = step.stages, step.stage_states
        spectral = _rms(k[-1] - k[-2]) / (_rms(states[-1] - states[-2]) + self.eps)
        return spectral / self.tableau.stability_size, nfe
