"""SINDy as an outside baseline for PROSE's equation output: pysindy itself next to the STLSQ of
``benchmarks/prose.py``, on the same test windows, scored by the same equation metrics.

Run ``python benchmarks/prose_sindy.py [--quick] [--t-input T] [--families classic|confusable]``
(needs ``pysindy``: ``pip install pysindy``, or ``make benchmarks``, which installs the ``bench``
dependency group). Writes ``benchmarks/results/prose_sindy.json``.

The test windows are ``prose.py``'s (by default its gate design, t < 1 and the confusable pair;
``--t-input 2.0 --families classic --output benchmarks/results/prose_sindy_issue_window.json
--prose-json benchmarks/results/prose_issue_window.json`` for the issue's window). Both fit each
test trajectory's noisy input window (16 points for t < 1, 32 for t < 2) with a degree-3
polynomial library, sequentially thresholded ridge regression (threshold 0.05, ridge 0.05:
pysindy's defaults) and Savitzky-Golay smoothed finite differences (pysindy's default smoother,
window 11; the script's own, window 9). Scores (RHS error at random states of the target's
bounding box, solved-equation error with solver failures counted) are medians over the test set,
as in ``prose.py``; PROSE's own numbers on this test set are read from ``--prose-json`` (default
``prose.json``) when its setup matches, for the comparison the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import sympy

from sciml.data import ODEOperatorDataModule
from sciml.symbolic import expressions_to_prefix

from _report import machine, write_json
from prose import (
    FAMILY_SETS,
    GATE_FAMILIES,
    GATE_T_INPUT,
    benchmark_data,
    equation_scores,
    nominal_tokens,
    public,
    sindy_tokens,
)
from prose import RESULTS as PROSE_RESULTS

RESULTS = Path(__file__).parent / "results" / "prose_sindy.json"


def pysindy_tokens(data: ODEOperatorDataModule) -> tuple[list[list[str]], float]:
    """Prefix tokens of the field pysindy identifies on each test input window (``[]`` when the
    fit fails or a coefficient does not fit the float tokens), and the seconds spent."""
    import pysindy

    test = data.splits["test"].tensors
    start = time.perf_counter()
    out = []
    for i in range(len(test["dim"])):
        d = int(test["dim"][i])
        names = [f"u_{k}" for k in range(d)]
        model = pysindy.SINDy(
            optimizer=pysindy.STLSQ(threshold=0.05, alpha=0.05),
            feature_library=pysindy.PolynomialLibrary(degree=3),
            differentiation_method=pysindy.SmoothedFiniteDifference(),
        )
        symbols = {n: sympy.Symbol(n) for n in names}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ill-conditioned fits on short noisy windows
                model.fit(
                    test["u_in"][i, :, :d].double().numpy(),
                    t=test["t_in"][i].double().numpy(),
                    feature_names=names,
                )
            features = [
                sympy.sympify(f.replace("^", "**").replace(" ", "*"), locals=symbols)
                for f in model.get_feature_names()
            ]
            field = [
                sum(
                    (sympy.Float(float(c)) * f for c, f in zip(row, features, strict=True) if c),
                    start=sympy.Integer(0),
                )
                for row in model.coefficients()
            ]
            out.append(expressions_to_prefix(field))
        except (ValueError, np.linalg.LinAlgError):
            out.append([])
    return out, time.perf_counter() - start


def prose_reference(path: Path, setup: dict) -> dict | None:
    """PROSE's mean-over-seeds equation scores from a ``prose.py`` result file (or a merge of
    single-seed runs) if it used this test set."""
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    used = report.get("setup") or report["runs"][0]["setup"]
    same = (
        used["families"] == setup["families"]
        and used["n_test"] == setup["n_test"]
        and used.get("t_input", 2.0) == setup["t_input"]  # runs before --t-input used 2
    )
    return report["mean_over_seeds"]["equations"] if same else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 test trajectories")
    parser.add_argument("--t-input", type=float, default=GATE_T_INPUT)
    parser.add_argument("--families", choices=sorted(FAMILY_SETS), default=GATE_FAMILIES)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--prose-json", type=Path, default=PROSE_RESULTS, help="PROSE's scores on these windows"
    )
    args = parser.parse_args()
    try:
        import pysindy
    except ImportError as error:
        raise SystemExit("this benchmark needs pysindy: pip install pysindy") from error
    data = benchmark_data(args.families, args.t_input, quick=args.quick)
    n_test = len(data.splits["test"])
    tokens = {}
    seconds = {}
    tokens["pysindy"], seconds["pysindy"] = pysindy_tokens(data)
    tokens["sciml_stlsq"], seconds["sciml_stlsq"] = sindy_tokens(data)
    scores = {name: public(equation_scores(data, t, solve=True)) for name, t in tokens.items()}
    scores["nominal_parameters"] = public(equation_scores(data, nominal_tokens(data), solve=True))
    setup = {
        "families": data.family_names,
        "n_test": n_test,
        "t_input": args.t_input,
        "observed_points": data.n_input,
    }
    prose = prose_reference(args.prose_json, setup)
    goals = []
    if prose is not None:
        scores["prose_mean_over_seeds"] = {**prose, "source": str(args.prose_json.name)}
        for key in ("rhs_rel_l2_median", "solve_rel_l2_median"):
            goals.append(
                {
                    "name": f"PROSE {key} below pysindy's (same test windows)",
                    "value": prose[key] / scores["pysindy"][key],
                    "goal": "< 1 (ratio PROSE / pysindy)",
                    "met": prose[key] < scores["pysindy"][key],
                }
            )
    report = {
        "benchmark": "prose_sindy",
        "mode": "quick" if args.quick else "cpu",
        "machine": machine(pysindy=pysindy.__version__),
        "setup": {**setup, "library": "polynomials up to degree 3", "threshold": 0.05},
        "seconds": seconds,
        "scores": scores,
        "goals": goals,
    }
    write_json(args.output, report)
    print(f"{'method':<40s} {'valid':>6s} {'RHS med':>8s} {'solve med':>9s} {'failures':>8s}")
    for name, row in scores.items():
        print(
            f"{name:<40s} {row['valid_fraction']:6.3f} {row['rhs_rel_l2_median']:8.4f} "
            f"{row['solve_rel_l2_median']:9.4f} {row['solve_failure_fraction']:8.2f}"
        )
    for entry in goals:
        print(f"goal {entry['name']}: {entry['value']:.3f} met={entry['met']}")


if __name__ == "__main__":
    main()
