"""``scaling.fit_equivalence``: from a cube to an exchange rate with an honest interval."""

from __future__ import annotations

import json
import warnings
from typing import Sequence

import numpy as np
import xarray as xr

from analysis.options import N_BOOT, FitOptions
from analysis.equivalence import equivalence_weights_text
from analysis.laws import reference_mixture_text
from analysis.pipeline import fit_arrays
from analysis.results import EquivalenceResults
from analysis.cube import (
    REFERENCE,
    PROTOCOL_DIM,
    STATUS_DONE,
    STATUS_FAILED,
    CubeError,
    classes_of,
    correct_items,
    pool_audit,
    protocol_slice,
    validate_cube,
)


# variables of the cube contract that are not scores (a loss is lower-is-better and unbounded)
NOT_METRICS = ("loss", "train_seconds", "source_seconds", "status")


def fit_equivalence(
    cube: xr.Dataset,
    source: str | Sequence[str] | None = None,
    reference: str = REFERENCE,
    metric: str = "accuracy",
    n_boot: int = N_BOOT,
    ci: float = 0.95,
    law: str = "auto",
    *,
    curve_law: str = "auto",
    ci_method: str = "jackknife",
    k: float = 1000.0,
    robust: bool = False,
    variance: str = "pooled",
    test_resampling: bool = True,
    random_state: int | None = 0,
    protocol: str | None = None,
) -> EquivalenceResults:
    """Estimate how many synthetic images from ``source`` one real image is worth.

    Parameters
    ----------
    cube: a validated cube (see ``scaling.open_cube``).
    source: one source name, several, or ``None`` for every non-reference source. The result is always an
        :class:`~analysis.results.EquivalenceResults`: ``source`` is a dimension of its queries, ``res[name]``
        is one source's fit, ``res.compare(n_real, n_synth)`` contrasts sources (all share the same seed
        resamples), and with one source its fit's attributes (``params``, ``cells``) are reachable directly.
    reference: the source whose accuracy curve defines "real images" (``real``).
    metric: a 0-1 "higher is better" variable of the cube; the fit works on ``1 - metric``.
    n_boot, ci, ci_method: cluster-bootstrap replicates over seeds and the interval built from them:
        ``jackknife`` (default: leave-one-seed-out t interval, log scale for positive quantities; measured
        coverage per scenario in bench/RESULTS.md), ``expanded`` (percentile interval widened for few seeds,
        Hesterberg 2015), ``percentile`` or ``bca``. Every method is computed from the same stored
        replicates, so ``result.exchange_rate(..., ci_method=...)`` switches without refitting.
    law: equivalence law for queries: ``auto`` (default: <EQUIVALENCE_WEIGHTS>), ``effective``
        (n_eq = k n_synth^a n_real^b), ``wang`` or ``saturating`` (n_eq = n_real R* (1 - exp(-n_synth /
        (rho0 n_real R*)))).
    curve_law: reference accuracy law: ``auto`` (default: <REFERENCE_MIXTURE>), ``power``, ``m3`` (power law
        with an offset) or ``m4``.
    k: scale of Wang et al.'s law (only ln(c1)/k is identifiable).
    robust: statsmodels RLM (Huber) instead of WLS for the reported standard errors.
    variance: ``pooled`` (default: a seed-variance model smooth in accuracy, fitted over all cells) or
        ``cell`` (each cell's own variance over its seeds; unstable with 3 seeds).
    test_resampling: when the cube records which test images each cell got right (``test_correct``),
        resample them jointly with the seeds, so intervals are not conditional on one test set.

    protocol: for a cube that sweeps training protocols (a ``protocol`` dimension), the setting to fit;
        :func:`fit_protocols` fits every setting.

    Cells whose status is not ``done`` or whose metric is NaN are excluded and counted in ``summary()``.
    """
    validate_cube(cube, require_source=reference)
    if PROTOCOL_DIM in cube.dims:
        if protocol is None:
            raise CubeError(
                f"protocol: the cube sweeps training protocols {cube[PROTOCOL_DIM].values.tolist()}; "
                "pass protocol=<one of them> (--protocol on the command line), or use scaling.fit_protocols for all"
            )
        cube = protocol_slice(cube, protocol)
    elif protocol is not None:
        raise CubeError(
            f"protocol: the cube has no '{PROTOCOL_DIM}' dimension (one protocol: "
            f"{cube.attrs.get('protocol', 'not recorded')})"
        )
    if metric not in cube.data_vars:
        raise CubeError(f"metric: the cube has no variable {metric!r} (have {sorted(map(str, cube.data_vars))})")
    values = cube[metric].values
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else None
    if metric in NOT_METRICS or finite is None or bool(((finite < 0) | (finite > 1)).any()):
        raise CubeError(
            f"metric: {metric!r} is not a 0-1 score where higher is better (accuracy is); the fit works on 1 - metric"
        )
    names = [str(s) for s in cube["source"].values]
    wanted = (
        [source]
        if isinstance(source, str)
        else [s for s in names if s != reference]
        if source is None
        else list(source)
    )
    for s in wanted:
        if s not in names:
            raise CubeError(f"source: {s!r} is not in the cube (have {names})")
        if s == reference:
            raise CubeError(f"source: {s!r} is the reference; pick a synthetic source")
    if not wanted:
        raise CubeError(f"source: the cube has no source besides the reference {reference!r}")
    values = cube[metric]
    done = cube["status"] == STATUS_DONE
    wanted = _with_synthetic_cells(values.where(done), wanted, explicit=source is not None)
    finite = np.isfinite(values)
    usable = values.where(done & finite)
    excluded = {}
    planned = _in_design(cube)
    for s in [reference] + wanted:
        st = cube["status"].sel(source=s)
        counts = {
            "failed": int((st == STATUS_FAILED).sum()),
            "pending": int(((st == 0) & planned).sum()),
            "NaN metric": int(((st == STATUS_DONE) & ~finite.sel(source=s)).sum()),
        }
        excluded[s] = {k_: v for k_, v in counts.items() if v}
    opts = FitOptions(
        reference=reference,
        n_boot=n_boot,
        ci=ci,
        ci_method=ci_method,
        law=law,
        curve_law=curve_law,
        k=k,
        robust=robust,
        variance=variance,
        test_resampling=test_resampling,
        random_state=random_state,
    )
    items = correct_items(cube) if test_resampling and metric == "accuracy" else None
    # every source with synthetic cells enters the fit's shared parts (variance model, beta, test-image null), the
    # ones asked for are fitted: a source's numbers are the same whichever others a call names
    shared = _usable_sources(values.where(done), [s for s in names if s != reference])
    sel = {"source": [reference] + shared + [s for s in wanted if s not in shared]}
    results = fit_arrays(
        usable.sel(sel),
        wanted,
        opts,
        n_test=int(cube.attrs["n_test"]),
        n_classes=len(classes_of(cube)),
        excluded=excluded,
        dataset=str(cube.attrs.get("dataset", "")),
        items=None if items is None else items.sel(sel),
    )
    for name in wanted:
        results[name].memorisation = pool_audit(cube, name)
    return EquivalenceResults({name: results[name] for name in wanted}, scalar=isinstance(source, str))


