"""Does a pool replay the images its generator was trained on? The memorisation audit of every pool.

For each pool image, the two nearest images of a *reference set* in pixel L2 (exact faiss search): the generator's
own training set (closed_set: the base subset; offline open_set: every non-test image), or the base subset for
pools that train nothing on it (real, retrieval, a ready-made text-to-image pipeline). An image is a **copy** when
its nearest reference image is closer than 1/3 of the distance to the second nearest (the score of Yoon et al.
2023, Gu et al. 2023, Bonnaire et al. 2025). The pool's record:

- ``copy_share``: the share of copies, with a bootstrap interval over the pool's images
  (``copy_share_low``/``copy_share_high``);
- ``nn_distance_ratio``: the median nearest-reference distance of the pool's images over that of held-out real
  images (the test images, which no generator saw): 1 = as novel as new real data, 0 = exact replays.

The yardstick is pixel distance: a copy shifted by a pixel or recoloured is not a copy to it, and at 8x8 (digits)
two different real images can sit close. docs/statistics.md says what the score can and cannot show.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

COPY_RATIO = 1 / 3  # nearest / second-nearest distance below this: a copy (Yoon et al. 2023; Gu et al. 2023)
N_BOOT = 2000  # bootstrap replicates of the copy share
HELD_OUT = 2000  # held-out real images (test images, a fixed prefix) that set the distance yardstick
LEVEL = 0.95


def nearest_two(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, 2) pixel L2 distances of each query to its two nearest reference rows (exact search: faiss' flat L2
    index, BLAS on the whole batch, not per-pair loops). Exact duplicates inside the reference are dropped first:
    a replayed image with a twin in the reference would otherwise have a second-nearest distance of 0 too."""
    import faiss  # loaded where a pool is audited

    ref = np.unique(_flat(reference), axis=0)
    if len(ref) < 2:
        raise ValueError(f"the memorisation audit needs at least 2 distinct reference images, got {len(ref)}")
    index = faiss.IndexFlatL2(ref.shape[1])
    index.add(ref)
    squared, _ = index.search(_flat(queries), 2)
    return np.sqrt(np.maximum(squared, 0.0))  # faiss returns squared distances (may round a hair below 0)


def _flat(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    return np.ascontiguousarray(x.reshape(len(x), -1))


def copy_share_interval(copies: np.ndarray, rng: np.random.Generator, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of a share over the pool's images. Resampling n indicators with k ones
    gives Binomial(n, k/n) counts, so the replicates are drawn as such (exact, no resampling loop). At 0 or n
    copies every replicate equals the estimate and the bootstrap interval has no width; there the open side is
    the exact Clopper-Pearson bound instead, so an interval never claims certainty from a finite pool."""
    n, k = len(copies), int(np.sum(copies))
    if n == 0:
        return float("nan"), float("nan")
    alpha = 1 - level
    draws = rng.binomial(n, k / n, size=N_BOOT) / n
    low, high = (float(v) for v in np.quantile(draws, [alpha / 2, 1 - alpha / 2]))
    if k in (0, n):
        exact = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
        low, high = (float(exact.low), high) if k == n else (low, float(exact.high))
    return low, high


def audit(images, reference, held_out, rng: np.random.Generator) -> dict:
    """The memorisation record of a pool (float images in [0, 1]) against its reference set, with held-out real
    images as the distance yardstick."""
    d = nearest_two(images, reference)
    copies = d[:, 0] < COPY_RATIO * d[:, 1]
    low, high = copy_share_interval(copies, rng)
    yardstick = float(np.median(nearest_two(held_out, reference)[:, 0]))
    return {
        "copy_share": float(copies.mean()) if len(copies) else float("nan"),
        "copy_share_low": low,
        "copy_share_high": high,
        "nn_distance_ratio": float(np.median(d[:, 0]) / yardstick) if yardstick > 0 else float("nan"),
    }


AUDIT_FIELDS = ("copy_share", "copy_share_low", "copy_share_high", "nn_distance_ratio", "memorisation_reference")
