"""Merge runs of one benchmark script, made as separate processes, into one result file.

Long benchmarks run as several processes side by side (one per seed, or per held-out law). This
script joins their JSON files into one, unchanged, and recomputes the goals on the mean over
seeds, so that no merged file in ``results/`` is assembled by hand::

    python benchmarks/merge_runs.py meta_hamiltonian RUN.json [RUN.json ...] \\
        [--reference FILE ...] --output benchmarks/results/NAME.json --command "..." --note "..."
    python benchmarks/merge_runs.py prose RUN.json [RUN.json ...] [--reference FILE ...] \\
        --output ... --command "..."

A RUN may itself be a merged file: its runs are taken out of it, so merging again is idempotent.
``--reference`` files count in the summary and the goals but are not copied, because they are
result files of their own. Runs must share their settings (all but the seed, the held-out laws
and the output path) and may not repeat a (law, seed) or a seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from _report import print_goals, write_json

#: settings a meta_hamiltonian run may differ in and still belong to the same experiment
PER_PROCESS_SETTINGS = {"held_out", "seed", "output", "device", "quick"}


def single_runs(report: Any) -> list[dict]:
    """The single-process reports inside ``report`` (itself, or those under its ``runs``)."""
    if isinstance(report, list):
        return [run for item in report for run in single_runs(item)]
    if not isinstance(report, dict):
        return []
    if "results" in report or ("per_seed" in report and "runs" not in report):
        return [report]
    runs = report.get("runs", [])
    return single_runs(list(runs.values()) if isinstance(runs, dict) else runs)


def load_runs(paths: list[Path]) -> list[dict]:
    runs = [run for path in paths for run in single_runs(json.loads(Path(path).read_text()))]
    if not runs:
        raise ValueError(f"no runs found in {', '.join(map(str, paths))}")
    return runs


def check_same_settings(settings: list[dict], ignored: set[str]) -> None:
    """Raise if two runs disagree on a setting both record (keys added later are skipped)."""
    first = settings[0]
    for other in settings[1:]:
        shared = (first.keys() & other.keys()) - ignored
        differing = sorted(k for k in shared if first[k] != other[k])
        if differing:
            detail = ", ".join(f"{k}: {first[k]!r} vs {other[k]!r}" for k in differing)
            raise ValueError(f"runs of different experiments cannot be merged ({detail})")


def seeds_label(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


# --- meta_hamiltonian -----------------------------------------------------------------------


def _finite_or_inf(value: float | None) -> float:
    # write_json stores a diverged arm's median (inf) as null
    return math.inf if value is None else float(value)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.inf


def law_summary(result: dict, seed: int) -> dict:
    """One held-out law of one seed: the issue's ratios at k = 10, meta's MSE at k = 0, 1, 5, 10,
    the rollout error ratio, the k = 0 and in-distribution ratios, and the oracle's MSE (trained
    on the law itself)."""
    median = {
        arm: {key: _finite_or_inf(v) for key, v in values.items()}
        for arm, values in result["median"].items()
    }
    meta, pretrained, scratch = median["meta"], median["pretrained"], median["scratch"]
    curve = [meta[f"deriv_mse_k{k}"] for k in (0, 1, 5, 10)]
    validation = {
        arm: [_finite_or_inf(v) for v in values]
        for arm, values in result["validation_median_deriv_mse"].items()
    }
    oracle = result.get("oracle_median_trained_on_held_out_type", {})
    return {
        "seed": seed,
        "meta_over_pretrained": _ratio(curve[-1], pretrained["deriv_mse_k10"]),
        "meta_over_scratch": _ratio(curve[-1], scratch["deriv_mse_k10"]),
        "meta_curve": curve,
        "decreasing": all(b < a for a, b in itertools.pairwise(curve)),
        "meta_k0_over_pretrained_k0": _ratio(curve[0], pretrained["deriv_mse_k0"]),
        "in_distribution_meta_over_pretrained": _ratio(
            validation["meta"][-1], validation["pretrained"][-1]
        ),
        "traj_rk4_meta_over_pretrained": _ratio(
            meta["traj_rel_err_k10"], pretrained["traj_rel_err_k10"]
        ),
        "oracle_deriv_mse_k10": oracle.get("deriv_mse_k10"),
        "nonfinite": result.get("nonfinite_tasks"),
    }


def mean_goal(name: str, values: list[float], target: float, seeds: list[int]) -> dict:
    mean = float(np.mean(values))
    over = seeds_label(seeds) if len(seeds) == 1 else "mean over " + seeds_label(seeds)
    return {
        "name": f"{name} ({over})",
        "value": mean,
        "per_seed": values,
        "goal": f"<= {target:g}",
        "met": bool(mean <= target),
    }


def decreasing_goal(law: str, rows: list[dict]) -> dict:
    """The meta curve strictly decreasing in k: one seed shows its curve, several their flags."""
    name = f"{law}: meta derivative MSE decreasing in k (0, 1, 5, 10)"
    if len(rows) == 1:
        return {
            "name": f"{name} ({seeds_label([rows[0]['seed']])})",
            "value": rows[0]["meta_curve"],
            "goal": "strictly decreasing",
            "met": rows[0]["decreasing"],
        }
    flags = [row["decreasing"] for row in rows]
    return {
        "name": f"{name} (every seed)",
        "value": flags,
        "goal": "true for " + seeds_label([row["seed"] for row in rows]),
        "met": all(flags),
    }


def merge_meta_hamiltonian(runs: list[dict], references: list[dict]) -> dict:
    """Per law and seed: the ratios; goals on the mean over each law's seeds."""
    from meta_hamiltonian import POOL

    everything = runs + references
    check_same_settings([run["settings"] for run in everything], PER_PROCESS_SETTINGS)
    per_law: dict[str, list[dict]] = {}
    for run in everything:
        for result in run["results"]:
            law, seed = result["held_out"], run["settings"]["seed"]
            if any(row["seed"] == seed for row in per_law.get(law, [])):
                raise ValueError(f"{law} seed {seed} is in more than one run")
            per_law.setdefault(law, []).append(law_summary(result, seed))
    order = sorted(per_law, key=lambda law: (POOL.index(law) if law in POOL else len(POOL), law))
    per_law = {law: sorted(per_law[law], key=lambda row: row["seed"]) for law in order}

    goals = []
    for law, rows in per_law.items():
        seeds = [row["seed"] for row in rows]
        goals += [
            mean_goal(
                f"{law}: meta / scratch derivative MSE at k=10",
                [row["meta_over_scratch"] for row in rows],
                0.5,
                seeds,
            ),
            mean_goal(
                f"{law}: meta / pretrained derivative MSE at k=10",
                [row["meta_over_pretrained"] for row in rows],
                0.9,
                seeds,
            ),
            decreasing_goal(law, rows),
        ]
    ratios = [row["meta_over_pretrained"] for rows in per_law.values() for row in rows]
    return {
        "summary": {
            "per_law": per_law,
            "runs_with_meta_over_pretrained_at_most_0.9": sum(r <= 0.9 for r in ratios),
            "runs": len(ratios),
            "geometric_mean_meta_over_pretrained": float(np.exp(np.mean(np.log(ratios)))),
        },
        "runs": runs,
        "goals": goals,
    }


