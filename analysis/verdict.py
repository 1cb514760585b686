"""Verdicts: what an exchange-rate interval lets a reader conclude.

A point estimate with a four-decade interval is not an answer. Every reported exchange rate gets one of

- ``hurts``: the accuracy gain from the added images is below 0 with the interval's confidence;
- ``no measurable gain``: the gain's interval includes 0 — the images may be worth nothing;
- ``estimated``: the rate's interval is finite and its bounds differ by at most ``ESTIMATED_MAX_RATIO``;
- ``not identified``: the images help, but the interval is too wide (or unbounded) to state a rate.

The gain is tested first, outside the equivalence laws (they cannot express "worth nothing" or "harmful"); the
printed rate interval then obeys the verdict (:func:`rate_under_verdict`), so a verdict and its interval are one
inference and never contradict each other.

Why a factor of 10: an interval whose bounds differ by 10 fixes the order of magnitude of the rate
(the estimate is known within about x/÷ 3.2 on the log scale, which is how rates are compared between
sources and papers); past that the interval spans more than one decade and a reader cannot tell a rate
of 3 from one of 30.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ESTIMATED_MAX_RATIO = 10.0
VERDICTS = ("estimated", "not identified", "no measurable gain", "hurts")
# Interval methods whose bounds differ by more than this factor at one query make the interval unreliable at
# that seed count: the report says so and names the verdict every method supports. A factor of 3 is half a decade
# on the log scale, a third of the width that still counts as "estimated" — beyond it the choice of method, not
# the data, decides whether a rate reads as estimated.
METHODS_DISAGREE_FACTOR = 3.0


def verdicts(gain_lower, gain_upper, rate_lower, rate_upper) -> np.ndarray:
    """Vectorised verdict per query from the gain's and the exchange rate's intervals."""
    gain_lower, gain_upper = np.asarray(gain_lower, float), np.asarray(gain_upper, float)
    rate_lower, rate_upper = np.asarray(rate_lower, float), np.asarray(rate_upper, float)
    hurts = gain_upper < 0
    no_gain = ~hurts & ~(gain_lower > 0)  # NaN gain bounds cannot show a gain
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = rate_upper / rate_lower
    # a zero-width interval is a degenerate fit, not a precise one
    estimated = np.isfinite(ratio) & (rate_lower > 0) & (ratio > 1) & (ratio <= ESTIMATED_MAX_RATIO)
    return np.select([hurts, no_gain, estimated], ["hurts", "no measurable gain", "estimated"], "not identified")


def cell_verdicts(gain_lower, gain_upper, neq_upper, rate_lower, rate_upper) -> np.ndarray:
    """Verdict per cell: :func:`verdicts` from the cell's gain interval, and *hurts* also where the cell's
    real-equivalent interval lies wholly below zero (the cell is less accurate than the reference curve at its
    base size, with the interval's confidence). A cell whose two intervals point opposite ways (a gain above 0
    beside a real equivalent below 0) supports neither claim: *no measurable gain*."""
    neq_upper = np.asarray(neq_upper, float)
    v = verdicts(gain_lower, gain_upper, rate_lower, rate_upper)
    below = neq_upper < 0
    helps = np.isin(v, ("estimated", "not identified"))
    return np.where(below & helps, "no measurable gain", np.where(below, "hurts", v))


def rate_under_verdict(verdict, estimate, lower, upper):
    """The exchange rate to print beside ``verdict``: *hurts* has no rate (NaN: the real equivalent is negative),
    *no measurable gain* keeps its lower bound but its upper bound is inf (the images may be worth nothing,
    i.e. infinitely many synthetic images per real one); the other verdicts print the interval as fitted."""
    v = np.asarray(verdict)
    estimate, lower, upper = (np.array(x, dtype=float) for x in (estimate, lower, upper))
    upper = np.where(v == "no measurable gain", np.inf, upper)
    hurts = v == "hurts"
    return tuple(np.where(hurts, np.nan, x) for x in (estimate, lower, upper))


def bound_disagreement(lower, upper) -> float:
    """The largest ratio between two methods' lower bounds, or between two methods' upper bounds, of one
    positive quantity; inf when one method bounds a side and another does not. NaN bounds (no rate) are skipped."""
    out = 1.0
    for bounds in (np.asarray(lower, float), np.asarray(upper, float)):
        b = bounds[~np.isnan(bounds)]
        if b.size < 2:
            continue
        b = np.clip(b, 1e-300, np.inf)  # a zero lower bound is as unbounded as an infinite upper one
        if np.isinf(b).any() or (b <= 1e-300).any():
            if not (np.isinf(b).all() or (b <= 1e-300).all()):
                return float("inf")
            continue
        out = max(out, float(b.max() / b.min()))
    return out


def surviving_verdict(verdicts_by_method) -> str:
    """The strongest verdict every method supports: all agree -> that verdict; *estimated* and *not identified*
    -> *not identified* (every method says the images help); anything else -> *no measurable gain* (no
    method-independent claim of a gain, or of harm, survives)."""
    got = set(str(v) for v in verdicts_by_method)
    if len(got) == 1:
        return got.pop()
    if got <= {"estimated", "not identified"}:
        return "not identified"
    return "no measurable gain"


def seeds_needed(
    ratio: float, n_seeds: int, ci: float, target: float = ESTIMATED_MAX_RATIO, max_seeds: int = 200
) -> int | None:
    """Seeds for the interval's bound ratio to reach ``target``, projected from the current one.

    The default interval is a jackknife t interval on the log scale: its log-width scales as
    ``t_{S-1} / sqrt(S)``. A projection, not a promise (``scaling plan`` simulates it); None when the
    interval is unbounded or already narrow enough, or when more than ``max_seeds`` would be needed.
    """
    if not np.isfinite(ratio) or ratio <= target or n_seeds < 2:
        return None
    q = 1 - (1 - ci) / 2
    now = stats.t.ppf(q, n_seeds - 1) / np.sqrt(n_seeds)
    need = now * np.log(target) / np.log(ratio)
    for s in range(n_seeds + 1, max_seeds + 1):
        if stats.t.ppf(q, s - 1) / np.sqrt(s) <= need:
            return s
    return None


def describe(verdict: str, *, seeds: int | None = None) -> str:
    """What a verdict tells the reader to do."""
    if verdict == "not identified":
        more = (
            f"about {seeds} seeds would bring the bounds within a factor {ESTIMATED_MAX_RATIO:g}"
            if seeds
            else "add seeds or larger n_synth"
        )
        return f"the images help, but the interval is too wide to state a rate ({more})"
    return {
        "estimated": f"interval bounds within a factor {ESTIMATED_MAX_RATIO:g}",
        "no measurable gain": "the accuracy gain's interval includes 0: the images may be worth nothing "
        "(no upper bound on the rate)",
        "hurts": "the added images lower accuracy (no rate: they are worth fewer than zero real images)",
    }[verdict]
