"""real: more real images — held out from the base subset and the test set, in a fixed order per seed."""

from __future__ import annotations

from runners.data import base_and_real_pool
from runners.pools import Pool
from runners.costs import Stage
from runners.sources.base import Context, Pricing, no_generator_cost

NAME = "real"


def generator_trainings(cfg) -> int:
    return 0


def prepare(ctx: Context) -> Pool:
    _, pool = base_and_real_pool(ctx.cfg, ctx.n_real, ctx.seed, ctx.size)
    return Pool({"indices": pool, "labels": ctx.data.labels[pool]}, {**no_generator_cost(), "sample_seconds": 0.0})


def price(cfg, p: Pricing) -> list[Stage]:
    """Held-out real images: a pool is the indices of its images (8 bytes each), nothing to compute."""
    size = max(cfg.n_synth)
    return [Stage("real pools", p.n_pools, p.n_pools * size, 0.0, p.n_pools * size * 8, "indices only")]


def calibrate(cfg, shape) -> list[tuple[str, float, str]]:
    """Nothing to time: a real pool is index arithmetic."""
    return []
