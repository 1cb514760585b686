"""From a cube to figures and a one-page Markdown report a reader understands without the code."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from analysis.equivalence import BASE_CELL_SHARE, equivalence_weights_text
from analysis.laws import reference_mixture_text
from analysis.bootstrap import MCSE_BATCHES, replicates_for_digits, stable_digits
from analysis.formatting import format_interval, gain_text, inert_md, md_table, memorisation_text
from analysis.options import CI_METHODS, N_BOOT
from analysis.verdict import ESTIMATED_MAX_RATIO, METHODS_DISAGREE_FACTOR
from analysis.cube import PROTOCOL_DIM, REFERENCE, STATUS_DONE, open_cube, protocol_slice, status_counts
from analysis.io import clean_temp_files, temp_name


def features_beside(cube_path, skipped: dict | None = None) -> xr.Dataset | None:
    """``features.nc`` written by the sweep next to ``results.nc``, if there is one and it is readable."""
    path = Path(cube_path).with_name("features.nc")
    if not path.exists():
        return None
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as exc:  # noqa: BLE001 - a damaged file: say so, draw the rest
        if skipped is not None:
            skipped["features.nc"] = f"{path} is not readable ({type(exc).__name__}); domain_gap and samples skipped"
        return None


def fit_sources(cube, n_boot: int, random_state: int = 0, sources=None, reference=REFERENCE, **fit_kwargs) -> dict:
    """The non-reference sources (all, or ``sources``) fitted, or {} for a reference-only cube. ``fit_kwargs``
    (law, curve_law, ci_method, ...) go to ``fit_equivalence`` so figures and report can match a customised fit."""
    from scaling.fit import fit_equivalence

    sources = [str(s) for s in cube["source"].values if s != reference] if sources is None else list(sources)
    if not sources or reference not in cube["source"].values:
        return {}
    return fit_equivalence(cube, sources, n_boot=n_boot, random_state=random_state, reference=reference, **fit_kwargs)


def select_sources(cube, sources, reference: str = REFERENCE) -> xr.Dataset:
    """The cube restricted to ``sources`` (plus the reference); an unknown name is one clear error."""
    if not sources:
        return cube
    have = [str(s) for s in cube["source"].values]
    unknown = [s for s in sources if s not in have]
    if unknown:
        raise ValueError(f"--source: {unknown[0]!r} is not in the cube (have {have})")
    keep = [s for s in have if s == reference or s in sources]
    return cube.sel(source=keep)


def render_figures(
    cube_path,
    out_dir,
    *,
    n_boot: int = N_BOOT,
    results: dict | None = None,
    cube=None,
    skipped: dict | None = None,
    sources=None,
    domain_slice: dict | None = None,
    protocol: str | None = None,
    **fit_kwargs,
) -> dict:
    """Every figure the cube allows; what could not be drawn goes into ``skipped`` with its reason.

    ``sources`` limits figures and fits to those sources (and the reference); ``domain_slice`` picks the
    (n_real, seed) the domain-gap figure shows."""
    from paper_figures import render_all

    skipped = {} if skipped is None else skipped
    whole = open_cube(cube_path) if cube is None else cube
    if PROTOCOL_DIM in whole.dims:  # figures of one setting; the protocol figure comes with the report
        whole = protocol_slice(whole, protocol or str(whole[PROTOCOL_DIM].values[0]))
    cube = select_sources(whole, sources, fit_kwargs.get("reference", REFERENCE))
    if results is None:  # fitted on the whole cube: a source's numbers do not depend on which others are shown
        results = try_fit_sources(whole, n_boot, skipped, sources=sources, **fit_kwargs)
    features = features_beside(cube_path, skipped)
    if features is not None and sources:
        features = features.sel(source=[s for s in features["source"].values if s in cube["source"].values])
    return render_all(cube, results, out_dir, features=features, skipped=skipped, domain_slice=domain_slice)


def try_fit_sources(cube, n_boot: int, skipped: dict, sources=None, **fit_kwargs) -> dict:
    """``fit_sources``, or {} with the reason in ``skipped`` when this cube cannot identify a fit."""
    names = [str(s) for s in cube["source"].values]
    reference = fit_kwargs.get("reference", REFERENCE)
    if reference not in names:
        skipped["equivalence fit"] = f"the cube has no {reference!r} reference source"
        return {}
    if names == [reference]:
        skipped["equivalence fit"] = "the cube has no synthetic source"
        return {}
    try:
        return fit_sources(cube, n_boot, sources=sources or None, **fit_kwargs)
    except ValueError as exc:  # IdentifiabilityError, CubeError: the cube cannot support the fit
        skipped["equivalence fit"] = str(exc)
        return {}


COST_RULE = (
    "A generator's training time is split equally among the pools it serves (closed-set: one pool per "
    "base subset and seed; open-set: one generator for every seed, so 1/seeds each); a pool's sampling or "
    "retrieval time is split in proportion to the images a cell takes from it; classifier training is the "
    "cell's own. n_eq is the per-cell estimate of the summaries (not the fitted law)."
)


def cost_table(cube, results: dict, reference: str = REFERENCE) -> list[dict]:
    """Compute seconds (generation + classifier training, mean over seeds) per real-image equivalent, per
    source, at the largest n_synth; the real source's cost is its training time per added image. The rule
    is :data:`COST_RULE`; n_eq is the per-cell estimate, the same number as the per-cell tables."""
    done = cube["status"] == STATUS_DONE
    rows = []
    ns = int(cube["n_synth"].values.max())
    for src in cube["source"].values:
        src = str(src)
        sel = dict(source=src, n_synth=ns)
        seconds = (cube["source_seconds"] + cube["train_seconds"]).where(done).sel(sel).mean("seed")
        for r in cube["n_real"].values:
            s = float(seconds.sel(n_real=r))
            if src == reference:
                n_eq = float(ns)
            elif src in results:
                n_eq = float(results[src].cells["n_eq"].sel(n_real=int(r), n_synth=ns))
            else:
                continue
            rows.append(
                {
                    "source": src,
                    "n_real": int(r),
                    "n_synth": ns,
                    "seconds": s,
                    "n_eq": n_eq,
                    "seconds_per_real_equivalent": s / n_eq if n_eq > 0 else float("inf"),
                }
            )
    return rows


def _fmt(x: float, digits: int = 3) -> str:
    if not np.isfinite(x):
        return "∞" if x > 0 else "–"
    return f"{x:.{digits}g}"


def _interval(lower: float, upper: float) -> str:
    return format_interval(lower, upper, inf="∞", fmt=_fmt)


def answer_lines(results: dict) -> list[str]:
    """The Answer section: per source and base size, the verdict first; a bold rate only when estimated."""
    md = []
    for name, res in results.items():
        rows = res.answer_rows()
        ns = rows[0]["n_synth"]
        verdicts = {r["verdict"] for r in rows}
        if verdicts == {"estimated"}:
            lead = "estimated at every base size"
        elif len(verdicts) == 1:
            lead = f"{rows[0]['verdict']} at every base size"
        else:
            lead = "; ".join(
                f"{v} at n_real = {', '.join(str(r['n_real']) for r in rows if r['verdict'] == v)}"
                for v in sorted(verdicts)
            )
        md.append(
            f"- **{inert_md(name)}** — {lead} (synthetic images per real image at n_synth = {ns}; heaviest law "
            f"'{res.law_chosen}'):"
        )
        for r in rows:
            md.append(f"  - n_real = {r['n_real']}: {answer_text(r, res)}")
    return md


def answer_text(r: dict, res) -> str:
    """One base size's answer: the verdict, the rate as the verdict allows it (bold only when estimated), the gain
    test behind the verdict, and — where the interval methods disagree — that the interval is unreliable at this
    seed count and which verdict survives every method."""
    if r["verdict"] == "hurts":
        rate = "no rate"
    else:
        bold = "**" if r["verdict"] == "estimated" else ""
        rate = f"rho {bold}{_fmt(r['estimate'])}{bold} {_interval(r['lower'], r['upper'])}"
    text = f"*{r['verdict']}* — {rate}{gain_text(r, cells='n_synth cells')}. {r['note'][0].upper() + r['note'][1:]}."
    if audit := memorisation_text(r):
        text += f" {inert_md(audit[0].upper() + audit[1:])}."
    agree = res.method_agreement(r["n_real"], r["n_synth"])
    if not agree["reliable"]:
        f = agree["factor"]
        factor = (
            "without bound" if not np.isfinite(f) else "by a factor over 1000" if f > 1e3 else f"by a factor {f:.3g}"
        )
        text += (
            f" Interval unreliable at {res.n_seeds} seeds: the interval methods' bounds differ {factor} "
            f"(> {METHODS_DISAGREE_FACTOR:g}); the verdict every method supports: *{agree['survives']}*."
        )
    return text


def caveat_lines(cube, results: dict) -> list[str]:
    """What the answer is conditional on, generated from the cube and the fits."""
    prov = json.loads(cube.attrs.get("provenance", "{}"))
    clf = (prov.get("config") or {}).get("classifier") or {}
    first = next(iter(results.values()))
    protocol = ", ".join(f"{k} {v}" for k, v in clf.items()) if clf else "not recorded in the cube"
    rec = json.loads(cube.attrs.get("protocol", "null")) or {}
    budget = rec.get("budget", "steps")
    if "protocol_setting" in cube.attrs:  # one setting of a protocol sweep
        budget, _, weight = cube.attrs["protocol_setting"].partition("-w")
        rec = {**rec, "synth_weight": float(weight) if weight else None}
    steps = (
        "every classifier trains the same number of steps"
        if budget == "steps"
        else f"steps grow with the training set ({rec.get('epochs')} epochs, at most {rec.get('max_steps')} steps)"
    )
    mix = (
        "real and synthetic images are pooled uniformly"
        if rec.get("synth_weight") is None
        else f"a batch item is synthetic with probability {rec['synth_weight']}"
    )
    md = [
        f"- **Training protocol** (part of what is estimated): synthetic images are *added* to the base set; "
        f"{steps}; {mix}; classifier: {protocol}.",
        f"- **Seeds**: {first.n_seeds} (each repeats the whole experiment: base subset, generator, classifier). "
        f"Test set: {cube.attrs['n_test']} fixed images; "
        + (
            "intervals resample them jointly with the seeds, so they include test-set noise."
            if first.test_resampled
            else "the cube does not record per-image results, so intervals are conditional on this test set."
        ),
    ]
    for name, res in results.items():
        sel = res.law_selection
        ho = ", ".join(f"{k} {v:.2f}" for k, v in sel["heldout_error"].dropna().items()) or "not computed"
        extrap = [r["n_real"] for r in res.answer_rows() if r["extrapolated"]]
        wts = ", ".join(f"{k} {v:.2f}" for k, v in sel["weight"].items() if res.law == "auto" or k == res.law)
        md.append(
            f"- **{inert_md(name)}**: equivalence laws weighted {wts} by their held-out error (in standard errors: "
            f"{ho})"
            + (f"; extrapolated at n_real = {extrap}" if extrap else "")
            + (". Warnings: " + inert_md("; ".join(res.warnings)) if res.warnings else "")
            + "."
        )
    for name in shared_generator_sources(cube, results):
        md.append(
            f"- **{inert_md(name)}** starts from one generator shared by every seed: its interval is conditional on "
            "that generator (a different training run of it could move the rate)."
        )
    curve = first
    ho = ", ".join(f"{k} {v:.2f}" for k, v in curve.curve_selection["heldout_error"].dropna().items()) or "not computed"
    wts = ", ".join(f"{k} {v:.2f}" for k, v in curve.curve_selection["weight"].items())
    md.append(f"- **Reference curve**: laws weighted {wts} by held-out extrapolation error ({ho}).")
    return md


def shared_generator_sources(cube, results) -> list[str]:
    """Fitted sources whose pools start from one run-wide generator (the cube records them; a cube written before
    named sources: open_set)."""
    recorded = cube.attrs.get("shared_generator_sources")
    names = json.loads(recorded) if recorded else ["open_set"]
    return [n for n in names if n in results]


def interval_method_lines(results: dict) -> list[str]:
    """How much the interval method moves the headline intervals: one small table, the bootstrap intervals'
    bounds with their Monte-Carlo errors, and how many of their digits more replicates would still change."""
    rows, stable, need, n_boot = [], [], [], None
    for name, res in results.items():
        for r in res.answer_rows():
            t = res.interval_methods(r["n_real"], r["n_synth"])
            rows.append([name, r["n_real"]] + [_method_cell(t.loc[m]) for m in t.index])
            n_boot = res.n_boot
            for side in ("lower", "upper"):
                ok = np.isfinite(t[side]) & np.isfinite(t[f"{side}_mcse"])
                stable += stable_digits(t[side][ok], t[f"{side}_mcse"][ok]).tolist()
                need += replicates_for_digits(t[side][ok], t[f"{side}_mcse"][ok], res.n_boot).tolist()
    out = [md_table(["source", "n_real", *CI_METHODS], rows)]
    if stable:
        out += [
            "",
            f"± after a bootstrap bound: its Monte-Carlo standard error over the {n_boot:,} replicates (batch "
            f"means, {MCSE_BATCHES} batches). A printed digit is stable where 1.96 times the error is within half "
            f"a unit of it: with {n_boot:,} replicates the bootstrap bounds above are stable to "
            + _digit_range(min(stable), max(stable))
            + " (3 are printed)"
            + (
                f"; all three would need {_count(min(need))}–{_count(max(need))} replicates (`--n-boot`), so read "
                "the digits past the stable ones as Monte-Carlo noise."
                if min(stable) < 3
                else "."
            ),
        ]
    return out


def _digit_range(low: int, high: int) -> str:
    """'2 significant digits', '1 significant digit' or '0–2 significant digits'."""
    if int(low) == int(high):
        return f"{int(low)} significant digit" + ("" if int(low) == 1 else "s")
    return f"{int(low)}–{int(high)} significant digits"


def _count(n: float) -> str:
    """A replicate count for text: two significant figures (the estimate is no better than that)."""
    return "an unbounded number of" if not np.isfinite(n) else f"{float(f'{n:.2g}'):,.0f}"


def _method_cell(row) -> str:
    """One interval method's bounds and verdict; a bootstrap bound with its Monte-Carlo error."""

    def bound(side):
        se = row[f"{side}_mcse"]
        return _fmt(row[side]) + (f" ±{se:.2g}" if np.isfinite(row[side]) and np.isfinite(se) else "")

    if np.isnan(row["lower_mcse"]) and np.isnan(row["upper_mcse"]):
        return f"{_interval(row['lower'], row['upper'])} {row['verdict']}"
    return f"[{bound('lower')}, {bound('upper')}] {row['verdict']}"


