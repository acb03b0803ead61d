"""PROSE vs its data-only ablation, a last-value baseline and a SINDy (STLSQ) baseline.

Run ``PYTHONPATH=. python benchmarks/prose.py [--quick] [--steps N] [--seeds 0 1 2] [--t-input T]
[--families classic|confusable] [--two-to-one]``
(one thread). The default is the CPU gate's design: the observed window t < 1 (16 points) and the
confusable pair (``--families confusable``: Van der Pol at mu = 0.3 instead of mu = 1, whose first
stretch of orbit looks like the damped oscillator's). The background notes prescribe this change
for when the five classic families are easy to tell apart from t < 2 of data, as they are: the
skeleton then has something to add. ``--t-input 2.0 --families classic --output
benchmarks/results/prose_issue_window.json`` runs the issue's own window. ``--two-to-one`` adds
PROSE's 2-to-1 ablation (skeleton in, continuation out, no symbol decoder and no token loss): it
separates what the symbol *input* gives the continuation from what sharing the encoders with the
equation output costs it. The JSON is rewritten after every finished seed, so a run cut short
keeps the seeds it completed.

* data: :class:`sciml.data.ODEOperatorDataModule` over 5 families (exponential decay, logistic,
  damped oscillator, Lotka-Volterra, Van der Pol at mu = 0.3, or mu = 1 with ``classic``),
  parameters +-10 %, 2 % noise, 96 times on [0, 6], input t < 1 (16 points), queries in [1, 6]
  (80 points; with ``--t-input 2.0``: 32 and 64);
  CPU-sized: 4000 train / 500 test trajectories (``--quick``: 1000 / 100), one data set (seed 0);
* models: PROSE (width 64, 4 heads, FFN 256, 2 layers per block) and the same model without the
  symbol branch, each trained for the same number of steps once per training seed (``--seeds``:
  weight initialisation and query sub-sampling; the data, its order and the skeleton corruptions
  of training are shared, and restart with every fit, so ``--seeds 1`` alone gives seed 1 of
  ``--seeds 0 1 2``, with or without ``--two-to-one``);
* robustness (evaluation only, the same trained models): the test inputs re-observed with
  0 / 2 / 5 / 10 % relative noise (one noise draw, scaled), and PROSE given a skeleton with an
  extra or a missing term instead of the true skeleton;
* baselines: hold the last observed value; SINDy, i.e. sequentially thresholded least squares
  (STLSQ) on a degree-3 polynomial library, fitted per test trajectory on the noisy input
  points (Savitzky-Golay smoothed finite differences), scored by the same equation metrics; and
  as a reference for the equation output, each family's equation with its nominal (unperturbed)
  parameters, i.e. the right structure with no constant identified.

Scores are against the clean trajectories; the goals are judged on the mean over seeds. Results go
to ``benchmarks/results/prose.json``.

GPU-sized run (the paper's model: width 512, 8 heads, layers 2/4/8/8/8; the 3-D chaotic families,
Duffing and the double pendulum, 192 times): train both arms from the YAML with the paper's data
sizes, then test each saved config/checkpoint (the test step reports the continuation error, the
equation scores and the corrupted-skeleton scores)::

    sciml fit -c problems/prose/chaotic_paper.yaml --trainer.accelerator=gpu \\
        --trainer.precision=bf16-mixed
    sciml fit -c problems/prose/chaotic_paper.yaml --trainer.accelerator=gpu \\
        --trainer.precision=bf16-mixed --model.init_args.multimodal=false
    sciml test -c runs/prose/chaotic_paper/version_0/config.yaml \\
        --ckpt_path runs/prose/chaotic_paper/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import sympy
import torch
from scipy.signal import savgol_filter
from torch.utils.data import DataLoader

from sciml.data import (
    CLASSIC_FAMILIES,
    EquationFamily,
    ODEOperatorDataModule,
)
from sciml.metrics import continuation_rel_l2, score_equations
from sciml.models import PROSE, OptimizerConfig, ProseSizes
from sciml.symbolic import expressions_to_prefix

from _report import machine, write_json
from _training import quiet_trainer

RESULTS = Path(__file__).parent / "results" / "prose.json"
NOISE_LEVELS = (0.0, 0.02, 0.05, 0.1)
#: ``--families confusable``: Van der Pol at mu = 0.3 (``van_der_pol_mu03`` in the registry)
#: instead of mu = 1. Over t < 2 (a third of a period) its orbit and the damped oscillator's
#: (omega = 1, zeta = 0.1) are nearly the same circle, one slowly growing towards the limit cycle,
#: the other slowly decaying; the skeletons differ (the x^2 y term), so this is the "confusable
#: pair" design of the background notes.
FAMILY_SETS = {
    "classic": list(CLASSIC_FAMILIES),
    "confusable": ["van_der_pol_mu03" if f == "van_der_pol" else f for f in CLASSIC_FAMILIES],
}
#: symbol inputs of the robustness test: index into the data's ``skeletons (B, 3, L)``
SKELETONS = {"true": 0, "extra_term": 1, "missing_term": 2}
#: The CPU gate's design (background notes, section 5.4: "make the data window less informative
#: by design: a shorter input window (t in [0, 1]), or a confusable pair"): both, since each alone
#: missed the 0.9 goal (0.901 and 0.951; docs/benchmarks.md).
GATE_T_INPUT = 1.0
GATE_FAMILIES = "confusable"


def benchmark_data(families: str, t_input: float, *, quick: bool) -> ODEOperatorDataModule:
    """The benchmark's data (one set, seed 0), set up; ``prose_sindy.py`` fits the same windows."""
    n_train, n_test = (1000, 100) if quick else (4000, 500)
    data = ODEOperatorDataModule(
        FAMILY_SETS[families],
        n_train=n_train,
        n_val=50,
        n_test=n_test,
        t_input=t_input,
        batch_size=64,
        seed=0,
    )
    data.setup()
    return data


