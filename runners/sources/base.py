"""What every source module receives (a :class:`Context`) and the helpers they share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from runners import streams
from runners.checks import require
from runners.costs import Stage, lookup, shape_key
from runners.data import ImageData, base_and_real_pool, dataset_of
from runners.options import check_resolution, denoiser_tag, generator_steps
from runners.pools import pool_key


@dataclass(frozen=True)
class Context:
    """One pool to build: (source, n_real, seed) of a sweep, at least ``size`` images; ``previous`` is the
    smaller pool of the same (source, n_real, seed) when the run has grown its largest n_synth."""

    cfg: object  # runners.config.SweepConfig
    source: str
    n_real: int
    seed: int
    size: int
    progress: bool = False
    previous: object | None = None  # runners.pools.Pool

    @cached_property
    def options(self) -> dict:
        return self.cfg.options(self.source)

    @property
    def data(self) -> ImageData:
        return dataset_of(self.cfg)[0]

    @property
    def test_idx(self) -> np.ndarray:
        return dataset_of(self.cfg)[1]

    @cached_property
    def base(self) -> np.ndarray:
        return base_and_real_pool(self.cfg, self.n_real, self.seed)[0]

    @property
    def n_classes(self) -> int:
        return len(self.data.classes)


def balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Class-balanced labels whose every prefix is balanced too (round-robin over a shuffled class order)."""
    order = rng.permutation(n_classes)
    return order[np.arange(n) % n_classes]


def no_generator_cost() -> dict:
    """The cost fields of a pool that trains no generator (real images, retrieval, a ready-made pipeline)."""
    return {"generator_seconds": 0.0, "generator_shared_by": 1}


