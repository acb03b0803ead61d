"""PROSE vs its data-only ablation, a last-value baseline and a SINDy (STLSQ) baseline.

Run ``PYTHONPATH=. python benchmarks/prose.py [--quick] [--steps N]`` (one thread, fixed seeds).

* data: :class:`sciml.data.ODEOperatorDataModule` over the 5 classic families (exponential decay,
  logistic, damped oscillator, Lotka-Volterra, Van der Pol), parameters +-10 %, 2 % noise,
  96 times on [0, 6], input t < 2 (32 points), queries in [2, 6] (64 points);
  CPU-sized: 4000 train / 500 test trajectories (``--quick``: 1000 / 100);
* models: PROSE (width 64, 4 heads, FFN 256, 2 layers per block) and the same model without the
  symbol branch, trained for the same number of steps with the same seed;
* baselines: hold the last observed value; SINDy, i.e. sequentially thresholded least squares
  (STLSQ) on a degree-3 polynomial library, fitted per test trajectory on the 32 noisy input
  points (Savitzky-Golay smoothed finite differences), scored by the same equation metrics.

Scores are against the clean trajectories. Results go to ``benchmarks/results/prose.json``.

GPU-sized run (the paper's model, 3-D chaotic families): ``sciml fit -c problems/prose/paper.yaml``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import sympy
import torch
from scipy.signal import savgol_filter

from sciml.data import CLASSIC_FAMILIES, ODEOperatorDataModule
from sciml.metrics import continuation_rel_l2, score_equations
from sciml.models import PROSE, OptimizerConfig, ProseSizes
from sciml.symbolic import expressions_to_prefix

RESULTS = Path(__file__).parent / "results" / "prose.json"


def goal(name: str, value: float, op: str, target: float) -> dict:
    met = {">=": value >= target, "<=": value <= target}[op]
    return {"name": name, "value": float(value), "goal": f"{op} {target:g}", "met": bool(met)}


def stlsq_sindy(
    t: np.ndarray, u: np.ndarray, *, degree: int = 3, threshold: float = 0.05, iterations: int = 10
) -> list[sympy.Expr]:
    r"""SINDy: $\dot u \approx \Theta(u)\,\Xi$ with $\Xi$ by sequentially thresholded least squares.

    ``t (T,)``, ``u (T, d)`` noisy samples; returns the identified field over ``u_0 .. u_{d-1}``.
    """
    d = u.shape[1]
    window = min(len(t) - (1 - len(t) % 2), 9)
    smooth = savgol_filter(u, window, 3, axis=0)
    derivative = np.gradient(smooth, t, axis=0)
    symbols = sympy.symbols(f"u_0:{d}")
    monomials = [sympy.Integer(1)] + [
        sympy.Mul(*combo)
        for k in range(1, degree + 1)
        for combo in itertools.combinations_with_replacement(symbols, k)
    ]
    library = np.stack(
        [np.broadcast_to(sympy.lambdify(symbols, m)(*smooth.T), len(t)) for m in monomials], 1
    )
    xi = np.linalg.lstsq(library, derivative, rcond=None)[0]
    for _ in range(iterations):
        small = np.abs(xi) < threshold
        xi[small] = 0
        for j in range(d):
            big = ~small[:, j]
            if big.any():
                xi[big, j] = np.linalg.lstsq(library[:, big], derivative[:, j], rcond=None)[0]
    terms = [[(c, m) for c, m in zip(xi[:, j], monomials, strict=True) if c != 0] for j in range(d)]
    return [sum((sympy.Float(float(c)) * m for c, m in pairs), start=0) for pairs in terms]


def train(model: PROSE, data: ODEOperatorDataModule, steps: int) -> float:
    start = time.perf_counter()
    trainer = pl.Trainer(
        max_steps=steps,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
    )
    trainer.fit(model, data)
    return time.perf_counter() - start


def evaluate(model: PROSE, data: ODEOperatorDataModule, symbols_key: str = "symbols") -> dict:
    """Per-sample continuation errors and (multimodal) decoded token strings on the test set."""
    model.eval()
    errors, last, tokens = [], [], []
    for batch in data.test_dataloader():
        u_hat, decoded = model.predict_batch(batch, symbols_key)
        errors.append(continuation_rel_l2(u_hat, batch["u_out"], batch["mask"]))
        held = batch["u_in"][:, -1:].expand_as(batch["u_out"])
        last.append(continuation_rel_l2(held, batch["u_out"], batch["mask"]))
        tokens += decoded or []
    return {"rel_l2": torch.cat(errors).numpy(), "last": torch.cat(last).numpy(), "tokens": tokens}


def equation_scores(data: ODEOperatorDataModule, tokens: list[list[str]]) -> dict:
    test = data.splits["test"].tensors
    vocab = data.vocabulary
    t_out = test["t_out"][0].double().numpy()
    scores = score_equations(
        tokens,
        [vocab.decode(row) for row in test["target"].tolist()],
        test["dim"].tolist(),
        y0=test["y0"].double().numpy(),
        t_solve=np.concatenate([[0.0], t_out]),
        targets=test["u_out"].double().numpy(),
        target_times=t_out,
        rng=np.random.default_rng(0),
    )
    return scores


def sindy_tokens(data: ODEOperatorDataModule) -> tuple[list[list[str]], float]:
    test = data.splits["test"].tensors
    start = time.perf_counter()
    out = []
    for i in range(len(test["dim"])):
        d = int(test["dim"][i])
        t = test["t_in"][i].double().numpy()
        field = stlsq_sindy(t, test["u_in"][i, :, :d].double().numpy())
        try:
            out.append(expressions_to_prefix(field))
        except ValueError:  # a coefficient too large for the float tokens
            out.append([])
    return out, time.perf_counter() - start


def summarize(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "median": float(np.median(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1000/100 trajectories, few steps")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    mode = "quick" if args.quick else "cpu"
    n_train, n_test = (1000, 100) if args.quick else (4000, 500)
    steps = args.steps or (300 if args.quick else 1500)
    wall = time.perf_counter()

    start = time.perf_counter()
    data = ODEOperatorDataModule(
        list(CLASSIC_FAMILIES), n_train=n_train, n_val=50, n_test=n_test, batch_size=64, seed=0
    )
    data.setup()
    data_seconds = time.perf_counter() - start
    print(f"data: {n_train}/{n_test} trajectories in {data_seconds:.0f} s")

    sizes = ProseSizes()
    optimizer = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4, scheduler="cosine")
    results, timings, models = {}, {}, {}
    for name, multimodal in (("prose", True), ("data_only", False)):
        pl.seed_everything(0, verbose=False)
        model = PROSE(max_dim=data.max_dim, sizes=sizes, multimodal=multimodal, optimizer=optimizer)
        timings[f"train_{name}_s"] = train(model, data, steps)
        models[name] = model
        results[name] = evaluate(model, data)
        print(
            f"{name}: {model.parameter_count()} parameters, {timings[f'train_{name}_s']:.0f} s, "
            f"rel-L2 {results[name]['rel_l2'].mean():.4f}"
        )
    corrupted = evaluate(models["prose"], data, "symbols_corrupted")

    start = time.perf_counter()
    prose_eq = equation_scores(data, results["prose"]["tokens"])
    corrupted_eq = equation_scores(data, corrupted["tokens"])
    timings["equation_scoring_s"] = time.perf_counter() - start
    tokens, timings["sindy_fit_s"] = sindy_tokens(data)
    sindy_eq = equation_scores(data, tokens)
    timings["total_s"] = time.perf_counter() - wall

    prose, data_only = results["prose"]["rel_l2"], results["data_only"]["rel_l2"]
    last = results["prose"]["last"]
    families = data.splits["test"].tensors["family"].numpy()
    per_family = {
        family: {
            "prose": float(prose[families == k].mean()),
            "data_only": float(data_only[families == k].mean()),
            "last_value": float(last[families == k].mean()),
            "prose_valid_fraction": float(prose_eq.valid[families == k].mean()),
        }
        for k, family in enumerate(data.family_names)
    }
    prose_summary = prose_eq.summary()
    report = {
        "mode": mode,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "note": "shared 2-core box (several engineers running at once): timings are noisy",
        },
        "setup": {
            "families": data.family_names,
            "n_train": n_train,
            "n_test": n_test,
            "steps": steps,
            "batch_size": 64,
            "sizes": sizes.__dict__,
            "parameters_prose": models["prose"].parameter_count(),
            "parameters_data_only": models["data_only"].parameter_count(),
            "noise": 0.02,
            "scores_against": "clean trajectories",
        },
        "timings_s": {"data": data_seconds, **timings},
        "continuation_rel_l2": {
            "prose": summarize(prose),
            "prose_corrupted_skeleton": summarize(corrupted["rel_l2"]),
            "data_only": summarize(data_only),
            "last_value": summarize(last),
        },
        "equations": {
            "prose": prose_summary,
            "prose_corrupted_skeleton": corrupted_eq.summary(),
            "sindy_stlsq": sindy_eq.summary(),
        },
        "per_family": per_family,
        "goals": [
            goal("PROSE valid-equation fraction", prose_summary["valid_fraction"], ">=", 0.95),
            goal(
                "PROSE continuation rel-L2 / data-only", prose.mean() / data_only.mean(), "<=", 0.9
            ),
            goal("PROSE continuation rel-L2 / last-value", prose.mean() / last.mean(), "<=", 0.5),
        ],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    rows = [
        ("PROSE", prose.mean(), prose_summary),
        ("PROSE, corrupted skeleton", corrupted["rel_l2"].mean(), corrupted_eq.summary()),
        ("data-only", data_only.mean(), None),
        ("last value", last.mean(), None),
        ("SINDy (STLSQ)", None, sindy_eq.summary()),
    ]
    print(
        f"\n{'model':28s} {'cont. rel-L2':>12s} {'valid':>6s} {'RHS med':>8s} "
        f"{'solve med':>9s} {'fail':>5s}"
    )
    for name, cont, eq in rows:
        cells = [f"{cont:12.4f}" if cont is not None else f"{'-':>12s}"]
        if eq:
            cells += [
                f"{eq['valid_fraction']:6.3f}",
                f"{eq['rhs_rel_l2_median']:8.4f}",
                f"{eq['solve_rel_l2_median']:9.4f}",
                f"{eq['solve_failure_fraction']:5.2f}",
            ]
        print(f"{name:28s} " + " ".join(cells))
    for entry in report["goals"]:
        print(f"goal {entry['name']}: {entry['value']:.4f} {entry['goal']} met={entry['met']}")
    print(f"total {timings['total_s']:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
