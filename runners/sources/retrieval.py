"""retrieval: nearest neighbours of the base images in an external pool, labelled by their query.

Inner product on L2-normalised embeddings (cosine) with faiss. The default external pool is the dataset's
own non-test, non-base images (unlabelled to the method; their true labels are kept aside to measure the
label-noise rate); ``pool:`` takes any dataset mapping instead. Near-duplicates of test images are dropped.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from runners.checks import check_dataset_spec, require, require_file
from runners import streams
from runners.data import absolute_paths, dataset_facts, is_file, load_dataset, non_test
from runners.options import ENCODERS, INDEXES
from runners.pools import Pool
from runners.costs import Stage, lookup
from runners.sources.base import Context, Facts, Pricing, no_generator_cost

if TYPE_CHECKING:
    import torch

# torch, faiss and the encoders load where a pool is built, not at import: the config validator and the dry run
# read this module for its options and prices

NAME = "retrieval"
DEFAULTS = {"encoder": "pixels", "dedup_threshold": 0.98, "clip_dir": None, "pool": None}
# a pool at scale: precomputed embeddings (.npy, N x d, by the same encoder as the queries) and a uint8 image
# store (.npy, N x C x H x W) searched with a cached faiss index; filled in only when `embeddings` is given, so
# configs without it keep their pool keys
EMBEDDED_POOL_DEFAULTS = {"embeddings": None, "images": None, "index": "flat", "nprobe": 32, "ef_search": 128}


def options(raw: dict) -> dict:
    """The resolved options (defaults filled in): what the pool keys hash."""
    opts = {**DEFAULTS, **(EMBEDDED_POOL_DEFAULTS if raw.get("embeddings") else {}), **raw}
    known = {**DEFAULTS, **EMBEDDED_POOL_DEFAULTS}
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown retrieval option (known: {', '.join(known)})")
    if opts["encoder"] not in ENCODERS:
        raise ValueError(f"encoder: unknown encoder {opts['encoder']!r}; choose from {ENCODERS}")
    if opts.get("embeddings"):
        if opts["pool"] is not None:
            raise ValueError("embeddings: give either a pool (a dataset) or embeddings + images, not both")
        if not opts.get("images"):
            raise ValueError("images: an embedded pool needs its image store (.npy, N x C x H x W uint8)")
        if opts["index"] not in INDEXES:
            raise ValueError(f"index: unknown index {opts['index']!r}; choose from {INDEXES}")
        opts["embeddings"], opts["images"] = (
            str(Path(opts["embeddings"]).resolve()),
            str(Path(opts["images"]).resolve()),
        )
    return opts


def check(raw: dict, facts: Facts) -> dict:
    """The encoder's model folder, the embedded pool's files, the external pool's dataset mapping, the
    near-duplicate threshold, and room for max(n_synth) candidates in the dataset's own images; returns the
    options as the config keeps them, folders made absolute (Ray Tune runs trials in its own working folder)."""
    clip_dir = raw.get("clip_dir")
    if clip_dir is not None:
        require_file(
            (Path(clip_dir) / "config.json").exists(),
            facts.field("clip_dir"),
            f"{clip_dir} is not a CLIP model folder (no config.json)",
        )
    if raw.get("encoder") == "clip":
        require(clip_dir is not None, facts.field("clip_dir"), "is required when encoder is 'clip'")
    for key in ("embeddings", "images"):
        path = raw.get(key)
        if path is not None:
            require(isinstance(path, str), facts.field(key), f"must be a path, got {path!r}")
            require_file(is_file(path) and path.endswith(".npy"), facts.field(key), f"no such .npy file: {path}")
    if raw.get("pool") is not None:
        check_dataset_spec(raw["pool"], facts.field("pool"))
    thr = raw.get("dedup_threshold", DEFAULTS["dedup_threshold"])
    require(
        isinstance(thr, (int, float)) and 0 < thr <= 1,
        facts.field("dedup_threshold"),
        f"must lie in (0, 1], got {thr!r}",
    )
    options(raw)
    if facts.free_images is not None and raw.get("pool") is None and not raw.get("embeddings"):
        require(
            max(facts.n_synth) <= facts.free_images,
            "n_synth",
            f"max(n_synth) = {max(facts.n_synth)} exceeds the {facts.free_images} external images retrieval can "
            f"draw from ({facts.dataset['name']} without test images and the largest base)",
        )
    out = dict(raw)
    if out.get("clip_dir"):
        out["clip_dir"] = str(Path(out["clip_dir"]).resolve())
    if isinstance(out.get("pool"), dict):
        out["pool"] = absolute_paths(out["pool"])
    return out


def generator_trainings(cfg, name: str) -> int:
    return 0


@lru_cache(maxsize=2)
def _external_pool(spec_json: str, shape: tuple, class_names: tuple):
    """A user's external image collection, resized to the dataset's (C, H, W); its labels are mapped to the
    dataset's classes by name where they match (for the label-noise rate) and -1 elsewhere."""
    import torch

    ext = load_dataset(json.loads(spec_json))
    x = _resize(torch.as_tensor(ext.images[:]), shape)  # as a whole: an external pool given as a dataset is small
    index = {name: i for i, name in enumerate(class_names)}
    truth = np.array([index.get(ext.classes[c], -1) for c in ext.labels], dtype=np.int64)
    return x.numpy().astype(np.float32), truth


