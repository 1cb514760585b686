"""The fit pipeline behind ``scaling.fit_equivalence``: cells as arrays, the point estimate and the leave-one-seed-out
fits in one batch, the test-image jackknife and its null, the cluster bootstrap on first use, then one
:class:`~analysis.result.EquivalenceResult` per source."""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
import xarray as xr
from scipy import stats

from analysis import options
from analysis.bootstrap import cell_moments, jackknife_counts, seed_counts
from analysis.equivalence import LazyReplicates, Replicates, SourceArrays, neq_log_weights, run_pipeline
from analysis.laws import LAWS
from analysis.options import LACK_OF_FIT_P, MAX_SEEDS, FitOptions, FitWarning, IdentifiabilityError, quiet
from analysis.result import EquivalenceResult
from analysis.variance import fit_variance_model


def _cells(da: xr.DataArray, synth_only: bool, items: xr.DataArray | None = None):
    """Flatten a (n_real, n_synth, seed) DataArray into (S, C) with cell coordinates (and the test items
    as (S, C, T) booleans when given)."""
    st = da.stack(cell=("n_real", "n_synth")).transpose("seed", "cell")
    n_real = st["n_real"].values.astype(float)
    n_synth = st["n_synth"].values.astype(float)
    keep = n_synth > 0 if synth_only else np.ones_like(n_synth, bool)
    arrays = SourceArrays(
        str(da["source"].item()) if "source" in da.coords else "",
        st.values[:, keep].astype(float),
        n_real[keep],
        n_synth[keep],
    )
    if items is None:
        return arrays, None
    it = items.stack(cell=("n_real", "n_synth")).transpose("seed", "cell", "test_item").values[:, keep]
    return arrays, it


def _cell_var(acc: np.ndarray, n_test: int) -> np.ndarray:
    """Per-cell variance of the mean over seeds (the pre-pooling estimate, kept for comparison)."""
    return cell_moments(acc, np.ones((1, acc.shape[0])), n_test)[1][0]