def checklist_lines(results: dict) -> list[str]:
    """What a scaling-law paper should report about its fits (law form, objective, optimiser, ...)."""
    first = next(iter(results.values()))
    rows = [
        [
            "reference law",
            reference_mixture_text() if first.curve_law == "auto" else first.curve_chosen,
        ],
        [
            "equivalence laws",
            "effective n_eq = k n_synth^a n_real^b; Wang et al.; saturating "
            f"n_real R* (1 - exp(-n_synth/(rho0 n_real R*))); {equivalence_weights_text()}"
            if first.law == "auto"
            else first.law,
        ],
        [
            "objective",
            "weighted least squares on the error scale (cell means), weights 1 / variance from a "
            f"pooled model (binomial floor + seed variance smooth in accuracy; {first.variance})",
        ],
        [
            "optimiser",
            "reference: variable projection (grid + refinement, no starting values); equivalence: "
            "batched Levenberg-Marquardt from log-space starts",
        ],
    ]
    for name, res in results.items():
        conv = ", ".join(f"{k} {v:.0%}" for k, v in res.law_selection["converged_share"].items())
        n_cells = int(np.isfinite(res.cells["accuracy"].values).sum())
        bounds = ", ".join(f"{p} ({flag})" for p, flag in res.flags.items() if flag and flag != "fixed")
        rows.append(
            [
                f"{name}: points, convergence, flags",
                f"{n_cells} cells x {res.n_seeds} seeds; converged replicates: {conv}; flagged: {bounds or 'none'}",
            ]
        )
    rows += [
        [
            "interval",
            f"{first.ci:.0%} {first.ci_method} over {first.n_seeds} seeds"
            + (" and test images" if first.test_resampled else "")
            + f"; {first.n_boot} bootstrap "
            "replicates stored for the other methods",
        ],
        [
            "held-out error (reference)",
            ", ".join(f"{k} {v:.2f}" for k, v in first.curve_selection["heldout_error"].dropna().items())
            or "not computed",
        ],
    ]
    return [md_table(["item", "this report"], rows)]


