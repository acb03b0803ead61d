"""Models on a CUDA device: the same seeded run gives the same result as on the CPU.

Skipped without a GPU. On a machine with one, run with the problem smoke runs on the GPU::

    pytest tests/test_devices.py tests/test_cli.py --accelerator gpu
"""

import pytest
import torch

from sciml.data import SnapshotDataModule
from sciml.metrics import relative_frobenius_error
from sciml.models import SBIRRConfig, SchrodingerBridge

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

A_TRUE = torch.tensor([[-0.2, -1.0], [1.0, -0.2]], dtype=torch.float64)


def _refined_bridge(device: str, backend: str, config: SBIRRConfig) -> SchrodingerBridge:
    batch = SnapshotDataModule("rotation_ou", n_per_snapshot=100, seed=0).generate()
    times = batch["t"][0].tolist()
    snapshots = [batch["x"][0, k].to(device) for k in range(len(times))]
    torch.manual_seed(0)
    model = SchrodingerBridge(sigma=0.3, backend=backend, config=config).to(device)
    model.set_snapshots(times, snapshots)
    for _ in range(config.max_iterations):
        model.refine()
    return model


@needs_cuda
def test_linear_schrodinger_bridge_on_gpu_matches_cpu():
    # Random draws come from the model's CPU generators on either device, so only float64
    # round-off separates the two runs.
    config = SBIRRConfig(max_iterations=3, tol=0.0)
    cpu, gpu = _refined_bridge("cpu", "linear", config), _refined_bridge("cuda", "linear", config)
    assert gpu.drift.A.device.type == "cuda"
    torch.testing.assert_close(gpu.drift.A.cpu(), cpu.drift.A, rtol=1e-6, atol=1e-9)
    grid_cpu, paths_cpu = cpu.sample_paths(20)
    grid_gpu, paths_gpu = gpu.sample_paths(20)
    torch.testing.assert_close(grid_gpu.cpu(), grid_cpu)
    torch.testing.assert_close(paths_gpu.cpu(), paths_cpu, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(gpu.marginal(1.5).cpu(), cpu.marginal(1.5), rtol=1e-6, atol=1e-8)


@needs_cuda
def test_ipf_schrodinger_bridge_on_gpu_recovers_the_drift(small_ipf_config):
    # The IPF drift networks run in float32, whose GPU kernels round differently: the two runs
    # agree closely, not to round-off.
    cpu = _refined_bridge("cpu", "ipf", small_ipf_config)
    gpu = _refined_bridge("cuda", "ipf", small_ipf_config)
    assert relative_frobenius_error(gpu.drift.A.detach().cpu(), A_TRUE) < 0.3
    assert relative_frobenius_error(gpu.drift.A.detach().cpu(), cpu.drift.A.detach()) < 0.1
    grid, paths = gpu.sample_paths(10)
    assert paths.device.type == "cuda" and torch.isfinite(paths).all()
    assert grid[-1] == 4.0
