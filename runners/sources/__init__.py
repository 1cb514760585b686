"""Sources: for each (source, n_real, seed), a pool of at least ``max(n_synth)`` labelled images; trials take
prefixes. Every source builds prefix-stable pools (the pool of 400 is the first 400 of the pool of 800), so a
run whose largest n_synth grows extends its pools and keeps its finished cells.

| kind         | pool                                                                                  |
|--------------|---------------------------------------------------------------------------------------|
| real         | held-out real images, disjoint from the base subset and the test set                   |
| closed_set   | samples of a class-conditional diffusion model (UNet, or DiT) trained only on the base |
|              | subset                                                                                |
| open_set     | samples of a diffusion model trained once on all non-test images, or of a local        |
|              | text-to-image pipeline prompted with class names                                       |
| retrieval    | nearest neighbours (faiss, inner product on L2-normalised embeddings) of the base      |
|              | images in the external pool, labelled by their query; near-duplicates of test dropped  |
| img2img      | each base image noised to ``strength`` and denoised back by the open-set generator (or |
|              | a text-to-image folder's image-to-image pipeline), labelled as its base image          |
| personalised | the open-set generator adapted to the base subset (its class embeddings; textual       |
|              | inversion for a text-to-image folder), then sampled per class                          |

A sweep's sources are *names*, each of a kind: a kind's own name (``closed_set``) is a source of that kind, any
other name sets ``kind`` in its options, so one sweep can hold several sources of one kind (two text-to-image
folders, a UNet and a DiT). Two names of one kind with the same options share their pools.

Each kind is one module with ``NAME``; ``options(raw) -> dict`` (its options resolved, defaults filled in:
what the pool keys hash) and ``check(raw, facts) -> dict`` (validated before anything runs, one error naming the
field); ``prepare(ctx) -> Pool``; ``memorisation_reference(ctx)`` (what its pool's memorisation audit compares
against: ``(label, dataset indices)``, or None when it is not at hand); ``generator_trainings(cfg, name)``;
``price(cfg, name, p) -> [Stage]`` (its stages in the dry run) and ``calibrate(cfg, name, shape)`` (what
``scaling calibrate`` times for them); optionally ``shared_generator(cfg, name)`` (a run-wide generator its pools
start from, trained once, first). A source module imports torch, diffusers and faiss only inside the functions
that build a pool, so the config validator and the dry run can read it. :data:`REGISTRY` maps kinds to modules:
adding a kind is one module and one line there. Pool storage is :mod:`runners.pools`; the quality yardstick
(the judge) is :mod:`runners.quality`.
"""

from __future__ import annotations

import time

import numpy as np

from runners import streams
from runners.pools import Pool, pool_images, pool_key, prepared_size, read_meta, read_pool, save_pool, write_meta
from runners.sources import closed_set, img2img, open_set, personalised, real, retrieval
from runners.options import content_hash
from runners.sources.base import Context

# the one list of sources: the config accepts these names, in this order, and nothing else
REGISTRY = {m.NAME: m for m in (real, closed_set, open_set, retrieval, img2img, personalised)}
SOURCES = tuple(REGISTRY)
assert all(
    callable(getattr(m, f, None))
    for m in REGISTRY.values()
    for f in ("options", "check", "prepare", "generator_trainings", "price", "calibrate", "memorisation_reference")
)


def prepare_pool(
    cfg, source: str, n_real: int, seed: int, *, progress: bool = False, record: dict | None = None
) -> dict:
    """Build (or find, or extend) the pool of one (source, n_real, seed), measure its quality; returns its meta
    record. A finished pool smaller than the sweep's largest n_synth is extended: generators sample only the new
    batches, real and retrieval pools (index arithmetic and one search) are rebuilt; either way the old images
    stay the new pool's prefix. ``record`` (e.g. where the job ran: :func:`runners.trial.placement`) is stored
    in the meta of a pool built here."""
    if source not in cfg.sources:
        raise ValueError(f"sources: {source!r} is not a source of this sweep {list(cfg.sources)}")
    size = int(max(cfg.n_synth))
    have = prepared_size(cfg, source, n_real, seed)
    if have >= size:
        return audited_meta(cfg, source, n_real, seed)
    previous = read_pool(cfg, source, n_real, seed) if have else None
    ctx = Context(cfg, source, int(n_real), int(seed), size, progress, previous)
    pool = cfg.module(source).prepare(ctx)
    if previous is not None:
        _check_prefix(previous, pool, source)
    from runners.quality import measure  # the judge: torch, loaded where a pool is built

    measured, kept = measure(cfg, pool_images(cfg, pool.arrays), pool.arrays["labels"], seed)
    measured.update(audit_pool(cfg, source, n_real, seed, pool))
    pool.meta.update(
        source=source,
        kind=cfg.kind(source),
        n_real=int(n_real),
        seed=int(seed),
        size=len(pool.arrays["labels"]),
        key=pool_key(cfg, source, n_real, seed),
        **measured,
        **(record or {}),
    )
    pool.arrays.update(kept)
    save_pool(cfg, source, n_real, seed, pool)
    return pool.meta