def sampled_in_batches(
    ctx: Context, batch: int, labels: np.ndarray, sample: Callable[[np.ndarray, int], np.ndarray]
) -> tuple[np.ndarray, float]:
    """(images, sampling seconds) of a generator's pool: whole batches, the labels' first rows covering
    ``ctx.size`` rounded up to a batch. A pool that grows keeps its batches (same labels, same per-batch noise
    streams) and calls ``sample(labels of the new batches, index of the first new batch)`` for the rest, so it
    ends up byte-identical to a pool sampled at the new size in one go (tested)."""
    total = padded_size(ctx.size, batch)
    if len(labels) != total:
        raise ValueError(f"{len(labels)} labels for a pool of {total} rows")
    kept, images, seconds = 0, [], 0.0
    old = ctx.previous
    if old is not None and "images" in old.arrays:
        n = len(old.arrays["labels"])
        if n % batch == 0 and n <= total and np.array_equal(old.arrays["labels"], labels[:n]):
            kept, images, seconds = n, [old.arrays["images"]], float(old.meta.get("sample_seconds", 0.0))
    t0 = time.perf_counter()
    images.append(sample(labels[kept:], kept // batch))
    return np.concatenate(images), seconds + time.perf_counter() - t0


def shared_by(cfg, key: str) -> int:
    """Pools of the sweep that start from the run-wide generator ``key`` (its training cost is split among them):
    every distinct pool of every source whose kind's ``shared_generator`` names it."""
    pools = set()
    for name in cfg.sources:
        hook = getattr(cfg.module(name), "shared_generator", None)
        found = hook(cfg, name) if hook else None
        if found and found[0] == key:
            pools |= {pool_key(cfg, name, r, s) for r in cfg.pool_bases() for s in cfg.seeds}
    return max(1, len(pools))


def start_images(ctx: Context, rows: int) -> np.ndarray:
    """Dataset indices of the base images ``rows`` pool images start from (image-to-image): the base subset in a
    shuffled order per (n_real, seed), repeated, so every prefix of the pool draws on the base evenly."""
    order = ctx.base[streams.rng("start_images", ctx.seed, ctx.n_real).permutation(len(ctx.base))]
    return order[np.arange(rows) % len(order)]


def as_uint8(images) -> np.ndarray:
    """Float images in [0, 1] as the uint8 images generators take and pools store."""
    return np.round(np.asarray(images, dtype=np.float32) * 255).clip(0, 255).astype(np.uint8)


def diffusion_pool_images(ctx: Context, model, hp: dict, labels: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """(images, sampling seconds) of a class-conditional generator's pool for ``labels`` (whole batches of
    ``sample_batch``, batch b's noise from the stream ``seed``): what closed_set, open_set and personalised sample."""
    from runners.generative import sample_diffusion  # torch, diffusers: loaded where a pool is built

    return sampled_in_batches(
        ctx,
        hp["sample_batch"],
        labels,
        lambda lab, first: sample_diffusion(
            model, lab, ctx.n_classes, hp, seed=seed, first_batch=first, progress=ctx.progress
        ),
    )


def padded_size(size: int, batch: int) -> int:
    """Rows a pool sampled in whole batches holds for ``size`` images."""
    return -(-size // batch) * batch


@dataclass(frozen=True)
class Facts:
    """What a source's ``check(raw, facts)`` may consult before anything runs: the dataset mapping, its image shape
    and the images left outside the test set and the largest base (None: not known without reading the
    dataset), and the grid. A check raises through :mod:`runners.checks` (one error naming the field; a missing
    file is only collected in a dry run of a config whose files are not in place yet)."""

    source: str
    dataset: dict
    shape: tuple[int, int, int] | None
    free_images: int | None
    n_real: tuple[int, ...]
    n_synth: tuple[int, ...]

    def field(self, key: str) -> str:
        """The config field of one of this source's options."""
        return f"source_options.{self.source}.{key}"


@dataclass(frozen=True)
class Pricing:
    """What a source's ``price(cfg, name, p)`` needs to cost its stages in the dry run (:func:`runners.plan.stages`):
    the cost table and device, the dataset's image shape, class count and size (None: not in place yet), how
    many pools of this source the sweep builds, and the run-wide generators already priced (shared by several
    sources, each is priced once: :meth:`first_time`)."""

    table: dict
    device: str
    shape: tuple[int, int, int]
    n_classes: int
    n_images: int | None
    n_pools: int
    priced: set = field(default_factory=set)

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def first_time(self, key: str) -> bool:
        """True the first time a run-wide generator is priced in this dry run, False after."""
        new = key not in self.priced
        self.priced.add(key)
        return new


def check_generator(hp: dict, facts: Facts) -> None:
    """A diffusion generator's resolved hyper-parameters against the dataset's images (the two generator
    sources share it)."""
    for key in ("train_steps", "batch_size", "sample_steps"):
        require(
            isinstance(hp[key], int) and hp[key] > 0, facts.field(key), f"must be a positive integer, got {hp[key]!r}"
        )
    if facts.shape:
        check_resolution(hp, facts.shape)


def generator_stages(
    cfg, source: str, p: Pricing, train_sizes: list[int | None], *, sampled: float = 1.0
) -> list[Stage]:
    """A diffusion generator's training (one indivisible job per entry of ``train_sizes``: the images it trains on,
    None when not known before the dataset is read; none when empty) and the sampling of its pools, ``sampled``
    the share of the sampling steps each image takes (image-to-image: the part of the schedule it denoises)."""

    hp = cfg.options(source)["generator"]
    tag = denoiser_tag(hp)
    out = []
    if train_sizes:
        out.append(training_stage(f"{source} generator", hp, p, train_sizes))
    size = padded_size(max(cfg.n_synth), hp["sample_batch"])  # generators sample whole batches
    key = f"generator_sample/{tag}/{shape_key(p.shape)}"
    rate, basis = lookup(p.table, p.device, key)
    rate = rate / max(sampled, 1e-9)
    out.append(
        Stage(
            f"{source} sampling",
            p.n_pools,
            p.n_pools * size,
            p.n_pools * size / rate / 3600,
            p.n_pools * size * p.pixels,  # generated images are stored
            f"{key}: {rate:.3g} img/s, {basis}" + (f"; {sampled:.0%} of the steps" if sampled < 1 else ""),
        )
    )
    return out


def text2image_stage(cfg, name: str, p: Pricing, batch: int, *, what: str = "text2image", share: float = 1.0) -> Stage:
    """A text-to-image folder's sampling of this source's pools at the cost table's ``text2image`` rate, each image
    taking ``share`` of the sampling steps (image-to-image: the part of the schedule it denoises)."""
    size = padded_size(max(cfg.n_synth), batch)
    rate, basis = lookup(p.table, p.device, "text2image")
    rate = rate / share
    at = f" at {share:.0%} of the steps" if share < 1 else ""
    return Stage(
        f"{name} {what}",
        p.n_pools,
        p.n_pools * size,
        p.n_pools * size / rate / 3600,
        p.n_pools * size * p.pixels,
        f"text2image: {rate:.3g} img/s{at}, {basis}",
    )


def training_stage(
    name: str, hp: dict, p: Pricing, train_sizes: list[int | None], steps: list[int] | None = None
) -> Stage:
    """Trainings of a denoiser of ``hp`` (one indivisible job each) at the cost table's training rate: each
    ``generator_steps`` of its training-set size, or the given ``steps`` (an adaptation)."""
    from runners.generative import unet_bytes  # builds the denoiser on the meta device: torch, diffusers

    key = f"generator_train/{denoiser_tag(hp)}/{shape_key(p.shape)}"
    steps_per_s, basis = lookup(p.table, p.device, key)
    # steps_per_image: steps follow the training set; an unknown size is priced at the cap, train_steps
    if steps is None:
        steps = [hp["train_steps"] if n is None else generator_steps(hp, n) for n in train_sizes]
    return Stage(
        name,
        len(steps),
        sum(steps) * hp["batch_size"],
        sum(steps) / steps_per_s / 3600,
        len(steps) * unet_bytes(hp, p.shape, p.n_classes),
        f"{key}: {steps_per_s:.3g} steps/s, {basis}",
        job_hours=max(steps) / steps_per_s / 3600,
    )
