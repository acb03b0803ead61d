"""The ``sciml`` command line: Lightning's CLI in subclass mode for models and data modules.

Examples::

    sciml fit -c problems/neural_ode/lotka_volterra.yaml
    sciml test -c runs/neural_ode/lotka_volterra/version_0/config.yaml --ckpt_path .../last.ckpt
    sciml fit --model.help NeuralODE
"""

from __future__ import annotations

import sys
import warnings
from typing import Any
from unittest import mock

from jsonargparse import lazy_instance
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger

from .data import ProblemDataModule
from .models import Task

__all__ = ["SciMLCLI", "console_main", "main"]

TRAINER_DEFAULTS: dict[str, Any] = {
    # PINNs and Hamiltonian models differentiate with respect to their inputs in evaluation too.
    "inference_mode": False,
    # CSV needs no extra package; runs land in runs/<name>/version_<n>/ with their checkpoints.
    "logger": lazy_instance(CSVLogger, save_dir="runs", name="default"),
}


class SciMLCLI(LightningCLI):
    """LightningCLI whose ``model`` is any :class:`sciml.models.Task` and ``data`` any
    :class:`sciml.data.ProblemDataModule`, named by class name or import path in the YAML.

    A checkpoint callback is always on (configurable under ``checkpoint:``) and keeps ``last.ckpt``,
    the state to resume from with ``--ckpt_path``.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "{epoch}-{step}"})


def main(args: ArgsType = None, *, run: bool = True) -> SciMLCLI:
    """Entry point of the ``sciml`` console script.

    Args:
        args: command-line arguments (list, dict or Namespace); ``None`` reads ``sys.argv``.
        run: run the subcommand; with ``False`` only instantiate the classes (no subcommands).

    Returns:
        The CLI object, e.g. ``main(["fit", "-c", path]).trainer.callback_metrics``.
    """
    if args is not None:
        # Called from Python (tests, notebooks): the host's own argv (pytest's, a Jupyter kernel's)
        # is not ours to parse.
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            return _build(args, run)
    return _build(args, run)


def console_main() -> None:
    """The ``sciml`` console script and ``python -m sciml``: run the command line from ``sys.argv``.

    Unlike :func:`main` it returns nothing, so a successful run exits with status 0 (a console
    script passes its function's return value to ``sys.exit``).
    """
    main()


def _build(args: ArgsType, run: bool) -> SciMLCLI:
    with warnings.catch_warnings():
        # Testing or resuming from a checkpoint restores its ModelCheckpoint state, whose folder
        # is the earlier run's; each run writes to its own version folder by design.
        warnings.filterwarnings("ignore", message="The dirpath has changed", category=UserWarning)
        return _instantiate(args, run)


def _instantiate(args: ArgsType, run: bool) -> SciMLCLI:
    return SciMLCLI(
        Task,
        ProblemDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        args=args,
        run=run,
    )
