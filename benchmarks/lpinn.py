"""Lagrangian PINNs against the Eulerian PINN on convection-dominated PDEs (issue #4).

Run ``PYTHONPATH=. python benchmarks/lpinn.py [--quick]``. Everything runs in one process at one
thread with fixed seeds, through the same Lightning ``Trainer`` path as ``sciml fit``. Errors are
``test/rel_l2`` = ||u - u_ref|| / ||u_ref - mean(u_ref)|| on the 256 x 100 grid (x without the
endpoint); the LPINN also reports the error on its particles. Cases:

1. convection u_t + beta u_x = 0, beta = 30 and 50, u0 = sin x: PINN (4 x 50 tanh, 1000 random
   collocation points, Adam then L-BFGS) against LPINN;
2. convection-diffusion, beta = 50, nu = 0.01: LPINN with the chain-rule u_xx and the
   frozen-velocity characteristic prior (also without the prior, and with the label-space u_xx);
3. Burgers, nu = 0.02, T = 0.8, u0 = sin x: LPINN with the chain-rule u_xx, and the label-space
   shortcut of the paper's code for comparison;
4. wall times, and the PINN variants (causal weighting, speed curriculum, seq2seq) on beta = 30
   with the same Adam + L-BFGS budget.

``--quick`` cuts every budget by 5 (the goals are then not expected to be met).
Results go to ``benchmarks/results/lpinn.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from sciml.data import ConvectionDiffusion1D, ConvectionDiffusionDataModule
from sciml.models import PINN, LagrangianPINN, NonFiniteLossError

from _report import machine, print_goals, write_json
from _training import quiet_trainer

RESULTS = Path(__file__).parent / "results" / "lpinn.json"

LPINN_BUDGET = {"adam_steps": 1500, "lbfgs_iterations": 500}
PINN_BUDGET = {"adam_steps": 2000, "lbfgs_iterations": 2000}


def goal(name: str, value: float, op: str, target: float) -> dict:
    """Goal entry ``{"name", "value", "goal", "met"}``; ``op`` is ``"<"``, ``">"`` or ``"<="``."""
    met = {"<": value < target, ">": value > target, "<=": value <= target}[op]
    return {"name": name, "value": value, "goal": f"{op} {target:g}", "met": bool(met)}


def train(model: pl.LightningModule, data: ConvectionDiffusionDataModule) -> dict:
    """Fit until the model stops itself, then test; returns metrics and wall times."""
    pl.seed_everything(0, verbose=False)
    trainer = quiet_trainer(
        max_epochs=-1,
        inference_mode=False,
        check_val_every_n_epoch=10**6,
    )
    start = time.perf_counter()
    try:
        trainer.fit(model, data)
    except NonFiniteLossError as error:  # reported as a failed case, never hidden
        return {
            "rel_l2": float("nan"),
            "rel_l2_particles": None,
            "fit_seconds": time.perf_counter() - start,
            "lbfgs_iterations": model._schedule.lbfgs_iterations,
            "lbfgs_evaluations": model._schedule.lbfgs_evaluations,
            "error": str(error).split(". ")[0],
        }
    fit_seconds = time.perf_counter() - start
    metrics = trainer.test(model, data, verbose=False)[0]
    return {
        "rel_l2": metrics["test/rel_l2"],
        "rel_l2_particles": metrics.get("test/rel_l2_particles"),
        "fit_seconds": fit_seconds,
        "lbfgs_iterations": model._schedule.lbfgs_iterations,
        "lbfgs_evaluations": model._schedule.lbfgs_evaluations,
    }


def run_lpinn(problem: ConvectionDiffusion1D, scale: float, **options) -> dict:
    torch.manual_seed(0)
    model = LagrangianPINN(
        problem,
        adam_steps=int(LPINN_BUDGET["adam_steps"] * scale),
        lbfgs={"max_iter": int(LPINN_BUDGET["lbfgs_iterations"] * scale)},
        **options,
    )
    return train(model, ConvectionDiffusionDataModule(problem, n_x=64, n_t=50))


def run_pinn(problem: ConvectionDiffusion1D, scale: float, **options) -> dict:
    torch.manual_seed(0)
    model = PINN(
        problem,
        adam_steps=int(PINN_BUDGET["adam_steps"] * scale),
        lbfgs={
            "max_iter": int(PINN_BUDGET["lbfgs_iterations"] * scale),
            "iterations_per_step": 100,
        },
        **options,
    )
    data = ConvectionDiffusionDataModule(problem, sampling="random", n_collocation=1000)
    return train(model, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets / 5 (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    scale = 0.2 if args.quick else 1.0

    cases: dict[str, dict] = {}
    goals: list[dict] = []

    def record(name: str, result: dict) -> dict:
        cases[name] = result
        print(
            f"{name:<40} rel_l2 {result['rel_l2']:.3e}  fit {result['fit_seconds']:6.1f} s  "
            f"L-BFGS iterations {result['lbfgs_iterations']}",
            flush=True,
        )
        return result

    for beta in (30, 50):
        problem = ConvectionDiffusion1D(velocity=str(beta))
        pinn = record(f"pinn/convection_beta{beta}", run_pinn(problem, scale))
        lpinn = record(f"lpinn/convection_beta{beta}", run_lpinn(problem, scale))
        goals.append(goal(f"PINN convection beta={beta} rel_l2 (fails)", pinn["rel_l2"], ">", 0.3))
        goals.append(goal(f"LPINN convection beta={beta} rel_l2", lpinn["rel_l2"], "<", 1e-2))

    # Chain-rule u_xx with the frozen-velocity characteristic built into X (as in the YAML); the
    # plain ansatz X = xi + beta t N_x (J wrong by O(beta) at initialisation, so the 1/J of the
    # chain rule blows up) and the label-space u_xx (exact here, J = 1) are recorded too.
    problem = ConvectionDiffusion1D(velocity="50", nu=0.01)
    lpinn = record(
        "lpinn/convection_diffusion_beta50",
        run_lpinn(problem, scale, characteristic_prior="frozen_velocity"),
    )
    record("lpinn/convection_diffusion_beta50_plain_ansatz", run_lpinn(problem, scale))
    record(
        "lpinn/convection_diffusion_beta50_label_space",
        run_lpinn(problem, scale, diffusion="label_space"),
    )
    goals.append(
        goal("LPINN conv-diff beta=50 nu=0.01 rel_l2 (chain rule)", lpinn["rel_l2"], "<", 1e-2)
    )

    problem = ConvectionDiffusion1D(velocity="u", nu=0.02, t_final=0.8)
    chain = record("lpinn/burgers_chain_rule", run_lpinn(problem, scale))
    shortcut = record(
        "lpinn/burgers_label_space", run_lpinn(problem, scale, diffusion="label_space")
    )
    goals.append(
        goal("LPINN Burgers nu=0.02 T=0.8 rel_l2 (chain rule)", chain["rel_l2"], "<", 1e-2)
    )
    print(f"label-space shortcut on Burgers: rel_l2 {shortcut['rel_l2']:.3e} (model floor 2.1e-2)")

    problem = ConvectionDiffusion1D(velocity="30")
    for name, options in (
        ("causal", {"causal_epsilon": 1.0}),
        ("curriculum", {"curriculum_stages": 3}),
        ("seq2seq", {"time_windows": 5}),
    ):
        record(f"pinn_{name}/convection_beta30", run_pinn(problem, scale, **options))

    for name, result in cases.items():
        if name.startswith("lpinn/"):
            goals.append(goal(f"{name} fit wall time [s]", result["fit_seconds"], "<=", 120))

    report = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(
            pytorch_lightning=pl.__version__,
            note="2 CPU cores shared with other jobs; wall times are noisy",
        ),
        "budgets": {"lpinn": LPINN_BUDGET, "pinn": PINN_BUDGET, "scale": scale},
        "metric": "||u - u_ref||_2 / ||u_ref - mean(u_ref)||_2 on 256 x 100 (x without endpoint)",
        "goals": goals,
        "cases": cases,
    }
    print_goals(goals)
    write_json(RESULTS, report)  # a case stopped by a non-finite loss is written as null


if __name__ == "__main__":
    main()
