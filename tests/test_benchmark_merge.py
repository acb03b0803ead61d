"""benchmarks/merge_runs.py: runs made as separate processes join into one file with goals on
the mean over seeds, and a merge that would mix experiments or repeat a seed is refused."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import merge_runs  # noqa: E402


def meta_run(seed: int, laws: dict[str, list[float]], *, hidden: int = 64) -> dict:
    """A meta_hamiltonian report: per law the meta curve at k = 0, 1, 5, 10, and fixed
    pretrained / scratch MSE at k = 10 of 0.1 / 1.0 (k = 0: 0.2 / 1.0); rollout errors 0.2 for
    meta, 0.4 for the others; an oracle MSE of 0.03."""

    def arm(k0: float, k10: float | None, trajectory: float = 0.4) -> dict:
        return {"deriv_mse_k0": k0, "deriv_mse_k10": k10, "traj_rel_err_k10": trajectory}

    return {
        "settings": {"seed": seed, "held_out": list(laws), "hidden": hidden, "output": f"{seed}"},
        "results": [
            {
                "held_out": law,
                "median": {
                    "meta": {
                        **arm(curve[0], curve[-1], trajectory=0.2),
                        "deriv_mse_k1": curve[1],
                        "deriv_mse_k5": curve[2],
                    },
                    "pretrained": arm(0.2, 0.1),
                    "scratch": arm(1.0, 1.0),
                },
                "validation_median_deriv_mse": {"meta": [0.3, 0.01], "pretrained": [0.3, 0.02]},
                "oracle_median_trained_on_held_out_type": {"deriv_mse_k10": 0.03},
                "nonfinite_tasks": {"meta": 0, "pretrained": 0, "scratch": 0},
            }
            for law, curve in laws.items()
        ],
    }


def test_meta_goals_are_judged_on_the_mean_over_each_laws_seeds():
    runs = [
        meta_run(0, {"morse": [0.4, 0.2, 0.1, 0.05], "duffing": [0.4, 0.3, 0.2, 0.12]}),
        meta_run(1, {"morse": [0.4, 0.2, 0.12, 0.11]}),
    ]
    merged = merge_runs.merge_meta_hamiltonian(runs, [])
    goals = {g["name"]: g for g in merged["goals"]}
    over_pretrained = goals[
        "morse: meta / pretrained derivative MSE at k=10 (mean over seeds 0, 1)"
    ]
    assert over_pretrained["per_seed"] == pytest.approx([0.5, 1.1])
    assert over_pretrained["value"] == pytest.approx(0.8) and over_pretrained["met"]
    duffing = goals["duffing: meta / pretrained derivative MSE at k=10 (seed 0)"]
    assert duffing["value"] == pytest.approx(1.2) and not duffing["met"]
    duffing_curve = goals["duffing: meta derivative MSE decreasing in k (0, 1, 5, 10) (seed 0)"]
    assert duffing_curve["value"] == [0.4, 0.3, 0.2, 0.12] and duffing_curve["met"]
    decreasing = goals["morse: meta derivative MSE decreasing in k (0, 1, 5, 10) (every seed)"]
    assert decreasing["value"] == [True, True] and decreasing["goal"] == "true for seeds 0, 1"
    # the pool's order (duffing before morse), then per law by seed
    assert list(merged["summary"]["per_law"]) == ["duffing", "morse"]
    morse = merged["summary"]["per_law"]["morse"][0]
    assert morse["meta_k0_over_pretrained_k0"] == pytest.approx(2.0)
    assert morse["in_distribution_meta_over_pretrained"] == pytest.approx(0.5)
    assert morse["traj_rk4_meta_over_pretrained"] == pytest.approx(0.5)
    assert morse["oracle_deriv_mse_k10"] == 0.03
    summary = merged["summary"]
    assert summary["runs"] == 3 and summary["runs_with_meta_over_pretrained_at_most_0.9"] == 1
    assert summary["geometric_mean_meta_over_pretrained"] == pytest.approx(
        (0.5 * 1.1 * 1.2) ** (1 / 3)
    )


def test_a_diverged_meta_arm_fails_its_goals():
    # write_json stores the diverged median (inf) as null
    merged = merge_runs.merge_meta_hamiltonian([meta_run(0, {"morse": [0.4, 0.2, 0.1, None]})], [])
    row = merged["summary"]["per_law"]["morse"][0]
    assert math.isinf(row["meta_over_pretrained"]) and not row["decreasing"]
    assert not any(goal["met"] for goal in merged["goals"])


def test_references_count_but_are_not_copied_and_merging_again_changes_nothing():
    new, reference = (
        meta_run(0, {"duffing": [0.4, 0.3, 0.2, 0.05]}),
        meta_run(0, {"morse": [1, 1, 1, 1]}),
    )
    merged = merge_runs.merge_meta_hamiltonian([new], [reference])
    assert merged["runs"] == [new] and set(merged["summary"]["per_law"]) == {"duffing", "morse"}
    again = merge_runs.merge_meta_hamiltonian(merge_runs.single_runs(merged), [reference])
    assert again == merged


def test_a_repeated_law_and_seed_or_other_settings_are_refused():
    run = meta_run(0, {"morse": [0.4, 0.2, 0.1, 0.05]})
    with pytest.raises(ValueError, match="morse seed 0 is in more than one run"):
        merge_runs.merge_meta_hamiltonian([run, run], [])
    other = meta_run(1, {"duffing": [0.4, 0.2, 0.1, 0.05]}, hidden=128)
    with pytest.raises(ValueError, match="hidden: 64 vs 128"):
        merge_runs.merge_meta_hamiltonian([run, other], [])


def merge(*arguments: str) -> subprocess.CompletedProcess:
    script = str(BENCHMARKS / "merge_runs.py")
    return subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True)


def prose_run(seeds: dict[int, float]) -> dict:
    def scores(ratio: float) -> dict:
        return {
            "seed": 0,
            "ratio_data_only": ratio,
            "ratio_last_value": ratio / 10,
            "continuation_rel_l2": {"prose": ratio},
            "equations": {"valid_fraction": 1.0},
            "noise": {"0.02": ratio},
            "symbol_input": {"clean": ratio},
            "per_family": {"van_der_pol": {"prose": ratio, "data_only": 2.0}},
        }

    return {
        "setup": {"t_input": 1.0, "steps": 1500, "seeds": list(seeds)},
        "per_seed": [{**scores(ratio), "seed": seed} for seed, ratio in seeds.items()],
    }


def test_prose_seeds_of_several_processes_are_pooled(tmp_path):
    paths = []
    for name, seeds in (("a", {0: 0.8, 1: 0.9}), ("b", {4: 1.3})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(prose_run(seeds)))
    output = tmp_path / "merged.json"
    done = merge(
        "prose", *map(str, paths), "--output", str(output), "--command", "prose.py --seeds S"
    )
    assert done.returncode == 0, done.stderr
    merged = json.loads(output.read_text())
    assert merged["setup"]["seeds"] == [0, 1, 4] and merged["commands"] == ["prose.py --seeds S"]
    ratio = next(g for g in merged["goals"] if "data-only" in g["name"])
    assert ratio["name"].endswith("(mean over seeds 0, 1, 4)")
    assert ratio["value"] == pytest.approx(1.0) and not ratio["met"]
    assert merged["mean_over_seeds"]["noise"]["0.02"] == pytest.approx(1.0)
    van_der_pol = merged["ratio_data_only_per_family_per_seed"]["van_der_pol"]
    assert van_der_pol == pytest.approx([0.4, 0.45, 0.65])
    assert merged["runs"] == [json.loads(path.read_text()) for path in paths]
    # the same seed from two processes, or a different window, is refused with a clear message
    for clash in (prose_run({1: 0.7}), {**prose_run({7: 0.7}), "setup": {"t_input": 2.0}}):
        paths[1].write_text(json.dumps(clash))
        refused = merge("prose", *map(str, paths), "--output", str(output))
        assert refused.returncode == 2
        assert "a seed is in more than one run" in refused.stderr or "t_input" in refused.stderr