PAIRWISE_UP_TO = 4  # sources; beyond, the ratio table holds each source against the best (one row per source)


def comparison_lines(results) -> list[str]:
    """The methods ranked at the largest n_synth (paired differences of real equivalents), then ratios of exchange
    rates per base size: every pair for a few sources, each against the best for more (paired replicates)."""
    if len(results) < 2:
        return []
    rows = []
    first = next(iter(results.values()))
    ns = int(first.cells["n_synth"].values.max())
    against = None if len(results) <= PAIRWISE_UP_TO else "best"
    ranking = [
        f"Methods ranked by the real images {ns} of their images are worth (n_eq), best first at each base size:",
        "",
        results.ranking_markdown(ns),
        "",
    ]
    for r in first.cells["n_real"].values:
        t = results.compare(int(r), ns, against=against)
        for row in t.itertuples():
            rows.append(
                [
                    f"{row.a} / {row.b}",
                    int(r),
                    ns,
                    f"{_fmt(row.ratio)} {_interval(row.lower, row.upper)}",
                    "yes" if row.differ else "no",
                ]
            )
    return ranking + [
        "Ratio of exchange rates rho_a / rho_b (above 1: *b* needs fewer images per real image)"
        + ("" if against is None else ", each source against the best one at that base size")
        + ". The sources share their seed resamples, so the ratio's interval is paired.",
        "",
        md_table(["a / b", "n_real", "n_synth", "ratio [CI]", "differ"], rows),
        "",
    ]


