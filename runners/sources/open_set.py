"""open_set: a generator that never depends on the base subset.

Offline default: one class-conditional diffusion model trained once per run on every non-test image.
With ``pipeline: /local/folder``: a local diffusers text-to-image pipeline prompted with class names.
Either way the pool depends on the seed only, not on n_real.
"""

from __future__ import annotations

from runners import streams
from runners.storage import RunFolder
from runners.data import dataset_of, non_test
from runners.generative import load_generator, sample_diffusion, sample_text2image, train_or_load
from runners.options import content_hash
from runners.pools import Pool, dataset_spec, generator_folder
from runners.costs import Stage, lookup
from runners.sources.base import (
    Context,
    Pricing,
    balanced_labels,
    generator_stages,
    no_generator_cost,
    padded_size,
    sampled_in_batches,
)

NAME = "open_set"


def uses_generator(cfg) -> bool:
    """True for the offline default (a generator the sweep trains), False for a text-to-image folder."""
    return "generator" in cfg.options(NAME)


def generator_trainings(cfg) -> int:
    return 1 if uses_generator(cfg) else 0


def generator_key(cfg) -> str:
    return content_hash({**dataset_spec(cfg), "role": NAME, "options": cfg.options(NAME)})


def prepare_generator(cfg, progress: bool = False) -> dict:
    """Train (once per run) the generator every seed's pool samples from; returns its meta record."""
    data, test_idx = dataset_of(cfg)
    train = non_test(data, test_idx)
    folder = generator_folder(cfg, generator_key(cfg))
    _, meta = train_or_load(
        folder,
        data.images.subset(train),
        data.labels[train],
        len(data.classes),
        cfg.options(NAME)["generator"],
        seed=streams.shared_seed("generator_train"),
        progress=progress,
        desc="open_set generator",
    )
    RunFolder(cfg).upload_tree(folder)  # a remote run folder keeps the weights (no-op when already there)
    return meta


def _labels(ctx: Context, batch: int):
    return balanced_labels(padded_size(ctx.size, batch), ctx.n_classes, streams.rng("pool_labels", ctx.seed))


def _text2image(ctx: Context) -> Pool:
    t = ctx.options["text2image"]
    labels = _labels(ctx, t["batch"])
    images, seconds = sampled_in_batches(
        ctx,
        t["batch"],
        labels,
        lambda lab, first: sample_text2image(
            t["pipeline"],
            ctx.data.classes,
            lab,
            ctx.data.shape,
            prompt=t["prompt"],
            steps=int(t["steps"]),
            seed=streams.torch_seed("generator_sample", ctx.seed),
            guidance=float(t["guidance"]),
            batch=t["batch"],
            first_batch=first,
            progress=ctx.progress,
        ),
    )
    return Pool(
        {"images": images, "labels": labels},
        {**no_generator_cost(), "sample_seconds": seconds, "generator": t["pipeline"]},
    )


def prepare(ctx: Context) -> Pool:
    if not uses_generator(ctx.cfg):
        return _text2image(ctx)
    hp = ctx.options["generator"]
    key = generator_key(ctx.cfg)
    folder = generator_folder(ctx.cfg, key)
    if not (folder / "meta.json").exists():
        prepare_generator(ctx.cfg, ctx.progress)
    model, meta = load_generator(folder)
    labels = _labels(ctx, hp["sample_batch"])
    seed = streams.torch_seed("generator_sample", ctx.seed)
    images, seconds = sampled_in_batches(
        ctx,
        hp["sample_batch"],
        labels,
        lambda lab, first: sample_diffusion(
            model, lab, ctx.n_classes, hp, seed=seed, first_batch=first, progress=ctx.progress
        ),
    )
    # one generator serves every seed's pool: its training cost is shared among them
    return Pool(
        {"images": images, "labels": labels},
        {
            "generator_seconds": meta["train_seconds"],
            "generator_shared_by": len(ctx.cfg.seeds),
            "sample_seconds": seconds,
            "generator": key,
        },
    )


def price(cfg, p: Pricing) -> list[Stage]:
    """One generator on all non-test images, sampled per pool; or a text-to-image pipeline, prompted per pool."""
    opts = cfg.options(NAME)
    if "generator" in opts:
        return generator_stages(cfg, NAME, p, generator_trainings(cfg))
    size = padded_size(max(cfg.n_synth), opts["text2image"]["batch"])
    rate, basis = lookup(p.table, p.device, "text2image")
    return [
        Stage(
            "open_set text2image",
            p.n_pools,
            p.n_pools * size,
            p.n_pools * size / rate / 3600,
            p.n_pools * size * p.pixels,
            f"text2image: {rate:.3g} img/s, {basis}",
        )
    ]


def calibrate(cfg, shape) -> list[tuple[str, float, str]]:
    """The generator's rates; a text-to-image pipeline keeps the cost table's assumed rate (timing it needs the
    pipeline's weights on the device the run will use)."""
    from runners.calibrate import generator_rates

    opts = cfg.options(NAME)
    return generator_rates(opts["generator"], shape) if "generator" in opts else []
