"""Metrics: relative L2 error, Wasserstein distances."""

from ._metrics import relative_l2, wasserstein

__all__ = ["relative_l2", "wasserstein"]
