"""personalised: the open-set generator adapted to the base subset only, then prompted per class (Burg et al. 2023's
textual-inversion and personalisation rows).

Offline default: the open-set generator (the model an ``open_set`` source with the same generator options samples
from) with its class embeddings — the conditioning vectors — fine-tuned on the base subset, every other weight
frozen (``adapt_steps`` steps at ``adapt_lr``). With ``pipeline: /local/folder``: textual inversion (Gal et al.
2023) — one new token per class whose embedding alone is learned from that class's base images, saved in the
format diffusers' ``load_textual_inversion`` reads — then the pipeline prompted with the learned tokens. One
adaptation per (n_real, seed), as the closed-set generator; the pool depends on both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runners import streams
from runners.costs import Stage, lookup
from runners.integrity import folder_checksums, verify_folder
from runners.options import content_hash, positive_int, resolve_preset
from runners.pools import Pool, dataset_spec, generator_folder
from runners.sources import open_set
from runners.sources.base import (
    Context,
    Facts,
    Pricing,
    as_uint8,
    balanced_labels,
    check_generator,
    diffusion_pool_images,
    generator_stages,
    padded_size,
    shared_by,
    text2image_stage,
    training_stage,
)
from runners.storage import RunFolder

NAME = "personalised"
# adaptation defaults: offline, the class embeddings of a tiny UNet (a few hundred steps on a 2-core CPU); with a
# folder, textual inversion (the diffusers example trains 3000 steps at 5e-4 x batch 4 x 4 accumulation)
ADAPT_DEFAULTS = {"adapt_steps": 200, "adapt_lr": 0.01, "adapt_batch": 4}
# lora_rank > 0: a LoRA adapter (peft) on the UNet's attention learned with the tokens (the diffusers LoRA example's
# learning rate); 0, the default, is textual inversion alone
TEXT_ADAPT_DEFAULTS = {"adapt_steps": 3000, "adapt_lr": 0.005, "adapt_batch": 4, "lora_rank": 0, "lora_lr": 1e-4}


def _split(raw: dict) -> tuple[dict, dict]:
    """(adaptation options with defaults, the generator's or folder's own options)."""
    defaults = TEXT_ADAPT_DEFAULTS if raw.get("pipeline") else ADAPT_DEFAULTS
    adapt = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}
    return adapt, {k: v for k, v in raw.items() if k not in defaults}


def options(raw: dict) -> dict:
    """The resolved options: the adaptation (steps, learning rate, batch) plus the open-set generator's preset or a
    text-to-image folder's prompt and sampling settings (what the adaptation and pool keys hash)."""
    adapt, rest = _split(raw)
    adapt = {
        "steps": positive_int(adapt, "adapt_steps"),
        "lr": float(adapt["adapt_lr"]),
        "batch": positive_int(adapt, "adapt_batch"),
    }
    if rest.get("pipeline"):
        return {**open_set.options(rest), "adapt": _lora(adapt, raw)}
    return {"generator": resolve_preset(rest), "adapt": adapt}


def _lora(adapt: dict, raw: dict) -> dict:
    """A text-to-image adaptation's LoRA settings, entering the keys only when a LoRA is asked for."""
    rank = raw.get("lora_rank", 0)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"lora_rank: must be a non-negative integer (0: no LoRA), got {rank!r}")
    return {**adapt, "lora_rank": rank, "lora_lr": float(raw.get("lora_lr", 1e-4))} if rank else adapt


