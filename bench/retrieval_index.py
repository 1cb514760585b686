"""Retrieval at scale: recall@10 and queries/s of IVF and HNSW indexes against the exact flat index.

1,000,000 random 512-d embeddings (normalised Gaussian rows: no cluster structure, the hardest case for an
approximate index) and 5,000 queries drawn the same way. The flat index's answer is the truth; each approximate
index reports recall@10 (share of the true 10 neighbours it returns), build seconds and queries/s, and the
ratio of its queries/s to the flat index's, measured in the same process. Indexes are those of
runners.ann (what a sweep builds for an embedded retrieval pool).

    python bench/retrieval_index.py [--n 1000000] [--queries 5000] [--hnsw-n N] [--clusters K]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from runners.ann import build_index, default_nlist, set_search_effort


def rows(n: int, d: int, seed: int, clusters: int = 0) -> np.ndarray:
    """Normalised Gaussian rows; with ``clusters``, rows scattered around that many centres (image embeddings
    are clustered by content; the centres are the same for every seed, the scatter is not)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d), dtype=np.float32)
    if clusters:
        centres = np.random.default_rng(12345).standard_normal((clusters, d), dtype=np.float32)
        z = centres[rng.integers(0, clusters, n)] + 0.5 * z
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def timed_search(index, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    _, ids = index.search(q, k)
    return ids, len(q) / (time.perf_counter() - t0)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--hnsw-n", type=int, default=None, help="rows for HNSW (its build is the slowest; default --n)")
    ap.add_argument("--clusters", type=int, default=0, help="clustered rows around this many centres (0: uniform)")
    args = ap.parse_args()
    z, q = rows(args.n, 512, 0, args.clusters), rows(args.queries, 512, 1, args.clusters)
    kind = f"clustered around {args.clusters:,} centres" if args.clusters else "uniform on the sphere"
    print(
        f"{args.n:,} x 512 embeddings ({kind}), {args.queries:,} queries, faiss {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    t0 = time.perf_counter()
    flat = build_index(z, "flat")
    truth, flat_qps = timed_search(flat, q)
    print(f"{'index':<28} {'build s':>8} {'recall@10':>10} {'queries/s':>10} {'x flat':>7}")
    print(f"{'flat (exact)':<28} {time.perf_counter() - t0:>8.1f} {1.0:>10.3f} {flat_qps:>10.0f} {1.0:>7.1f}")
    t0 = time.perf_counter()
    ivf = build_index(z, "ivf")
    build = time.perf_counter() - t0
    for nprobe in (8, 32, 128):
        set_search_effort(ivf, nprobe=nprobe)
        found, qps = timed_search(ivf, q)
        print(
            f"{f'IVF{default_nlist(args.n)} nprobe={nprobe}':<28} {build:>8.1f} {recall(found, truth):>10.3f} "
            f"{qps:>10.0f} {qps / flat_qps:>7.1f}"
        )
    n_h = args.hnsw_n or args.n
    t0 = time.perf_counter()
    hnsw = build_index(z[:n_h], "hnsw")
    build = time.perf_counter() - t0
    truth_h = truth if n_h == args.n else timed_search(build_index(z[:n_h], "flat"), q)[0]
    for ef in (64, 256):
        set_search_effort(hnsw, ef_search=ef)
        found, qps = timed_search(hnsw, q)
        label = f"HNSW32 ef={ef}" + ("" if n_h == args.n else f" ({n_h:,} rows)")
        print(f"{label:<28} {build:>8.1f} {recall(found, truth_h):>10.3f} {qps:>10.0f} {qps / flat_qps:>7.1f}")


if __name__ == "__main__":
    main()