def _candidates(ctx: Context):
    """(images, true labels or -1, dataset indices or None) of the pool retrieval searches."""
    data = ctx.data
    if ctx.options["pool"] is None:  # the dataset's own non-test, non-base images: unlabelled to the method
        idx = np.setdiff1d(non_test(data, ctx.test_idx), ctx.base)
        return data.images.subset(idx), data.labels[idx], idx
    images, truth = _external_pool(json.dumps(ctx.options["pool"], sort_keys=True), data.shape, tuple(data.classes))
    return images, truth, None


def _prepare_embedded(ctx: Context) -> Pool:
    """A pool at scale: precomputed embeddings searched with a cached index; only the picked images are read
    from the image store and resized to the dataset's shape."""
    from runners.ann import cached_index, near_test, retrieve
    from runners.encoders import embed

    data, opts, base = ctx.data, ctx.options, ctx.base
    t0 = time.perf_counter()
    index = cached_index(opts["embeddings"], opts["index"], {k: opts[k] for k in ("nprobe", "ef_search")})
    store = np.load(opts["images"], mmap_mode="r")
    if len(store) != index.ntotal:
        raise ValueError(
            f"source_options.retrieval.images: {len(store)} images, but the embeddings have {index.ntotal} rows"
        )
    z = embed(
        [data.images[base], data.images.subset(ctx.test_idx)],
        opts["encoder"],
        fit_on=(data.images[base], data.labels[base], ctx.n_classes),
        clip_dir=opts["clip_dir"],
        torch_seed=streams.torch_seed("encoder", ctx.seed, ctx.n_real),
    )
    if z.shape[1] != index.d:
        raise ValueError(
            f"source_options.retrieval.embeddings: rows have {index.d} dimensions, the "
            f"{opts['encoder']} encoder gives {z.shape[1]}: embed the pool with the same encoder"
        )
    zb, zt = z[: len(base)], z[len(base) :]
    dropped = near_test(index, zt, opts["dedup_threshold"])
    picks, owners = retrieve(zb, index, ctx.size, excluded=dropped)
    order = np.argsort(picks)  # read the store in file order, then put the images back in retrieval order
    images = np.empty((len(picks), *data.shape), np.uint8)
    images[order] = _to_shape(np.asarray(store[picks[order]]), data.shape)
    labels = data.labels[base][owners]
    return Pool(
        {"labels": labels, "label_wrong": np.zeros(len(labels), bool), "images": images},
        {
            **no_generator_cost(),
            "sample_seconds": time.perf_counter() - t0,
            "label_noise": float("nan"),
            "label_known_fraction": 0.0,
            "dropped_near_duplicates": int(dropped.sum()),
            "encoder": opts["encoder"],
            "index": opts["index"],
        },
    )