def check(raw: dict, facts: Facts) -> dict:
    """The adaptation's steps (textual-inversion steps included: at least one), learning rate and batch, and what
    ``open_set`` checks of the generator or the folder."""
    adapt, rest = _split(raw)
    for key in ("adapt_steps", "adapt_batch"):
        value = adapt[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            what = "textual-inversion steps" if raw.get("pipeline") and key == "adapt_steps" else "a positive integer"
            raise ValueError(f"{key}: must be at least 1 ({what}), got {value!r}")
    for key in ("adapt_lr", "lora_lr"):
        lr = adapt.get(key, 1.0)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
            raise ValueError(f"{key}: must be a learning rate in (0, 10], got {lr!r}")
    if adapt.get("lora_rank"):
        try:
            import peft  # noqa: F401 - only checked for: a LoRA needs it
        except ImportError:
            raise ValueError("lora_rank: a LoRA adapter needs peft (pip install peft)") from None
    out = {**open_set.check(rest, facts), **{k: v for k, v in raw.items() if k in adapt}}
    resolved = options(raw)
    if "generator" in resolved:
        check_generator(resolved["generator"], facts)
    return out


def shared_generator(cfg, name: str) -> tuple[str, dict] | None:
    """The open-set generator it adapts (offline), trained once per run for every source that shares it."""
    return open_set.shared_generator(cfg, name)


def generator_trainings(cfg, name: str) -> int:
    """One adaptation per (n_real, seed), plus the run-wide generator offline."""
    adaptations = len(cfg.pool_bases()) * len(cfg.seeds)
    return adaptations + (1 if "generator" in cfg.options(name) else 0)


def adaptation_key(cfg, name: str, n_real: int, seed: int) -> str:
    return content_hash(
        {**dataset_spec(cfg), "role": NAME, "n_real": int(n_real), "seed": int(seed), "options": cfg.options(name)}
    )


def prepare(ctx: Context) -> Pool:
    return _prepare_text2image(ctx) if "text2image" in ctx.options else _prepare_offline(ctx)


def _prepare_offline(ctx: Context) -> Pool:
    # torch and diffusers load here, not at import: the config validator and the dry run read this module
    from runners.generative import adapt_conditioning, load_generator, save_generator

    hp, adapt = ctx.options["generator"], ctx.options["adapt"]
    base_key, base_model, base_meta = open_set.load_shared_generator(ctx)
    key = adaptation_key(ctx.cfg, ctx.source, ctx.n_real, ctx.seed)
    folder = generator_folder(ctx.cfg, key)
    if (folder / "meta.json").exists():
        model, meta = load_generator(folder)
    else:
        model, seconds = adapt_conditioning(
            base_model,
            ctx.data.images[ctx.base],
            ctx.data.labels[ctx.base],
            hp,
            steps=adapt["steps"],
            lr=adapt["lr"],
            seed=streams.torch_seed("personalise", ctx.seed, ctx.n_real),
            progress=ctx.progress,
            desc=f"{ctx.source} r{ctx.n_real} seed{ctx.seed}",
        )
        meta = {"train_seconds": seconds, "n_train": len(ctx.base), "adapted_from": base_key, "hp": hp, "adapt": adapt}
        save_generator(model, folder, meta)
    RunFolder(ctx.cfg).upload_tree(folder)  # a remote run folder keeps the weights (no-op when already there)
    labels = balanced_labels(
        padded_size(ctx.size, hp["sample_batch"]), ctx.n_classes, streams.rng("pool_labels", ctx.seed, ctx.n_real)
    )
    seed = streams.torch_seed("generator_sample", ctx.seed, ctx.n_real)
    images, sample_seconds = diffusion_pool_images(ctx, model, hp, labels, seed)
    # its own adaptation, plus its share of the run-wide generator it adapted
    generator_seconds = meta["train_seconds"] + base_meta["train_seconds"] / shared_by(ctx.cfg, base_key)
    return Pool(
        {"images": images, "labels": labels},
        {
            "generator_seconds": generator_seconds,
            "generator_shared_by": 1,
            "sample_seconds": sample_seconds,
            "generator": key,
        },
    )


def textual_inversion_files(ctx: Context) -> tuple[list[Path], list[str], dict]:
    """(embedding files, tokens, record) of the textual inversion of ``ctx``'s base subset, learned here when absent;
    the files are checked against the checksums recorded with them before they are used."""
    from runners.generative import textual_inversion

    text, adapt = ctx.options["text2image"], ctx.options["adapt"]
    folder = generator_folder(ctx.cfg, adaptation_key(ctx.cfg, ctx.source, ctx.n_real, ctx.seed))
    record_path = folder / "meta.json"
    if not record_path.exists():
        tmp = folder.with_name(folder.name + ".partial")
        files, tokens, seconds = textual_inversion(
            text["pipeline"],
            ctx.data.classes,
            as_uint8(ctx.data.images[ctx.base]),
            ctx.data.labels[ctx.base],
            tmp,
            prompt=text["prompt"],
            steps=adapt["steps"],
            lr=adapt["lr"],
            batch=adapt["batch"],
            seed=streams.torch_seed("personalise", ctx.seed, ctx.n_real),
            lora_rank=adapt.get("lora_rank", 0),
            lora_lr=adapt.get("lora_lr", 1e-4),
            progress=ctx.progress,
        )
        record = {
            "train_seconds": seconds,
            "n_train": len(ctx.base),
            "tokens": tokens,
            "files": folder_checksums(tmp),
            "adapt": adapt,
        }
        (tmp / "meta.json").write_text(json.dumps(record))
        if folder.exists():  # another worker finished the same content first: identical by seed
            shutil.rmtree(tmp)
        else:
            tmp.replace(folder)
    record = json.loads(record_path.read_text())
    verify_folder(
        folder, record["files"], "textual inversion", "delete the folder to learn it again", skip=("meta.json",)
    )
    RunFolder(ctx.cfg).upload_tree(folder)
    files = [folder / f"learned_embeds-{c}.safetensors" for c in range(len(record["tokens"]))]
    return files, record["tokens"], record


def _prepare_text2image(ctx: Context) -> Pool:
    text = ctx.options["text2image"]
    files, tokens, record = textual_inversion_files(ctx)
    labels = balanced_labels(
        padded_size(ctx.size, text["batch"]), ctx.n_classes, streams.rng("pool_labels", ctx.seed, ctx.n_real)
    )
    learned = {
        "textual_inversion": (files, tokens),
        "lora": files[0].parent if record["adapt"].get("lora_rank") else None,
    }
    seed = streams.torch_seed("generator_sample", ctx.seed, ctx.n_real)
    images, seconds = open_set.text2image_pool_images(ctx, labels, seed, lambda lab, first: learned)
    return Pool(
        {"images": images, "labels": labels},
        {
            "generator_seconds": record["train_seconds"],
            "generator_shared_by": 1,
            "sample_seconds": seconds,
            "generator": text["pipeline"],
        },
    )


def memorisation_reference(ctx: Context) -> tuple[str, object]:
    """The base subset: the adaptation's training set."""
    return "adaptation set (the base subset)", ctx.base


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """The run-wide generator (offline, once) and one adaptation per (n_real, seed), then each pool's sampling; or,
    with a folder, one textual inversion per (n_real, seed) and the pipeline's sampling."""
    opts = cfg.options(name)
    jobs = len(cfg.pool_bases()) * len(cfg.seeds)
    steps = opts["adapt"]["steps"]
    if "generator" in opts:
        hp = opts["generator"]
        stages = generator_stages(cfg, name, p, open_set.shared_training(cfg, name, p))
        adapt = training_stage(f"{name} adaptation", hp, p, [None] * jobs, steps=[steps] * jobs)
        return stages[:-1] + [adapt] + stages[-1:]
    text = opts["text2image"]
    rate, basis = lookup(p.table, p.device, "textual_inversion")
    return [
        Stage(
            f"{name} inversion",
            jobs,
            jobs * steps * opts["adapt"]["batch"],
            jobs * steps / rate / 3600,
            jobs * p.n_classes * 4096,  # one embedding per class (<= 1024 floats)
            f"textual_inversion: {rate:.3g} steps/s, {basis}",
            job_hours=steps / rate / 3600,
        ),
        text2image_stage(cfg, name, p, text["batch"]),
    ]


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """The open-set generator's rates (offline: an adaptation step costs about a training step); a folder keeps the
    cost table's assumed rates."""
    return open_set.calibrate(cfg, name, shape)
