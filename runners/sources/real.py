"""real: more real images — held out from the base subset and the test set, in a fixed order per seed."""

from __future__ import annotations

from runners.checks import require
from runners.data import base_and_real_pool
from runners.pools import Pool
from runners.costs import Stage
from runners.sources.base import Context, Facts, Pricing, no_generator_cost

NAME = "real"


def options(raw: dict) -> dict:
    """Held-out images of the dataset itself: nothing to choose."""
    if raw:
        raise ValueError(f"{sorted(raw)[0]}: the real source takes no options")
    return {}


def check(raw: dict, facts: Facts) -> dict:
    """Its pool of max(n_synth) held-out images must fit beside the test set and the largest base."""
    options(raw)
    if facts.free_images is not None:
        require(
            max(facts.n_synth) <= facts.free_images,
            "n_synth",
            f"max(n_real) + max(n_synth) = {max(facts.n_real) + max(facts.n_synth)} exceeds the "
            f"{max(facts.n_real) + facts.free_images} non-test images of {facts.dataset['name']}",
        )
    return dict(raw)


def generator_trainings(cfg, name: str) -> int:
    return 0


def prepare(ctx: Context) -> Pool:
    _, pool = base_and_real_pool(ctx.cfg, ctx.n_real, ctx.seed, ctx.size)
    return Pool({"indices": pool, "labels": ctx.data.labels[pool]}, {**no_generator_cost(), "sample_seconds": 0.0})


def memorisation_reference(ctx: Context) -> tuple[str, object]:
    """Held-out real images against the base subset: the audit's floor (new real data copies nothing)."""
    return "base subset", ctx.base


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """Held-out real images: a pool is the indices of its images (8 bytes each), nothing to compute."""
    size = max(cfg.n_synth)
    return [Stage("real pools", p.n_pools, p.n_pools * size, 0.0, p.n_pools * size * 8, "indices only")]


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """Nothing to time: a real pool is index arithmetic."""
    return []
