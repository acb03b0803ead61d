"""The one base class of every regularizer: a weighted penalty with an optional decay schedule."""

from __future__ import annotations

import abc
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["AbstractRegularizer", "as_regularizer"]


def _recording_arguments(init: Callable[..., None]) -> Callable[..., None]:
    # Subclass constructors run inside one another (super().__init__); the outermost finishes
    # last, so the arguments kept are the ones the user passed to the concrete class.
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: AbstractRegularizer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        for name, parameter in signature.parameters.items():
            if name == "self" or name not in bound.arguments:
                continue
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(bound.arguments[name])
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                arguments[name] = bound.arguments[name]
        object.__setattr__(self, "_init_arguments", arguments)

    return wrapper


class AbstractRegularizer(nn.Module, abc.ABC):
    r"""A penalty $R$ that a task adds to its loss as $\lambda(\text{step})\,R$.

    The weight is constant, or moves exponentially from ``weight`` ($\lambda_0$) to
    ``weight_final`` ($\lambda_1$) over the run (a decay, or a growth if $\lambda_1 > \lambda_0$):
    $\lambda(s) = \lambda_0 \exp(-k s)$ with $k = \log(\lambda_0/\lambda_1) / S$ for $S$ total
    steps.

    Subclasses set :attr:`name` (the key under which the value is logged, e.g. ``train/reg_local``)
    and implement :meth:`forward`, whose inputs depend on the family of regularizer (a solve of a
    neural ODE, a linear operator, ...) and are stated in each subclass's docstring. Constructor
    arguments are plain data so a regularizer can be given in YAML, and :meth:`config` returns
    them as ``{"class_path", "init_args"}`` (what models store in their checkpoint
    hyperparameters; :func:`as_regularizer` rebuilds the regularizer from it).

    Args:
        weight: $\lambda_0$, must be >= 0.
        weight_final: $\lambda_1$ at the last step; ``None`` keeps the weight constant.
    """

    name: ClassVar[str] = "reg"

    @_recording_arguments
    def __init__(self, *, weight: float = 1.0, weight_final: float | None = None) -> None:
        super().__init__()
        finite = all(math.isfinite(w) for w in (weight, weight_final) if w is not None)
        if not finite or weight < 0:
            raise ValueError(
                f"{type(self).__name__}: weight must be finite and >= 0 (weight_final finite), "
                f"got {weight} and {weight_final}"
            )
        if weight_final is not None and (weight_final <= 0 or weight <= 0):
            raise ValueError(
                f"{type(self).__name__}: an exponential decay needs weight > 0 and "
                "weight_final > 0, "
                f"got {weight} -> {weight_final}"
            )
        self.weight = weight
        self.weight_final = weight_final

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__init__)

    def config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": {...}}`` that :func:`as_regularizer` rebuilds."""
        cls = type(self)
        public = importlib.import_module(__name__.rpartition(".")[0])
        exported = getattr(public, cls.__name__, None) is cls
        module = public.__name__ if exported else cls.__module__
        arguments = getattr(self, "_init_arguments", {})
        return {"class_path": f"{module}.{cls.__qualname__}", "init_args": _plain(arguments)}

    def weight_at(self, step: int, total_steps: int | None = None) -> float:
        """$\\lambda$ at optimisation step ``step`` of ``total_steps``."""
        if self.weight_final is None:
            return self.weight
        if not total_steps or total_steps <= 0:
            raise ValueError(f"{type(self).__name__}: a decaying weight needs the total step count")
        rate = math.log(self.weight / self.weight_final) / total_steps
        return self.weight * math.exp(-rate * min(step, total_steps))

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The unweighted penalty $R$ (a scalar tensor, differentiable in the model parameters)."""


def as_regularizer(value: AbstractRegularizer | Mapping[str, Any]) -> AbstractRegularizer:
    """``value`` itself, or the regularizer a ``{"class_path", "init_args"}`` mapping describes.

    Raises:
        TypeError: ``value`` is neither, or its class path does not name a regularizer.
    """
    if isinstance(value, AbstractRegularizer):
        return value
    if not isinstance(value, Mapping) or "class_path" not in value:
        raise TypeError(
            "a regularizer must be an AbstractRegularizer or a mapping with 'class_path' and "
            f"'init_args', got {value!r}"
        )
    module_name, _, name = str(value["class_path"]).rpartition(".")
    cls = getattr(importlib.import_module(module_name), name, None) if module_name else None
    if not (isinstance(cls, type) and issubclass(cls, AbstractRegularizer)):
        raise TypeError(f"class_path {value['class_path']!r} is not an AbstractRegularizer")
    return cls(**dict(value.get("init_args") or {}))


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so the arguments read back from YAML and JSON alike."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
