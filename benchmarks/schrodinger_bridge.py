"""SBIRR (multi-marginal Schrödinger bridges with iterative reference refinement) benchmark.

Runs in one process, one thread, fixed seeds:

* **OU** (2-D damped rotation, ``A = [[-0.2, -1], [1, -0.2]]``, sigma 0.3, t = 0..4, n = 500):
  (a) relative Frobenius error of the drift matrix after refinement vs after one iteration (the fit
  from Brownian-reference bridges); (b) leave-one-out at t = 1, 2, 3: exact W2 of the predicted
  marginal against the held-out snapshot, for SBIRR, the piecewise Brownian-reference bridge and
  McCann interpolation of exact OT, next to the sampling floor (W2 between two true samples).
* **Lotka–Volterra** with the nonlinear (IPF, neural drifts) back-end: train on t = 0, 2, 4, 6, 8,
  predict t = 1, 3, 5, 7; same baselines, parameter error, wall time.

``--quick`` uses n = 300, one seed and smaller IPF settings. Results go to
``benchmarks/results/schrodinger_bridge.json`` with a ``goals`` list.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import ot
import torch

from sciml.data import SnapshotDataModule
from sciml.metrics import relative_frobenius_error, sampling_floor, wasserstein2
from sciml.models import SBIRRConfig, SchrodingerBridge

from _report import machine, write_json

RESULTS = Path(__file__).parent / "results" / "schrodinger_bridge.json"


def goal(name: str, value: float, op: str, target: float) -> dict:
    """Goal entry ``{"name", "value", "goal", "met"}``."""
    met = {"<=": value <= target, ">=": value >= target}[op]
    return {"name": name, "value": float(value), "goal": f"{op} {target:.4g}", "met": bool(met)}


def mccann(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Displacement interpolation ``(1 - s) x + s y`` of pairs drawn from the exact OT plan."""
    a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    plan = ot.emd(a, b, torch.cdist(x, y).square())
    generator = torch.Generator().manual_seed(seed)
    partners = torch.multinomial(plan, 1, generator=generator).squeeze(1)
    return (1 - fraction) * x + fraction * y[partners]


def split(data: SnapshotDataModule):
    batch = data.generate()
    times = batch["t"][0].tolist()
    samples = [batch["x"][0, k][batch["mask"][0, k]] for k in range(len(times))]
    held = batch["held_out"][0].tolist()
    train = [(t, s) for t, s, h in zip(times, samples, held, strict=True) if not h]
    test = [(t, s) for t, s, h in zip(times, samples, held, strict=True) if h]
    return [t for t, _ in train], [s for _, s in train], test


def interpolation_scores(model, data, times, snapshots, held, n, seed) -> dict:
    """W2 of the current model, McCann and the floor at each held-out time."""
    rows = []
    for t, truth in held:
        k = int(np.searchsorted(times, t)) - 1
        fraction = (t - times[k]) / (times[k + 1] - times[k])
        rows.append(
            {
                "t": t,
                "model": wasserstein2(model.marginal(t), truth),
                "mccann": wasserstein2(
                    mccann(snapshots[k], snapshots[k + 1], fraction, seed), truth
                ),
                "floor": sampling_floor(
                    lambda m, g, t=t: data.sample_marginal(t, m, g), n, repeats=2, seed=seed
                ),
            }
        )
    return rows


def ou_seed(seed: int, n: int, held_times: list[float], iterations: int) -> dict:
    truth = SnapshotDataModule("rotation_ou").true_drift().A.detach()
    data = SnapshotDataModule("rotation_ou", n_per_snapshot=n, seed=seed)
    times, snapshots, _ = split(data)
    config = SBIRRConfig(max_iterations=iterations, tol=0.0, seed=seed)
    model = SchrodingerBridge(state_dim=2, sigma=0.3, config=config)
    start = time.perf_counter()
    model.set_snapshots(times, snapshots)
    errors = []
    for _ in range(iterations):
        model.refine()
        errors.append(relative_frobenius_error(model.drift.A.detach(), truth))
    fit_seconds = time.perf_counter() - start
    loo = []
    for t in held_times:
        data = SnapshotDataModule("rotation_ou", n_per_snapshot=n, seed=seed, held_out=[t])
        times, snapshots, held = split(data)
        model = SchrodingerBridge(state_dim=2, sigma=0.3, config=config)
        model.set_snapshots(times, snapshots)
        brownian = wasserstein2(model.marginal(t), held[0][1])
        start = time.perf_counter()
        model.fit_snapshots(times, snapshots)
        seconds = time.perf_counter() - start
        (row,) = interpolation_scores(model, data, times, snapshots, held, n, seed)
        row.update(brownian=brownian, seconds=seconds)
        row["param_rel_error"] = relative_frobenius_error(model.drift.A.detach(), truth)
        loo.append(row)
    return {"seed": seed, "rel_error_by_iteration": errors, "fit_seconds": fit_seconds, "loo": loo}