# --- prose ----------------------------------------------------------------------------------


def merge_prose(runs: list[dict], references: list[dict]) -> dict:
    """Every seed of every run side by side; means and goals over all of them."""
    from prose import goals_over_seeds, mean_over_seeds

    everything = runs + references
    check_same_settings([run["setup"] for run in everything], {"seeds"})
    per_seed = sorted(
        (seed for run in everything for seed in run["per_seed"]), key=lambda s: s["seed"]
    )
    seeds = [run["seed"] for run in per_seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is in more than one run: {seeds}")
    keys = ("continuation_rel_l2", "equations", "noise", "symbol_input")
    ratios = [run["ratio_data_only"] for run in per_seed]
    families = {}
    for run in per_seed:
        for family, scores in run.get("per_family", {}).items():
            families.setdefault(family, []).append(scores["prose"] / scores["data_only"])
    return {
        "setup": {**everything[0]["setup"], "seeds": seeds},
        "ratio_data_only": {"mean": float(np.mean(ratios)), "per_seed": ratios},
        "ratio_data_only_per_family_per_seed": families,
        "mean_over_seeds": mean_over_seeds([{k: run[k] for k in keys} for run in per_seed]),
        "runs": runs,
        "goals": goals_over_seeds(per_seed, over=seeds_label(seeds)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("benchmark", choices=("meta_hamiltonian", "prose"))
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files written by the script")
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="*",
        default=[],
        help="result files counted in the goals but not copied",
    )
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--mode", default="cpu")
    parser.add_argument("--command", action="append", default=[], help="how the runs were made")
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    merge = merge_meta_hamiltonian if args.benchmark == "meta_hamiltonian" else merge_prose
    try:
        references = load_runs(args.reference) if args.reference else []
        merged = merge(load_runs(args.runs), references)
    except ValueError as error:
        parser.error(str(error))
    report = {
        "benchmark": args.benchmark,
        "mode": args.mode,
        "commands": args.command,
        "note": args.note,
        "reference_files": [path.name for path in args.reference],
        **merged,
    }
    write_json(args.output, report)
    print_goals(report["goals"])


if __name__ == "__main__":
    main()
