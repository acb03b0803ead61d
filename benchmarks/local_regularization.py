"""Local regularization (Pal, Edelman & Rackauckas, ICML 2023) against no and global regularization.

Run ``PYTHONPATH=. python benchmarks/local_regularization.py [--quick]``. One process, one thread,
fixed seeds. The task is the paper's MNIST neural-ODE experiment at laptop scale: scikit-learn's
8x8 digits (:class:`sciml.data.DigitsDataModule`, 1438 train / 359 test images), the
:class:`sciml.models.ODEClassifier` (vector field Linear(64+1 -> 100) tanh Linear(100+1 -> 64)
with the time fed to both layers, ODE on [0, 1], linear head), dopri5 at rtol = atol = 1e-6,
Adam 1e-3, batch 128, 600 steps. Training calls the module's own ``compute_loss`` (what
``sciml fit`` runs) in a plain loop so the NFE of every step can be recorded.

Arms: none; local (error estimate, solver step size) with unbiased and biased sampling and with
the adjoint, at the weight given by ``--local-weight``/``--local-weight-final`` (default constant
1) or chosen by ``--select-weight``; RNODE kinetic + Jacobian (weights 0.01 each, Finlay et al.'s
FFJORD values); the reference-faithful local variant with the initial-step heuristic (weight 100,
report only). Plus a neural-SDE arm (see :func:`sde_arm`).

Metrics per run: test NFE (one forward solve of all test images, no regularization), test
accuracy and cross-entropy, prediction wall time (median of repeated test solves) and training
wall time. Across seeds: medians; ratios against ``none`` are taken between medians.
``--select-weight`` first picks the local weight from :data:`SELECTION_GRID` on a validation split
carved out of the training data (rule: :data:`SELECTION_RULE`; the test split is never used for
it) and then runs every arm with it; the JSON records the grid, the rule and the choice under
``"weight_selection"``. The published results come from
``PYTHONPATH=. python benchmarks/local_regularization.py --select-weight``.
``--quick`` runs seed 0 for 300 steps with the arms none and local-unbiased only and marks the
JSON ``"mode": "quick"``. Results: ``benchmarks/results/local_regularization.json`` and
``local_regularization.png`` (training NFE over steps per arm).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torchdiffeq
import torchsde
from torch import nn

from sciml.data import DigitsDataModule, TrajectoryDataModule
from sciml.models import NeuralSDE, ODEClassifier
from sciml.regularizers import (
    AbstractRegularizer,
    JacobianFrobeniusRegularizer,
    KineticEnergyRegularizer,
    LocalRegularizer,
    LocalSDERegularizer,
)
from sciml.solvers import ODESolverConfig, SDESolverConfig

from _report import machine, write_json

RESULTS = Path(__file__).parent / "results"
TOL = 1e-6


def goal(name: str, value: float, op: str, target: float) -> dict:
    """Goal entry ``{"name", "value", "goal", "met"}``; ``op`` is ``">="``, ``"<="`` or ``"<"``."""
    met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
    return {"name": name, "value": value, "goal": f"{op} {target:g}", "met": bool(met)}


LocalWeight = tuple[float, float | None]  # (weight, weight_final or None for a constant weight)
DEFAULT_LOCAL_WEIGHT: LocalWeight = (1.0, None)
# Candidate local-regularizer weights for ``--select-weight`` (the decay is the paper's schedule).
SELECTION_GRID: dict[str, LocalWeight] = {
    "1.0": (1.0, None),
    "0.5": (0.5, None),
    "1.0->0.3": (1.0, 0.3),
}
SELECTION_RULE = (
    "seed 0, 600 steps, validation split (10% of all images, carved out of the training data; "
    "test split unchanged): among the candidates whose validation-accuracy drop against 'none' is "
    "<= 1 point, the one with the lowest validation NFE (ties: higher validation accuracy); if "
    "none qualifies, the one with the smallest accuracy drop"
)
LOCAL_ARMS = ("local_unbiased", "local_biased", "local_adjoint")


def arm_regularizers(arm: str, local: LocalWeight) -> tuple[list[AbstractRegularizer], bool]:
    """(regularizers, adjoint) of ``arm``; ``local`` is the weight of the three main local arms."""
    weight, weight_final = local
    return {
        "none": ([], False),
        "local_unbiased": (
            [LocalRegularizer(sampling="unbiased", weight=weight, weight_final=weight_final)],
            False,
        ),
        "local_biased": (
            [LocalRegularizer(sampling="biased", weight=weight, weight_final=weight_final)],
            False,
        ),
        "rnode": (
            [KineticEnergyRegularizer(weight=0.01), JacobianFrobeniusRegularizer(weight=0.01)],
            False,
        ),
        "local_adjoint": (
            [LocalRegularizer(sampling="unbiased", weight=weight, weight_final=weight_final)],
            True,
        ),
        "local_heuristic_h": ([LocalRegularizer(step_size="heuristic", weight=100.0)], False),
    }[arm]


ARMS = ("none", "local_unbiased", "local_biased", "rnode", "local_adjoint", "local_heuristic_h")


class SteppedODEClassifier(ODEClassifier):
    """:class:`ODEClassifier` whose step counter is set by the plain training loop below, so a
    decaying regularizer weight follows the same schedule as under a Lightning trainer."""

    def __init__(self, run_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_steps = run_steps
        self.step = 0

    @property
    def global_step(self) -> int:
        return self.step

    def total_steps(self) -> int:
        return self.run_steps


QUICK_ARMS = ("none", "local_unbiased")


def train_classifier(
    arm: str,
    seed: int,
    steps: int,
    local: LocalWeight = DEFAULT_LOCAL_WEIGHT,
    evaluate: str = "test",
) -> dict:
    """Train one arm from ``seed`` for ``steps`` steps; return its metrics and NFE history.

    ``evaluate="val"`` holds 10% of all images out of the training data as a validation split and
    reports the metrics on it (weight selection); the test split is the same either way.
    """
    regularizers, adjoint = arm_regularizers(arm, local)
    val_fraction = 0.1 if evaluate == "val" else 0.0
    data = DigitsDataModule(test_fraction=0.2, val_fraction=val_fraction, seed=1234, batch_size=128)
    data.setup()
    torch.manual_seed(seed)
    model = SteppedODEClassifier(
        run_steps=steps,
        solver=ODESolverConfig(method="dopri5", rtol=TOL, atol=TOL, adjoint=adjoint),
        regularizers=regularizers,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history: dict[str, list[float]] = {"nfe": [], "nfe_reg": [], "nfe_backward": [], "reg": []}
    step, epoch = 0, 0
    start = time.perf_counter()
    while step < steps:
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            model.step = step
            loss, terms = model.compute_loss(batch, "train")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{arm} seed {seed}: non-finite loss at step {step}")
            history["nfe"].append(float(terms["nfe"]))
            history["nfe_reg"].append(float(terms.get("nfe_reg", 0.0)))
            history["nfe_backward"].append(float(model.last_stats.nfe_backward))
            history["reg"].append(float(terms.get("reg", 0.0)))
            step += 1
            if step >= steps:
                break
        epoch += 1
    train_time = time.perf_counter() - start
    test = data.splits[evaluate].tensors
    with torch.no_grad():
        logits = model(test["x"])
        nfe = model.last_stats.nfe_forward
        times = []
        for _ in range(5):
            tic = time.perf_counter()
            model(test["x"])
            times.append(time.perf_counter() - tic)
    return {
        "arm": arm,
        "seed": seed,
        "steps": steps,
        "test_nfe": nfe,
        "test_acc": float((logits.argmax(-1) == test["y"]).float().mean()),
        "test_ce": float(nn.functional.cross_entropy(logits, test["y"])),
        "predict_time_s": statistics.median(times),
        "train_time_s": train_time,
        "final_train_nfe": history["nfe"][-1],
        "mean_train_nfe_reg": statistics.fmean(history["nfe_reg"]),
        "mean_train_nfe_backward": statistics.fmean(history["nfe_backward"]),
        "history": history,
    }


SDE_WEIGHT = 100.0


def sde_arm(regularized: bool, seed: int, steps: int) -> dict:
    """Neural SDE on the stochastic oscillator, trained by transition likelihood.

    Evaluation simulates the test initial states with torchsde's adaptive Milstein
    (step doubling, rtol = atol = 1e-2, initial dt 0.05); its drift + diffusion evaluations are
    the cost measure. The regularized arm adds ``LocalSDERegularizer(weight=100)`` at the same
    dt and tolerances.
    """
    data = TrajectoryDataModule(
        system="stochastic_oscillator", n_trajectories=128, n_times=101, batch_size=32, seed=0
    )
    data.setup()
    torch.manual_seed(seed)
    solver = SDESolverConfig(method="milstein", dt=0.05, adaptive=True, rtol=1e-2, atol=1e-2)
    model = NeuralSDE(
        state_dim=2,
        hidden_dims=(64, 64),
        solver=solver,
        regularizers=[LocalSDERegularizer(weight=SDE_WEIGHT)] if regularized else [],
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    step, epoch = 0, 0
    start = time.perf_counter()
    while step < steps:
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            loss, _ = model.compute_loss(batch, "train")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    train_time = time.perf_counter() - start
    test = data.splits["test"].tensors
    y, t = test["y"], test["t"].to(test["y"].dtype)
    with torch.no_grad():
        nll = float(model.transition_nll(t, y))
        tic = time.perf_counter()
        model(y[:, 0], t[0], generator=torch.Generator().manual_seed(seed))
        predict_time = time.perf_counter() - tic
    stats = model.last_stats
    return {
        "arm": "sde_local" if regularized else "sde_none",
        "seed": seed,
        "test_nll": nll,
        "test_nfe": stats.nfe_forward + stats.nfe_diffusion,
        "nfe_drift": stats.nfe_forward,
        "nfe_diffusion": stats.nfe_diffusion,
        "predict_time_s": predict_time,
        "train_time_s": train_time,
    }


def sde_goals(runs: list[dict]) -> tuple[dict, list[dict]]:
    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["arm"] == arm)

    summary = {
        arm: {k: median(arm, k) for k in ("test_nll", "test_nfe", "nfe_drift", "nfe_diffusion")}
        for arm in ("sde_none", "sde_local")
    }
    ratio = summary["sde_local"]["test_nfe"] / summary["sde_none"]["test_nfe"]
    nll_increase = summary["sde_local"]["test_nll"] - summary["sde_none"]["test_nll"]
    return summary, [
        goal("neural SDE local: adaptive-solve NFE (drift + diffusion) / none", ratio, "<", 1.0),
        goal("neural SDE local: test transition NLL increase (nats)", nll_increase, "<=", 0.1),
    ]


def summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Median of every scalar metric per arm."""
    keys = ("test_nfe", "test_acc", "test_ce", "predict_time_s", "train_time_s")
    keys += ("final_train_nfe", "mean_train_nfe_reg", "mean_train_nfe_backward")
    arms = dict.fromkeys(r["arm"] for r in runs)
    return {
        arm: {k: statistics.median(r[k] for r in runs if r["arm"] == arm) for k in keys}
        for arm in arms
    }


