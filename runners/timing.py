"""The timing primitives of ``scaling calibrate``: each runs the real code path (``train_classifier``'s step loop,
``train_diffusion``, ``sample_diffusion``, the retrieval encoder, a faiss flat index) for a few seconds on random
data of a config's image shape and returns ``(cost-table key, units per second, note)``. Sources time their own
stages with these (their ``calibrate(cfg, shape)``); :mod:`runners.calibrate` collects and stores the results.
"""

from __future__ import annotations

import platform
import time

import faiss
import numpy as np
import torch

from runners.costs import shape_key
from runners.options import denoiser_tag
from runners.encoders import embed
from runners.generative import sample_diffusion, train_diffusion
from runners.train import train_classifier

SECONDS_PER_ENTRY = 8.0  # each measurement runs about this long (steps are added until it does)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{torch.get_num_threads()}-thread {platform.processor() or platform.machine()} CPU"


def _timed(fn, units: int) -> float:
    """Units per second of ``fn(n)`` (n repetitions), after a warm-up, run until SECONDS_PER_ENTRY is used."""
    fn(1)  # warm-up: allocator, cudnn autotune, lazy imports
    n, spent = 1, 0.0
    while spent < SECONDS_PER_ENTRY / 4 and n < 10_000:
        t0 = time.perf_counter()
        fn(n)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        spent = time.perf_counter() - t0
        if spent < SECONDS_PER_ENTRY / 4:
            n *= 2
    return units * n / spent


def classifier_rate(cfg, shape) -> tuple[str, float, str]:
    recipe, width, bs = cfg.recipe, cfg.width, cfg.batch_size
    rng = np.random.default_rng(0)
    x = rng.random((2 * bs, *shape), dtype=np.float32)
    y = rng.integers(0, 10, 2 * bs)

    def run(steps: int) -> None:
        train_classifier(
            x, y, x[:2], y[:2], 10, recipe=recipe, width=width, steps=steps, batch_size=bs, flip=cfg.classifier.flip
        )

    return f"classifier/{recipe}/w{width}/{shape_key(shape)}", _timed(run, bs), f"batch {bs}"


# generator rates measured in this calibration, by (levels, shape): both generator sources use the same recipe,
# and the cost table keys them by level count and image shape only
GENERATOR_RATES: dict[tuple, list] = {}


def generator_rates(hp: dict, shape) -> list[tuple[str, float, str]]:
    levels = denoiser_tag(hp)
    key = (levels, tuple(shape))
    if key not in GENERATOR_RATES:
        GENERATOR_RATES[key] = _time_generator(hp, shape, levels)
    return GENERATOR_RATES[key]


def _time_generator(hp: dict, shape, levels: int) -> list[tuple[str, float, str]]:
    gpu = torch.cuda.is_available()
    bs = hp["batch_size"] if gpu or hp["batch_size"] <= 64 else 16  # a CPU step at batch 128 of a big UNet: minutes
    rng = np.random.default_rng(0)
    x = rng.random((bs, *shape), dtype=np.float32)
    y = rng.integers(0, 10, bs)
    timed_hp = {**hp, "batch_size": bs}
    step_rate = _timed(lambda n: train_diffusion(x, y, 10, {**timed_hp, "train_steps": n}, seed=0), 1)
    # the cost model prices steps at the preset's batch size: per-image throughput carried over
    train_rate = step_rate * bs / hp["batch_size"]
    model, _ = train_diffusion(x, y, 10, {**timed_hp, "train_steps": 1}, seed=0)
    n_sample = 16 if not gpu else 256
    sample_hp = {**hp, "sample_batch": n_sample}  # whole batches of the timed size
    sample_rate = _timed(
        lambda n: sample_diffusion(model, np.arange(n_sample * n) % 10, 10, sample_hp, seed=0), n_sample
    )
    note = f"timed at batch {bs}" + ("" if bs == hp["batch_size"] else f", scaled to the preset's {hp['batch_size']}")
    return [
        (f"generator_train/{levels}/{shape_key(shape)}", train_rate, note),
        (f"generator_sample/{levels}/{shape_key(shape)}", sample_rate, f"{hp['sample_steps']} steps, guidance"),
    ]


def search_rate() -> tuple[str, float, str]:
    """Queries/s of an exact inner-product index, expressed against one million 512-d vectors."""
    n = 100_000
    z = np.random.default_rng(0).standard_normal((n, 512), dtype=np.float32)
    index = faiss.IndexFlatIP(512)
    index.add(z)
    q = z[:256]
    rate = _timed(lambda k: [index.search(q, 10) for _ in range(k)], len(q))
    return "search/flat", rate * n / 1e6, "100k x 512 flat index, scaled to 1M"


def encode_rate(encoder: str, shape, clip_dir) -> tuple[str, float, str] | None:
    if encoder == "classifier":
        return None  # priced as a small classifier training: part of the trial entries
    if encoder == "clip" and not clip_dir:
        return None
    x = np.random.default_rng(0).random((256, *shape), dtype=np.float32)
    return f"encode/{encoder}", _timed(lambda n: [embed(x, encoder, clip_dir=clip_dir) for _ in range(n)], 256), ""
