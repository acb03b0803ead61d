"""Every goal of every result file at a glance, and a check that each ``met`` flag is right.

    python benchmarks/goals.py            # one line per result file, then every unmet goal
    python benchmarks/goals.py --check    # also exit 1 if a flag disagrees with value and goal

A goal is ``{"name", "value", "goal", "met"}``. The goal texts in use are a comparison with a
number, optionally followed by words (``"<= 0.9"``, ``">= 10"``, ``"< 1 (ratio ...)"``),
``"strictly decreasing"`` (the value is the list of values) and ``"true for seeds 0, 1, 2"`` or
``"true for seed 2"`` (the value is one flag per seed). A value of ``null`` (e.g. a ratio with a
diverged arm) meets no goal.
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


def goal_is_met(value: Any, goal: str) -> bool:
    """Whether ``value`` meets the goal text; ``ValueError`` for a goal text not listed above."""
    if goal == "strictly decreasing":
        return value is not None and all(a > b for a, b in itertools.pairwise(value))
    if goal.startswith(("true for seeds ", "true for seed ")):
        return value is not None and len(value) == len(goal.split(",")) and all(value)
    symbol, target, *_ = [*goal.split(), ""]
    if symbol not in COMPARISONS:
        raise ValueError(f"unknown goal text {goal!r}")
    return value is not None and COMPARISONS[symbol](float(value), float(target))


def load_goals(results: Path = RESULTS) -> dict[str, list[dict[str, Any]]]:
    """``{file name: goals}`` for every JSON in ``results``; ``ValueError`` if one has none."""
    table = {}
    for path in sorted(results.glob("*.json")):
        goals = json.loads(path.read_text()).get("goals")
        if not goals:
            raise ValueError(f"{path.name} has no 'goals' list")
        for goal in goals:
            missing = {"name", "value", "goal", "met"} - set(goal)
            if missing:
                raise ValueError(f"{path.name}: goal {goal.get('name')!r} lacks {sorted(missing)}")
        table[path.name] = goals
    return table


def wrong_flags(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``"file: name"`` for every goal whose ``met`` flag disagrees with its value and goal."""
    return [
        f"{name}: {goal['name']}"
        for name, goals in table.items()
        for goal in goals
        if goal_is_met(goal["value"], goal["goal"]) != goal["met"]
    ]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on a wrong 'met' flag")
    args = parser.parse_args()
    table = load_goals()
    width = max(len(name) for name in table)
    print(f"{'result file':<{width}}  met / goals")
    for name, goals in table.items():
        print(f"{name:<{width}}  {sum(g['met'] for g in goals):>3} / {len(goals)}")
    print("\nnot met:")
    for name, goals in table.items():
        for goal in goals:
            if not goal["met"]:
                print(f"  {name}: {goal['name']}: {_shown(goal['value'])} ({goal['goal']})")
    if args.check:
        wrong = wrong_flags(table)
        for line in wrong:
            print(f"wrong 'met' flag: {line}", file=sys.stderr)
        sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
