"""open_set: a generator that never depends on the base subset.

Offline default: one class-conditional diffusion model trained once per run on every non-test image.
With ``pipeline: /local/folder``: a local diffusers text-to-image pipeline prompted with class names.
Either way the pool depends on the seed only, not on n_real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runners.checks import require_file
from runners import streams
from runners.storage import RunFolder
from runners.data import dataset_of, non_test
from runners.options import content_hash, positive_int, resolve_preset
from runners.pools import Pool, dataset_spec, generator_folder
from runners.costs import Stage
from runners.sources.base import (
    Context,
    Facts,
    Pricing,
    balanced_labels,
    check_generator,
    generator_stages,
    no_generator_cost,
    diffusion_pool_images,
    padded_size,
    sampled_in_batches,
    shared_by,
    text2image_stage,
)

NAME = "open_set"
TEXT2IMAGE_DEFAULTS = {"prompt": "a photo of {}", "steps": 25, "guidance": 7.5, "batch": 16}  # batch: as sample_batch


def options(raw: dict) -> dict:
    """The resolved options: a text-to-image folder's prompt and sampling settings when ``pipeline`` is set, else
    the offline generator's preset plus overrides (what the generator and pool keys hash)."""
    return _text2image_options(raw) if raw.get("pipeline") else {"generator": resolve_preset(raw)}


def _text2image_options(raw: dict) -> dict:
    opts = {**TEXT2IMAGE_DEFAULTS, **raw}
    unknown = sorted(set(opts) - set(TEXT2IMAGE_DEFAULTS) - {"pipeline"})
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown text-to-image option (known: pipeline, {', '.join(TEXT2IMAGE_DEFAULTS)})"
        )
    opts["batch"] = positive_int(opts, "batch")
    opts["pipeline"] = str(Path(opts["pipeline"]).resolve())
    # the folder's model index enters the key: another checkpoint in the same folder is another pool
    index_file = Path(opts["pipeline"]) / "model_index.json"
    # absent only in a dry run of a config whose models are not in place yet (a sweep checks the folder first)
    index = json.loads(index_file.read_text()) if index_file.exists() else "absent"
    return {"text2image": opts, "pipeline_index": content_hash(index)}


def check(raw: dict, facts: Facts) -> dict:
    """The text-to-image folder (a diffusers pipeline with every component it lists) or the generator's
    hyper-parameters; returns the options as the config keeps them, the folder made absolute (Ray Tune runs
    trials in its own working folder, and the pool key hashes the path)."""
    out = dict(raw)
    if raw.get("pipeline") is not None:
        try:
            check_pipeline_dir(raw["pipeline"])
        except ValueError as exc:
            require_file(False, facts.field("pipeline"), str(exc))
        out["pipeline"] = str(Path(raw["pipeline"]).resolve()) if raw["pipeline"] else raw["pipeline"]
    resolved = options(raw)
    if "generator" in resolved:
        check_generator(resolved["generator"], facts)
    return out


def check_pipeline_dir(path) -> None:
    """Fail before the sweep when a text-to-image folder is missing or malformed."""
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"no such folder: {p}")
    index = p / "model_index.json"
    if not index.exists():
        raise ValueError(f"{p} is not a diffusers pipeline folder (no model_index.json)")
    try:
        spec = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index} is not valid JSON ({exc})") from None
    for name, value in spec.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        if not (p / name).is_dir():
            raise ValueError(f"{p} lists component '{name}' in model_index.json but has no '{name}/' folder")


def uses_generator(cfg, name: str) -> bool:
    """True for the offline default (a generator the sweep trains), False for a text-to-image folder."""
    return "generator" in cfg.options(name)


def generator_trainings(cfg, name: str) -> int:
    return 1 if uses_generator(cfg, name) else 0


def generator_key(cfg, hp: dict) -> str:
    """The offline generator of hyper-parameters ``hp``: one per run, whichever sources (open_set, img2img,
    personalised) start from it."""
    return content_hash({**dataset_spec(cfg), "role": NAME, "options": {"generator": hp}})


def shared_generator(cfg, name: str) -> tuple[str, dict] | None:
    """(key, hyper-parameters) of the run-wide generator a source's pools wait for, or None (a text-to-image
    folder). The sweep trains each distinct one once, first (:func:`prepare_generator`)."""
    opts = cfg.options(name)
    return (generator_key(cfg, opts["generator"]), opts["generator"]) if "generator" in opts else None


