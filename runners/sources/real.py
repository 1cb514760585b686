"""real: more real images — held out from the base subset and the test set, in a fixed order per seed."""

from __future__ import annotations

from runners.data import base_and_real_pool
from runners.pools import Pool
from runners.sources.base import Context, no_generator_cost

NAME = "real"


def generator_trainings(cfg) -> int:
    return 0


def prepare(ctx: Context) -> Pool:
    _, pool = base_and_real_pool(ctx.cfg, ctx.n_real, ctx.seed, ctx.size)
    return Pool({"indices": pool, "labels": ctx.data.labels[pool]}, {**no_generator_cost(), "sample_seconds": 0.0})
