"""Seeded random draws that leave the caller's random state alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["isolated_seed"]


@contextmanager
def isolated_seed(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators seeded by ``seed``, then restore them.

    ``torch.manual_seed`` reseeds the CPU and every GPU, so every GPU's state is saved and
    restored too, not only the CPU's.
    """
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        yield
