"""Speed of ``sciml.solvers`` against torchsde, torchdiffeq and a bare tensor loop.

Run ``PYTHONPATH=. python benchmarks/solvers.py [--quick]``. Everything runs in one process at one
thread; each case times forward + backward (``ys.sum().backward()``), interleaves the variants it
compares over repeated runs after a warm-up, and reports ratios of median times (seconds are
secondary data). Results go to ``benchmarks/results/solvers.json``.

To add a case, write a function ``case(repeats) -> dict`` returning ``{"metrics": {...},
"goals": [{"name", "value", "goal", "met"}, ...]}`` (build goals with :func:`goal`) and append it
to ``CASES``.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchdiffeq
import torchsde
from torch import nn

from sciml.solvers import GridBrownian, odeint, sdeint

from _report import machine, print_goals, write_json

RESULTS = Path(__file__).parent / "results" / "solvers.json"

BATCH, DIM, WIDTH = 128, 2, 64
DT, N_STEPS = 0.01, 100


def goal(name: str, value: float, op: str, target: float) -> dict:
    """Goal entry ``{"name", "value", "goal", "met"}``; ``op`` is ``">="``, ``"<="`` or ``"<"``."""
    met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
    return {"name": name, "value": value, "goal": f"{op} {target:g}", "met": bool(met)}


def median_times(
    variants: dict[str, Callable[[], None]], repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median wall time of each variant; runs are interleaved so drifts in machine load hit all."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


class DiagonalSDE(nn.Module):
    """Itô SDE with an MLP drift (2 -> 64 -> 64 -> 2, tanh) and diagonal diffusion
    ``softplus(a * y + b)`` (learnable ``a``, ``b``; ``g_i`` depends on ``y_i`` only)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self) -> None:
        super().__init__()
        self.drift = nn.Sequential(
            nn.Linear(DIM, WIDTH),
            nn.Tanh(),
            nn.Linear(WIDTH, WIDTH),
            nn.Tanh(),
            nn.Linear(WIDTH, DIM),
        )
        self.a = nn.Parameter(0.1 * torch.ones(DIM))
        self.b = nn.Parameter(-1.0 * torch.ones(DIM))

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.a * y + self.b)


def bare_euler_maruyama(
    sde: DiagonalSDE, y0: torch.Tensor, ts: torch.Tensor, dt: float
) -> torch.Tensor:
    """The limit: a hand-written Euler–Maruyama loop, outputs every ``len(ts) - 1``-th step."""
    n_steps = round(float(ts[-1] - ts[0]) / dt)
    every = n_steps // (len(ts) - 1)
    dW = torch.randn(n_steps, *y0.shape, dtype=y0.dtype) * math.sqrt(dt)
    t = ts[0]
    y, ys = y0, [y0]
    for k in range(n_steps):
        y = y + sde.f(t, y) * dt + sde.g(t, y) * dW[k]
        t = t + dt
        if (k + 1) % every == 0:
            ys.append(y)
    return torch.stack(ys)


def _backward(ys: torch.Tensor, module: nn.Module) -> None:
    module.zero_grad(set_to_none=True)
    ys.sum().backward()


