"""closed_set: samples of a class-conditional diffusion model trained only on the base subset."""

from __future__ import annotations

from runners import streams
from runners.storage import RunFolder
from runners.options import content_hash, resolve_preset
from runners.pools import Pool, dataset_spec, generator_folder
from runners.costs import Stage
from runners.sources.base import (
    Context,
    Facts,
    Pricing,
    balanced_labels,
    check_generator,
    generator_stages,
    diffusion_pool_images,
    padded_size,
)

NAME = "closed_set"


def options(raw: dict) -> dict:
    """The resolved options: a generator preset plus overrides (what the generator and pool keys hash)."""
    return {"generator": resolve_preset(raw)}


def check(raw: dict, facts: Facts) -> dict:
    """The generator's hyper-parameters against the dataset's images; returns the options as the config keeps them."""
    check_generator(options(raw)["generator"], facts)
    return dict(raw)


def generator_trainings(cfg, name: str) -> int:
    """One generator per (n_real, seed): each sees only its own base subset."""
    return len(cfg.pool_bases()) * len(cfg.seeds)


def generator_key(cfg, name: str, n_real: int, seed: int) -> str:
    hp = cfg.options(name)["generator"]
    return content_hash({**dataset_spec(cfg), "role": NAME, "n_real": int(n_real), "seed": int(seed), "hp": hp})


def prepare(ctx: Context) -> Pool:
    # torch and diffusers load here, not at import: the config validator and the dry run read this module
    from runners.generative import train_or_load

    hp = ctx.options["generator"]
    key = generator_key(ctx.cfg, ctx.source, ctx.n_real, ctx.seed)
    folder = generator_folder(ctx.cfg, key)
    model, meta = train_or_load(
        folder,
        ctx.data.images[ctx.base],
        ctx.data.labels[ctx.base],
        ctx.n_classes,
        hp,
        seed=streams.torch_seed("generator_train", ctx.seed, ctx.n_real),
        progress=ctx.progress,
        desc=f"closed_set r{ctx.n_real} seed{ctx.seed}",
    )
    RunFolder(ctx.cfg).upload_tree(folder)  # a remote run folder keeps the weights (no-op when already there)
    labels = balanced_labels(
        padded_size(ctx.size, hp["sample_batch"]), ctx.n_classes, streams.rng("pool_labels", ctx.seed, ctx.n_real)
    )
    seed = streams.torch_seed("generator_sample", ctx.seed, ctx.n_real)
    images, seconds = diffusion_pool_images(ctx, model, hp, labels, seed)
    return Pool(
        {"images": images, "labels": labels},
        {
            "generator_seconds": meta["train_seconds"],
            "generator_shared_by": 1,
            "sample_seconds": seconds,
            "generator": key,
        },
    )


def memorisation_reference(ctx: Context) -> tuple[str, object]:
    """The generator's own training set: the base subset."""
    return "training set (the base subset)", ctx.base


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """One generator per (base subset, seed), each sampled for its own pool."""
    return generator_stages(cfg, name, p, [n for n in cfg.pool_bases() for _ in cfg.seeds])


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """The generator's training and sampling rates (``scaling calibrate``)."""
    from runners.timing import generator_rates

    return generator_rates(cfg.options(name)["generator"], shape)
