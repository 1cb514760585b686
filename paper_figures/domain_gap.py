"""Wang et al.'s Fig. 1 analogue, read from ``features.nc`` (written by the sweep beside the cube).

(a) Real vs synthetic along the axis of a linear real-vs-synthetic domain classifier (x) and the first
principal direction orthogonal to it (y); the classifier's cross-validated balanced accuracy is in the
legend (0.5: the domains are indistinguishable). (b) Real and synthetic images in the 2-D PCA of the
feature space of a classifier trained on real images only (the judge), coloured by source.
"""

from __future__ import annotations

import numpy as np

from paper_figures.style import new_figure, source_color, source_label


def _pool(features, src, n_real, seed):
    f = features["features"].sel(source=src, n_real=n_real, seed=seed).values
    return f[np.isfinite(f).all(1)]


def embedding_data(features, cube=None, n_real=None, seed=None) -> dict:
    n_real = int(features["n_real"].values[0]) if n_real is None else int(n_real)
    seed = int(features["seed"].values[0]) if seed is None else int(seed)
    real = features["real_features"].values
    mu = real.mean(0)
    _, _, vt = np.linalg.svd(real - mu, full_matrices=False)
    pcs = vt[:2]
    out = {"n_real": n_real, "seed": seed, "real_pca": (real - mu) @ pcs.T, "pools": {}}
    for src in features["source"].values:
        src = str(src)
        if src == "real":
            continue
        pool = _pool(features, src, n_real, seed)
        if not len(pool):
            continue
        w = features["domain_direction"].sel(source=src, n_real=n_real, seed=seed).values
        both = np.concatenate([real, pool]) - mu
        resid = both - np.outer(both @ w, w)
        _, _, v2 = np.linalg.svd(resid, full_matrices=False)
        acc = np.nan
        if cube is not None and "pool_domain_accuracy" in cube:
            acc = float(cube["pool_domain_accuracy"].sel(source=src, n_real=n_real, seed=seed))
        out["pools"][src] = {"pca": (pool - mu) @ pcs.T,
                             "domain_real": np.c_[(real - mu) @ w, (real - mu) @ v2[0]],
                             "domain_pool": np.c_[(pool - mu) @ w, (pool - mu) @ v2[0]], "domain_accuracy": acc}
    return out


def figure(features, cube=None, n_real=None, seed=None):
    d = embedding_data(features, cube, n_real, seed)
    pools = d["pools"]
    fig, axes = new_figure(len(pools) + 1, width=3.6, height=3.4, sharey=False)
    for ax, (src, p) in zip(axes[:-1], pools.items()):
        ax.scatter(*p["domain_real"].T, s=5, color="#999999", alpha=0.6, label="real (test)")
        ax.scatter(*p["domain_pool"].T, s=5, color=source_color(src), alpha=0.6,
                   label=f"{source_label(src)}\ndomain acc. {p['domain_accuracy']:.2f}")
        ax.set_xlabel("domain-classifier axis")
        ax.set_title(f"(a) {source_label(src)}", fontsize=10)
        ax.legend(fontsize=7, markerscale=3, loc="best")
    axes[0].set_ylabel("orthogonal principal axis")
    ax = axes[-1]
    ax.scatter(*d["real_pca"].T, s=5, color="#999999", alpha=0.5, label="real (test)")
    for src, p in pools.items():
        ax.scatter(*p["pca"].T, s=5, color=source_color(src), alpha=0.5, label=source_label(src))
    ax.set_xlabel("PC 1 (real-trained classifier features)")
    ax.set_ylabel("PC 2")
    ax.set_title("(b) feature space of a real-trained classifier", fontsize=10)
    ax.legend(fontsize=7, markerscale=3)
    fig.suptitle(f"domain gap at n_real = {d['n_real']}, seed {d['seed']}")
    return fig
