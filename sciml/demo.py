"""End-to-end demo: fit a neural ODE from a YAML problem, test it from the saved config and
checkpoint, and plot fitted against true trajectories.

Run with ``make demo`` or ``python -m sciml.demo [--config PATH] [--max-epochs N]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .cli import main as cli_main

DEFAULT_CONFIG = "problems/neural_ode/lotka_volterra.yaml"


def _plot(model, datamodule, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install 'sciml[notebooks]')")
        return None
    batch = next(iter(datamodule.test_dataloader()))
    t, y_true = batch["t"][0], batch["y_true"]
    with torch.no_grad():
        prediction = model(y_true[:, 0], t)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i in range(min(len(y_true), 4)):
        (line,) = axes[0].plot(y_true[i, :, 0], y_true[i, :, 1], lw=2, alpha=0.4)
        axes[0].plot(prediction[i, :, 0], prediction[i, :, 1], "--", color=line.get_color())
        axes[1].plot(t, y_true[i, :, 0], lw=2, alpha=0.4, color=line.get_color())
        axes[1].plot(t, prediction[i, :, 0], "--", color=line.get_color())
    axes[0].set(
        title="phase portrait (solid: true, dashed: neural ODE)", xlabel="$y_1$", ylabel="$y_2$"
    )
    axes[1].set(title="first component over time", xlabel="$t$", ylabel="$y_1$")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="problem YAML (default: %(default)s)"
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    options = parser.parse_args(argv)
    if not Path(options.config).exists():
        raise SystemExit(f"{options.config} not found: run the demo from the repository root")
    torch.set_num_threads(1)

    overrides = [] if options.max_epochs is None else [f"--trainer.max_epochs={options.max_epochs}"]
    fit = cli_main(["fit", "-c", options.config, *overrides])
    log_dir = Path(fit.trainer.log_dir)
    checkpoint = fit.trainer.checkpoint_callback.last_model_path

    test = cli_main(["test", "-c", str(log_dir / "config.yaml"), "--ckpt_path", checkpoint])
    metrics = {
        k: float(v) for k, v in test.trainer.callback_metrics.items() if k.startswith("test/")
    }
    (log_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    plot = _plot(test.model, test.datamodule, log_dir / "fit.png")

    print("\n=== sciml demo ===")
    print(f"config      : {log_dir / 'config.yaml'}")
    print(f"checkpoint  : {checkpoint}")
    print(f"train log   : {log_dir / 'metrics.csv'}")
    print(f"test metrics: {log_dir / 'test_metrics.json'}")
    for name, value in sorted(metrics.items()):
        print(f"    {name:<16} {value:.4g}")
    if plot is not None:
        print(f"plot        : {plot}")
    return metrics


if __name__ == "__main__":
    main()
