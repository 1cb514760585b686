"""Sources: for each (source, n_real, seed), a pool of ``max(n_synth)`` labelled images; trials take prefixes.

| source      | pool                                                                                   |
|-------------|----------------------------------------------------------------------------------------|
| real        | held-out real images, disjoint from the base subset and the test set                    |
| closed_set  | samples of a class-conditional diffusion model trained only on the base subset          |
| open_set    | samples of a diffusion model trained once on all non-test images, or of a local         |
|             | text-to-image pipeline prompted with class names                                        |
| retrieval   | nearest neighbours (faiss, inner product on L2-normalised embeddings) of the base images |
|             | in the external pool, labelled by their query; near-duplicates of test images dropped   |

Each source is one module with ``NAME``, ``prepare(ctx) -> Pool`` and ``generator_trainings(cfg)``;
:data:`REGISTRY` maps names to modules. Pool storage is :mod:`runners.pools`; the quality yardstick
(the judge) is :mod:`runners.quality`.
"""

from __future__ import annotations

from runners.options import SOURCES
from runners.pools import is_prepared, pool_images, pool_key, read_meta, save_pool
from runners.quality import measure
from runners.sources import closed_set, open_set, real, retrieval
from runners.sources.base import Context

REGISTRY = {m.NAME: m for m in (real, closed_set, open_set, retrieval)}
assert tuple(REGISTRY) == SOURCES, "every source the config accepts has a module, and no other"


def prepare_pool(cfg, source: str, n_real: int, seed: int, *, progress: bool = False) -> dict:
    """Build (or find) the pool of one (source, n_real, seed), measure its quality; returns its meta record."""
    if is_prepared(cfg, source, n_real, seed):
        return read_meta(cfg, source, n_real, seed)
    if source not in REGISTRY:
        raise ValueError(f"sources: unknown source {source!r}; choose from {tuple(REGISTRY)}")
    size = int(max(cfg.n_synth))
    ctx = Context(cfg, source, int(n_real), int(seed), size, progress)
    pool = REGISTRY[source].prepare(ctx)
    record, kept = measure(cfg, pool_images(cfg, pool.arrays), pool.arrays["labels"], seed)
    pool.meta.update(source=source, n_real=int(n_real), seed=int(seed), size=size,
                     key=pool_key(cfg, source, n_real, seed), **record)
    pool.arrays.update(kept)
    save_pool(cfg, source, n_real, seed, pool)
    return pool.meta


def generator_trainings(cfg) -> int:
    """Generators a sweep trains (none when every n_synth is 0)."""
    if max(cfg.n_synth) == 0:
        return 0
    return sum(REGISTRY[s].generator_trainings(cfg) for s in cfg.sources)


__all__ = ["REGISTRY", "Context", "generator_trainings", "prepare_pool"]
