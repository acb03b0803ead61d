"""sdeint: agreement with torchsde on identical increments, strong orders, stats, validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchsde
from torch import nn

from sciml.solvers import SDE_METHODS, GridBrownian, SDESolverConfig, sdeint

torch.set_num_threads(1)
DTYPE = torch.float64
BATCH, DIM, M = 6, 3, 2


class ToySDE(nn.Module):
    """Nonlinear time-dependent SDE of any noise type, counting its drift and diffusion calls.

    Diagonal noise has ``g_i`` depending on ``y_i`` only, as the Milstein scheme assumes.
    """

    def __init__(self, noise_type: str, sde_type: str) -> None:
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.A = nn.Parameter(0.4 * torch.randn(DIM, DIM, dtype=DTYPE))
        self.B = nn.Parameter(0.4 * torch.randn(DIM, DIM * M, dtype=DTYPE))
        self.C = nn.Parameter(0.4 * torch.randn(DIM, M, dtype=DTYPE))
        self.s = nn.Parameter(torch.full((DIM,), 0.3, dtype=DTYPE))
        self.f_calls = self.g_calls = 0

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.f_calls += 1
        return torch.tanh(y @ self.A) - 0.5 * y + torch.sin(t)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.g_calls += 1
        if self.noise_type == "diagonal":
            return self.s * torch.cos(y) + 0.2 + 0.1 * t
        if self.noise_type == "additive":
            return (self.C + t).expand(y.shape[0], DIM, M)
        if self.noise_type == "scalar":
            return (self.s * torch.cos(y)).unsqueeze(-1)
        return torch.sin(y @ self.B).view(y.shape[0], DIM, M)


def noise_dim(noise_type: str) -> int:
    return {"diagonal": DIM, "scalar": 1}.get(noise_type, M)


CASES = [
    ("euler", "ito", "diagonal"),
    ("euler", "ito", "general"),
    ("euler", "ito", "scalar"),
    ("euler", "ito", "additive"),
    ("milstein", "ito", "diagonal"),
    ("milstein", "ito", "scalar"),
    ("milstein", "ito", "additive"),
    ("heun", "stratonovich", "diagonal"),
    ("heun", "stratonovich", "general"),
    ("euler_heun", "stratonovich", "diagonal"),
    ("euler_heun", "stratonovich", "general"),
]
PER_STEP = {"euler": (1, 1), "milstein": (1, 1), "heun": (2, 2), "euler_heun": (1, 2)}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _grads(module: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    module.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(("method", "sde_type", "noise_type"), CASES)
def test_fast_path_matches_torchsde(method: str, sde_type: str, noise_type: str) -> None:
    sde = ToySDE(noise_type, sde_type)
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE, requires_grad=True)
    dt, n_steps = 1 / 64, 64
    ts = torch.linspace(0.0, 1.0, 5, dtype=DTYPE)
    dW = math.sqrt(dt) * torch.randn(n_steps, BATCH, noise_dim(noise_type), dtype=DTYPE)

    ys, stats = sdeint(sde, y0, ts, method=method, dt=dt, dW=dW)
    assert ys.shape == (5, BATCH, DIM)
    drift_per_step, diffusion_per_step = PER_STEP[method]
    assert stats.nfe_forward == sde.f_calls == drift_per_step * n_steps
    assert stats.nfe_diffusion == sde.g_calls == diffusion_per_step * n_steps
    assert stats.n_accepted == n_steps and torch.allclose(
        stats.step_sizes, torch.full((n_steps,), dt, dtype=DTYPE)
    )
    (ys**2).sum().backward()
    ours = [*_grads(sde), y0.grad.clone()]
    y0.grad = None

    reference = torchsde.sdeint(sde, y0, ts, bm=GridBrownian(dW, 0.0, dt), method=method, dt=dt)
    assert float((ys - reference).detach().abs().max()) < 1e-10
    (reference**2).sum().backward()
    theirs = [*_grads(sde), y0.grad.clone()]
    assert len(ours) == len(theirs) >= 2
    for a, b in zip(ours, theirs, strict=True):
        assert float((a - b).abs().max()) < 1e-10


def test_fast_path_with_dt_not_a_power_of_two() -> None:
    """torchsde accumulates t += dt; GridBrownian snaps its roundoff back onto the grid."""
    sde = ToySDE("diagonal", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    ts = torch.linspace(0.0, 1.0, 11, dtype=DTYPE)
    dW = 0.1 * torch.randn(100, BATCH, DIM, dtype=DTYPE)
    with torch.no_grad():
        ys, _ = sdeint(sde, y0, ts, method="euler", dt=0.01, dW=dW)
        reference = torchsde.sdeint(
            sde, y0, ts, bm=GridBrownian(dW, 0.0, 0.01), method="euler", dt=0.01
        )
    assert float((ys - reference).abs().max()) < 1e-10


def test_grid_brownian_bm_uses_fast_path() -> None:
    sde = ToySDE("diagonal", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    ts = torch.linspace(0.0, 0.5, 3, dtype=DTYPE)
    dW = 0.1 * torch.randn(40, BATCH, DIM, dtype=DTYPE)  # longer than needed
    with torch.no_grad():
        ys, stats = sdeint(sde, y0, ts, dt=1 / 32, bm=GridBrownian(dW, 0.0, 1 / 32))
        expected, _ = sdeint(sde, y0, ts, dt=1 / 32, dW=dW[:16])
    assert torch.equal(ys, expected)
    assert stats.nfe_forward == sde.f_calls // 2 == 16  # no torchsde shape-check call


def test_generator_reproducibility_and_defaults() -> None:
    sde = ToySDE("diagonal", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    ts = torch.linspace(0.0, 1.0, 3, dtype=DTYPE)
    with torch.no_grad():
        a, _ = sdeint(sde, y0, ts, dt=0.125, generator=torch.Generator().manual_seed(5))
        b, _ = sdeint(sde, y0, ts, dt=0.125, generator=torch.Generator().manual_seed(5))
        c, _ = sdeint(sde, y0, ts, dt=0.125, generator=torch.Generator().manual_seed(6))
        # The increments are sqrt(dt) * randn(n_steps, batch, m) from the generator.
        dW = math.sqrt(0.125) * torch.randn(
            8, BATCH, DIM, generator=torch.Generator().manual_seed(5), dtype=DTYPE
        )
        d, _ = sdeint(sde, y0, ts, dt=0.125, dW=dW)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a, d, atol=1e-14)


def test_general_noise_probe_is_counted() -> None:
    sde = ToySDE("general", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    with torch.no_grad():
        _, stats = sdeint(sde, y0, [0.0, 0.5], dt=0.125)
    assert stats.nfe_forward == sde.f_calls == 4
    assert stats.nfe_diffusion == sde.g_calls == 4 + 1


@pytest.mark.parametrize(
    ("kwargs", "ts"),
    [
        ({"method": "srk", "dt": 0.05}, [0.0, 0.5, 1.0]),
        ({"method": "euler", "dt": 0.05}, [0.0, 0.33, 1.0]),  # off-grid output
        (
            {"method": "milstein", "dt": 0.05, "adaptive": True, "rtol": 1e-3, "atol": 1e-3},
            [0.0, 1.0],
        ),
    ],
)
def test_fallback_matches_torchsde_and_counts(kwargs: dict, ts: list[float]) -> None:
    sde = ToySDE("diagonal", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    levy = "space-time" if kwargs["method"] == "srk" else "none"

    def brownian() -> torchsde.BrownianInterval:
        return torchsde.BrownianInterval(
            t0=0.0, t1=1.0, size=(BATCH, DIM), dtype=DTYPE, entropy=3, levy_area_approximation=levy
        )

    with torch.no_grad():
        ys, stats = sdeint(sde, y0, ts, bm=brownian(), **kwargs)
        assert stats.nfe_forward == sde.f_calls and stats.nfe_diffusion == sde.g_calls
        reference = torchsde.sdeint(sde, y0, torch.tensor(ts, dtype=DTYPE), bm=brownian(), **kwargs)
    assert torch.equal(ys, reference)
    assert math.isclose(float(stats.step_sizes.sum()), 1.0, abs_tol=1e-12)
    assert len(stats.step_sizes) == stats.n_accepted
    if kwargs.get("adaptive"):
        assert stats.n_rejected > 0
        # One shape-check call, then three steps (full + two halves) per attempt.
        assert stats.nfe_forward == 1 + 3 * (stats.n_accepted + stats.n_rejected)
    elif kwargs["method"] == "euler":
        assert stats.n_accepted == 20 and stats.nfe_forward == 1 + 20


def test_fallback_without_bm_is_seeded() -> None:
    sde = ToySDE("diagonal", "ito")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    with torch.no_grad():
        a, _ = sdeint(sde, y0, [0.0, 0.33, 1.0], dt=0.1, generator=torch.Generator().manual_seed(1))
        b, _ = sdeint(sde, y0, [0.0, 0.33, 1.0], dt=0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_stratonovich_milstein_falls_back() -> None:
    sde = ToySDE("diagonal", "stratonovich")
    y0 = torch.randn(BATCH, DIM, dtype=DTYPE)
    dW = 0.1 * torch.randn(8, BATCH, DIM, dtype=DTYPE)
    with torch.no_grad():
        ys, stats = sdeint(sde, y0, [0.0, 1.0], method="milstein", dt=0.125, dW=dW)
        reference = torchsde.sdeint(
            sde,
            y0,
            torch.tensor([0.0, 1.0], dtype=DTYPE),
            bm=GridBrownian(dW, 0.0, 0.125),
            method="milstein",
            dt=0.125,
        )
    assert torch.equal(ys, reference)
    assert stats.n_accepted == 8 and stats.nfe_forward == 8 + 1


class GBM:
    """Geometric Brownian motion dX = mu X dt + sigma X dW (Itô), X_T = X_0 exp((mu - sigma^2/2) T + sigma W_T)."""

    noise_type = "diagonal"
    sde_type = "ito"
    mu, sigma = 2.0, 1.0

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mu * y

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sigma * y


@pytest.mark.parametrize(("method", "order"), [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_on_gbm(method: str, order: float) -> None:
    sde = GBM()
    n_paths, finest = 2000, 2**9
    generator = torch.Generator().manual_seed(42)
    dW_fine = torch.randn(finest, n_paths, 1, generator=generator, dtype=DTYPE) / math.sqrt(finest)
    y0 = torch.ones(n_paths, 1, dtype=DTYPE)
    exact = torch.exp((sde.mu - 0.5 * sde.sigma**2) + sde.sigma * dW_fine.sum(0))
    hs, errors = [], []
    for n_steps in (2**4, 2**5, 2**6, 2**7, 2**8):
        dW = dW_fine.view(n_steps, finest // n_steps, n_paths, 1).sum(1)  # same Brownian path
        with torch.no_grad():
            ys, _ = sdeint(sde, y0, [0.0, 1.0], method=method, dt=1 / n_steps, dW=dW)
        hs.append(1 / n_steps)
        errors.append(float((ys[-1] - exact).abs().mean()))
    slope = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
    assert abs(slope - order) < 0.15, slope


class LinearScalarNoise:
    """dY = B Y dW with one Brownian motion and a non-symmetric B (Itô), so that
    Y_T = exp(B W_T - B^2 T / 2) Y_0. Milstein's correction is (dg/dy) g = B^2 Y, while the
    transposed Jacobian gives B^T B Y: only the former is strong order 1."""

    noise_type = "scalar"
    sde_type = "ito"
    B = torch.tensor([[0.3, 0.8], [0.0, 0.3]], dtype=DTYPE)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.B.T).unsqueeze(-1)


@pytest.mark.parametrize(("method", "order"), [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_with_scalar_noise_and_a_non_symmetric_jacobian(method, order) -> None:
    sde = LinearScalarNoise()
    n_paths, finest = 2000, 2**9
    generator = torch.Generator().manual_seed(7)
    dW_fine = torch.randn(finest, n_paths, 1, generator=generator, dtype=DTYPE) / math.sqrt(finest)
    y0 = torch.tensor([[1.0, 1.0]], dtype=DTYPE).expand(n_paths, 2)
    exponent = dW_fine.sum(0)[:, :, None] * sde.B - 0.5 * sde.B @ sde.B
    exact = (torch.linalg.matrix_exp(exponent) @ y0[:, :, None]).squeeze(-1)
    hs, errors = [], []
    for n_steps in (2**4, 2**5, 2**6, 2**7):
        dW = dW_fine.view(n_steps, finest // n_steps, n_paths, 1).sum(1)
        with torch.no_grad():
            ys, _ = sdeint(sde, y0, [0.0, 1.0], method=method, dt=1 / n_steps, dW=dW)
        hs.append(1 / n_steps)
        errors.append(float((ys[-1] - exact).norm(dim=-1).mean()))
    slope = float(np.polyfit(np.log(hs), np.log(errors), 1)[0])
    assert abs(slope - order) < 0.15, (slope, errors)
    if method == "milstein":
        # torchsde's milstein would be wrong here, so the fallback refuses instead of using it
        with pytest.raises(ValueError, match="transposed Jacobian"):
            sdeint(sde, y0[:4], [0.0, 0.3], method="milstein", dt=0.25)


def test_grid_brownian_queries() -> None:
    dW = torch.randn(10, 4, 2, dtype=DTYPE)
    bm = GridBrownian(dW, t0=1.0, dt=0.1)
    assert bm.shape == (4, 2) and bm.dtype == DTYPE and bm.levy_area_approximation == "none"
    assert bm.n_steps == 10 and math.isclose(bm.t1, 2.0)
    assert torch.equal(bm(1.3, 1.4), dW[3])
    assert torch.equal(
        bm(torch.tensor(1.3 + 1e-9, dtype=DTYPE), torch.tensor(1.4, dtype=DTYPE)), dW[3]
    )
    assert torch.allclose(bm(1.2, 1.5), dW[2:5].sum(0))
    assert torch.equal(bm(1.5, 1.5), torch.zeros(4, 2, dtype=DTYPE))
    assert torch.allclose(bm(1.0), torch.zeros(4, 2, dtype=DTYPE)) and torch.allclose(
        bm(2.0), dW.sum(0)
    )
    # Off-grid: piecewise-linear path.
    assert torch.allclose(bm(1.35, 1.45), 0.5 * dW[3] + 0.5 * dW[4])
    assert torch.allclose(bm(1.0, 1.25) + bm(1.25, 2.0), dW.sum(0))
    with pytest.raises(ValueError, match="outside the Brownian grid"):
        bm(0.5, 1.2)
    with pytest.raises(ValueError, match="ta <= tb"):
        bm(1.5, 1.2)
    with pytest.raises(ValueError, match="Lévy area"):
        bm(1.0, 1.1, return_U=True)
    assert "GridBrownian" in repr(bm)
    with pytest.raises(ValueError, match="dt > 0"):
        GridBrownian(dW, 0.0, 0.0)


def _sde_args() -> tuple[ToySDE, torch.Tensor]:
    return ToySDE("diagonal", "ito"), torch.randn(BATCH, DIM, dtype=DTYPE)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "rk4"}, ValueError, "unknown SDE method 'rk4'.*'euler'.*'log_ode'"),
        ({"ts": [0.0, 1.0, 0.5]}, ValueError, "strictly increasing"),
        ({"ts": [1.0, 0.0]}, ValueError, "strictly increasing"),
        ({"dt": 0.0}, ValueError, "dt must be positive"),
        ({"dt": math.inf}, ValueError, "dt must be positive"),
        ({"y0": torch.ones(DIM, dtype=DTYPE)}, ValueError, r"shape \(batch, d\)"),
        ({"y0": torch.full((2, DIM), math.nan, dtype=DTYPE)}, ValueError, "non-finite"),
        ({"noise_type": "colored"}, ValueError, "noise_type must be one of"),
        ({"sde_type": "backward"}, ValueError, "sde_type must be one of"),
        (
            {"dW": torch.zeros(3, BATCH, DIM, dtype=DTYPE)},
            ValueError,
            r"dW must have shape \(8, 6, 3\)",
        ),
        (
            {
                "dW": torch.zeros(8, BATCH, DIM, dtype=DTYPE),
                "bm": GridBrownian(torch.zeros(8, BATCH, DIM), 0.0, 0.125),
            },
            ValueError,
            "either bm or dW",
        ),
        ({"dW": torch.zeros(8, BATCH, DIM, dtype=DTYPE), "adaptive": True}, ValueError, "adaptive"),
        (
            {"dW": torch.zeros(8, BATCH, DIM, dtype=DTYPE), "ts": [0.0, 0.99]},
            ValueError,
            "multiple of dt",
        ),
    ],
)
def test_validation(kwargs: dict, error: type, match: str) -> None:
    sde, y0 = _sde_args()
    args = {"y0": y0, "ts": [0.0, 1.0], "dt": 0.125, **kwargs}
    with pytest.raises(error, match=match):
        sdeint(sde, args.pop("y0"), args.pop("ts"), **args)
    assert sde.f_calls == sde.g_calls == 0


def test_output_shape_checks() -> None:
    sde, y0 = _sde_args()
    with pytest.raises(
        ValueError, match=r"sde.g\(t, y\) returned shape \(6, 3\), expected \(6, 3, 2\)"
    ):
        sdeint(
            sde,
            y0,
            [0.0, 1.0],
            dt=0.125,
            noise_type="general",
            dW=torch.zeros(8, BATCH, 2, dtype=DTYPE),
        )
    with pytest.raises(ValueError, match=r"sde.f\(t, y\) returned shape"):
        sdeint(
            type(
                "Bad",
                (),
                {
                    "noise_type": "diagonal",
                    "sde_type": "ito",
                    "f": lambda self, t, y: y[:, :1],
                    "g": lambda self, t, y: y,
                },
            )(),
            y0,
            [0.0, 1.0],
            dt=0.125,
        )
    with pytest.raises(TypeError, match="callable `g"):
        sdeint(
            type(
                "NoG", (), {"noise_type": "diagonal", "sde_type": "ito", "f": lambda self, t, y: y}
            )(),
            y0,
            [0.0, 1.0],
            dt=0.125,
        )


def test_sde_methods_are_torchsde_methods() -> None:
    from torchsde.settings import METHODS

    assert set(SDE_METHODS) <= set(METHODS.all())


def test_sde_config_round_trip_and_solve() -> None:
    config = SDESolverConfig(method="milstein", dt=0.125)
    assert SDESolverConfig(**dataclasses.asdict(config)) == config
    assert SDESolverConfig() == SDESolverConfig(**dataclasses.asdict(SDESolverConfig()))
    sde, y0 = _sde_args()
    with torch.no_grad():
        ys, stats = config.solve(
            sde,
            y0,
            torch.tensor([0.0, 1.0], dtype=DTYPE),
            generator=torch.Generator().manual_seed(0),
        )
    assert ys.shape == (2, BATCH, DIM) and stats.n_accepted == 8
    for bad, match in [
        ({"method": "rk4"}, "unknown SDE method"),
        ({"dt": -1.0}, "dt"),
        ({"rtol": 0}, "rtol"),
    ]:
        with pytest.raises(ValueError, match=match):
            SDESolverConfig(**bad)
