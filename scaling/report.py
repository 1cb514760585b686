"""From a cube to figures and a one-page Markdown report a reader understands without the code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from scaling.cube import STATUS_DONE, open_cube, status_counts


def features_beside(cube_path) -> xr.Dataset | None:
    """``features.nc`` written by the sweep next to ``results.nc``, if there is one."""
    path = Path(cube_path).with_name("features.nc")
    return xr.open_dataset(path, engine="h5netcdf").load() if path.exists() else None


def fit_sources(cube, n_boot: int, random_state: int = 0) -> dict:
    """Every non-reference source fitted, or {} for a real-only cube."""
    from scaling.fit import fit_equivalence

    sources = [str(s) for s in cube["source"].values if s != "real"]
    if not sources or "real" not in cube["source"].values:
        return {}
    out = fit_equivalence(cube, sources, n_boot=n_boot, random_state=random_state)
    return out if isinstance(out, dict) else {sources[0]: out}


def render_figures(cube_path, out_dir, *, n_boot: int = 1000, results: dict | None = None, cube=None) -> dict:
    from paper_figures import render_all

    cube = open_cube(cube_path) if cube is None else cube
    results = fit_sources(cube, n_boot) if results is None else results
    return render_all(cube, results, out_dir, features=features_beside(cube_path))


def cost_table(cube, results: dict) -> list[dict]:
    """Compute seconds (generation + classifier training) per real-image equivalent, per source, at each
    source's largest n_synth; the real source's cost is its training time per added image."""
    done = cube["status"] == STATUS_DONE
    rows = []
    ns = int(cube["n_synth"].values.max())
    for src in cube["source"].values:
        src = str(src)
        sel = dict(source=src, n_synth=ns)
        seconds = (cube["source_seconds"] + cube["train_seconds"]).where(done).sel(sel).mean("seed")
        for r in cube["n_real"].values:
            s = float(seconds.sel(n_real=r))
            if src == "real":
                n_eq = float(ns)
            elif src in results:
                n_eq = float(results[src].real_equivalent(int(r), ns)["estimate"])
            else:
                continue
            rows.append({"source": src, "n_real": int(r), "n_synth": ns, "seconds": s, "n_eq": n_eq,
                         "seconds_per_real_equivalent": s / n_eq if n_eq > 0 else float("inf")})
    return rows


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(x: float, digits: int = 3) -> str:
    if not np.isfinite(x):
        return "∞" if x > 0 else "–"
    return f"{x:.{digits}g}"


def write_report(cube_path, out_dir, *, n_boot: int = 1000) -> Path:
    cube = open_cube(cube_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = fit_sources(cube, n_boot)
    figures = render_figures(cube_path, out / "figures", n_boot=n_boot, results=results, cube=cube)
    prov = json.loads(cube.attrs.get("provenance", "{}"))
    first = next(iter(results.values()), None)
    ci = first.ci if first else 0.95
    how = {"jackknife": "leave-one-seed-out jackknife t intervals",
           "expanded": "expanded-percentile cluster-bootstrap intervals",
           "percentile": "percentile cluster-bootstrap intervals",
           "bca": "BCa cluster-bootstrap intervals"}.get(first.ci_method if first else "", "intervals")
    md = [f"# How many synthetic images is one real image worth? — {cube.attrs['dataset']}", ""]
    md += ["A classifier is trained on `n_real` real images plus `n_synth` images from a *source*; its test "
           "accuracy is compared with the *real* reference curve (more real images). The **real-image "
           "equivalent** `n_eq` is how many extra real images give the same accuracy, and the **exchange "
           f"rate** `rho = n_synth / n_eq` is how many synthetic images one real image is worth. Intervals are "
           f"{ci:.0%} {how} over seeds (each seed repeats the whole experiment; with few seeds they are wide "
           "by design — `scaling simulate` helps plan how many seeds a target width needs).", ""]
    md += [f"- cube: `{cube_path}` — sources {', '.join(map(str, cube['source'].values))}; n_real "
           f"{cube['n_real'].values.tolist()}; n_synth {cube['n_synth'].values.tolist()}; "
           f"{cube.sizes['seed']} seeds; {cube.attrs['n_test']} test images",
           f"- cells: {status_counts(cube)}",
           f"- produced by package {prov.get('package', '?')} (git {str(prov.get('git', ''))[:10] or '?'}), torch "
           f"{prov.get('torch', '?')}, {prov.get('start', '?')} – {prov.get('end', '?')}", ""]
    md += ["## Answer", ""]
    if not results:
        md += ["This cube has no synthetic source (or no `real` reference), so there is no exchange rate to "
               "estimate; the figures show the real curve.", ""]
    for name, res in results.items():
        ns = int(res.cells["n_synth"].values.max())
        q = res.exchange_rate(res.cells["n_real"].values, ns)
        parts = [f"n_real={int(r)}: **{_fmt(float(e))}** [{_fmt(float(lo))}, {_fmt(float(hi))}]"
                 for r, e, lo, hi in zip(q["n_real"].values, q["estimate"].values, q["lower"].values, q["upper"].values)]
        md += [f"- **{name}** ({res.law} law), synthetic images per real image at n_synth = {ns}: " + "; ".join(parts)]
    md += ["", "An upper bound of ∞ means the interval admits a real-image equivalent of zero: the added images "
           "may be worth nothing at that size.", ""]
    md += ["## Figures", ""]
    captions = {
        "accuracy_vs_nsynth": "Accuracy vs images added, per base size; every source against the real reference "
                              "(mean ± sd over seeds).",
        "equivalence": "Real-image equivalent of the added images, per base size: points are per-cell estimates "
                       "with CIs, solid lines the effective-data law (band: CI), dashed Wang et al.'s law; the "
                       "dotted diagonal is 'one synthetic image = one real image'.",
        "exchange_rate": "Exchange rate vs base size: does synthetic data lose value as the real set grows?",
        "source_comparison": "All sources at a matched budget of added images (Burg et al.'s comparison).",
        "accuracy_heatmap": "Mean accuracy over the whole grid, per source.",
        "domain_gap": "Domain gap (after Wang et al. Fig. 1): (a) real vs synthetic along a linear domain "
                      "classifier's axis, with its balanced accuracy; (b) both in a real-trained classifier's "
                      "feature space.",
        "samples": "Pool images per class and source.",
    }
    for name, paths in figures.items():
        md += [f"### {name.replace('_', ' ')}", "", captions.get(name, ""), "",
               f"![{name}]({Path(paths['png']).relative_to(out).as_posix()})", ""]
    for name, res in results.items():
        md += [f"## Summary: {name}", "", "```", res.summary(), "```", ""]
    if "pool_label_accuracy" in cube:
        md += ["## Pool quality", "", "Judge = a classifier trained on every non-test real image. *label acc.*: "
               "how often it agrees with the pool's labels; *FD*: Fréchet distance to real images in its feature "
               "space (lower is closer); *domain acc.*: a linear real-vs-pool classifier's balanced accuracy "
               "(0.5 = indistinguishable); *label noise*: retrieved images whose query label is wrong.", ""]
        rows = []
        for src in cube["source"].values:
            for r in cube["n_real"].values:
                g = cube.sel(source=src, n_real=r)
                row = [str(src), int(r)]
                for var in ("pool_label_accuracy", "pool_frechet_distance", "pool_domain_accuracy", "pool_label_noise"):
                    row.append(_fmt(float(g[var].mean("seed"))) if var in g else "–")
                rows.append(row)
        md += [_md_table(["source", "n_real", "label acc.", "FD", "domain acc.", "label noise"], rows), ""]
    costs = cost_table(cube, results)
    if costs:
        md += ["## Price of the answer", "", "Compute seconds (generation or retrieval, attributed to the cell, plus "
               "classifier training) per real-image equivalent at the largest n_synth, mean over seeds.", ""]
        md += [_md_table(["source", "n_real", "n_synth", "seconds", "n_eq", "seconds / real equivalent"],
                         [[c["source"], c["n_real"], c["n_synth"], _fmt(c["seconds"]), _fmt(c["n_eq"]),
                           _fmt(c["seconds_per_real_equivalent"])] for c in costs]), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
