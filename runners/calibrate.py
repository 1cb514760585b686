"""``scaling calibrate CONFIG``: time the work a config's cost model prices, on this machine, in about a minute.

Each entry runs the real code path (``train_classifier``'s step loop, ``train_diffusion``, ``sample_diffusion``,
the retrieval encoder, a faiss flat index) for a few seconds on random data of the config's image shape, and
is written to the user-level throughput table (:func:`runners.costs.save_measured`) as ``measured on <device>``.
On a CPU, large generator batches are timed at a smaller batch and reported per image (said in the basis).
"""

from __future__ import annotations

import platform
import time

import faiss
import numpy as np
import torch

from runners.costs import save_measured, shape_key
from runners.encoders import embed
from runners.generative import sample_diffusion, train_diffusion
from runners.plan import dataset_facts
from runners.sources import REGISTRY
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
_GENERATOR_RATES: dict[tuple, list] = {}


def generator_rates(hp: dict, shape) -> list[tuple[str, float, str]]:
    levels = len(hp["block_out_channels"])
    key = (levels, tuple(shape))
    if key not in _GENERATOR_RATES:
        _GENERATOR_RATES[key] = _time_generator(hp, shape, levels)
    return _GENERATOR_RATES[key]


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


def calibrate(cfg, out=print) -> dict:
    """Measure the entries a config needs; returns {key: (value, basis)} as written to the user table."""
    _, shape = dataset_facts(cfg.dataset)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(cfg.threads)  # what one trial or source job gets in a sweep: the dry run prices slots
    where = device_name()
    day = time.strftime("%Y-%m-%d")
    _GENERATOR_RATES.clear()
    # each source times what its dry-run stages price; two generator sources share one measurement
    measured = [classifier_rate(cfg, shape)] + [m for s in cfg.sources for m in REGISTRY[s].calibrate(cfg, shape)]
    entries = {}
    for key, value, note in {m[0]: m for m in measured}.values():
        entries[key] = (float(value), f"measured on {where} (scaling calibrate {day}{'; ' + note if note else ''})")
        out(f"  {key:<40} {value:>12.4g} /s   {entries[key][1]}")
    search = {k: v for k, v in entries.items() if k.startswith("search/")}  # faiss searches on the CPU everywhere
    path = save_measured(device, {k: v for k, v in entries.items() if k not in search})
    if search:
        save_measured("cpu", search)
    out(f"written to {path} (dry runs now use these for '{device}')")
    return entries
