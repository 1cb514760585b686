"""TEMPORARY legacy seeds (restructure check); replaced by SeedSequence streams in the next commit."""

from __future__ import annotations

import numpy as np

STREAMS = ("split", "classifier", "generator_train", "generator_sample", "pool_labels", "encoder", "domain")


def rng(name, seed, n_real=None):
    if name == "split":
        return np.random.default_rng([seed, n_real])
    if name == "pool_labels":
        return np.random.default_rng([seed, 7])
    if name == "domain":
        return np.random.default_rng(seed)
    raise KeyError(name)


def torch_seed(name, seed, n_real=None):
    return {"classifier": int(seed) * 100_003 + int(n_real or 0), "generator_train": int(seed),
            "generator_sample": int(seed) + 1, "encoder": int(seed)}[name]


def shared_seed(name):
    return {"classifier": 12345, "generator_train": 0}[name]
