"""Data-parallel training must give the same update as one process on the concatenated batch."""

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from sciml.data import TensorDictDataset
from sciml.models import NeuralODE
from sciml.solvers import ODESolverConfig


class _FixedData(pl.LightningDataModule):
    def __init__(self, tensors, batch_size, order=None):
        super().__init__()
        self.batch_size = batch_size
        self.tensors = tensors if order is None else {k: v[order] for k, v in tensors.items()}

    def train_dataloader(self):
        return DataLoader(
            TensorDictDataset(self.tensors), batch_size=self.batch_size, shuffle=False
        )


class _DestroyProcessGroup(pl.Callback):
    """Ends the gloo process group inside each spawned worker.

    Lightning destroys only NCCL groups at exit; a gloo group left to interpreter shutdown can
    abort a worker ("terminate called without an active exception", SIGABRT) after training has
    finished, which made this test flaky on the 2-core CI machine.
    """

    def teardown(self, trainer, pl_module, stage):
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _data():
    generator = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 6).expand(16, 6).contiguous()
    y = torch.randn(16, 6, 2, generator=generator)
    return {"t": t, "y": y}


def _model():
    torch.manual_seed(0)
    return NeuralODE(
        state_dim=2,
        hidden_dims=[16],
        solver=ODESolverConfig(rtol=1e-6, atol=1e-8, adjoint=True),
        optimizer={"name": "sgd", "lr": 0.5},
    )


def _fit(model, batch_size, order=None, **trainer_kwargs):
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[_DestroyProcessGroup()],
        **trainer_kwargs,
    )
    trainer.fit(model, _FixedData(_data(), batch_size, order))
    return model


def _concatenated_rank_order(n, ranks, per_rank_batch):
    """Sample order under which one process's batches are the union of the ranks' batches.

    Lightning gives each rank a shuffling ``DistributedSampler`` (seed 0, epoch 0).
    """
    shards = [
        list(DistributedSampler(range(n), num_replicas=ranks, rank=r, shuffle=True, seed=0))
        for r in range(ranks)
    ]
    order = []
    for start in range(0, len(shards[0]), per_rank_batch):
        for shard in shards:
            order += shard[start : start + per_rank_batch]
    return order


def test_ddp_spawn_gradients_equal_single_process(tmp_path):
    initial = [p.detach().clone() for p in _model().parameters()]
    order = _concatenated_rank_order(16, ranks=2, per_rank_batch=4)
    single = _fit(
        _model(), batch_size=8, order=order, devices=1, default_root_dir=tmp_path / "single"
    )
    ddp = _fit(
        _model(), batch_size=4, devices=2, strategy="ddp_spawn", default_root_dir=tmp_path / "ddp"
    )
    moved = False
    for before, a, b in zip(initial, single.parameters(), ddp.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        moved |= not torch.allclose(a, before)
    assert moved  # two SGD steps with lr 0.5 must have changed the weights
