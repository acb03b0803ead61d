"""Settings as plain data, the form in which checkpoints store hyperparameters."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

__all__ = ["as_plain"]


def as_plain(value: Any) -> Any:
    """``value`` with every dataclass instance (nested in dicts, lists and tuples too) as a dict.

    Checkpoints are read back with ``torch.load(weights_only=True)``, which refuses pickled
    classes; every settings dataclass in sciml is accepted as the dict this returns.
    """
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_plain(v) for v in value)
    return value