def _usable_sources(values: xr.DataArray, sources: list[str]) -> list[str]:
    """Those of ``sources`` with at least one usable synthetic cell (n_synth > 0, done, finite)."""
    synth = values.sel(n_synth=values["n_synth"] > 0)
    return [s for s in sources if bool(np.isfinite(synth.sel(source=s)).any())]


def _with_synthetic_cells(values: xr.DataArray, wanted: list[str], *, explicit: bool) -> list[str]:
    """The sources that have at least one usable synthetic cell (n_synth > 0, done, finite). A source whose
    synthetic cells all failed has nothing to fit — a law fitted to no cell would still print numbers: named
    sources are refused, and with ``source=None`` such a source is left out with a warning."""
    usable = _usable_sources(values, wanted)
    empty = [s for s in wanted if s not in usable]
    if empty and (explicit or len(empty) == len(wanted)):
        raise CubeError(
            f"source: {empty} has no usable synthetic cell (every n_synth > 0 cell failed, is pending "
            "or NaN); nothing to fit against the reference"
        )
    if empty:
        warnings.warn(
            f"source: {empty} left out of the fit: no usable synthetic cell (failed, pending or NaN)",
            UserWarning,
            stacklevel=3,
        )
    return [s for s in wanted if s not in empty]


def _in_design(cube: xr.Dataset) -> xr.DataArray:
    """True for the (n_real, n_synth) cells a sweep planned: all, or those of a replace design (attrs["design"]);
    cells outside it are not 'pending', they are not part of the experiment."""
    if "design" not in cube.attrs:
        return xr.ones_like(cube["n_real"] * cube["n_synth"], dtype=bool)
    cells = {tuple(c) for c in json.loads(cube.attrs["design"])}
    mask = np.array([[(int(r), int(s_)) in cells for s_ in cube["n_synth"].values] for r in cube["n_real"].values])
    return xr.DataArray(mask, coords={"n_real": cube["n_real"], "n_synth": cube["n_synth"]}, dims=("n_real", "n_synth"))


# the docstring a notebook shows states the default rules from the objects that run them
fit_equivalence.__doc__ = fit_equivalence.__doc__.replace("<EQUIVALENCE_WEIGHTS>", equivalence_weights_text()).replace(
    "<REFERENCE_MIXTURE>", reference_mixture_text()
)


def fit_protocols(cube: xr.Dataset, source=None, **kwargs) -> dict[str, EquivalenceResults]:
    """``fit_equivalence`` for every training-protocol setting of a protocol sweep, in the cube's order."""
    if PROTOCOL_DIM not in cube.dims:
        raise CubeError(f"protocol: the cube has no '{PROTOCOL_DIM}' dimension; use fit_equivalence")
    return {str(p): fit_equivalence(cube, source, protocol=str(p), **kwargs) for p in cube[PROTOCOL_DIM].values}


def protocol_table(fits: dict[str, EquivalenceResults], n_synth: float | None = None):
    """Exchange rate per protocol setting, source and base size (at ``n_synth``, default the largest) with its
    interval and verdict; ``best`` marks, per (budget, source, n_real), the synthetic weight with the lowest
    estimated rate among the settings whose verdict is 'estimated' (the most value per synthetic image)."""
    import pandas as pd

    rows = []
    for label, res in fits.items():
        budget, _, weight = label.partition("-w")
        for r in res.answer_rows(n_synth):
            rows.append(
                {
                    "protocol": label,
                    "budget": budget,
                    "synth_weight": float(weight) if weight else None,
                    "source": r["source"],
                    "n_real": r["n_real"],
                    "n_synth": r["n_synth"],
                    "rho": r["estimate"],
                    "lower": r["lower"],
                    "upper": r["upper"],
                    "verdict": r["verdict"],
                }
            )
    t = pd.DataFrame(rows)
    t["best"] = False
    for _, g in t[t["verdict"] == "estimated"].groupby(["budget", "source", "n_real"]):
        t.loc[g["rho"].idxmin(), "best"] = True
    return t
