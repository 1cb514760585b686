"""Nearest-neighbour search for retrieval (faiss): exact flat, IVF or HNSW indexes, built once and cached for large
pools, and the rank-major search that fills prefix-stable pools.

A pool given as precomputed embeddings (an ``.npy`` of L2-normalisable rows, memory-mapped) is indexed once per
node under ``$SCALING_CACHE/indexes``, keyed by the embeddings file (path, size, mtime) and the index
parameters, written atomically under a lock. The exact flat index stays the default: it is right for pools up
to a few hundred thousand rows; IVF and HNSW trade recall for speed (bench/RESULTS.md: recall@10 and
queries/s on 1M x 512).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import faiss
import numpy as np
from filelock import FileLock

from runners.data import cache_root
from runners.options import INDEXES

ADD_CHUNK = 65536  # rows normalised and added at a time: the embeddings are never all in memory as float32


def normalised(rows: np.ndarray) -> np.ndarray:
    z = np.ascontiguousarray(rows, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def build_index(
    embeddings: np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    hnsw_m: int = 32,
    train_size: int = 100_000,
    seed: int = 0,
) -> faiss.Index:
    """An inner-product index over the normalised rows of ``embeddings`` (an array or a memory map)."""
    n, d = embeddings.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rows = np.sort(np.random.default_rng(seed).choice(n, min(n, max(train_size, 39 * nlist)), replace=False))
        index.train(normalised(embeddings[rows]))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"index: unknown index {kind!r}; choose from {INDEXES}")
    for i in range(0, n, ADD_CHUNK):
        index.add(normalised(embeddings[i : i + ADD_CHUNK]))
    return index


def default_nlist(n: int) -> int:
    """~4 sqrt(n) lists (faiss's guideline for IVF), at least 1, at most n / 39 (k-means needs ~39 points a list)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))


def set_search_effort(index: faiss.Index, *, nprobe: int = 32, ef_search: int = 128) -> None:
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search


def cached_index(embeddings_path: str, kind: str, params: dict) -> faiss.Index:
    """The index of an embeddings file, built on first use and then read from the node's cache."""
    path = Path(embeddings_path)
    st = path.stat()
    key = hashlib.sha256(
        json.dumps(
            {"file": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, "kind": kind, **params},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:20]
    target = cache_root().parent / "indexes" / f"{path.stem}-{kind}-{key}.faiss"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not target.exists():
                index = build_index(
                    np.load(path, mmap_mode="r"), kind, **{k: v for k, v in params.items() if k in ("nlist", "hnsw_m")}
                )
                tmp = target.with_suffix(f".tmp-{os.getpid()}")
                faiss.write_index(index, str(tmp))
                tmp.replace(target)
    index = faiss.read_index(str(target))
    set_search_effort(index, nprobe=params.get("nprobe", 32), ef_search=params.get("ef_search", 128))
    return index


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


def not_near_test(z_candidates: np.ndarray, z_test: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of candidates whose nearest test image is below ``threshold`` cosine (1 turns the check off):
    near-duplicates of test images would leak the test set."""
    if threshold >= 1:
        return np.ones(len(z_candidates), bool)
    index = faiss.IndexFlatIP(z_test.shape[1])
    index.add(z_test)
    nearest, _ = index.search(z_candidates, 1)
    return nearest[:, 0] < threshold
