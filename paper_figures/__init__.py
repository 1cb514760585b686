"""Paper figures: one module per figure, each a function from a cube and/or fit results to a Figure.

``render_all(cube, results, out_dir, features=None)`` writes every figure as PNG and PDF and returns
their paths; ``scaling figures CUBE --out DIR`` calls it.
"""

from paper_figures.style import save_figure, source_color

__all__ = ["render_all", "save_figure", "source_color"]


def render_all(
    cube, results: dict, out_dir, features=None, skipped: dict | None = None, domain_slice: dict | None = None
) -> dict:
    """Every figure the inputs allow. A figure that cannot be drawn from this cube is left out and its reason
    goes into ``skipped`` (name -> reason), so a report can say what is missing and why."""
    from paper_figures import (
        accuracy_curves,
        domain_gap,
        equivalence,
        exchange_rate,
        heatmap,
        memorisation,
        samples,
        source_comparison,
        wang_coordinates,
    )

    skipped = {} if skipped is None else skipped
    makers = {
        "accuracy_vs_nsynth": lambda: accuracy_curves.figure(cube),
        "accuracy_heatmap": lambda: heatmap.figure(cube),
        "source_comparison": lambda: source_comparison.figure(cube),
    }
    if results:
        makers["equivalence"] = lambda: equivalence.figure(results)
        makers["exchange_rate"] = lambda: exchange_rate.figure(results)
        makers["wang_coordinates"] = lambda: wang_coordinates.figure(results)
        if "pool_copy_share" in cube:
            makers["memorisation"] = lambda: memorisation.figure({str(cube.attrs.get("dataset", "")): results})
        else:
            skipped.setdefault("memorisation", "the cube has no memorisation audit (pool_copy_share)")
    else:
        for name in ("equivalence", "exchange_rate", "wang_coordinates", "memorisation"):
            skipped.setdefault(name, "no equivalence fit (see the report's Answer)")
    if features is not None:
        makers["domain_gap"] = lambda: domain_gap.figure(features, cube, **(domain_slice or {}))
        makers["samples"] = lambda: samples.figure(features)
    else:
        skipped.setdefault("domain_gap", "no features.nc beside the cube (written by `scaling sweep`)")
        skipped.setdefault("samples", "no features.nc beside the cube (written by `scaling sweep`)")
    out = {}
    for name, make in makers.items():
        try:  # one figure's odd input (a missing n_synth = 0 column, a constant curve) must not cost the others
            out[name] = save_figure(make(), out_dir, name)
        except Exception as exc:  # noqa: BLE001 - reported to the user, not swallowed
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return out