def audited_meta(cfg, source: str, n_real: int, seed: int) -> dict:
    """A finished pool's meta record; a pool written before the memorisation audit is audited first and its record
    gains the scores (arrays, checksum and every cell that used it unchanged)."""
    meta = read_meta(cfg, source, n_real, seed)
    if "copy_share" in meta:
        return meta
    pool = read_pool(cfg, source, n_real, seed)  # its arrays checked against the record's checksum
    return write_meta(cfg, source, n_real, seed, {**meta, **audit_pool(cfg, source, n_real, seed, pool)})


def audit_pool(cfg, source: str, n_real: int, seed: int, pool: Pool) -> dict:
    """The memorisation record of a pool (:mod:`runners.memorisation`) against what its source names as the
    reference; NaN scores, with the reason, where the source has none at hand."""
    from runners.memorisation import AUDIT_FIELDS, HELD_OUT, audit  # faiss: loaded where a pool is audited

    ctx = Context(cfg, source, int(n_real), int(seed), 0)
    reference = cfg.module(source).memorisation_reference(ctx)
    if reference is None:
        return {**dict.fromkeys(AUDIT_FIELDS[:-1], float("nan")), "memorisation_reference": "not at hand"}
    label, idx = reference
    t0 = time.perf_counter()
    record = audit(
        pool_images(cfg, pool.arrays),
        ctx.data.images[np.sort(np.asarray(idx))],
        ctx.data.images[ctx.test_idx[:HELD_OUT]],
        streams.rng("memorisation", seed, n_real),
    )
    return {**record, "memorisation_reference": label, "audit_seconds": time.perf_counter() - t0}


def _check_prefix(previous: Pool, pool: Pool, source: str) -> None:
    """The extended pool must start with the old one: finished cells used its prefixes. A mismatch (a search
    whose ranks moved with k, e.g. HNSW) is an error, not a silent change of finished cells' inputs."""
    n = len(previous.arrays["labels"])
    for name in ("labels", "images", "indices"):
        if name in previous.arrays and not np.array_equal(previous.arrays[name], pool.arrays[name][:n]):
            raise RuntimeError(
                f"n_synth: extending the {source} pool from {n} to {len(pool.arrays['labels'])} "
                f"images changed its first {n} ({name}), which finished cells used; run the larger "
                "grid under another name"
            )


def generator_trainings(cfg) -> int:
    """Generators a sweep trains (none when every n_synth is 0)."""
    if max(cfg.n_synth) == 0:
        return 0
    trainings = sum(cfg.module(s).generator_trainings(cfg, s) for s in _distinct_pools(cfg))
    return trainings - _repeated_shared_generators(cfg)


def shared_generator(cfg, source: str) -> tuple[str, dict] | None:
    """(key, hyper-parameters) of the run-wide generator a source's pools start from (the offline open-set model,
    which open_set, img2img and personalised sources share when their generator options agree), or None. A kind
    with one defines ``shared_generator(cfg, name)``."""
    hook = getattr(cfg.module(source), "shared_generator", None)
    return hook(cfg, source) if hook else None


def _distinct_pools(cfg) -> list[str]:
    """One name per distinct (kind, options): two names of one kind and the same options build one pool."""
    seen, out = set(), []
    for s in cfg.sources:
        key = (cfg.kind(s), content_hash(cfg.options(s)))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _repeated_shared_generators(cfg) -> int:
    """Run-wide generators counted by more than one source (a kind with one counts it once in its
    ``generator_trainings``; the sweep trains it once)."""
    keys = [g[0] for s in _distinct_pools(cfg) if (g := shared_generator(cfg, s))]
    return len(keys) - len(set(keys))


__all__ = [
    "REGISTRY",
    "SOURCES",
    "Context",
    "audit_pool",
    "audited_meta",
    "generator_trainings",
    "prepare_pool",
    "shared_generator",
]
