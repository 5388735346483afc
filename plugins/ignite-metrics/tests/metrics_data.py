"""A fixed 3-class classifier and small datasets, shared by the tests and the distributed worker."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset


def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def dataset(size: int, seed: int) -> TensorDataset:
    """(inputs, targets, index) samples."""
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(size, 4, generator=generator), torch.randint(0, 3, (size,), generator=generator), torch.arange(size)
    )


def metric_options() -> dict[str, Any]:
    return {
        "accuracy": {"name": "MulticlassAccuracy", "num_classes": 3, "average": "micro"},
        "macro_f1": {"name": "MulticlassF1Score", "num_classes": 3, "average": "macro"},
    }