def classifier_goals(summary: dict[str, dict[str, float]], quick: bool) -> list[dict]:
    base = summary["none"]
    goals = []
    for arm in ("local_unbiased", "local_biased", "local_adjoint"):
        if arm not in summary:
            continue
        s = summary[arm]
        nfe_limit = 0.75 if quick else 0.70
        goals += [
            goal(f"{arm}: test NFE / none", s["test_nfe"] / base["test_nfe"], "<=", nfe_limit),
            goal(
                f"{arm}: test accuracy drop vs none (points)",
                100 * (base["test_acc"] - s["test_acc"]),
                "<=",
                3.0 if quick else 2.0,
            ),
            goal(
                f"{arm}: test cross-entropy / none",
                s["test_ce"] / base["test_ce"],
                "<=",
                1.5 if quick else 1.35,
            ),
            goal(
                f"{arm}: prediction speed-up vs none (wall time)",
                base["predict_time_s"] / s["predict_time_s"],
                ">=",
                1.3,
            ),
        ]
    goals.append(goal("none: test NFE (task needs >= 7 dopri5 steps)", base["test_nfe"], ">=", 44))
    return goals


def median_histories(runs: list[dict]) -> dict[str, list[float]]:
    """Per arm, the median over seeds of the forward NFE at every training step."""
    return {
        arm: torch.tensor([r["history"]["nfe"] for r in runs if r["arm"] == arm])
        .median(dim=0)
        .values.tolist()
        for arm in dict.fromkeys(r["arm"] for r in runs)
    }


