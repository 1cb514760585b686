"""Paper figures: one module per figure, each a function from a cube and/or fit results to a Figure.

``render_all(cube, results, out_dir, features=None)`` writes every figure as PNG and PDF and returns
their paths; ``scaling figures CUBE --out DIR`` calls it.
"""

from paper_figures.style import save_figure, source_color

__all__ = ["render_all", "save_figure", "source_color"]


def render_all(cube, results: dict, out_dir, features=None) -> dict:
    from paper_figures import (accuracy_curves, domain_gap, equivalence, exchange_rate, heatmap, samples,
                               source_comparison)

    figs = {
        "accuracy_vs_nsynth": accuracy_curves.figure(cube),
        "accuracy_heatmap": heatmap.figure(cube),
        "source_comparison": source_comparison.figure(cube),
    }
    if results:
        figs["equivalence"] = equivalence.figure(results)
        figs["exchange_rate"] = exchange_rate.figure(results)
    if features is not None:
        figs["domain_gap"] = domain_gap.figure(features, cube)
        figs["samples"] = samples.figure(features)
    return {name: save_figure(fig, out_dir, name) for name, fig in figs.items()}
