"""What every benchmark reports: the machine it ran on, its goals table and its JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, processor, core count, torch threads and versions, plus ``extra`` entries."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
    }


def print_goals(goals: list[dict[str, Any]]) -> None:
    """The ``{"name", "value", "goal", "met"}`` entries as a table."""
    width = max(len(g["name"]) for g in goals)
    print(f"\n{'goal':<{width}}  {'value':>10}  {'target':>20}  met")
    for g in goals:
        value = g["value"]
        shown = f"{value:>10.4g}" if isinstance(value, (int, float)) else f"{value!s:>10}"
        print(f"{g['name']:<{width}}  {shown}  {g['goal']:>20}  {'yes' if g['met'] else 'NO'}")


def write_json(path: Path, report: dict[str, Any], *, indent: int = 2) -> None:
    """Write ``report`` as strict JSON (NaN and infinities, e.g. of a diverged run, as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(report), indent=indent, default=_plain, allow_nan=False)
    path.write_text(text + "\n")
    print(f"wrote {path}")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    # numpy scalars/arrays, tensors, paths and other leaves json does not know
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