def plot(histories: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    window = 20
    for arm, history in histories.items():
        smooth = torch.nn.functional.avg_pool1d(torch.tensor(history)[None, None], window, 1)
        ax.plot(torch.arange(smooth.numel()) + window // 2, smooth.flatten(), label=arm)
    ax.set_xlabel("training step")
    ax.set_ylabel("forward NFE per batch")
    ax.set_title("Digits neural-ODE classifier, dopri5 tol 1e-6\n(median over seeds, 20-step mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def select_local_weight(steps: int) -> dict:
    """Choose the local weight on the validation split by :data:`SELECTION_RULE`.

    Trains ``none`` and the local-unbiased arm with every :data:`SELECTION_GRID` candidate (seed 0)
    and never looks at the test split. Returns the grid results and the selected setting.
    """

    def val_metrics(arm: str, local: LocalWeight) -> dict:
        run = train_classifier(arm, 0, steps, local, evaluate="val")
        return {"val_nfe": run["test_nfe"], "val_acc": run["test_acc"], "val_ce": run["test_ce"]}

    base = val_metrics("none", DEFAULT_LOCAL_WEIGHT)
    print(f"select  none: val NFE {base['val_nfe']}  acc {100 * base['val_acc']:.1f}", flush=True)
    grid = {}
    for name, local in SELECTION_GRID.items():
        m = val_metrics("local_unbiased", local)
        m["val_acc_drop_points"] = 100 * (base["val_acc"] - m["val_acc"])
        m["val_nfe_ratio"] = m["val_nfe"] / base["val_nfe"]
        grid[name] = m
        print(
            f"select {name:>8}: val NFE {m['val_nfe']} (x{m['val_nfe_ratio']:.2f})  "
            f"acc {100 * m['val_acc']:.1f} (drop {m['val_acc_drop_points']:.2f})",
            flush=True,
        )
    admissible = [n for n, m in grid.items() if m["val_acc_drop_points"] <= 1.0]
    if admissible:
        selected = min(admissible, key=lambda n: (grid[n]["val_nfe"], -grid[n]["val_acc"]))
    else:
        selected = min(grid, key=lambda n: grid[n]["val_acc_drop_points"])
    weight, weight_final = SELECTION_GRID[selected]
    print(f"selected local weight {selected}", flush=True)
    return {
        "rule": SELECTION_RULE,
        "none": base,
        "grid": grid,
        "selected": selected,
        "weight": weight,
        "weight_final": weight_final,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, 300 steps, 2 arms")
    parser.add_argument("--arms", nargs="*", default=None, help="subset of arms to run")
    parser.add_argument("--output", default=str(RESULTS / "local_regularization.json"))
    parser.add_argument(
        "--select-weight",
        action="store_true",
        help="choose the local weight on a validation split first (see SELECTION_RULE)",
    )
    parser.add_argument("--local-weight", type=float, default=DEFAULT_LOCAL_WEIGHT[0])
    parser.add_argument(
        "--local-weight-final", type=float, default=None, help="exponential decay target"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, steps = ((0,), 300) if args.quick else ((0, 1, 2), 600)
    arms = args.arms or (QUICK_ARMS if args.quick else ARMS)
    selection = select_local_weight(steps) if args.select_weight else None
    local: LocalWeight = (
        (selection["weight"], selection["weight_final"])
        if selection
        else (args.local_weight, args.local_weight_final)
    )
    runs = []
    for seed in seeds:
        for arm in arms:
            run = train_classifier(arm, seed, steps, local)
            runs.append(run)
            print(
                f"{arm:>18} seed {seed}: test NFE {run['test_nfe']:4d}  "
                f"acc {100 * run['test_acc']:.1f}  CE {run['test_ce']:.3f}  "
                f"predict {1e3 * run['predict_time_s']:.1f} ms  train {run['train_time_s']:.0f} s",
                flush=True,
            )
    summary = summarise(runs)
    base = summary["none"]
    print(
        f"\n{'arm':>18} {'NFE':>6} {'ratio':>6} {'acc %':>6} {'CE':>6} {'pred x':>7} {'train x':>7}"
    )
    for arm, s in summary.items():
        print(
            f"{arm:>18} {s['test_nfe']:6.0f} {s['test_nfe'] / base['test_nfe']:6.2f} "
            f"{100 * s['test_acc']:6.1f} {s['test_ce']:6.3f} "
            f"{base['predict_time_s'] / s['predict_time_s']:7.2f} "
            f"{s['train_time_s'] / base['train_time_s']:7.2f}"
        )
    goals = classifier_goals(summary, args.quick)
    sde_runs: list[dict] = []
    sde_summary: dict = {}
    if not args.quick and args.arms is None:
        for seed in seeds:
            for regularized in (False, True):
                run = sde_arm(regularized, seed, steps)
                sde_runs.append(run)
                print(
                    f"{run['arm']:>18} seed {seed}: adaptive NFE {run['test_nfe']:4d}  "
                    f"test NLL {run['test_nll']:.3f}",
                    flush=True,
                )
        sde_summary, extra = sde_goals(sde_runs)
        goals += extra
        for arm, s in sde_summary.items():
            print(f"{arm:>18} NFE {s['test_nfe']:.0f}  NLL {s['test_nll']:.3f}")
    for g in goals:
        print(f"{'MET ' if g['met'] else 'MISS'} {g['name']}: {g['value']:.3f} (goal {g['goal']})")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    histories = median_histories(runs)
    plot(histories, output.with_suffix(".png"))
    result = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(torchdiffeq=torchdiffeq.__version__, torchsde=torchsde.__version__),
        "settings": {
            "seeds": list(seeds),
            "steps": steps,
            "rtol": TOL,
            "atol": TOL,
            "local_weight": local[0],
            "local_weight_final": local[1],
        },
        "weight_selection": selection,
        "goals": goals,
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
        "sde": {"weight": SDE_WEIGHT, "summary": sde_summary, "runs": sde_runs},
        "nfe_history_median": histories,
    }
    write_json(output, result, indent=1)


if __name__ == "__main__":
    main()
