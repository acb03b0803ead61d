"""scikit-learn's bundled 8x8 handwritten digits as a classification data module (no download)."""

from __future__ import annotations

import torch

from ._base import ProblemDataModule, TensorDictDataset

__all__ = ["DigitsDataModule"]


class DigitsDataModule(ProblemDataModule):
    """The UCI optical-recognition digits shipped with scikit-learn (``load_digits``).

    1797 grey-level 8x8 images of the digits 0-9 with pixel values 0..16, scaled to [0, 1] and
    flattened. A random permutation drawn from ``seed`` splits them into test
    (``test_fraction``), validation (``val_fraction``) and training sets.

    Batches are dicts ``{"x": (B, 64) float32, "y": (B,) int64}``. With ``eval_batch_size=None``
    the validation and test loaders give each split as one batch, so a model's test metrics
    (e.g. the solver's NFE) describe one pass over the whole test set.

    Args:
        test_fraction: share of all images held out for testing.
        val_fraction: share of all images held out for validation (may be 0).
        seed: seed of the split.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size; ``None`` means the whole split.
        num_workers: loader workers.
        cache_dir: cache folder (the data are small and bundled; ``None`` is fine).

    Raises:
        ImportError: when scikit-learn is not installed.
    """

    input_dim = 64
    n_classes = 10

    def __init__(
        self,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        seed: int = 1234,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1 - test_fraction:
            raise ValueError(
                "test_fraction must lie in (0, 1) and val_fraction in [0, 1 - test_fraction), "
                f"got test_fraction={test_fraction}, val_fraction={val_fraction}"
            )
        super().__init__(
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size or 1_000_000,
            num_workers=num_workers,
            cache_dir=cache_dir,
        )
        self.save_hyperparameters()

    def generate(self) -> dict[str, torch.Tensor]:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "DigitsDataModule needs scikit-learn (pip install scikit-learn)"
            ) from error
        digits = load_digits()
        x = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.as_tensor(digits.target, dtype=torch.int64)
        return {"x": x, "y": y}

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        n = len(data["y"])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_test = round(self.hparams.test_fraction * n)
        n_val = round(self.hparams.val_fraction * n)
        parts = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        return {
            name: TensorDictDataset({key: value[index] for key, value in data.items()})
            for name, index in parts.items()
        }
