"""How many seeds for a target interval width: simulate the experiment, fit it, look at the intervals.

The truth a plan simulates comes from a pilot cube (:func:`pilot_truth`): the error surface of the laws fitted to
it (reference curve at n_real + n_synth, source at n_real + n_eq), and the pilot's own noise, split the way a
sweep makes it:

- a seed effect per (n_real, seed) on the log error, shared by every source and n_synth (the luck of the base
  subset and the classifier's initialisation, which a sweep shares across a seed's cells);
- a source effect per (source, n_real, seed), shared by that source's n_synth cells (a generator or pool that
  came out well or badly for that base subset: it moves a seed's whole curve, not its differences);
- a cell effect per (cell, seed) on the log error: the rest of a trial's randomness *and* its test-set noise, as
  measured. (Binomial noise drawn per cell would overstate it: every cell of a sweep is scored on the same test
  images, so the hard ones are missed together; on the digits default the measured cell variance is below the
  independent-binomial one.)

Both variances come from the pilot's residuals around the cell means (seed effect: the residuals' mean over a
(n_real, seed)'s cells, less the cell part it averages). A stated prior (:func:`prior_truth`) has no residuals to
measure and draws binomial test noise with ``n_test`` images instead. A plan then draws cubes with
``S`` seeds for each candidate ``S``, fits each like ``fit_equivalence`` does, and reports the distribution of
the exchange rate's interval at the target cell: the bound ratio upper/lower (the width the verdicts use),
median and 80% range, and how often each verdict comes out. Validated against widths measured on planted
truths (tests/test_planning.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from analysis.verdict import VERDICTS
from analysis.cube import REFERENCE, STATUS_DONE, classes_of, empty_cube, fill_planted
from scaling.fit import fit_equivalence


@dataclass
class PilotTruth:
    """A plug-in truth: mean error per (source, n_real, n_synth) cell and the noise model around it."""

    err: xr.DataArray  # (source, n_real, n_synth) mean error over the pilot's seeds
    seed_sd: float
    cell_sd: float
    n_test: int
    n_classes: int
    n_pilot_seeds: int
    binomial: bool = False  # draw binomial test noise (priors); a pilot's cell effect already holds it
    source_sd: float = 0.0

    def describe(self) -> str:
        where = f"truth fitted to {self.n_pilot_seeds} pilot seeds" if self.n_pilot_seeds else "stated prior"
        return (
            f"{where}: seed effect sd {self.seed_sd:.3f}, source effect sd {self.source_sd:.3f}, "
            f"cell effect sd {self.cell_sd:.3f} (log error"
            + (f"; binomial noise of {self.n_test} test images)" if self.binomial else ", test noise included)")
        )


def _fitted(cube: xr.Dataset, source: str, reference: str) -> tuple[np.ndarray, np.ndarray]:

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_equivalence(cube, source, reference=reference)
    ref, src = res.fitted_errors(cube["n_real"].values, cube["n_synth"].values)
    return np.clip(ref, 1e-4, 1 - 1e-4), np.clip(src, 1e-4, 1 - 1e-4)


def pilot_truth(cube: xr.Dataset, source: str, reference: str = REFERENCE, *, smooth: bool = True) -> PilotTruth:
    """The truth a plan simulates, from a pilot cube (done cells only): the fitted laws' error surface
    (``smooth=False``: the raw cell means) and the noise variances of the pilot's residuals."""

    acc = cube["accuracy"].where(cube["status"] == STATUS_DONE).sel(source=[reference, source])
    if "protocol" in acc.dims:
        raise ValueError("pilot: pick one protocol setting first (analysis.cube.protocol_slice)")
    err = (1 - acc).clip(1e-4, 1 - 1e-4)
    n_test = int(cube.attrs["n_test"])
    log_err = np.log(err)
    resid = log_err - log_err.mean("seed")
    seeds = int(acc.sizes["seed"])
    if seeds < 3:
        raise ValueError(f"pilot: needs at least 3 seeds to estimate the seed noise, has {seeds}")
    n_src, n_syn = resid.sizes["source"], resid.sizes["n_synth"]
    per_seed = resid.mean(["source", "n_synth"])  # (n_real, seed): the shared seed effect
    per_source = (resid - per_seed).mean("n_synth")  # (source, n_real, seed): a source's curve moving as a whole
    # (n - 1) / n: residuals around a mean over the seeds are that much smaller than the effects themselves
    inflate = seeds / (seeds - 1)
    cell_var = float(np.nanmean((resid - per_seed - per_source).values ** 2)) * inflate * n_syn / max(n_syn - 1, 1)
    # each mean of residuals holds its own effect plus the finer effects it averages
    source_var = max(float(np.nanmean(per_source.values**2)) * inflate - cell_var / n_syn, 0.0)
    seed_var = float(np.nanmean(per_seed.values**2)) * inflate - source_var / n_src - cell_var / (n_src * n_syn)
    mean_err = err.mean("seed")
    if smooth:  # the fitted laws' surface: cell means of a few seeds are rough, and a rough truth fits worse
        ref, src = _fitted(cube, source, reference)
        mean_err = mean_err.copy(data=np.stack([ref, src]))
    return PilotTruth(
        err=mean_err,
        seed_sd=float(np.sqrt(max(seed_var, 0.0))),
        cell_sd=float(np.sqrt(cell_var)),
        n_test=n_test,
        n_classes=len(classes_of(cube)),
        n_pilot_seeds=seeds,
        source_sd=float(np.sqrt(source_var)),
    )


