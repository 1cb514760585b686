"""img2img: every synthetic image starts from a base image, noised part-way and denoised back (SDEdit, Meng et
al. 2022; Burg et al. 2023's Boomerang row, Luzi et al. 2023), labelled as that base image.

Offline default: the open-set generator (one class-conditional diffusion model on every non-test image, the same
model an ``open_set`` source with the same generator options samples from) takes each base image to ``strength``
of its noise schedule and runs the remaining reverse steps, guided towards the base image's class. With
``pipeline: /local/folder``: diffusers' image-to-image pipeline built from that text-to-image folder's
components, prompted with the class name. ``strength`` 1 is the generator's plain sampling (nothing of the base
image survives); near 0 the base images come back.
"""

from __future__ import annotations

from runners import streams
from runners.checks import number
from runners.costs import Stage
from runners.options import denoising_steps, resolve_preset
from runners.pools import Pool
from runners.sources import open_set
from runners.sources.base import (
    Context,
    Facts,
    Pricing,
    as_uint8,
    check_generator,
    generator_stages,
    no_generator_cost,
    padded_size,
    sampled_in_batches,
    shared_by,
    start_images,
    text2image_stage,
)

NAME = "img2img"
DEFAULT_STRENGTH = 0.5


def options(raw: dict) -> dict:
    """The resolved options: ``strength`` plus the open-set generator's (a preset plus overrides) or a text-to-image
    folder's prompt and sampling settings (what the pool keys hash)."""
    rest = {k: v for k, v in raw.items() if k != "strength"}
    strength = float(raw.get("strength", DEFAULT_STRENGTH))
    if rest.get("pipeline"):
        return {**open_set.options(rest), "strength": strength}
    return {"generator": resolve_preset(rest), "strength": strength}


def check(raw: dict, facts: Facts) -> dict:
    """``strength`` in (0, 1], and what ``open_set`` checks of the generator or the folder; a folder's sampling
    must keep at least one denoising step at that strength."""
    strength = raw.get("strength", DEFAULT_STRENGTH)
    number(strength, facts.field("strength"), low=0, low_open=True, high=1)
    out = {
        **open_set.check({k: v for k, v in raw.items() if k != "strength"}, facts),
        **({"strength": strength} if "strength" in raw else {}),
    }
    resolved = options(raw)
    if "text2image" in resolved:
        steps = int(resolved["text2image"]["steps"])
        if denoising_steps(steps, strength) < 1:
            raise ValueError(
                f"strength: {strength} of {steps} steps leaves no denoising step (diffusers takes the last "
                f"int(steps x strength)); raise strength or steps"
            )
    else:
        check_generator(resolved["generator"], facts)
    return out


def shared_generator(cfg, name: str) -> tuple[str, dict] | None:
    """The open-set generator it starts from (offline), trained once per run for every source that shares it."""
    return open_set.shared_generator(cfg, name)


def generator_trainings(cfg, name: str) -> int:
    return 1 if "generator" in cfg.options(name) else 0


def _starts(ctx: Context, batch: int):
    """(dataset indices of the start images, their labels) for the pool's padded rows."""
    idx = start_images(ctx, padded_size(ctx.size, batch))
    return idx, ctx.data.labels[idx]


def prepare(ctx: Context) -> Pool:
    # torch and diffusers load here, not at import: the config validator and the dry run read this module
    from runners.generative import img2img_diffusion

    opts = ctx.options
    text = opts.get("text2image")
    batch = text["batch"] if text else opts["generator"]["sample_batch"]
    idx, labels = _starts(ctx, batch)
    seed = streams.torch_seed("generator_sample", ctx.seed, ctx.n_real)

    def starts(lab, first):  # the start images of the batches from ``first`` on
        return as_uint8(ctx.data.images[idx[first * batch : first * batch + len(lab)]])

    if text:
        images, seconds = open_set.text2image_pool_images(
            ctx, labels, seed, lambda lab, first: {"start_images": starts(lab, first), "strength": opts["strength"]}
        )
        meta = {**no_generator_cost(), "generator": text["pipeline"]}
    else:
        key, model, trained = open_set.load_shared_generator(ctx)
        meta = {
            "generator_seconds": trained["train_seconds"],
            "generator_shared_by": shared_by(ctx.cfg, key),
            "generator": key,
        }
        hp = opts["generator"]

        def sample(lab, first):
            return img2img_diffusion(
                model,
                starts(lab, first),
                lab,
                ctx.n_classes,
                hp,
                strength=opts["strength"],
                seed=seed,
                first_batch=first,
                progress=ctx.progress,
            )

        images, seconds = sampled_in_batches(ctx, batch, labels, sample)
    return Pool({"images": images, "labels": labels, "starts": idx}, {**meta, "sample_seconds": seconds})


def memorisation_reference(ctx: Context) -> tuple[str, object]:
    """The base subset: every image starts from one of them (at low strength, a near-copy of it)."""
    return "base subset (the images it starts from)", ctx.base


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """The open-set generator (once per run, shared) and the partial reverse runs; or a text-to-image folder's
    image-to-image runs, each ``strength`` of a full sampling."""
    opts = cfg.options(name)
    if "generator" in opts:
        hp = opts["generator"]
        share = denoising_steps(int(hp["sample_steps"]), opts["strength"]) / int(hp["sample_steps"])
        return generator_stages(cfg, name, p, open_set.shared_training(cfg, name, p), sampled=share)
    text = opts["text2image"]
    share = denoising_steps(int(text["steps"]), opts["strength"]) / int(text["steps"])
    return [text2image_stage(cfg, name, p, text["batch"], what="img2img", share=share)]


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """The open-set generator's rates (offline); a folder keeps the cost table's assumed rate."""
    return open_set.calibrate(cfg, name, shape)
