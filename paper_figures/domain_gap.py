"""Wang et al.'s Fig. 1 analogue, read from ``features.nc`` (written by the sweep beside the cube).

(a1, a2, ...) Per source, real vs synthetic along the axis of a linear real-vs-synthetic domain classifier (x)
and the first principal direction orthogonal to it (y); the classifier's cross-validated balanced accuracy is
in the legend (0.5: the domains are indistinguishable). (b) Real and synthetic images in the 2-D PCA of the
feature space of a classifier trained on real images only (the judge), coloured by class, one marker per
source (circles: real test images). The slice (n_real, seed) is chosen with ``scaling figures
--domain-n-real N --domain-seed S``.
"""

from __future__ import annotations

import numpy as np

from matplotlib import colormaps
from matplotlib.lines import Line2D

from paper_figures.style import new_figure, source_color, source_label, source_marker


def _pool(features, src, n_real, seed):
    f = features["features"].sel(source=src, n_real=n_real, seed=seed).values
    return f[np.isfinite(f).all(1)]


def embedding_data(features, cube=None, n_real=None, seed=None) -> dict:
    n_real = int(features["n_real"].values[0]) if n_real is None else int(n_real)
    seed = int(features["seed"].values[0]) if seed is None else int(seed)
    for name, value in (("n_real", n_real), ("seed", seed)):
        have = [int(v) for v in features[name].values]
        if value not in have:
            raise ValueError(f"--domain-{name.replace('_', '-')}: {value} is not in features.nc (have {have})")
    real = features["real_features"].values
    mu = real.mean(0)
    _, _, vt = np.linalg.svd(real - mu, full_matrices=False)
    pcs = vt[:2]
    out = {
        "n_real": n_real,
        "seed": seed,
        "real_pca": (real - mu) @ pcs.T,
        "real_labels": features["real_labels"].values,
        "pools": {},
    }
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
        labels = features["labels"].sel(source=src, n_real=n_real, seed=seed).values[: len(pool)]
        out["pools"][src] = {
            "pca": (pool - mu) @ pcs.T,
            "labels": labels,
            "domain_real": np.c_[(real - mu) @ w, (real - mu) @ v2[0]],
            "domain_pool": np.c_[(pool - mu) @ w, (pool - mu) @ v2[0]],
            "domain_accuracy": acc,
        }
    return out


def figure(features, cube=None, n_real=None, seed=None):
    d = embedding_data(features, cube, n_real, seed)
    pools = d["pools"]
    fig, axes = new_figure(len(pools) + 1, width=3.6, height=3.4, sharey=False)
    for i, (ax, (src, p)) in enumerate(zip(axes[:-1], pools.items()), start=1):
        ax.scatter(*p["domain_real"].T, s=5, color="#999999", alpha=0.6, label="real (test)")
        ax.scatter(
            *p["domain_pool"].T,
            s=5,
            color=source_color(src),
            alpha=0.6,
            label=f"{source_label(src)}\ndomain acc. {p['domain_accuracy']:.2f}",
        )
        ax.set_xlabel("domain-classifier axis")
        ax.set_ylabel("orthogonal principal axis")
        ax.set_title(f"(a{i}) {source_label(src)}" if len(pools) > 1 else f"(a) {source_label(src)}", fontsize=10)
        ax.legend(fontsize=7, markerscale=3, loc="best")
    ax = axes[-1]
    classes = sorted(set(d["real_labels"].tolist()) | {int(c) for p in pools.values() for c in p["labels"]})
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    color_of = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    ax.scatter(
        *d["real_pca"].T, s=6, c=[color_of[int(c)] for c in d["real_labels"]], marker="o", alpha=0.35, linewidths=0
    )
    for src, p in pools.items():
        ax.scatter(
            *p["pca"].T,
            s=14,
            c=[color_of[int(c)] for c in p["labels"]],
            marker=source_marker(src),
            alpha=0.8,
            edgecolors=source_color(src),
            linewidths=0.5,
        )
    ax.set_xlabel("PC 1 (real-trained classifier features)")
    ax.set_ylabel("PC 2")
    ax.set_title("(b) feature space of a real-trained classifier", fontsize=10)
    handles = [Line2D([], [], marker="o", color="grey", ls="none", alpha=0.5, label="real (test)")]
    handles += [
        Line2D(
            [],
            [],
            marker=source_marker(s),
            color="white",
            markeredgecolor=source_color(s),
            ls="none",
            label=source_label(s),
        )
        for s in pools
    ]
    ax.legend(handles=handles, fontsize=7, title="colour: class", title_fontsize=7)
    fig.suptitle(f"domain gap at n_real = {d['n_real']}, seed {d['seed']}")
    return fig