PRIOR_DEFAULTS = {"rate": 4.0, "seed_sd": 0.1, "cell_sd": 0.03, "E": 0.03, "B": 2.0, "beta": 0.5}


def prior_truth(n_real, n_synth, source: str, prior: dict, *, n_test: int = 1000, n_classes: int = 10) -> PilotTruth:
    """A stated truth when there is no pilot: a real error curve ``E + B n^-beta`` and a constant exchange rate."""
    unknown = sorted(set(prior) - set(PRIOR_DEFAULTS))
    if unknown:
        raise ValueError(f"--prior: unknown key {unknown[0]!r} (known: {', '.join(PRIOR_DEFAULTS)})")
    p = {**PRIOR_DEFAULTS, **prior}
    r, s = np.meshgrid(np.asarray(n_real, float), np.asarray(n_synth, float), indexing="ij")
    # the reference adds n_synth more real images; the source's n_synth images are worth n_synth / rate real ones
    curves = [p["E"] + p["B"] * (r + s) ** -p["beta"], p["E"] + p["B"] * (r + s / p["rate"]) ** -p["beta"]]
    err = xr.DataArray(
        np.clip(np.stack(curves), 1e-4, 1 - 1e-4),
        dims=("source", "n_real", "n_synth"),
        coords={"source": [REFERENCE, source], "n_real": list(n_real), "n_synth": list(n_synth)},
    )
    return PilotTruth(
        err=err,
        seed_sd=p["seed_sd"],
        cell_sd=p["cell_sd"],
        n_test=n_test,
        n_classes=n_classes,
        n_pilot_seeds=0,
        binomial=True,
    )


def draw_cube(truth: PilotTruth, seeds: int, rng: np.random.Generator, dataset: str = "planned") -> xr.Dataset:
    """One simulated sweep of ``seeds`` seeds on the pilot's grid, with the pilot's noise model."""

    sources = [str(s) for s in truth.err["source"].values]
    n_real, n_synth = truth.err["n_real"].values, truth.err["n_synth"].values
    cube = empty_cube(
        sources,
        n_real,
        n_synth,
        list(range(seeds)),
        dataset=dataset,
        n_test=truth.n_test,
        classes=[str(c) for c in range(truth.n_classes)],
        provenance={"simulated": "plan"},
    )
    base = truth.err.transpose("source", "n_real", "n_synth").values[..., None]  # (source, r, s, 1)
    seed_fx = rng.normal(0, truth.seed_sd, (1, len(n_real), 1, seeds))
    cell_fx = rng.normal(0, truth.cell_sd, base.shape[:3] + (seeds,))
    cell_fx += rng.normal(0, truth.source_sd, (base.shape[0], base.shape[1], 1, seeds))
    zero = n_synth == 0
    cell_fx[:, :, zero, :] = cell_fx[:1, :, zero, :]  # n_synth = 0 is one trial shared by every source
    err = np.clip(base * np.exp(seed_fx + cell_fx), 1e-6, 1 - 1e-6)
    acc = rng.binomial(truth.n_test, 1 - err) / truth.n_test if truth.binomial else 1 - err
    acc[:, :, zero, :] = acc[:1, :, zero, :]
    fill_planted(cube, acc)
    return cube