def goal(name: str, value: float, op: str, target: float) -> dict:
    met = {">=": value >= target, "<=": value <= target}[op]
    return {"name": name, "value": float(value), "goal": f"{op} {target:g}", "met": bool(met)}


def ridge(library: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    """argmin_w |target - library w|^2 + alpha |w|^2, for one or several target columns."""
    gram = library.T @ library + alpha * np.eye(library.shape[1])
    return np.linalg.solve(gram, library.T @ target)


def stlsq_sindy(
    t: np.ndarray,
    u: np.ndarray,
    *,
    degree: int = 3,
    threshold: float = 0.05,
    alpha: float = 0.05,
    iterations: int = 10,
) -> list[sympy.Expr]:
    r"""SINDy: $\dot u \approx \Theta(u)\,\Xi$ with $\Xi$ by sequentially thresholded ridge
    regression (STLSQ with pysindy's defaults: ridge ``alpha`` 0.05, no column normalisation).

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
    xi = ridge(library, derivative, alpha)
    for _ in range(iterations):
        small = np.abs(xi) < threshold
        xi[small] = 0
        for j in range(d):
            big = ~small[:, j]
            if big.any():
                xi[big, j] = ridge(library[:, big], derivative[:, j], alpha)
    terms = [[(c, m) for c, m in zip(xi[:, j], monomials, strict=True) if c != 0] for j in range(d)]
    return [
        sum((sympy.Float(float(c)) * m for c, m in pairs), start=sympy.Integer(0))
        for pairs in terms
    ]


def train(model: PROSE, data: ODEOperatorDataModule, steps: int) -> float:
    start = time.perf_counter()
    trainer = quiet_trainer(
        max_steps=steps,
        inference_mode=False,
        limit_val_batches=0,
        gradient_clip_val=1.0,
    )
    trainer.fit(model, data)
    return time.perf_counter() - start


def evaluate(model: PROSE, batches: DataLoader, skeleton: int = 0) -> dict:
    """Per-sample continuation errors (model and last value) and decoded token strings, with
    ``skeletons[:, skeleton]`` as the symbol input of a multimodal model."""
    model.eval()
    errors, last, tokens = [], [], []
    for batch in batches:
        batch = {**batch, "symbols": batch["skeletons"][:, skeleton]}
        u_hat, decoded = model.predict_batch(batch)
        errors.append(continuation_rel_l2(u_hat, batch["u_out"], batch["mask"]))
        held = batch["u_in"][:, -1:].expand_as(batch["u_out"])
        last.append(continuation_rel_l2(held, batch["u_out"], batch["mask"]))
        tokens += decoded or []
    return {"rel_l2": torch.cat(errors).numpy(), "last": torch.cat(last).numpy(), "tokens": tokens}


def equation_scores(data: ODEOperatorDataModule, tokens: list[list[str]], *, solve: bool) -> dict:
    """Summary of the equation metrics of decoded ``tokens`` on the test set (plus ``valid``)."""
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
        solve=solve,
    )
    summary = {k: v for k, v in scores.summary().items() if solve or not k.startswith("solve")}
    return {**summary, "valid": scores.valid}


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


def nominal_tokens(data: ODEOperatorDataModule) -> list[list[str]]:
    """Each test sample's family equation with the default (unperturbed) parameters: the equation
    output of a model that knows the family but identifies no constant."""
    nominal = []
    for name in data.family_names:
        family = EquationFamily.from_system(name)
        expressions, _ = family.draw(np.random.default_rng(0), spread=0.0)
        variables = [f"u_{k}" for k in range(family.dim)]
        nominal.append(expressions_to_prefix(expressions, variables=variables))
    return [nominal[int(k)] for k in data.splits["test"].tensors["family"]]


def summarize(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "median": float(np.median(values))}


def public(scores: dict) -> dict:
    return {k: float(v) for k, v in scores.items() if k != "valid"}


def run_seed(
    seed: int,
    data: ODEOperatorDataModule,
    steps: int,
    sizes: ProseSizes,
    save_dir: Path | None = None,
    two_to_one: bool = False,
) -> dict:
    """Train both arms with training seed ``seed`` and evaluate them (clean, noisy, corrupted);
    with ``save_dir``, also save their weights there for later analysis; with ``two_to_one``
    also train and score the 2-to-1 ablation (skeleton in, no symbol output)."""
    optimizer = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4, scheduler="cosine")
    test = DataLoader(data.splits["test"], batch_size=250)
    noisy = {
        level: DataLoader(data.with_noise("test", level, seed=1), batch_size=250)
        for level in NOISE_LEVELS
    }
    models, timings, clean = {}, {}, {}
    arms = {"prose": (True, True), "data_only": (False, False)}
    if two_to_one:
        arms["two_to_one"] = (True, False)
    for name, (multimodal, symbol_output) in arms.items():
        pl.seed_everything(seed, verbose=False)
        model = PROSE(
            max_dim=data.max_dim,
            sizes=sizes,
            multimodal=multimodal,
            symbol_output=symbol_output,
            optimizer=optimizer,
        )
        timings[f"train_{name}"] = train(model, data, steps)
        models[name] = model
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), save_dir / f"{name}_seed{seed}.pt")
        clean[name] = evaluate(model, test)
        print(
            f"seed {seed} {name}: {model.parameter_count()} parameters, "
            f"{timings[f'train_{name}']:.0f} s, rel-L2 {clean[name]['rel_l2'].mean():.4f}",
            flush=True,
        )
    start = time.perf_counter()
    prose, data_only = clean["prose"]["rel_l2"], clean["data_only"]["rel_l2"]
    last = clean["prose"]["last"]
    prose_eq = equation_scores(data, clean["prose"]["tokens"], solve=True)

    noise = {}
    for level, batches in noisy.items():
        runs = {name: evaluate(model, batches) for name, model in models.items()}
        eq = equation_scores(data, runs["prose"]["tokens"], solve=False)
        noise[f"{level:g}"] = {
            "prose": float(runs["prose"]["rel_l2"].mean()),
            "data_only": float(runs["data_only"]["rel_l2"].mean()),
            "last_value": float(runs["prose"]["last"].mean()),
            "ratio_data_only": float(
                runs["prose"]["rel_l2"].mean() / runs["data_only"]["rel_l2"].mean()
            ),
            "prose_valid_fraction": eq["valid_fraction"],
            "prose_rhs_rel_l2_median": eq["rhs_rel_l2_median"],
        }
        if "two_to_one" in runs:
            noise[f"{level:g}"]["two_to_one"] = float(runs["two_to_one"]["rel_l2"].mean())
    symbols = {}
    for kind, index in SKELETONS.items():
        run = clean["prose"] if index == 0 else evaluate(models["prose"], test, index)
        eq = prose_eq if index == 0 else equation_scores(data, run["tokens"], solve=False)
        symbols[kind] = {
            "prose": float(run["rel_l2"].mean()),
            "ratio_data_only": float(run["rel_l2"].mean() / data_only.mean()),
            "prose_valid_fraction": eq["valid_fraction"],
            "prose_rhs_rel_l2_median": eq["rhs_rel_l2_median"],
        }
    timings["evaluation"] = time.perf_counter() - start

    families = data.splits["test"].tensors["family"].numpy()
    per_family = {
        family: {
            **{name: float(run["rel_l2"][families == k].mean()) for name, run in clean.items()},
            "last_value": float(last[families == k].mean()),
            "prose_valid_fraction": float(prose_eq["valid"][families == k].mean()),
        }
        for k, family in enumerate(data.family_names)
    }
    extra = {}
    if two_to_one:
        ours = clean["two_to_one"]["rel_l2"]
        corrupted = {
            kind: float(evaluate(models["two_to_one"], test, index)["rel_l2"].mean())
            for kind, index in SKELETONS.items()
            if index
        }
        extra = {
            "two_to_one": {
                "continuation_rel_l2": summarize(ours),
                "ratio_data_only": float(ours.mean() / data_only.mean()),
                "ratio_prose": float(ours.mean() / prose.mean()),
                "corrupted_symbol_input_rel_l2": corrupted,
            }
        }
    return {
        "seed": seed,
        "parameters": {name: model.parameter_count() for name, model in models.items()},
        "timings_s": timings,
        "continuation_rel_l2": {
            "prose": summarize(prose),
            "data_only": summarize(data_only),
            "last_value": summarize(last),
        },
        "ratio_data_only": float(prose.mean() / data_only.mean()),
        "ratio_last_value": float(prose.mean() / last.mean()),
        "equations": public(prose_eq),
        "noise": noise,
        "symbol_input": symbols,
        "per_family": per_family,
        **extra,
    }


def mean_over_seeds(runs: list[dict]) -> object:
    """Element-wise mean of equally structured nested dicts of numbers."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: mean_over_seeds([run[key] for run in runs]) for key in first}
    return float(np.mean(runs))


def goals_over_seeds(runs: list[dict], over: str = "seeds") -> list[dict]:
    """The issue's three goals, each judged on the mean over the finished seeds; ``over`` names
    them in the goal names ("seeds 0, 1, 2" for a merge)."""
    return [
        goal(
            f"PROSE valid-equation fraction (mean over {over})",
            float(np.mean([run["equations"]["valid_fraction"] for run in runs])),
            ">=",
            0.95,
        ),
        goal(
            f"PROSE continuation rel-L2 / data-only (mean over {over})",
            float(np.mean([run["ratio_data_only"] for run in runs])),
            "<=",
            0.9,
        ),
        goal(
            f"PROSE continuation rel-L2 / last-value (mean over {over})",
            float(np.mean([run["ratio_last_value"] for run in runs])),
            "<=",
            0.5,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1000/100 trajectories, few steps")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--save-models", type=Path, default=None, help="folder for the weights")
    parser.add_argument(
        "--t-input",
        type=float,
        default=GATE_T_INPUT,
        help="end of the observed window (gate: 1.0; the issue's window: 2.0)",
    )
    parser.add_argument(
        "--families",
        choices=sorted(FAMILY_SETS),
        default=GATE_FAMILIES,
        help="classic: the 5 classic families; confusable: Van der Pol at mu = 0.3 instead",
    )
    parser.add_argument(
        "--two-to-one",
        action="store_true",
        help="also train PROSE's 2-to-1 ablation (skeleton in, continuation out, no equation)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    mode = "quick" if args.quick else "cpu"
    steps = args.steps or (300 if args.quick else 1500)
    wall = time.perf_counter()

    start = time.perf_counter()
    data = benchmark_data(args.families, args.t_input, quick=args.quick)
    data_seconds = time.perf_counter() - start
    n_train, n_test = len(data.splits["train"]), len(data.splits["test"])
    print(f"data: {n_train}/{n_test} trajectories in {data_seconds:.0f} s", flush=True)

    sizes = ProseSizes()
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, data, steps, sizes, args.save_models, args.two_to_one))
        # a run cut short (e.g. by a device time limit) keeps the seeds it finished
        partial = {"mode": mode, "partial": True, "steps": steps, "per_seed": runs}
        write_json(args.output, {**partial, "goals": goals_over_seeds(runs)})
    tokens, sindy_seconds = sindy_tokens(data)
    sindy_eq = public(equation_scores(data, tokens, solve=True))
    nominal_eq = public(equation_scores(data, nominal_tokens(data), solve=True))

    ratios = [run["ratio_data_only"] for run in runs]
    ratios_last = [run["ratio_last_value"] for run in runs]
    keys = ("continuation_rel_l2", "equations", "noise", "symbol_input", "two_to_one")
    mean = mean_over_seeds([{k: run[k] for k in keys if k in run} for run in runs])
    report = {
        "mode": mode,
        "machine": machine(
            note="shared 2-core box (several engineers running at once): timings are noisy"
        ),
        "setup": {
            "families": data.family_names,
            "n_train": n_train,
            "n_test": n_test,
            "steps": steps,
            "t_input": args.t_input,
            "observed_points": data.n_input,
            "batch_size": 64,
            "seeds": args.seeds,
            "sizes": sizes.__dict__,
            "parameters": runs[0]["parameters"],
            "noise": 0.02,
            "noise_levels_robustness": list(NOISE_LEVELS),
            "scores_against": "clean trajectories",
        },
        "timings_s": {
            "data": data_seconds,
            "sindy_fit": sindy_seconds,
            "total": time.perf_counter() - wall,
        },
        "ratio_data_only": {"mean": float(np.mean(ratios)), "per_seed": ratios},
        "ratio_last_value": {"mean": float(np.mean(ratios_last)), "per_seed": ratios_last},
        "mean_over_seeds": mean,
        "sindy_stlsq": sindy_eq,
        "nominal_parameters": nominal_eq,
        "per_seed": runs,
        "goals": goals_over_seeds(runs),
    }
    write_json(args.output, report)

    print(f"\n{'seed':>4s} {'PROSE':>8s} {'data-only':>9s} {'ratio':>6s} {'valid':>6s}")
    for run in runs:
        cont = run["continuation_rel_l2"]
        print(
            f"{run['seed']:4d} {cont['prose']['mean']:8.4f} {cont['data_only']['mean']:9.4f} "
            f"{run['ratio_data_only']:6.3f} {run['equations']['valid_fraction']:6.3f}"
        )
    print(f"\n{'noise':>6s} {'PROSE':>8s} {'data-only':>9s} {'ratio':>6s} {'valid':>6s}")
    for level, row in mean["noise"].items():
        print(
            f"{level:>6s} {row['prose']:8.4f} {row['data_only']:9.4f} "
            f"{row['ratio_data_only']:6.3f} {row['prose_valid_fraction']:6.3f}"
        )
    print(f"\n{'skeleton':>12s} {'PROSE':>8s} {'ratio':>6s} {'valid':>6s} {'RHS med':>8s}")
    for kind, row in mean["symbol_input"].items():
        print(
            f"{kind:>12s} {row['prose']:8.4f} {row['ratio_data_only']:6.3f} "
            f"{row['prose_valid_fraction']:6.3f} {row['prose_rhs_rel_l2_median']:8.4f}"
        )
    eq = mean["equations"]
    print(
        f"\nequations (mean over seeds): valid {eq['valid_fraction']:.3f}, RHS median "
        f"{eq['rhs_rel_l2_median']:.4f}, solve median {eq['solve_rel_l2_median']:.4f}, "
        f"failures {eq['solve_failure_fraction']:.2f}; SINDy: valid "
        f"{sindy_eq['valid_fraction']:.3f}, RHS median {sindy_eq['rhs_rel_l2_median']:.3f}, "
        f"solve median {sindy_eq['solve_rel_l2_median']:.3f}, failures "
        f"{sindy_eq['solve_failure_fraction']:.2f}; nominal parameters: RHS median "
        f"{nominal_eq['rhs_rel_l2_median']:.4f}, solve median "
        f"{nominal_eq['solve_rel_l2_median']:.4f}"
    )
    if args.two_to_one:
        row = mean["two_to_one"]
        print(
            "2-to-1 (skeleton in, no equation out): rel-L2 "
            f"{row['continuation_rel_l2']['mean']:.4f}, / data-only {row['ratio_data_only']:.3f}, "
            f"/ PROSE {row['ratio_prose']:.3f}"
        )
    for entry in report["goals"]:
        print(f"goal {entry['name']}: {entry['value']:.4f} {entry['goal']} met={entry['met']}")
    print(f"total {report['timings_s']['total']:.0f} s")


if __name__ == "__main__":
    main()
