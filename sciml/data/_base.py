"""The dataset-zoo convention: deterministic generation from a seed, splits, on-disk cache."""

from __future__ import annotations

import abc
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .._settings import as_plain

__all__ = ["EpochSeededSampler", "ProblemDataModule", "TensorDictDataset"]


class TensorDictDataset(Dataset):
    """Rows of ``{name: tensor}`` tensors sharing their leading dimension; item ``i`` is a dict."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        sizes = {name: len(value) for name, value in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must share their first dimension, got {sizes}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.tensors.items()}


class EpochSeededSampler(Sampler[int]):
    """Random permutation drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of each epoch, so the order of epoch ``k`` is the
    same whether training ran straight through or resumed from a checkpoint, unlike a sampler whose
    generator state lives only in memory.
    """

    def __init__(self, size: int, *, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ProblemDataModule(pl.LightningDataModule, abc.ABC):
    """Base class of every data module in the zoo.

    Subclasses implement :meth:`generate` (a pure function of the hyperparameters, ``seed``
    included) and :meth:`split`; this class caches the generated tensors under ``cache_dir`` keyed
    by a hash of the hyperparameters, and builds the data loaders. Subclasses call
    ``self.save_hyperparameters()`` in their ``__init__`` so the hash and the checkpoint see
    every setting.

    Args:
        seed: seed of the generator; equal seeds give bit-identical data.
        batch_size: samples per training batch.
        eval_batch_size: samples per validation/test/predict batch (default ``batch_size``).
        num_workers: worker processes for the loaders (0 loads in the main process).
        cache_dir: folder for the generated tensors; ``None`` disables caching.
    """

    #: hyperparameters that do not change the generated data, so they are left out of the cache key
    _not_in_cache_key = frozenset({"batch_size", "num_workers", "cache_dir", "eval_batch_size"})

    def __init__(
        self,
        *,
        seed: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.splits: dict[str, TensorDictDataset] = {}

    def save_hyperparameters(self, *args: Any, frame: Any = None, **kwargs: Any) -> None:
        """Lightning's ``save_hyperparameters``, with settings dataclasses stored as dicts.

        A checkpoint is read with ``weights_only=True``, which refuses a pickled dataclass such
        as a :class:`ConvectionDiffusion1D` passed from Python; every data module accepts the
        dict in its place.
        """
        super().save_hyperparameters(*args, frame=frame or inspect.currentframe().f_back, **kwargs)
        for name, value in self._hparams.items():
            self._hparams[name] = as_plain(value)

    @abc.abstractmethod
    def generate(self) -> dict[str, torch.Tensor]:
        """All samples, deterministic in the hyperparameters; tensors share the first dimension."""

    @abc.abstractmethod
    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        """Datasets for ``"train"``, ``"val"`` and ``"test"``."""

    def cache_key(self) -> str:
        settings = {k: v for k, v in self.hparams.items() if k not in self._not_in_cache_key}
        text = json.dumps(
            {"class": type(self).__qualname__, **settings}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return Path(self.cache_dir) / f"{type(self).__name__}-{self.cache_key()}.pt"

    def load_or_generate(self) -> dict[str, torch.Tensor]:
        """Read the cache if it holds these settings, else generate (and write the cache)."""
        path = self.cache_path()
        if path is not None and path.exists():
            return torch.load(path, weights_only=True)
        data = self.generate()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            torch.save(data, temporary)
            temporary.replace(path)  # atomic, so a crash never leaves a half-written cache behind
        return data

    def prepare_data(self) -> None:
        # Runs on one process under DDP: fill the cache once so the other ranks only read it.
        if self.cache_dir is not None:
            self.load_or_generate()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.split(self.load_or_generate())

    def _loader(self, name: str, *, shuffle: bool) -> DataLoader:
        if name not in self.splits:
            self.setup()
        dataset = self.splits[name]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            sampler=EpochSeededSampler(len(dataset), seed=self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"cache_key": self.cache_key()}
