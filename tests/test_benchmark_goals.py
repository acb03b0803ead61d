"""The committed benchmark results: every file has a goals list whose ``met`` flags are right."""

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_goals", Path(__file__).resolve().parents[1] / "benchmarks" / "goals.py"
)
goals = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(goals)


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [
        (0.9, "<= 0.9", True),
        (0.9001, "<= 0.9", False),
        (None, "<= 0.9", False),
        (44.2, ">= 10", True),
        (1.0, "< 1 (ratio PROSE / pysindy)", False),
        (0.02, "< 1 (ratio PROSE / pysindy)", True),
        ([0.3, 0.2, 0.1], "strictly decreasing", True),
        ([0.3, 0.2, 0.2], "strictly decreasing", False),
        ([True, True, True], "true for seeds 0, 1, 2", True),
        ([True, True], "true for seeds 0, 1, 2", False),
        ([True, False, True], "true for seeds 0, 1, 2", False),
    ],
)
def test_goal_texts_are_read_as_written(value, goal, met):
    assert goals.goal_is_met(value, goal) is met


def test_an_unknown_goal_text_is_an_error():
    with pytest.raises(ValueError, match="unknown goal text"):
        goals.goal_is_met(1.0, "about 1")


def test_every_result_file_reports_its_goals_truthfully():
    table = goals.load_goals()
    assert len(table) >= 20 and "solvers.json" in table
    assert goals.wrong_flags(table) == []


def test_a_wrong_flag_is_found(tmp_path):
    (tmp_path / "x.json").write_text(
        '{"goals": [{"name": "ratio", "value": 0.95, "goal": "<= 0.9", "met": true}]}'
    )
    assert goals.wrong_flags(goals.load_goals(tmp_path)) == ["x.json: ratio"]
    (tmp_path / "y.json").write_text('{"goals": []}')
    with pytest.raises(ValueError, match=r"y\.json has no 'goals' list"):
        goals.load_goals(tmp_path)
