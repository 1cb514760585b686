"""open_set: a generator that never depends on the base subset.

Offline default: one class-conditional diffusion model trained once per run on every non-test image.
With ``pipeline: /local/folder``: a local diffusers text-to-image pipeline prompted with class names.
Either way the pool depends on the seed only, not on n_real.
"""

from __future__ import annotations

import time

from runners import storage, streams
from runners.data import dataset_of, non_test
from runners.generative import load_generator, sample_diffusion, sample_text2image, train_or_load
from runners.options import content_hash
from runners.pools import Pool, dataset_spec, generator_folder
from runners.sources.base import Context, balanced_labels, no_generator_cost

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
    _, meta = train_or_load(folder, data.images.subset(train), data.labels[train],
                            len(data.classes), cfg.options(NAME)["generator"],
                            seed=streams.shared_seed("generator_train"), progress=progress, desc="open_set generator")
    storage.push_tree(cfg, folder)  # a remote run folder keeps the weights (no-op when already there)
    return meta


def _text2image(ctx: Context, labels) -> Pool:
    t = ctx.options["text2image"]
    t0 = time.perf_counter()
    images = sample_text2image(t["pipeline"], ctx.data.classes, labels, ctx.data.shape, prompt=t["prompt"],
                               seed=streams.torch_seed("generator_sample", ctx.seed), steps=int(t["steps"]),
                               guidance=float(t["guidance"]), progress=ctx.progress)
    return Pool({"images": images, "labels": labels},
                {**no_generator_cost(), "sample_seconds": time.perf_counter() - t0, "generator": t["pipeline"]})


def prepare(ctx: Context) -> Pool:
    labels = balanced_labels(ctx.size, ctx.n_classes, streams.rng("pool_labels", ctx.seed))
    if not uses_generator(ctx.cfg):
        return _text2image(ctx, labels)
    key = generator_key(ctx.cfg)
    folder = generator_folder(ctx.cfg, key)
    if not (folder / "meta.json").exists():
        prepare_generator(ctx.cfg, ctx.progress)
    model, meta = load_generator(folder)
    t0 = time.perf_counter()
    images = sample_diffusion(model, labels, ctx.n_classes, ctx.options["generator"], progress=ctx.progress,
                              seed=streams.torch_seed("generator_sample", ctx.seed))
    # one generator serves every seed's pool: its training cost is shared among them
    return Pool({"images": images, "labels": labels},
                {"generator_seconds": meta["train_seconds"], "generator_shared_by": len(ctx.cfg.seeds),
                 "sample_seconds": time.perf_counter() - t0, "generator": key})