def protocol_lines(full_cube, out: Path, n_boot: int, skipped: dict, **fit_kwargs) -> list[str]:
    """The exchange rate per training-protocol setting (a protocol sweep), with the rho-vs-weight figure."""
    from paper_figures import protocol as protocol_figure
    from paper_figures.style import save_figure
    from scaling.fit import fit_protocols, protocol_table

    try:
        table = protocol_table(fit_protocols(full_cube, n_boot=n_boot, **fit_kwargs))
    except ValueError as exc:
        skipped["protocol comparison"] = str(exc)
        return []
    rows = [
        [
            r.protocol,
            r.source,
            r.n_real,
            r.n_synth,
            f"{'**' if r.best else ''}{_fmt(r.rho)}{'**' if r.best else ''} {_interval(r.lower, r.upper)}",
            r.verdict,
        ]
        for r in table.itertuples()
    ]
    md = [
        "## Exchange rate per training protocol",
        "",
        "The rate is part of a training protocol: the budget policy (`steps`: every classifier trains the "
        "same number of steps; `epochs`: steps grow with the training set, capped) and the synthetic weight "
        "(the probability that a batch item is synthetic; `pool` = uniform over all images). Bold: per "
        "budget, source and base size, the weight with the lowest estimated rate (the most value per "
        "synthetic image). Real and base-only cells are shared by every weight of a budget.",
        "",
        md_table(["protocol", "source", "n_real", "n_synth", "rho [CI]", "verdict"], rows),
        "",
    ]
    try:
        paths = save_figure(protocol_figure.figure(table), out / "figures", "rate_vs_weight")
        md += [f"![rate vs weight]({Path(paths['png']).relative_to(out).as_posix()})", ""]
    except Exception as exc:  # noqa: BLE001 - reported, the table stands
        skipped["rate_vs_weight"] = f"{type(exc).__name__}: {exc}"
    return md


