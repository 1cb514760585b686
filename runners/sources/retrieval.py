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

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from runners import streams
from runners.ann import cached_index
from runners.data import load_dataset, non_test
from runners.encoders import embed
from runners.pools import Pool
from runners.costs import Stage, lookup
from runners.sources.base import Context, Pricing, no_generator_cost

NAME = "retrieval"


def generator_trainings(cfg) -> int:
    return 0


def retrieve(
    query: np.ndarray, pool, size: int, *, excluded: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``pool`` and of their queries, taking rank-1 neighbours of every query, then rank 2, ...

    ``pool`` is an array of normalised rows (searched exactly) or a faiss index over them; ``excluded`` marks
    rows never to take (near-duplicates of test images). An image found by several queries is kept once, for
    its first (best-ranked) query, so every prefix spreads over the queries in order.
    """
    index = pool if isinstance(pool, faiss.Index) else _flat(pool)
    n = index.ntotal
    k = min(n, int(np.ceil(size / len(query))) * 2 + 4 + (0 if excluded is None else int(excluded.sum() > 0) * 16))
    while True:
        sims, nn = index.search(query, k)
        # ties (duplicate images) broken by index: faiss orders them by its heap, which depends on k, and the
        # pool of a larger n_synth (a larger k) must start with the smaller one
        nn = np.take_along_axis(nn, np.lexsort((nn, -sims), axis=-1), axis=-1)
        taken = np.zeros(n, bool) if excluded is None else excluded.copy()
        picks, owners = [], []
        for rank in range(k):  # rank-major: prefix n takes the best neighbours of all queries first
            for q in range(len(query)):
                j = nn[q, rank]
                if j >= 0 and not taken[j]:
                    taken[j] = True
                    picks.append(j)
                    owners.append(q)
                    if len(picks) == size:
                        return np.asarray(picks), np.asarray(owners)
        if k >= n:
            raise ValueError(f"n_synth: retrieval found only {len(picks)} distinct images for a pool of {size}")
        k = min(n, 2 * k)


def _flat(rows: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    return index


def near_test(index: faiss.Index, z_test: np.ndarray, threshold: float, k: int = 32) -> np.ndarray:
    """Mask of pool rows within ``threshold`` cosine of a test image, found from the test side (k neighbours
    per test image): with a million-row pool, searching every pool row against the test set would cost as
    much as the retrieval itself. Exact for a flat index; an IVF/HNSW index may miss a duplicate its search
    misses (its recall is in bench/RESULTS.md)."""
    mask = np.zeros(index.ntotal, bool)
    if threshold >= 1 or len(z_test) == 0:
        return mask
    sims, ids = index.search(z_test, min(k, index.ntotal))
    mask[ids[(sims >= threshold) & (ids >= 0)]] = True
    return mask


@lru_cache(maxsize=2)
def _external_pool(spec_json: str, shape: tuple, class_names: tuple):
    """A user's external image collection, resized to the dataset's (C, H, W); its labels are mapped to the
    dataset's classes by name where they match (for the label-noise rate) and -1 elsewhere."""
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


def _not_near_test(z_candidates: np.ndarray, z_test: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of candidates whose nearest test image is below ``threshold`` cosine (1 turns the check off):
    near-duplicates of test images would leak the test set."""
    if threshold >= 1:
        return np.ones(len(z_candidates), bool)
    index = faiss.IndexFlatIP(z_test.shape[1])
    index.add(z_test)
    nearest, _ = index.search(z_candidates, 1)
    return nearest[:, 0] < threshold


def _prepare_embedded(ctx: Context) -> Pool:
    """A pool at scale: precomputed embeddings searched with a cached index; only the picked images are read
    from the image store and resized to the dataset's shape."""
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
    return (_resize(torch.as_tensor(images).float() / 255, shape) * 255).round().to(torch.uint8).numpy()


def _resize(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Float images in [0, 1] to the dataset's channels (luma for grey) and size (antialiased bilinear)."""
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
    clean = _not_near_test(ze, zt, opts["dedup_threshold"])
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


def price(cfg, p: Pricing) -> list[Stage]:
    """Embedding the candidates, the bases and the test set with each pool's encoder, and the searches. An
    external pool's images are stored with the pool; picks from the dataset itself are indices."""
    from runners.plan import dataset_facts  # the dry run's facts about a dataset not in place yet

    table, device, n_pools, n_images = p.table, p.device, p.n_pools, p.n_images
    opts = cfg.options(NAME)
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


def calibrate(cfg, shape) -> list[tuple[str, float, str]]:
    """The encoder's images/s and the flat index's queries/s."""
    from runners.calibrate import encode_rate, search_rate

    opts = cfg.options(NAME)
    return [m for m in (encode_rate(opts["encoder"], shape, opts["clip_dir"]), search_rate()) if m]
