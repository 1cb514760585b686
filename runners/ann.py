"""Nearest-neighbour indexes for retrieval from large pools: exact flat, IVF or HNSW (faiss), built once and cached.

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

INDEX_KINDS = ("flat", "ivf", "hnsw")
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
        raise ValueError(f"index: unknown index {kind!r}; choose from {INDEX_KINDS}")
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