def write_report(
    cube_path,
    out_dir,
    *,
    n_boot: int = N_BOOT,
    sources=None,
    domain_slice: dict | None = None,
    protocol: str | None = None,
    **fit_kwargs,
) -> Path:
    """``out_dir/report.md`` and ``out_dir/figures/``, written whole or not at all: everything is drawn in a
    temp folder inside ``out_dir`` and moved in place at the end, so a killed report leaves the previous one
    (never a truncated PNG, never figures of two cubes side by side); other files in ``out_dir`` are kept."""
    whole = open_cube(cube_path)
    select_sources(whole, sources, fit_kwargs.get("reference", REFERENCE))  # a bad source: refused before any write
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out, recursive=False)  # what a killed report left: its own staging names in out only
    staging = Path(tempfile.mkdtemp(prefix=temp_name("report", ""), dir=out))
    try:
        _draw_report(
            cube_path,
            whole,
            staging,
            n_boot=n_boot,
            sources=sources,
            domain_slice=domain_slice,
            protocol=protocol,
            **fit_kwargs,
        )
        _move_in(staging, out)
    except OSError as exc:  # a full disk: name the file of the report, not of the staging folder
        name = str(exc.filename or staging / "report.md").replace(str(staging), str(out))
        raise OSError(exc.errno, exc.strerror or str(exc), name) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "report.md"


def _move_in(staging: Path, out: Path) -> None:
    """Swap the new figures folder in (old one renamed aside, then removed), then the report itself."""
    old = out / temp_name("figures", f"old{os.getpid()}")
    if (out / "figures").exists():
        (out / "figures").rename(old)
    if (staging / "figures").exists():
        (staging / "figures").rename(out / "figures")
    for path in staging.iterdir():
        if path.is_file():
            os.replace(path, out / path.name)
    shutil.rmtree(old, ignore_errors=True)


