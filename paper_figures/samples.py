"""A grid of pool images: one row per class, a block of columns per source (from ``features.nc``)."""

from __future__ import annotations

import numpy as np

from paper_figures.style import source_label


def figure(features, per_class: int = 6):
    import matplotlib.pyplot as plt

    s = features["samples"].values  # (source, class, k, C, H, W) in [0, 1]
    n_src, n_cls = s.shape[:2]
    k = min(per_class, s.shape[2])
    fig, axes = plt.subplots(
        1, n_src, figsize=(1.9 * n_src * k / 4 + 0.5, 0.34 * n_cls + 0.9), squeeze=False, constrained_layout=True
    )
    for ax, i in zip(axes[0], range(n_src)):
        rows = []
        for c in range(n_cls):
            tiles = [_tile(s[i, c, j]) for j in range(k)]
            rows.append(np.concatenate(tiles, axis=1))
        grid = np.concatenate(rows, axis=0)
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        h = s.shape[-2] + 1
        ax.set_yticks(np.arange(n_cls) * h + h / 2 - 1, [str(c) for c in features["class"].values], fontsize=7)
        ax.set_xticks([])
        ax.set_title(source_label(str(features["source"].values[i])), fontsize=9)
    fig.suptitle(
        f"pool images per class (n_real = {features.attrs.get('sample_n_real')}, "
        f"seed {features.attrs.get('sample_seed')})",
        fontsize=10,
    )
    return fig


def _tile(img: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H+1, W+1[, 3]) with a 1-pixel white gutter; missing images are mid-grey."""
    x = np.nan_to_num(img, nan=0.5)
    x = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    pad = ((0, 1), (0, 1)) + (((0, 0),) if x.ndim == 3 else ())
    return np.pad(x, pad, constant_values=1.0)
