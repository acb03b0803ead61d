"""Regularizers: one abstract base, composable penalties for every model family."""

from ._base import AbstractRegularizer

__all__ = ["AbstractRegularizer"]