def case_sdeint(repeats: int) -> dict:
    """sdeint fast path vs torchsde (default Brownian / identical increments) vs a bare loop."""
    torch.manual_seed(0)
    sde = DiagonalSDE()
    y0 = torch.randn(BATCH, DIM)
    ts = torch.linspace(0.0, N_STEPS * DT, 11)
    dW = torch.randn(N_STEPS, BATCH, DIM) * math.sqrt(DT)
    grid_bm = GridBrownian(dW, 0.0, DT)

    def run_sciml() -> None:
        _backward(sdeint(sde, y0, ts, method="euler", dt=DT).ys, sde)

    def run_sciml_dw() -> None:
        _backward(sdeint(sde, y0, ts, method="euler", dt=DT, dW=dW).ys, sde)

    def run_torchsde() -> None:
        _backward(torchsde.sdeint(sde, y0, ts, method="euler", dt=DT), sde)

    def run_torchsde_grid() -> None:
        _backward(torchsde.sdeint(sde, y0, ts, method="euler", dt=DT, bm=grid_bm), sde)

    def run_bare() -> None:
        _backward(bare_euler_maruyama(sde, y0, ts, DT), sde)

    times = median_times(
        {
            "sciml": run_sciml,
            "sciml_dW": run_sciml_dw,
            "torchsde": run_torchsde,
            "torchsde_grid": run_torchsde_grid,
            "bare": run_bare,
        },
        repeats,
    )
    # Agreement with torchsde on identical increments, in float64.
    sde64 = DiagonalSDE().double()
    y64, dW64 = y0.double(), dW.double()
    ts64 = torch.linspace(0.0, N_STEPS * DT, 11, dtype=torch.float64)
    with torch.no_grad():
        ours = sdeint(sde64, y64, ts64, method="euler", dt=DT, dW=dW64).ys
        theirs = torchsde.sdeint(
            sde64, y64, ts64, method="euler", dt=DT, bm=GridBrownian(dW64, 0.0, DT)
        )
    max_diff = float((ours - theirs).abs().max())

    speedup_default = times["torchsde"] / times["sciml"]
    speedup_grid = times["torchsde_grid"] / times["sciml_dW"]
    ratio_bare = times["sciml"] / times["bare"]
    return {
        "metrics": {
            "setup": f"euler, {N_STEPS} steps dt={DT}, batch {BATCH}x{DIM}, "
            f"MLP {DIM}-{WIDTH}-{WIDTH}-{DIM} drift, diagonal softplus diffusion, float32, "
            "forward+backward",
            "seconds": times,
            "speedup_vs_torchsde_default": speedup_default,
            "speedup_vs_torchsde_same_increments": speedup_grid,
            # What a hand-written loop gains over torchsde on the same increments: the ceiling for
            # any per-step Python loop, since model evaluation dominates both.
            "speedup_of_bare_loop_vs_torchsde_same_increments": times["torchsde_grid"]
            / times["bare"],
            "ratio_sciml_over_bare_loop": ratio_bare,
            "max_abs_diff_float64_vs_torchsde": max_diff,
        },
        "goals": [
            goal(
                "sdeint speedup vs torchsde.sdeint (default BrownianInterval)",
                speedup_default,
                ">=",
                10,
            ),
            goal(
                "sdeint speedup vs torchsde.sdeint (same increments, GridBrownian)",
                speedup_grid,
                ">=",
                1.5,
            ),
            goal("sdeint time / bare Euler-Maruyama loop", ratio_bare, "<=", 1.2),
            goal("max |sdeint - torchsde.sdeint| (float64, same increments)", max_diff, "<", 1e-10),
        ],
    }


class MLPField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(DIM, WIDTH),
            nn.Tanh(),
            nn.Linear(WIDTH, WIDTH),
            nn.Tanh(),
            nn.Linear(WIDTH, DIM),
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


def case_odeint(repeats: int) -> dict:
    """sciml odeint vs raw torchdiffeq.odeint (dopri5) on the same MLP field."""
    torch.manual_seed(0)
    field = MLPField()
    y0 = torch.randn(BATCH, DIM)
    t = torch.linspace(0.0, 1.0, 20)
    tolerances = {"rtol": 1e-5, "atol": 1e-7}

    def run_sciml() -> None:
        _backward(odeint(field, y0, t, method="dopri5", **tolerances).ys, field)

    def run_torchdiffeq() -> None:
        _backward(torchdiffeq.odeint(field, y0, t, method="dopri5", **tolerances), field)

    # Each run is short, so take more samples for a stable median.
    times = median_times({"sciml": run_sciml, "torchdiffeq": run_torchdiffeq}, 5 * repeats)
    stats = odeint(field, y0, t, method="dopri5", **tolerances).stats
    ratio = times["sciml"] / times["torchdiffeq"]
    return {
        "metrics": {
            "setup": "dopri5 rtol=1e-5 atol=1e-7, t in [0, 1] with 20 outputs, "
            f"batch {BATCH}x{DIM}, MLP {DIM}-{WIDTH}-{WIDTH}-{DIM} field, float32, "
            "forward+backward",
            "seconds": times,
            "ratio_sciml_over_torchdiffeq": ratio,
            "stats": stats.as_dict(),
        },
        "goals": [goal("odeint time / torchdiffeq.odeint", ratio, "<=", 1.05)],
    }


