"""What every source module receives (a :class:`Context`) and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from runners.data import ImageData, base_and_real_pool, dataset_of


@dataclass(frozen=True)
class Context:
    """One pool to build: (source, n_real, seed) of a sweep, ``size`` images."""

    cfg: object  # runners.config.SweepConfig
    source: str
    n_real: int
    seed: int
    size: int
    progress: bool = False

    @cached_property
    def options(self) -> dict:
        return self.cfg.options(self.source)

    @property
    def data(self) -> ImageData:
        return dataset_of(self.cfg)[0]

    @property
    def test_idx(self) -> np.ndarray:
        return dataset_of(self.cfg)[1]

    @cached_property
    def base(self) -> np.ndarray:
        return base_and_real_pool(self.cfg, self.n_real, self.seed)[0]

    @property
    def n_classes(self) -> int:
        return len(self.data.classes)


def balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class-balanced labels whose every prefix is balanced too (round-robin over a shuffled class order)."""
    order = rng.permutation(n_classes)
    return order[np.arange(n) % n_classes]


def no_generator_cost() -> dict:
    """The cost fields of a pool that trains no generator (real images, retrieval, a ready-made pipeline)."""
    return {"generator_seconds": 0.0, "generator_shared_by": 1}
