"""Verdicts: what an exchange-rate interval lets a reader conclude.

A point estimate with a four-decade interval is not an answer. Every reported exchange rate gets one of

- ``hurts``: the accuracy gain from the added images is below 0 with the interval's confidence;
- ``no measurable gain``: the gain's interval includes 0 — the images may be worth nothing;
- ``estimated``: the rate's interval is finite and its bounds differ by at most ``ESTIMATED_MAX_RATIO``;
- ``not identified``: the images help, but the interval is too wide (or unbounded) to state a rate.

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


def seeds_needed(ratio: float, n_seeds: int, ci: float, target: float = ESTIMATED_MAX_RATIO,
                 max_seeds: int = 200) -> int | None:
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
        more = f"about {seeds} seeds would bring the bounds within a factor {ESTIMATED_MAX_RATIO:g}" if seeds else \
            "add seeds or larger n_synth"
        return f"the images help, but the interval is too wide to state a rate ({more})"
    return {"estimated": f"interval bounds within a factor {ESTIMATED_MAX_RATIO:g}",
            "no measurable gain": "the accuracy gain's interval includes 0: the images may be worth nothing",
            "hurts": "the added images lower accuracy"}[verdict]