def case_training_epoch(repeats: int) -> dict:
    """One NeuralODE epoch through the Lightning Trainer vs a hand-written loop, same batches."""
    import copy
    import warnings

    import pytorch_lightning as pl

    from sciml.data import TrajectoryDataModule
    from sciml.models import NeuralODE
    from sciml.solvers import ODESolverConfig

    data = TrajectoryDataModule(
        "lotka_volterra",
        n_trajectories=48,
        t_span=(0.0, 4.0),
        n_times=41,
        segment_length=11,
        batch_size=64,
        seed=0,
    )
    data.setup("fit")
    torch.manual_seed(0)
    template = NeuralODE(
        state_dim=2, hidden_dims=[64, 64], solver=ODESolverConfig(rtol=1e-5, atol=1e-6)
    )

    def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["y"]
        return torch.mean((model(y[:, 0], batch["t"][0] - batch["t"][0, 0]) - y) ** 2)

    class MinimalModule(pl.LightningModule):
        """The least a Lightning user writes for this model: loss and optimizer, nothing else."""

        def __init__(self, model: nn.Module, log_loss: bool) -> None:
            super().__init__()
            self.model, self.log_loss = model, log_loss

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = loss_of(self.model, batch)
            if self.log_loss:
                self.log("train/loss", loss.detach(), prog_bar=True, on_epoch=True, batch_size=64)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    def fit(module: pl.LightningModule) -> None:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            inference_mode=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, data)

    def run_lightning() -> None:
        fit(copy.deepcopy(template))

    def run_minimal_module() -> None:
        fit(MinimalModule(copy.deepcopy(template), log_loss=False))

    def run_minimal_module_logging() -> None:
        fit(MinimalModule(copy.deepcopy(template), log_loss=True))

    def run_hand_written() -> None:
        model = copy.deepcopy(template)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for batch in data.train_dataloader():
            loss = loss_of(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    logging_level = logging.getLogger("pytorch_lightning").level
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    try:
        times = median_times(
            {
                "lightning": run_lightning,
                "minimal_lightning_module": run_minimal_module,
                "minimal_lightning_module_logging_loss": run_minimal_module_logging,
                "hand_written": run_hand_written,
            },
            max(3, repeats // 4),
            warmup=1,
        )
    finally:
        logging.getLogger("pytorch_lightning").setLevel(logging_level)
    ratio = times["lightning"] / times["hand_written"]
    print("NeuralODE epoch, time / hand-written loop:")
    for name, seconds in times.items():
        print(f"  {name:<40} {seconds / times['hand_written']:.3f}")
    return {
        "metrics": {
            "setup": "NeuralODE 2-64-64-2 tanh, dopri5 rtol=1e-5 atol=1e-6, Lotka-Volterra windows "
            f"({len(data.splits['train'])} samples, batch 64), Adam; "
            "one epoch incl. Trainer set-up",
            "seconds": times,
            "ratio_lightning_over_hand_written": ratio,
            # References for where the overhead comes from: the same model in the least
            # LightningModule a user writes, without and with the usual per-step loss log.
            "ratio_over_hand_written": {
                name: seconds / times["hand_written"] for name, seconds in times.items()
            },
        },
        "goals": [
            goal("NeuralODE epoch: Lightning Trainer / hand-written loop", ratio, "<=", 1.15)
        ],
    }


CASES: list[Callable[[int], dict]] = [case_sdeint, case_odeint, case_training_epoch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 41

    results = {}
    goals = []
    for case in CASES:
        out = case(repeats)
        results[case.__name__.removeprefix("case_")] = out["metrics"]
        goals.extend(out["goals"])

    report = {
        "machine": machine(torchdiffeq=torchdiffeq.__version__, torchsde=torchsde.__version__),
        "repeats": repeats,
        "goals": goals,
        "cases": results,
    }
    print_goals(goals)
    write_json(RESULTS, report)


if __name__ == "__main__":
    main()