def lv_seed(seed: int, n: int, config: SBIRRConfig) -> dict:
    held_times = [1.0, 3.0, 5.0, 7.0]
    data = SnapshotDataModule("lotka_volterra", n_per_snapshot=n, seed=seed, held_out=held_times)
    truth = data.true_drift().parameter_vector()
    times, snapshots, held = split(data)
    model = SchrodingerBridge(state_dim=2, sigma=0.1, family="lotka_volterra", config=config)
    start = time.perf_counter()
    model.set_snapshots(times, snapshots)
    # Version 0 is the Brownian reference: its bridges are the piecewise Brownian SB baseline
    # (and the first outer iteration reuses them).
    brownian = [wasserstein2(model.marginal(t), truth_t) for t, truth_t in held]
    history = model.fit_snapshots(times, snapshots)
    seconds = time.perf_counter() - start
    rows = interpolation_scores(model, data, times, snapshots, held, n, seed)
    for row, value in zip(rows, brownian, strict=True):
        row["brownian"] = value
    errors = [relative_frobenius_error(torch.tensor(r["theta"]), truth) for r in history]
    return {
        "seed": seed,
        "rel_error_by_iteration": errors,
        "theta": history[-1]["theta"],
        "iterations": len(history),
        "seconds": seconds,
        "loo": rows,
    }


def mean(values) -> float:
    return float(np.mean(list(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 300, one seed, small IPF")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    n_ou = 300 if args.quick else 500
    n_lv = 100 if args.quick else 200
    lv_config = SBIRRConfig(
        max_iterations=4 if args.quick else 8,
        tol=0.01,
        step=0.1,
        refit="adam",
        refit_steps=300,
        ipf_iterations=3 if args.quick else 4,
        ipf_fit_steps=150 if args.quick else 200,
        ipf_hidden_dims=(32, 32) if args.quick else (64, 64),
        ipf_batch_size=512,
        ipf_lr=3e-3,
    )

    ou = [ou_seed(seed, n_ou, [1.0, 2.0, 3.0], iterations=8) for seed in seeds]
    for run in ou:
        print(
            f"OU seed {run['seed']}: relF by iteration {np.round(run['rel_error_by_iteration'], 3)}"
        )
        for row in run["loo"]:
            print(
                f"  t={row['t']:.0f}: W2 sbirr {row['model']:.3f} brownian {row['brownian']:.3f} "
                f"mccann {row['mccann']:.3f} floor {row['floor']:.3f} ({row['seconds']:.1f} s)"
            )
    lv = []
    for seed in seeds:
        run = lv_seed(seed, n_lv, lv_config)
        lv.append(run)
        print(
            f"LV seed {seed}: relF {np.round(run['rel_error_by_iteration'], 3)} "
            f"({run['seconds']:.0f} s)"
        )
        for row in run["loo"]:
            print(
                f"  t={row['t']:.0f}: W2 sbirr {row['model']:.3f} brownian {row['brownian']:.3f} "
                f"mccann {row['mccann']:.3f} floor {row['floor']:.3f}"
            )

    def table(runs):
        rows = [row for run in runs for row in run["loo"]]
        return {key: mean(r[key] for r in rows) for key in ("model", "brownian", "mccann", "floor")}

    ou_table, lv_table = table(ou), table(lv)
    rel_final = mean(run["rel_error_by_iteration"][-1] for run in ou)
    rel_first = mean(run["rel_error_by_iteration"][0] for run in ou)
    goals = [
        goal("ou_rel_frobenius_error_final", rel_final, "<=", 0.10),
        goal("ou_rel_frobenius_final_over_first_iteration", rel_final / rel_first, "<=", 0.5),
        goal("ou_w2_heldout_minus_floor", ou_table["model"] - ou_table["floor"], "<=", 0.1),
        goal("ou_w2_over_brownian_bridge", ou_table["model"] / ou_table["brownian"], "<=", 0.5),
        goal("ou_w2_over_mccann", ou_table["model"] / ou_table["mccann"], "<=", 0.5),
        goal("lv_w2_heldout_minus_floor", lv_table["model"] - lv_table["floor"], "<=", 0.1),
        goal("lv_w2_over_brownian_bridge", lv_table["model"] / lv_table["brownian"], "<=", 0.5),
        goal("lv_w2_over_mccann", lv_table["model"] / lv_table["mccann"], "<=", 0.5),
    ]
    summary = {
        "ou": {
            "n": n_ou,
            "rel_frobenius_first_iteration": rel_first,
            "rel_frobenius_final": rel_final,
            "fit_seconds_per_seed": mean(run["fit_seconds"] for run in ou),
            "loo_seconds_per_fit": mean(r["seconds"] for run in ou for r in run["loo"]),
            "w2": ou_table,
        },
        "lotka_volterra": {
            "n": n_lv,
            "rel_error_first_iteration": mean(run["rel_error_by_iteration"][0] for run in lv),
            "rel_error_final": mean(run["rel_error_by_iteration"][-1] for run in lv),
            "seconds_per_seed": mean(run["seconds"] for run in lv),
            "w2": lv_table,
        },
    }
    print(json.dumps(summary, indent=2))
    for entry in goals:
        print(
            f"{'met' if entry['met'] else 'NOT met'}: {entry['name']} = "
            f"{entry['value']:.4f} ({entry['goal']})"
        )
    result = {
        "benchmark": "schrodinger_bridge",
        "mode": "quick" if args.quick else "full",
        "seeds": seeds,
        "machine": machine(pot=ot.__version__),
        "lv_config": dict(vars(lv_config)),
        "summary": summary,
        "ou_runs": ou,
        "lv_runs": lv,
        "goals": goals,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