def _to_shape(images: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 (N, C, H, W) in any size and channel count -> the dataset's (C, H, W), uint8."""
    import torch

    return (_resize(torch.as_tensor(images).float() / 255, shape) * 255).round().to(torch.uint8).numpy()


def _resize(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Float images in [0, 1] to the dataset's channels (luma for grey) and size (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    if x.shape[1] != shape[0]:
        x = (
            (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
            if shape[0] == 1
            else x.expand(-1, 3, -1, -1)
        )
    if tuple(x.shape[2:]) != tuple(shape[1:]):
        x = F.interpolate(x, size=shape[1:], mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def prepare(ctx: Context) -> Pool:
    if ctx.options.get("embeddings"):
        return _prepare_embedded(ctx)
    from runners.ann import not_near_test, retrieve
    from runners.encoders import embed

    data, opts, base = ctx.data, ctx.options, ctx.base
    t0 = time.perf_counter()
    ext_images, ext_truth, ext_idx = _candidates(ctx)
    z = embed(
        [data.images[base], ext_images, data.images.subset(ctx.test_idx)],
        opts["encoder"],
        fit_on=(data.images[base], data.labels[base], ctx.n_classes),
        clip_dir=opts["clip_dir"],
        torch_seed=streams.torch_seed("encoder", ctx.seed, ctx.n_real),
    )
    zb, ze, zt = z[: len(base)], z[len(base) : len(base) + len(ext_images)], z[len(base) + len(ext_images) :]
    clean = not_near_test(ze, zt, opts["dedup_threshold"])
    if clean.sum() < ctx.size:
        raise ValueError(
            f"n_synth: only {int(clean.sum())} external images remain after dropping near-duplicates "
            f"of test images; max(n_synth) is {ctx.size}"
        )
    found, owners = retrieve(zb, np.ascontiguousarray(ze[clean]), ctx.size)
    picks = np.flatnonzero(clean)[found]  # back to positions in the candidate pool
    labels = data.labels[base][owners]  # labelled by the query: this is where retrieval's label noise comes from
    truth = ext_truth[picks]
    known = truth >= 0
    wrong = np.where(known, labels != truth, False)
    arrays = {"labels": labels, "label_wrong": wrong}
    if ext_idx is not None:
        arrays["indices"] = ext_idx[picks]  # dataset images by index: no re-quantisation
    else:
        arrays["images"] = (ext_images[picks] * 255).round().astype(np.uint8)
    return Pool(
        arrays,
        {
            **no_generator_cost(),
            "sample_seconds": time.perf_counter() - t0,
            "label_noise": float(wrong[known].mean()) if known.any() else float("nan"),
            "label_known_fraction": float(known.mean()),
            "dropped_near_duplicates": int((~clean).sum()),
            "encoder": opts["encoder"],
        },
    )


def memorisation_reference(ctx: Context) -> tuple[str, object]:
    """Retrieved images against the base subset they were queried with: near-duplicates of the base add nothing."""
    return "base subset", ctx.base


def price(cfg, name: str, p: Pricing) -> list[Stage]:
    """Embedding the candidates, the bases and the test set with each pool's encoder, and the searches. An
    external pool's images are stored with the pool; picks from the dataset itself are indices."""
    table, device, n_pools, n_images = p.table, p.device, p.n_pools, p.n_images
    opts = cfg.options(name)
    size = max(cfg.n_synth)
    stored = size * p.pixels if opts.get("pool") or opts.get("embeddings") else size * 8
    precomputed = bool(opts.get("embeddings"))
    if precomputed:  # an embedded pool: its rows are searched, not embedded again
        path = Path(opts["embeddings"])
        candidates = int(np.load(path, mmap_mode="r").shape[0]) if path.is_file() else 0
    elif opts["pool"] is None:
        candidates = (n_images or 0) - max(cfg.n_real)
    else:
        candidates = dataset_facts(opts["pool"])[0] or 0
    queries = sum(r for r in cfg.pool_bases() for _ in cfg.seeds)
    rate, basis = lookup(table, device, f"encode/{opts['encoder']}")
    # an IVF/HNSW index searches faster; the flat index's rate is the upper bound priced here
    qps, qbasis = lookup(table, "cpu", "search/flat")
    # each pool embeds its base, the candidates and the test set with its own encoder (the classifier encoder is
    # trained on the base); a CLIP encoder's candidate embeddings are the same for every pool but are recomputed
    embedded = (
        (0 if precomputed else n_pools * candidates) + queries + n_pools * int((n_images or 0) * cfg.test_fraction)
    )
    hours = embedded / rate / 3600 + queries * max(candidates, 1) / 1e6 / qps / 3600
    note = "" if candidates else "; external pool size unknown (not in place): its embedding and search are not counted"
    return [
        Stage(
            "retrieval",
            n_pools,
            embedded,
            hours,
            n_pools * stored,
            f"encode/{opts['encoder']}: {rate:.3g} img/s, {basis}; search/flat: {qps:.3g} q/s per 1M ({qbasis})" + note,
        )
    ]


def calibrate(cfg, name: str, shape) -> list[tuple[str, float, str]]:
    """The encoder's images/s and the flat index's queries/s."""
    from runners.timing import encode_rate, search_rate

    opts = cfg.options(name)
    return [m for m in (encode_rate(opts["encoder"], shape, opts["clip_dir"]), search_rate()) if m]
