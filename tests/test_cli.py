import math
from pathlib import Path

import pytest
import yaml

from sciml.cli import main

from .conftest import PROBLEMS, SHARED

CONFIGS = sorted(PROBLEMS.rglob("*.yaml"))
SMALL = ["--data.init_args.n_trajectories=16", "--trainer.enable_progress_bar=false"]


# PROSE operator data at the paper's size takes hours to generate: a handful of samples suffice.
SMALL_OPERATORS = [
    "--data.init_args.n_train=4",
    "--data.init_args.n_val=2",
    "--data.init_args.n_test=2",
    "--data.init_args.cache_dir=null",
    "--trainer.enable_progress_bar=false",
]


def _small(config):
    """Shrink trajectory and operator data for smoke runs; other data modules' YAMLs must be small
    already."""
    text = config.read_text()
    if "sciml.data.TrajectoryDataModule" in text:
        return SMALL
    if "sciml.data.ODEOperatorDataModule" in text:
        return SMALL_OPERATORS
    return ["--trainer.enable_progress_bar=false"]


def test_problems_exist():
    families = {p.parent.name for p in CONFIGS}
    assert {"neural_ode", "neural_sde"} <= families
    assert {"lotka_volterra.yaml", "spiral.yaml"} <= {
        p.name for p in CONFIGS if p.parent.name == "neural_ode"
    }


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_problem_passes_fast_dev_run(config, in_tmp_dir, accelerator):
    """One training and validation batch of every problem. ``pytest --accelerator gpu`` runs them
    on a GPU and adds one test batch (on the CPU each family's test step has its own tests, at
    sizes that keep this suite short)."""
    if "../shared/" in config.read_text() and not SHARED.exists():
        pytest.skip(f"{config.name} reads benchmark data from ../shared, which is absent here")
    on = f"--trainer.accelerator={accelerator}"
    cli = main(["fit", "-c", str(config), "--trainer.fast_dev_run=true", on, *_small(config)])
    metrics = cli.trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert math.isfinite(float(metrics["val/loss"]))
    if accelerator != "cpu":
        tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        assert tested and all(math.isfinite(value) for value in tested.values()), tested


def test_fit_then_test_from_saved_config_and_checkpoint(in_tmp_dir):
    config = PROBLEMS / "neural_ode" / "lotka_volterra.yaml"
    fit = main(
        [
            "fit",
            "-c",
            str(config),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            *SMALL,
        ]
    )
    log_dir = Path(fit.trainer.log_dir)
    saved = log_dir / "config.yaml"
    checkpoint = Path(fit.trainer.checkpoint_callback.last_model_path)
    assert saved.exists() and checkpoint.exists()
    assert yaml.safe_load(saved.read_text())["model"]["class_path"] == "sciml.models.NeuralODE"
    expected = fit.trainer.test(fit.model, datamodule=fit.datamodule, verbose=False)[0]

    rebuilt = main(["test", "-c", str(saved), "--ckpt_path", str(checkpoint)])
    got = {k: float(v) for k, v in rebuilt.trainer.callback_metrics.items()}
    assert set(expected) <= set(got)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6), name
    assert rebuilt.model.hparams.solver == fit.model.hparams.solver


def _run_expecting_exit(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code != 0
    return capsys.readouterr().err


def test_unknown_key_is_named(in_tmp_dir, capsys):
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    err = _run_expecting_exit(
        ["fit", "-c", str(config), "--model.init_args.hiden_dims=[8]"], capsys
    )
    assert "hiden_dims" in err


def test_wrong_type_is_named(in_tmp_dir, capsys):
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    err = _run_expecting_exit(["fit", "-c", str(config), "--model.init_args.state_dim=two"], capsys)
    assert "state_dim" in err


def test_unknown_solver_method_lists_choices(in_tmp_dir, capsys):
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    with pytest.raises((SystemExit, ValueError)) as info:
        main(["fit", "-c", str(config), "--model.init_args.solver.method=dopri99"])
    text = str(info.value) + capsys.readouterr().err
    assert "dopri99" in text and "dopri5" in text


def test_unparseable_sympy_string_fails_before_training(in_tmp_dir, tmp_path):
    config = {
        "trainer": {"max_epochs": 1},
        "model": {"class_path": "sciml.models.NeuralODE", "init_args": {"state_dim": 1}},
        "data": {
            "class_path": "sciml.data.TrajectoryDataModule",
            "init_args": {
                "system": "mine",
                "rhs": ["-k*x +* 2"],
                "state_names": ["x"],
                "y0_low": [0.0],
                "y0_high": [1.0],
                "t_span": [0.0, 1.0],
            },
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"rhs\[0\] = '-k\*x \+\* 2' is not a valid expression"):
        main(["fit", "-c", str(path)])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_state_dim_mismatch_is_reported(in_tmp_dir):
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    with pytest.raises(ValueError, match="state_dim=3 but the data has state_dim=2"):
        main(
            [
                "fit",
                "-c",
                str(config),
                "--model.init_args.state_dim=3",
                "--trainer.fast_dev_run=true",
                *SMALL,
            ]
        )


def test_python_module_entry_point(in_tmp_dir):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "sciml", "--help"], capture_output=True, text=True, check=True
    )
    assert "fit" in out.stdout and "test" in out.stdout


def test_console_script_exits_zero_on_success(in_tmp_dir):
    import subprocess
    import sys

    script = Path(sys.executable).with_name("sciml")
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    args = [str(script), "fit", "-c", str(config), "--trainer.fast_dev_run=true", *SMALL]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    failed = subprocess.run([*args, "--model.init_args.nope=1"], capture_output=True, text=True)
    assert failed.returncode != 0
    assert "nope" in failed.stderr


def test_cli_uses_input_gradient_friendly_trainer(in_tmp_dir):
    config = PROBLEMS / "neural_ode" / "spiral.yaml"
    cli = main(["-c", str(config), *SMALL], run=False)
    assert cli.trainer.test_loop.inference_mode is False
    assert cli.trainer.validate_loop.inference_mode is False
    assert cli.trainer.predict_loop.inference_mode is False