def prepare_generator(cfg, hp: dict, progress: bool = False) -> dict:
    """Train (once per run) the generator every seed's pool samples from; returns its meta record."""
    # torch and diffusers load where a pool is built, not at import: the config validator and the dry run read
    # this module
    from runners.generative import train_or_load

    data, test_idx = dataset_of(cfg)
    train = non_test(data, test_idx)
    folder = generator_folder(cfg, generator_key(cfg, hp))
    _, meta = train_or_load(
        folder,
        data.images.subset(train),
        data.labels[train],
        len(data.classes),
        hp,
        seed=streams.shared_seed("generator_train"),
        progress=progress,
        desc="open_set generator",
    )
    RunFolder(cfg).upload_tree(folder)  # a remote run folder keeps the weights (no-op when already there)
    return meta


def _labels(ctx: Context, batch: int):
    return balanced_labels(padded_size(ctx.size, batch), ctx.n_classes, streams.rng("pool_labels", ctx.seed))


def text2image_pool_images(ctx: Context, labels, seed: int, extra=None) -> tuple[np.ndarray, float]:
    """(images, sampling seconds) of a text-to-image folder's pool for ``labels``, batch b's noise from the stream
    ``seed``; ``extra(labels of the batches, first batch)`` adds arguments of ``sample_text2image`` (start images,
    learned tokens): what open_set, img2img and personalised sample from a folder."""
    from runners.generative import sample_text2image  # torch, diffusers: loaded where a pool is built

    t = ctx.options["text2image"]
    return sampled_in_batches(
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
            seed=seed,
            guidance=float(t["guidance"]),
            batch=t["batch"],
            first_batch=first,
            progress=ctx.progress,
            **(extra(lab, first) if extra else {}),
        ),
    )


def _text2image(ctx: Context) -> Pool:
    t = ctx.options["text2image"]
    labels = _labels(ctx, t["batch"])
    images, seconds = text2image_pool_images(ctx, labels, streams.torch_seed("generator_sample", ctx.seed))
    return Pool(
        {"images": images, "labels": labels},
        {**no_generator_cost(), "sample_seconds": seconds, "generator": t["pipeline"]},
    )


def memorisation_reference(ctx: Context) -> tuple[str, object] | None:
    """The offline generator's training set (every non-test image); None for a text-to-image folder, whose
    training set is not at hand."""
    if not uses_generator(ctx.cfg, ctx.source):
        return None
    return "training set (every non-test image)", non_test(ctx.data, ctx.test_idx)


def prepare(ctx: Context) -> Pool:
    if not uses_generator(ctx.cfg, ctx.source):
        return _text2image(ctx)
    hp = ctx.options["generator"]
    key, model, meta = load_shared_generator(ctx)
    labels = _labels(ctx, hp["sample_batch"])
    images, seconds = diffusion_pool_images(ctx, model, hp, labels, streams.torch_seed("generator_sample", ctx.seed))
    # one generator serves every seed's pool (and those of sources starting from it): its cost is split among them
    return Pool(
        {"images": images, "labels": labels},
        {
            "generator_seconds": meta["train_seconds"],
            "generator_shared_by": shared_by(ctx.cfg, key),
            "sample_seconds": seconds,
            "generator": key,
        },
    )


def load_shared_generator(ctx: Context):
    """(key, model, meta) of the run-wide generator of ``ctx``'s source, trained here when no task did it first."""
    from runners.generative import load_generator

    key, hp = shared_generator(ctx.cfg, ctx.source)
    folder = generator_folder(ctx.cfg, key)
    if not (folder / "meta.json").exists():
        prepare_generator(ctx.cfg, hp, ctx.progress)
    model, meta = load_generator(folder)
    return key, model, meta


def shared_training(cfg, name: str, p: Pricing) -> list[None]:
    """The run-wide generator's training for the dry run: once, by the first source priced that starts from it
    (every non-test image: not known before the dataset is read, so priced at train_steps, the cap)."""
    return [None] if p.first_time(shared_generator(cfg, name)[0]) else []


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """One generator on all non-test images, sampled per pool; or a text-to-image pipeline, prompted per pool."""
    opts = cfg.options(name)
    if "generator" in opts:
        return generator_stages(cfg, name, p, shared_training(cfg, name, p))
    return [text2image_stage(cfg, name, p, opts["text2image"]["batch"])]


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """The generator's rates; a text-to-image pipeline keeps the cost table's assumed rate (timing it needs the
    pipeline's weights on the device the run will use)."""
    from runners.timing import generator_rates

    opts = cfg.options(name)
    return generator_rates(opts["generator"], shape) if "generator" in opts else []
