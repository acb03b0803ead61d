"""Meta-learned Hamiltonian GNN vs pretrained and from-scratch initialisations on unseen physics.

For each held-out system type in turn (leave-one-type-out, as in Song & Jeong, ICLR 2024), one
graph-network Hamiltonian is meta-trained with MAML on the other types and one is pretrained
(multi-task regression) on the same tasks for the same number of outer steps. On held-out tasks
each initialisation (plus fresh random ones: "scratch") is adapted with the same plain SGD on the
task's support set (K points) for k = 0, 1, 5, 10 steps; we report the median over tasks of the
query derivative MSE and, after 10 steps, of the RK4 rollout's relative trajectory error and
mean relative true-energy error. One process, fixed seeds, one thread.

    .venv/bin/python benchmarks/meta_hamiltonian.py --quick      # smoke run, ~1-2 min
    .venv/bin/python benchmarks/meta_hamiltonian.py              # CPU-sized run, ~15 min

Paper-sized run (5000 outer steps, 10 tasks per meta-batch, 50 points, larger pools; GPU if
available):

    python benchmarks/meta_hamiltonian.py --outer-steps 5000 --tasks-per-batch 10 \\
        --train-tasks 10000 --test-tasks 100 --scratch-inits 5 --hidden 128 --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from sciml.data import HamiltonianMetaDataModule
from sciml.models import MetaHamiltonian, OptimizerConfig

RESULTS = Path(__file__).parent / "results" / "meta_hamiltonian.json"
POOL = (
    "mass_spring",
    "pendulum",
    "duffing",
    "morse",
    "henon_heiles",
    "magnetic_mirror",
    "coupled_springs",
    "two_body",
)
HELD_OUT = ("morse", "henon_heiles", "coupled_springs")
STEPS = (0, 1, 5, 10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT), choices=POOL)
    parser.add_argument("--outer-steps", type=int, default=300)
    parser.add_argument("--tasks-per-batch", type=int, default=8)
    parser.add_argument("--train-tasks", type=int, default=320)
    parser.add_argument("--test-tasks", type=int, default=20)
    parser.add_argument("--support", type=int, default=50)
    parser.add_argument("--trajectories", type=int, default=4, help="per task (half support)")
    parser.add_argument("--scratch-inits", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--inner-lr", type=float, default=0.05)
    parser.add_argument("--outer-lr", type=float, default=3e-3)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--relative-loss", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.outer_steps, args.train_tasks, args.test_tasks, args.scratch_inits = 40, 48, 6, 1
    return args


def make_model(args: argparse.Namespace, mode: str, seed: int) -> MetaHamiltonian:
    torch.manual_seed(seed)
    return MetaHamiltonian(
        node_dim=4,
        hidden_dims=(args.hidden, args.hidden),
        message_dim=args.hidden // 2,
        mode=mode,
        inner_lr=args.inner_lr,
        inner_steps=args.inner_steps,
        first_order=args.first_order,
        relative_loss=args.relative_loss,
        eval_steps=STEPS,
        rollout_step_size=0.1,
        optimizer=OptimizerConfig(lr=args.outer_lr),
    )


def fit(model: MetaHamiltonian, data: HamiltonianMetaDataModule, args) -> float:
    trainer = pl.Trainer(
        max_steps=args.outer_steps,
        max_epochs=-1,
        accelerator=args.device,
        devices=1,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    return time.perf_counter() - start


def evaluate(model: MetaHamiltonian, data: HamiltonianMetaDataModule) -> list[dict[str, float]]:
    """Per-task metrics: derivative MSE at every k, rollout errors at the largest k."""
    tasks = data.splits["test"]
    results = []
    for i in range(len(tasks)):
        task = {k: v.to(model.device) for k, v in tasks[i].items()}
        system = data.systems[int(task["system"])]
        results.append(
            model.adapt_and_evaluate(task, steps=STEPS, rollout_steps=[STEPS[-1]], system=system)
        )
    return results


def run_held_out(held_out: str, args: argparse.Namespace) -> dict:
    data = HamiltonianMetaDataModule(
        train_systems=[s for s in POOL if s != held_out],
        test_systems=[held_out],
        support_size=args.support,
        query_size=50,
        n_trajectories=args.trajectories,
        n_train_tasks=args.train_tasks,
        n_val_tasks=1,
        n_test_tasks=args.test_tasks,
        max_bodies=2,
        body_dim=2,
        batch_size=args.tasks_per_batch,
        seed=args.seed,
    )
    start = time.perf_counter()
    data.setup()
    generation = time.perf_counter() - start
    arms: dict[str, list[dict[str, float]]] = {}
    seconds = {}
    for mode in ("maml", "pretrained"):
        model = make_model(args, mode, args.seed)
        seconds[mode] = fit(model, data, args)
        arms["meta" if mode == "maml" else mode] = evaluate(model, data)
    # From scratch: several fresh initialisations per task, averaged per task.
    scratch = [
        evaluate(make_model(args, "scratch", 1000 + j), data) for j in range(args.scratch_inits)
    ]
    arms["scratch"] = [
        {k: float(np.mean([run[i][k] for run in scratch])) for k in scratch[0][i]}
        for i in range(len(scratch[0]))
    ]
    # A diverged adaptation (non-finite error) is counted and left out of the median.
    summary = {
        arm: {k: float(np.nanmedian([m[k] for m in per_task])) for k in per_task[0]}
        for arm, per_task in arms.items()
    }
    nonfinite = {
        arm: sum(not all(np.isfinite(list(m.values()))) for m in per_task)
        for arm, per_task in arms.items()
    }
    return {
        "held_out": held_out,
        "train_systems": [s for s in POOL if s != held_out],
        "seconds": {"data": generation, **{f"fit_{k}": v for k, v in seconds.items()}},
        "median": summary,
        "nonfinite_tasks": nonfinite,
    }


def goals_for(result: dict) -> list[dict]:
    med, name = result["median"], result["held_out"]
    meta, pre, scratch = med["meta"], med["pretrained"], med["scratch"]
    k = f"deriv_mse_k{STEPS[-1]}"
    curve = [meta[f"deriv_mse_k{s}"] for s in STEPS]
    decreasing = all(b < a for a, b in itertools.pairwise(curve))
    return [
        {
            "name": f"{name}: meta / scratch derivative MSE at k=10",
            "value": meta[k] / scratch[k],
            "goal": "<= 0.5",
            "met": meta[k] / scratch[k] <= 0.5,
        },
        {
            "name": f"{name}: meta / pretrained derivative MSE at k=10",
            "value": meta[k] / pre[k],
            "goal": "<= 0.9",
            "met": meta[k] / pre[k] <= 0.9,
        },
        {
            "name": f"{name}: meta derivative MSE decreasing in k (0, 1, 5, 10)",
            "value": curve,
            "goal": "strictly decreasing",
            "met": decreasing,
        },
    ]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(args.seed, verbose=False)
    start = time.perf_counter()
    results = []
    for held_out in args.held_out:
        result = run_held_out(held_out, args)
        results.append(result)
        med = result["median"]
        print(f"\nheld out: {held_out}   (seconds: {result['seconds']})")
        header = "arm         " + "".join(f"  mse_k{s:<6}" for s in STEPS)
        print(header + "  traj_err_k10  energy_err_k10")
        for arm, values in med.items():
            row = "".join(f"  {values[f'deriv_mse_k{s}']:<10.4g}" for s in STEPS)
            print(
                f"{arm:<12}{row}  {values['traj_rel_err_k10']:<12.4g}"
                f"  {values['energy_err_k10']:.4g}"
            )
    goals = [goal for result in results for goal in goals_for(result)]
    for goal in goals:
        print(f"[{'met' if goal['met'] else 'NOT met'}] {goal['name']}: {goal['value']}")
    report = {
        "benchmark": "meta_hamiltonian",
        "mode": "quick" if args.quick else "cpu",
        "settings": dict(vars(args).items()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
        "seconds_total": time.perf_counter() - start,
        "results": results,
        "goals": goals,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS} in {report['seconds_total']:.0f} s")


if __name__ == "__main__":
    main()
