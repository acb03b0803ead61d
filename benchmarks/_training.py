"""The Trainer the benchmarks fit with: Lightning's side outputs off, so timings are the fit's."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def quiet_trainer(**options: Any) -> pl.Trainer:
    """``pl.Trainer(**options)`` with no logger, checkpoints, progress bar or model summary."""
    side_outputs_off = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**side_outputs_off, **options)