def interval_at(
    cube: xr.Dataset, source: str, n_real: int, n_synth: int, *, random_state: int = 0, **fit_kwargs
) -> dict:
    """(estimate, lower, upper, bound ratio, verdict) of the exchange rate at one cell of a fitted cube."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_equivalence(cube, source, random_state=random_state, **fit_kwargs)
        q = res.exchange_rate(n_real, n_synth)
    est, lo, hi = (float(q[k].values) for k in ("estimate", "lower", "upper"))
    ratio = hi / lo if lo > 0 and np.isfinite(hi) else np.inf
    return {"estimate": est, "lower": lo, "upper": hi, "ratio": ratio, "verdict": str(q["verdict"].values)}


def plan_seeds(
    truth: PilotTruth,
    source: str,
    n_real: int,
    n_synth: int,
    seeds=(3, 5, 8, 12),
    *,
    sims: int = 30,
    random_state: int = 0,
    progress=None,
    **fit_kwargs,
) -> pd.DataFrame:
    """Per candidate seed count: the bound ratio of the target interval (median, 10% and 90% quantiles over
    ``sims`` simulated sweeps) and the share of each verdict."""
    rows = []
    for s in seeds:
        rng = np.random.default_rng([random_state, int(s)])
        out = []
        for i in range(sims):
            out.append(
                interval_at(draw_cube(truth, int(s), rng), source, n_real, n_synth, random_state=i, **fit_kwargs)
            )
            if progress is not None:
                progress(1)
        ratios = np.array([o["ratio"] for o in out])
        verdict = pd.Series([o["verdict"] for o in out]).value_counts(normalize=True)
        rows.append(
            {
                "seeds": int(s),
                "median_ratio": float(np.median(ratios)),
                "ratio_p10": float(np.quantile(ratios, 0.1)),
                "ratio_p90": float(np.quantile(ratios, 0.9)),
                **{f"p_{v.replace(' ', '_')}": float(verdict.get(v, 0.0)) for v in VERDICTS},
            }
        )
    return pd.DataFrame(rows).set_index("seeds")


def smallest_meeting(table: pd.DataFrame, width: float) -> int | None:
    """The fewest seeds whose median bound ratio is at most ``width`` (None if no candidate reaches it)."""
    ok = table.index[table["median_ratio"] <= width]
    return int(ok.min()) if len(ok) else None


def sequential_stop(
    cube: xr.Dataset,
    source: str,
    n_real: int,
    n_synth: int,
    width: float,
    *,
    start: int = 3,
    step: int = 1,
    confirm: int = 1,
    **fit_kwargs,
) -> dict:
    """Run an adaptive loop over a cube's seeds in order: fit the first ``start`` seeds, add ``step`` seeds per
    round, stop once ``confirm`` consecutive rounds have an interval at the target with bound ratio <= ``width``
    (or when the cube's seeds run out). Returns the rounds, the seeds used and the final interval. The stopping
    rule looks at the data — an interval that came out narrow by luck (its variance underestimated) is the one
    that stops the loop — so its final coverage must be measured, not assumed (bench/adaptive_stopping.py);
    ``confirm=2`` asks a lucky narrow interval to survive one more seed."""
    seeds = cube["seed"].values
    rounds, s, streak = [], start, 0
    while True:
        s = min(s, len(seeds))
        out = interval_at(cube.sel(seed=seeds[:s]), source, n_real, n_synth, **fit_kwargs)
        rounds.append({"seeds": int(s), **out})
        streak = streak + 1 if out["ratio"] <= width else 0
        if streak >= confirm or s >= len(seeds):
            return {"seeds": int(s), "rounds": rounds, "reached": bool(streak >= confirm), **out}
        s += step


def cells_per_seed(n_real_values: int, n_synth_values: int, n_sources: int) -> int:
    """Trials one seed costs on a grid of ``n_real_values`` x ``n_synth_values`` (0 among them): the base cells
    once, the others once per source (the reference included)."""
    return n_real_values * (1 + (n_synth_values - 1) * n_sources)


def next_batch(
    cube: xr.Dataset,
    target: tuple[str, int, int],
    width: float,
    *,
    add=(1, 2, 4, 8),
    sims: int = 20,
    reference=REFERENCE,
) -> dict:
    """The next batch for one target rate (``source, n_real, n_synth``): ``k`` more seeds of the reference and the
    target source for each ``k`` in ``add``, ranked by the expected shrinkage of the interval's log-width per
    compute second, simulated with the cube as pilot (:func:`plan_seeds`). Returns ``now`` (the interval today),
    ``candidates`` (one row per ``k``), ``pick`` (the fewest seeds whose median sweep reaches ``width``, else the
    most shrinkage per second; None when the interval is already narrow enough) and ``why``."""
    source, n_real, n_synth = target
    now = interval_at(cube, source, n_real, n_synth, reference=reference)
    seeds = int(cube.sizes["seed"])
    base = {"now": now, "width": width, "reference": reference, "candidates": [], "pick": None, "why": "done"}
    if now["ratio"] <= width:
        return {**base, "why": "the interval is already narrow enough"}
    trial_s = float(cube["train_seconds"].sel(source=[reference, source]).mean())
    per_seed = cells_per_seed(cube.sizes["n_real"], cube.sizes["n_synth"], 2)
    # simulated sweeps name their reference REFERENCE, whatever the pilot cube called it
    table = plan_seeds(
        pilot_truth(cube, source, reference), source, n_real, n_synth, [seeds + k for k in add], sims=sims
    )
    rows = []
    for k in add:
        pred = table.loc[seeds + k]
        cost = k * per_seed * trial_s
        gain = float(np.log(now["ratio"]) - np.log(pred["median_ratio"])) if np.isfinite(now["ratio"]) else float("inf")
        rows.append(
            {
                "add_seeds": k,
                "trials": k * per_seed,
                "compute_s": round(cost, 1),
                "median_ratio": round(float(pred["median_ratio"]), 4),
                "p_estimated": float(pred["p_estimated"]),
                "shrink_per_hour": round(gain / max(cost, 1e-9) * 3600, 4),
                "reaches": bool(pred["median_ratio"] <= width),
            }
        )
    reach = [r for r in rows if r["reaches"]]
    pick = min(reach, key=lambda r: r["add_seeds"]) if reach else max(rows, key=lambda r: r["shrink_per_hour"])
    why = (
        "the fewest seeds whose median sweep reaches the width"
        if reach
        else "no candidate reaches the width: the most shrinkage per compute second"
    )
    return {**base, "candidates": rows, "pick": pick, "why": why}