def _weighted_accuracy(items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of every (replicate, seed, cell) under test-image weights (R, T); ``items`` (S, C, T)."""
    return np.einsum("sct,rt->rsc", items, weights, optimize=True) / weights.shape[1]


def _test_boot_weights(n_items: int, n_boot: int, rng) -> np.ndarray:
    """Multinomial bootstrap weights of the test images (row 0 all ones: the point estimate)."""
    return np.vstack([np.ones((1, n_items)), rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)])


def _test_jack_weights(n_items: int, rng) -> np.ndarray:
    """Leave-one-group-out weights of the test images: ``options.TEST_REPEATS`` random groupings of ``options.TEST_GROUPS``
    rows each."""
    jack = []
    for _ in range(options.TEST_REPEATS):
        groups = rng.permutation(n_items) % options.TEST_GROUPS
        jack += [np.where(groups == g, 0.0, n_items / np.sum(groups != g)) for g in range(options.TEST_GROUPS)]
    return np.stack(jack)


@quiet
def fit_arrays(
    acc: xr.DataArray,
    sources: list[str],
    opts: FitOptions,
    *,
    n_test: int,
    n_classes: int,
    excluded: dict[str, dict[str, int]],
    dataset: str = "",
    items: xr.DataArray | None = None,
) -> dict[str, "EquivalenceResult"]:
    """Fit every source in ``sources`` against ``opts.reference`` sharing one set of resamples.

    ``acc`` has dims (source, n_real, n_synth, seed) with NaN wherever a cell is excluded; ``items``
    (the same dims plus ``test_item``, booleans) lets the test images be resampled jointly with seeds.
    """
    opts.check()  # the one check of a fit's options (scaling.fit_equivalence goes through here)
    # two independent streams: the test-image groupings of the default interval, and the bootstrap drawn on
    # first use — so asking for a bootstrap interval never changes the default one
    test_stream, boot_stream = np.random.SeedSequence(opts.random_state).spawn(2)
    rng = np.random.default_rng(test_stream)
    n_seeds = acc.sizes["seed"]
    use_items = items is not None and opts.test_resampling
    ref, ref_items = _cells(
        acc.sel(source=opts.reference), False, items.sel(source=opts.reference) if use_items else None
    )
    # every synthetic source in ``acc`` — not only those asked for — shapes what the sources share: the pooled
    # variance model, whether beta is fitted, the test-image null's shuffles. A source's numbers therefore do not
    # depend on which other sources a call includes (scaling.fit_equivalence passes every source of the cube).
    everyone = {
        str(s): _cells(acc.sel(source=s), True, items.sel(source=s) if use_items else None)
        for s in acc["source"].values
        if s != opts.reference
    }
    pairs = [everyone[s] for s in sources]
    srcs = [p[0] for p in pairs]
    all_srcs = [p[0] for p in everyone.values()]
    warnings_common: list[str] = []
    n_total_ref = ref.n_real + ref.n_synth
    sizes_seen = np.unique(n_total_ref[np.isfinite(ref.acc).any(0)])
    if len(sizes_seen) < 3:
        raise IdentifiabilityError(
            f"reference: the '{opts.reference}' curve has {len(sizes_seen)} distinct sizes with data; "
            "a 3-parameter accuracy law needs at least 3"
        )
    if n_seeds < 2:
        raise IdentifiabilityError(f"seed: intervals over seeds need at least 2 seeds, the cube has {n_seeds}")
    if n_seeds > MAX_SEEDS:
        raise ValueError(
            f"seed: at most {MAX_SEEDS} seeds (the jackknife refits every law once per seed and holds "
            f"each fit; past ~50 seeds intervals barely narrow), the cube has {n_seeds}"
        )
    e0 = 1.0 - 1.0 / max(n_classes, 2)
    var_model = fit_variance_model({a.name: a.acc for a in [ref] + all_srcs}, n_test)

    def mean_var(a: SourceArrays) -> np.ndarray:
        if opts.variance == "cell":
            return _cell_var(a.acc, n_test)
        valid = np.isfinite(a.acc)
        n = valid.sum(0)
        with np.errstate(invalid="ignore"):
            mean = np.where(n > 0, np.nansum(a.acc, 0) / np.maximum(n, 1), np.nan)
        return var_model.of_mean(a.name, mean, n)

    ref_var = mean_var(ref)
    src_var = {a.name: mean_var(a) for a in srcs}
    warnings_common += _reference_warnings(n_total_ref, 1 - np.nanmean(ref.acc, 0), ref_var)
    fit_beta = len(np.unique(np.concatenate([s.n_real for s in all_srcs]))) >= 2 if all_srcs else True
    if not fit_beta:
        warnings_common.append(
            FitWarning("only one n_real: the effective law's beta (n_real exponent) is fixed at 0", "beta_fixed")
        )
    all_items = {ref.name: ref_items, **{name: p[1] for name, p in everyone.items()}} if use_items else {}
    fit_items = {k: all_items[k] for k in [ref.name, *sources]} if use_items else {}  # what the refits read

    def pipeline(counts, test_w=None, items=None, item_acc=None):
        if test_w is not None:
            item_acc = {name: _weighted_accuracy(it, test_w) for name, it in items.items()}
        return run_pipeline(
            counts,
            ref,
            srcs,
            ref_var=ref_var,
            src_var=src_var,
            curve_law=opts.curve_law,
            e0=e0,
            fit_beta=fit_beta,
            law=opts.law,
            item_acc=item_acc,
        )

    if use_items:
        all_items = {k: v.astype(np.float32) for k, v in all_items.items()}
        fit_items = {k: all_items[k] for k in fit_items}

    def bootstrap() -> Replicates:
        boot_rng = np.random.default_rng(boot_stream)
        counts = seed_counts(n_seeds, int(opts.n_boot), boot_rng)
        test_boot = _test_boot_weights(ref_items.shape[-1], int(opts.n_boot), boot_rng) if use_items else None
        return pipeline(counts, test_boot, fit_items)

    # the point estimate and the leave-one-seed-out fits (the default interval, BCa's acceleration, the
    # verdicts) in one batch
    both = pipeline(np.vstack([np.ones((1, n_seeds)), jackknife_counts(n_seeds)]))
    point, jack = both.take([0]), both.take(np.arange(1, n_seeds + 1))
    reps = LazyReplicates(bootstrap)
    tjack = tnull = None
    if use_items:
        test_jack = _test_jack_weights(ref_items.shape[-1], rng)
        tjack = pipeline(np.ones((len(test_jack), n_seeds)), test_jack, fit_items)
        # the same deletions with every classifier's items shuffled on its own: what the seed jackknife covers
        # (a fresh shuffle per grouping, so the null's own noise averages out too)
        # (every source's shuffle is drawn, in the cube's order, so the stream a source gets is the same whichever
        # sources the call fits; only those fitted are weighted)
        null_acc = {k: [] for k in fit_items}
        for rows in np.split(test_jack, options.TEST_REPEATS):
            for k, v in all_items.items():
                shuffled = rng.permuted(v, axis=-1)
                if k in null_acc:
                    null_acc[k].append(_weighted_accuracy(shuffled, rows))
        tnull = pipeline(
            np.ones((len(test_jack), n_seeds)), item_acc={k: np.concatenate(v) for k, v in null_acc.items()}
        )
    if point.curve.bound_names:
        warnings_common.append(
            FitWarning(f"reference curve sits on a bound ({', '.join(point.curve.bound_names)})", "reference_on_bound")
        )
    warnings_common += _curve_lack_of_fit(point, n_total_ref)
    results = {}
    for src in srcs:
        n_eq0 = point.n_eq[src.name][:1]
        w_log0 = neq_log_weights(n_eq0, n_eq0 + src.n_real[None, :], src_var[src.name][None, :], point.curve.take(0))
        y0 = np.log(np.where(w_log0 > 0, n_eq0, 1.0))
        results[src.name] = EquivalenceResult(
            source=src.name,
            src=src,
            ref=ref,
            opts=opts,
            point=point,
            boot=reps,
            jack=jack,
            test_jack=tjack,
            test_null=tnull,
            n_seeds=n_seeds,
            n_test=n_test,
            dataset=dataset,
            fit_beta=fit_beta,
            warnings=list(warnings_common),
            excluded=excluded.get(src.name, {}),
            excluded_reference=excluded.get(opts.reference, {}),
            variance_model=var_model,
            sm_fit=_statsmodels_fit(src, y0[0], w_log0[0], fit_beta, opts.robust),
        )
    return results


def _curve_lack_of_fit(reps: Replicates, n_total) -> list[FitWarning]:
    """Pearson chi-square of the reference law at the point estimate: a law that cannot describe the real
    curve biases every real equivalent, and more seeds only make the interval narrower around the bias."""
    curve = reps.curve.take(0)
    w, e = reps.ref_w[0], reps.ref_err[0]
    ok = (w > 0) & np.isfinite(e)
    k = LAWS[curve.chosen if curve.law == "auto" else curve.law].n_params
    df = int(ok.sum()) - k
    if df < 2:
        return []
    chi2 = float(np.sum(w[ok] * (e[ok] - curve.predict(n_total[ok])[0]) ** 2))
    p = float(stats.chi2.sf(chi2, df))
    if p < LACK_OF_FIT_P:
        return [
            FitWarning(
                f"the reference law misfits the real curve (chi2 = {chi2:.0f} on {df} df, p = {p:.1g}): real "
                "equivalents may be biased and intervals may undercover",
                "reference_lack_of_fit",
            )
        ]
    return []


def _reference_warnings(n_total, err, var) -> list[FitWarning]:
    """Flat or non-monotone reference curves make n_eq ill-defined; say so."""
    out = []
    sizes = np.unique(n_total)
    means, ses = [], []
    for s in sizes:
        sel = (n_total == s) & np.isfinite(err) & np.isfinite(var) & (var > 0)
        if not sel.any():
            continue
        wv = 1 / var[sel]
        means.append(np.sum(wv * err[sel]) / wv.sum())
        ses.append(np.sqrt(1 / wv.sum()))
    means, ses = np.array(means), np.array(ses)
    if len(means) >= 2 and means[0] - means[-1] < 2 * np.hypot(ses[0], ses[-1]):
        out.append(
            FitWarning(
                "reference curve is flat (error at the largest size is not 2 SE below the smallest): "
                "real equivalents are not identifiable",
                "flat_reference",
                unidentifies=True,
            )
        )
    rises = np.where(np.diff(means) > 2 * np.hypot(ses[1:], ses[:-1]))[0]
    if len(rises):
        out.append(
            FitWarning(
                f"reference curve is non-monotone: error rises between sizes "
                f"{', '.join(f'{sizes[i]:.0f}->{sizes[i + 1]:.0f}' for i in rises)}",
                "non_monotone_reference",
                unidentifies=True,
            )
        )
    return out


def _statsmodels_fit(src: SourceArrays, y: np.ndarray, w: np.ndarray, fit_beta: bool, robust: bool):
    """The effective law's point fit with statsmodels, for its standard errors (WLS or Huber RLM)."""
    ok = w > 0
    if ok.sum() < (3 if fit_beta else 2) + 1:
        return None
    cols = [np.ones(ok.sum()), np.log(src.n_synth[ok])] + ([np.log(src.n_real[ok])] if fit_beta else [])
    X = np.column_stack(cols)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return None  # e.g. every usable cell at one n_real: beta is not identified, and has no standard error
    names = ["log_k", "alpha"] + (["beta"] if fit_beta else [])
    if robust:
        # RLM takes no weights: scale rows by sqrt(w) so the Huber norm acts on standardised residuals
        sw = np.sqrt(w[ok])
        res = sm.RLM(y[ok] * sw, X * sw[:, None], M=sm.robust.norms.HuberT()).fit()
    else:
        res = sm.WLS(y[ok], X, weights=w[ok]).fit()
    return {"params": dict(zip(names, res.params)), "bse": dict(zip(names, res.bse)), "model": type(res.model).__name__}
