"""Shared look: Okabe-Ito colours (colour-blind safe), one colour and marker per source, PNG + PDF."""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analysis.formatting import inert_figure
from analysis.io import write_atomic

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]
SOURCE_STYLE = {
    "real": ("#000000", "o"),
    "closed_set": ("#D55E00", "s"),
    "open_set": ("#0072B2", "^"),
    "retrieval": ("#009E73", "D"),
    "img2img": ("#CC79A7", "v"),
    "personalised": ("#E69F00", "P"),
}
# any other source name (a named source: sd14, closed_set_dit, ...): a colour and a marker none of the kinds above
# uses (the rest of Okabe-Ito and Paul Tol's muted scheme; markers other than theirs), each picked by the name's
# crc32 — 8 x 8 combinations, so the 6-10 sources of a methods comparison rarely share both and never look like a kind
NAMED_COLOURS = ["#56B4E9", "#882255", "#999933", "#332288", "#AA4499", "#DDCC77", "#661100", "#888888"]
NAMED_MARKERS = ["X", "*", "h", "<", ">", "p", "d", "8"]
LAW_STYLE = {"effective": "-", "wang": "--", "saturating": "-."}
LABELS = {
    "real": "real (reference)",
    "closed_set": "closed-set diffusion",
    "open_set": "open-set diffusion",
    "retrieval": "retrieval",
    "img2img": "img2img (from base images)",
    "personalised": "personalised open-set",
}


def source_color(source: str) -> str:
    # crc32, not hash(): str hashes change between processes, colours must not
    return SOURCE_STYLE.get(source, (NAMED_COLOURS[zlib.crc32(source.encode()) % len(NAMED_COLOURS)], ""))[0]


def source_marker(source: str) -> str:
    # another bit of the same checksum than the colour's, so two names of one colour likely differ in marker
    return SOURCE_STYLE.get(source, ("", NAMED_MARKERS[(zlib.crc32(source.encode()) >> 8) % len(NAMED_MARKERS)]))[1]


def source_label(source: str) -> str:
    """How a figure names a source: its label, else the cube's name as inert text (one line, no mathtext)."""
    return LABELS.get(source, inert_figure(source))


MAX_COLUMNS = 3  # wider rows do not fit a page: five base sizes make two rows, not a 4200-px strip


def new_figure(
    n_panels: int, *, width: float = 4.2, height: float = 3.4, sharey: bool = True, max_columns: int = MAX_COLUMNS
):
    """A grid of ``n_panels`` axes, at most ``max_columns`` per row; returns (figure, the used axes in order)."""
    ncols = max(1, min(n_panels, max_columns))
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), sharey=sharey, squeeze=False, constrained_layout=True
    )
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def save_figure(fig, out_dir, name: str) -> dict:
    """PNG (200 dpi) and PDF side by side, each written atomically (a killed run never leaves half an image;
    a full disk is one error naming the file); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / f"{name}.png", "pdf": out / f"{name}.pdf"}
    try:
        write_atomic(paths["png"], lambda tmp: fig.savefig(tmp, dpi=200))
        write_atomic(paths["pdf"], lambda tmp: fig.savefig(tmp))
    finally:
        plt.close(fig)
    return paths


def symlog_position(n_synth, zero_at: float):
    """n_synth on a log axis with 0 drawn at ``zero_at`` (half the smallest positive size)."""
    n = np.asarray(n_synth, dtype=float)
    return np.where(n > 0, n, zero_at)


def zero_tick(ax, n_synth, zero_at: float) -> None:
    ticks = [zero_at] + [float(v) for v in np.asarray(n_synth) if v > 0]
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0"] + [str(int(v)) for v in np.asarray(n_synth) if v > 0])
    ax.minorticks_off()
