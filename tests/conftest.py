from pathlib import Path

import pytest
import torch

from sciml.cli import main
from sciml.models import SBIRRConfig

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "problems"
SHARED = ROOT.parent / "shared"


def retest_saved_run(fit):
    """``sciml test`` rebuilt from the config and the last checkpoint that a ``sciml fit`` run
    (the CLI object ``fit``) saved; returns the test run's CLI object."""
    saved = Path(fit.trainer.log_dir) / "config.yaml"
    checkpoint = fit.trainer.checkpoint_callback.last_model_path
    return main(["test", "-c", str(saved), "--ckpt_path", str(checkpoint)])


def pytest_addoption(parser):
    parser.addoption(
        "--accelerator",
        default="cpu",
        help="Lightning accelerator for the problem smoke runs (gpu on a machine that has one)",
    )


@pytest.fixture
def accelerator(request):
    return request.config.getoption("--accelerator")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in an empty folder so CLI runs write their logs and checkpoints there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_ipf_config():
    """A Schrodinger-bridge IPF back-end small enough for a test: two refinements of two IPF
    passes with (32, 32) drift networks; on the rotation-OU snapshots it recovers the drift."""
    return SBIRRConfig(
        max_iterations=2, tol=0.0, refit="adam", step=0.1, ipf_iterations=2, ipf_fit_steps=80,
        refit_steps=200, ipf_hidden_dims=(32, 32), ipf_batch_size=512, ipf_lr=3e-3,
    )  # fmt: skip