def _draw_report(
    cube_path, whole: xr.Dataset, out: Path, *, n_boot: int, sources, domain_slice, protocol, **fit_kwargs
) -> Path:
    """The report of ``whole`` (the cube as stored), showing ``sources`` (all when None). Fits always see the whole
    cube, so the numbers of a source are the same whichever sources the report shows."""
    skipped: dict[str, str] = {}
    protocol_md: list[str] = []
    full = select_sources(whole, sources, fit_kwargs.get("reference", REFERENCE))
    cube = full
    if PROTOCOL_DIM in full.dims:
        protocol = protocol or str(full[PROTOCOL_DIM].values[0])
        protocol_md = protocol_lines(full, out, n_boot, skipped, **fit_kwargs)
        cube = protocol_slice(full, protocol)
        whole = protocol_slice(whole, protocol)
    results = try_fit_sources(whole, n_boot, skipped, sources=sources, **fit_kwargs)
    figures = render_figures(
        cube_path,
        out / "figures",
        n_boot=n_boot,
        results=results,
        cube=cube,
        skipped=skipped,
        sources=sources,
        domain_slice=domain_slice,
        reference=fit_kwargs.get("reference", REFERENCE),
    )
    recorded = json.loads(cube.attrs.get("protocol", "null"))
    prov = json.loads(cube.attrs.get("provenance", "{}"))
    first = next(iter(results.values()), None)
    ci = first.ci if first else 0.95
    how = {
        "jackknife": "leave-one-seed-out jackknife t intervals",
        "expanded": "expanded-percentile cluster-bootstrap intervals",
        "percentile": "percentile cluster-bootstrap intervals",
        "bca": "BCa cluster-bootstrap intervals",
    }.get(first.ci_method if first else "", "intervals")
    md = [f"# How many synthetic images is one real image worth? — {inert_md(cube.attrs['dataset'])}", ""]
    md += [
        "A classifier is trained on `n_real` real images plus `n_synth` images from a *source*; its test "
        "accuracy is compared with the *real* reference curve (more real images). The **real-image "
        "equivalent** `n_eq` is how many extra real images give the same accuracy, and the **exchange "
        f"rate** `rho = n_synth / n_eq` is how many synthetic images one real image is worth. Intervals are "
        f"{ci:.0%} {how} over seeds (each seed repeats the whole experiment). Every rate carries a verdict, "
        "decided first by a gain test (the weighted mean accuracy gain of a base size's n_synth cells over the "
        f"base: {BASE_CELL_SHARE:.0%} the same seeds' base classifier, {1 - BASE_CELL_SHARE:.0%} the reference curve "
        "at that size; at the smallest "
        "size the base classifier alone): *hurts* (the gain's interval "
        "lies below 0; no rate is "
        "printed), *no measurable gain* (it includes 0; the rate has no upper bound: the images may be worth "
        f"nothing), else *estimated* (rate interval bounds within a factor {ESTIMATED_MAX_RATIO:g}) or *not "
        "identified* (the images help but the rate's interval is too wide). The rate is printed as its verdict "
        "allows, so the two never contradict each other; a rate is printed in bold only when estimated. Where "
        f"the interval methods' bounds differ by more than a factor {METHODS_DISAGREE_FACTOR:g}, the answer says "
        "the interval is unreliable at this seed count and names the verdict every method supports.",
        "",
    ]
    md += [
        f"- cube: {inert_md(cube_path)} — sources {inert_md(', '.join(map(str, cube['source'].values)))}; n_real "
        f"{cube['n_real'].values.tolist()}; n_synth {cube['n_synth'].values.tolist()}; "
        f"{cube.sizes['seed']} seeds; {cube.attrs['n_test']} test images",
        f"- cells: {status_counts(cube)}"
        + (" (the pending ones lie outside the replace design: never run)" if "design" in cube.attrs else ""),
        "- training protocol: "
        + (inert_md(", ".join(f"{k} {v}" for k, v in recorded.items())) if recorded else "not recorded in the cube")
        + (
            f" — this page shows setting **{inert_md(cube.attrs['protocol_setting'])}** of the protocol sweep "
            f"{full[PROTOCOL_DIM].values.tolist()}"
            if "protocol_setting" in cube.attrs
            else ""
        ),
        inert_md(
            f"- produced by package {prov.get('package', '?')} (git {str(prov.get('git', ''))[:10] or '?'}), "
            f"torch {prov.get('torch', '?')}, {prov.get('start', '?')} – {prov.get('end', '?')}"
        ),
        "",
    ]
    md += ["## Answer", ""]
    if not results:
        why = skipped.get("equivalence fit", "it has no synthetic source (or no `real` reference)")
        md += [f"No exchange rate can be estimated from this cube: {why}. The figures show what it holds.", ""]
        md += protocol_md
    else:
        md += answer_lines(results)
        md += protocol_md
        md += [
            "",
            "An upper bound of ∞ means the interval admits a real-image equivalent of zero: the added images "
            "may be worth nothing at that size. Bounds above 10^6 print as ∞ and below 0.001 as 0: a bound of "
            "1e+92 or 3e-16 only says the interval admits everything or nothing.",
            "",
        ]
        md += ["## Table (rho [CI] at a matched budget)", "", results.to_markdown(), ""]
        md += comparison_lines(results)
        md += ["## What this answer rests on", ""] + caveat_lines(cube, results) + [""]
        md += [
            "## How much the interval method matters",
            "",
            "The headline intervals under every method (all from the same stored replicates); the default is "
            f"`{first.ci_method}`, the one whose coverage was measured near nominal (bench/RESULTS.md).",
            "",
        ]
        md += interval_method_lines(results) + [""]
        md += ["## Checklist of the fit", ""] + checklist_lines(results) + [""]
    md += ["## Figures", ""]
    if skipped:
        md += (
            ["Not shown, and why:", ""]
            + [f"- {inert_md(name)}: {inert_md(why)}" for name, why in skipped.items()]
            + [""]
        )
    captions = {
        "accuracy_vs_nsynth": "Accuracy vs images added, per base size; every source against the real reference "
        "(mean ± sd over seeds).",
        "equivalence": "Real-image equivalent of the added images, per base size: points are per-cell estimates "
        "with CIs; thin lines the effective (solid), Wang et al.'s (dashed) and saturating (dash-dot) laws, "
        "the thick line with its CI band the fit the answer uses (the laws weighted by held-out error); the dotted diagonal is "
        "'one synthetic image = one real image'.",
        "exchange_rate": "Exchange rate vs base size: does synthetic data lose value as the real set grows? Hollow "
        "markers have no estimate to quote (verdict shown beside them).",
        "source_comparison": "Every source at matched budgets of added images (Burg et al.'s comparison): mean "
        "accuracy with 95% t-intervals over seeds, per base size.",
        "wang_coordinates": "The equivalence in Wang et al.'s coordinates (n_syn / n_base vs the real images "
        "they are worth per base image), one curve per base size with the fit used; the "
        "curves collapse onto one if Wang et al.'s law holds.",
        "accuracy_heatmap": "Mean accuracy over the whole grid, per source.",
        "domain_gap": "Domain gap (after Wang et al. Fig. 1): (a1, a2, ...) per source, real vs synthetic along a "
        "linear domain classifier's axis, with its balanced accuracy; (b) both in a real-trained "
        "classifier's feature space, coloured by class (choose the slice with --domain-n-real, "
        "--domain-seed).",
        "samples": "Pool images per class and source.",
        "memorisation": "Exchange rate at the largest n_synth vs the memorisation audit, one point per source and "
        "base size (rN): (a) the share of pool images that copy their reference set (the generator's training set, "
        "else the base subset) — a rate that is high because the pool replays its training images sits on the "
        "right; (b) the pool's nearest-image distance over held-out real images' — right of 1, the images lie "
        "off the data.",
    }
    for name, paths in figures.items():
        md += [
            f"### {name.replace('_', ' ')}",
            "",
            captions.get(name, ""),
            "",
            f"![{name}]({Path(paths['png']).relative_to(out).as_posix()})",
            "",
        ]
    for name, res in results.items():
        # inside a fence nothing renders; a fence in a cube attribute must not close it
        md += [f"## Summary: {inert_md(name)}", "", "```", res.summary().replace("```", "'''"), "```", ""]
    if "pool_label_accuracy" in cube:
        md += [
            "## Pool quality",
            "",
            "Judge = a classifier trained on every non-test real image. *label acc.*: "
            "how often it agrees with the pool's labels; *FD*: Fréchet distance to real images in its feature "
            "space (lower is closer); *domain acc.*: a linear real-vs-pool classifier's balanced accuracy "
            "(0.5 = indistinguishable); *label noise*: retrieved images whose query label is wrong; *copies*: the "
            "memorisation audit's share of pool images whose nearest image of the reference set (the generator's "
            "training set, else the base subset) is closer than 1/3 of the second nearest (pixel L2), mean over "
            "seeds; *NN dist.*: their median nearest-image distance over held-out real images' (1 = as novel as "
            "new real data).",
            "",
        ]
        rows = []
        for src in cube["source"].values:
            for r in cube["n_real"].values:
                g = cube.sel(source=src, n_real=r)
                row = [str(src), int(r)]
                for var in ("pool_label_accuracy", "pool_frechet_distance", "pool_domain_accuracy", "pool_label_noise"):
                    row.append(_fmt(float(g[var].mean("seed"))) if var in g else "–")
                row.append(
                    f"{float(g['pool_copy_share'].mean('seed')):.0%}"
                    if "pool_copy_share" in g and np.isfinite(g["pool_copy_share"]).any()
                    else "–"
                )
                row.append(
                    _fmt(float(g["pool_nn_distance_ratio"].median("seed"))) if "pool_nn_distance_ratio" in g else "–"
                )
                rows.append(row)
        md += [
            md_table(
                ["source", "n_real", "label acc.", "FD", "domain acc.", "label noise", "copies", "NN dist."], rows
            ),
            "",
        ]
    costs = cost_table(cube, results, fit_kwargs.get("reference", REFERENCE))
    if costs:
        md += [
            "## Price of the answer",
            "",
            "Compute seconds per real-image equivalent at the largest n_synth "
            "(seconds: mean over seeds of the cell's attributed generation or retrieval time plus its classifier "
            f"training). {COST_RULE}",
            "",
        ]
        md += [
            md_table(
                ["source", "n_real", "n_synth", "seconds", "n_eq", "seconds / real equivalent"],
                [
                    [
                        c["source"],
                        c["n_real"],
                        c["n_synth"],
                        _fmt(c["seconds"]),
                        _fmt(c["n_eq"]),
                        _fmt(c["seconds_per_real_equivalent"]),
                    ]
                    for c in costs
                ],
            ),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


LAW_TABLE_PARAMS = {"c2": "wang.c2", "R*": "saturating.R*", "rho0": "saturating.rho0"}


def memorisation_figure(cube_paths, out_dir, *, n_boot: int = N_BOOT, **fit_kwargs) -> dict:
    """Rate against copy share for several cubes (one dataset each) in one panel (``memorisation.png/.pdf``)."""
    from paper_figures import memorisation, save_figure

    fits = {}
    for path in cube_paths:
        cube = open_cube(path)
        skipped: dict[str, str] = {}
        fits[str(cube.attrs.get("dataset", Path(path).stem))] = try_fit_sources(cube, n_boot, skipped, **fit_kwargs)
    return save_figure(memorisation.figure(fits), Path(out_dir), "memorisation")


def law_table(cube_paths, *, n_boot: int = N_BOOT, **fit_kwargs):
    """One row per (dataset, source) over several cubes: Wang et al.'s c2, the saturating law's R* and rho0
    (estimate, interval, flag) and the exchange rate at the largest measured cell with its verdict."""
    import pandas as pd

    rows = []
    for path in cube_paths:
        cube = open_cube(path)
        skipped: dict[str, str] = {}
        results = try_fit_sources(cube, n_boot, skipped, **fit_kwargs)
        if not results:
            raise ValueError(f"cube: {path} gives no fit ({skipped.get('equivalence fit', 'no synthetic source')})")
        for name, res in results.items():
            row = {"dataset": str(cube.attrs.get("dataset", Path(path).stem)), "source": name}
            table = res.param_table()
            for label, param in LAW_TABLE_PARAMS.items():
                p = table.loc[param]
                row[label] = f"{_fmt(p.estimate)} [{_fmt(p.lower)}, {_fmt(p.upper)}]" + (
                    f" ({p.flag})" if p.flag else ""
                )
            head = max(res.answer_rows(), key=lambda h: h["n_real"])
            row["rho at largest cell"] = (
                f"{_fmt(head['estimate'])} {_interval(head['lower'], head['upper'])} "
                f"n_real={head['n_real']}, n_synth={head['n_synth']}: {head['verdict']}"
            )
            row["copies there"] = f"{head['copy_share']:.0%}" if "copy_share" in head else "–"
            rows.append(row)
    table = pd.DataFrame(rows)
    if (table["copies there"] == "–").all():  # no cube carries a memorisation audit: no column of dashes
        table = table.drop(columns="copies there")
    return table
