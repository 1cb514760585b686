"""Every random stream of a sweep, spawned from one ``numpy.random.SeedSequence`` per (seed, n_real).

One home for randomness: a stream is named, so adding a stream never shifts another, and streams of
different names are independent by construction (SeedSequence spawning) rather than by hand-picked
offsets. The classifier's stream depends on (seed, n_real) only, so every source at a base size starts
its classifier from the same weights and batch order (a paired comparison).
"""

from __future__ import annotations

import numpy as np

# append only: a stream's position is its identity (reordering would change every number)
STREAMS = (
    "split",
    "classifier",
    "generator_train",
    "generator_sample",
    "pool_labels",
    "encoder",
    "domain",
    "test_split",
    "validation",
    "memorisation",
    "start_images",
    "personalise",
)
SHARED = 2**31 - 1  # entropy word of streams shared by every seed (test split, open-set generator, judge)


def _sequence(seed: int, n_real: int | None, name: str) -> np.random.SeedSequence:
    if name not in STREAMS:
        raise KeyError(f"unknown random stream {name!r}; known: {STREAMS}")
    words = [int(seed)] if n_real is None else [int(seed), int(n_real)]
    return np.random.SeedSequence(words).spawn(len(STREAMS))[STREAMS.index(name)]


def rng(name: str, seed: int, n_real: int | None = None) -> np.random.Generator:
    """A numpy Generator for stream ``name`` of (seed, n_real); ``n_real=None`` for per-seed streams."""
    return np.random.default_rng(_sequence(seed, n_real, name))


def torch_seed(name: str, seed: int, n_real: int | None = None) -> int:
    """A 63-bit integer seed for torch (``torch.manual_seed`` takes an int) from the same stream."""
    return _torch_int(_sequence(seed, n_real, name))


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed of batch ``batch`` of a stream whose seed is ``seed``: batches drawn independently of
    each other, so a pool can grow by whole batches and keep the ones it has."""
    return _torch_int(np.random.SeedSequence([int(seed), int(batch)]))


def _torch_int(sequence: np.random.SeedSequence) -> int:
    """A 63-bit non-negative int (what ``torch.Generator.manual_seed`` takes) from a SeedSequence."""
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def shared_seed(name: str) -> int:
    """The torch seed of a model every seed shares (trained once per run)."""
    return torch_seed(name, SHARED)


def shared_rng(name: str) -> np.random.Generator:
    """A numpy Generator every seed shares (the fixed test split)."""
    return rng(name, SHARED)
