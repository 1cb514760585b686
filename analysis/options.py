"""What a fit is asked for (:class:`FitOptions`) and the settings, errors and warnings every part of the fit shares."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from analysis.equivalence import EQUIVALENCE_LAWS
from analysis.laws import CURVE_LAWS

# A real-image equivalent below a hundredth of an image is "worth nothing": dividing by it would print
# exchange rates like 1e155 that carry no information beyond "unbounded".
NEGLIGIBLE_NEQ = 0.01
# Test images are resampled in this many groups for the leave-one-group-out jackknife, repeated with this many
# random groupings (each with its own shuffled null) whose variances are averaged. One grouping and one shuffle
# made the added test-set variance (a difference of two noisy jackknife variances) a lottery: on the digits
# default at 8 seeds, random_state 0, 1, 2 gave open_set bound ratios 1.92, 1.39, 1.63 for the same cube; at 5 seeds,
# random_state 0-3: 1.74, 1.76, 1.75, 1.49 with one grouping, 1.63, 1.68, 1.72, 1.63 with 32 (fit time +13%).
TEST_GROUPS = 10
TEST_REPEATS = 32
# More bootstrap replicates than this hold gigabytes of per-replicate fits and add nothing a reader can see.
MAX_BOOT = 100_000
# a fit over more seeds than this is refused before it asks for the memory of that many jackknife fits
MAX_SEEDS = 1000
# Lack-of-fit alarms: a chi-square p-value below this says the law does not describe the cells.
LACK_OF_FIT_P = 0.001


def quiet(fn):
    """Run ``fn`` without numpy's floating-point RuntimeWarnings: degenerate replicates (a resample whose
    law explodes) are expected, come out as inf/NaN, and are handled and reported by the result itself."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(*args, **kwargs)

    return wrapper


# cluster-bootstrap replicates of a fit, everywhere one is made (fit, report, command line): drawn on first use only,
# since the default interval (the jackknife) needs none; 2000 give a 95% interval's bounds to about 1%
N_BOOT = 2000
CI_METHODS = ("jackknife", "expanded", "percentile", "bca")
BOOTSTRAP_METHODS = ("expanded", "percentile", "bca")  # the methods that need the cluster-bootstrap replicates


class FitWarning(str):
    """A warning of a fit: its message (it is that string wherever text is wanted) plus typed data set where the
    fit decides it — ``code`` names the condition, ``unidentifies`` says that no exchange rate of this source may
    be called "estimated", whatever its interval. Verdicts read the flag, never the message: rewording a message
    cannot change a verdict."""

    code: str
    unidentifies: bool

    def __new__(cls, message: str, code: str, *, unidentifies: bool = False):
        obj = super().__new__(cls, message)
        obj.code, obj.unidentifies = code, unidentifies
        return obj

    def __reduce__(self):  # pickled with its data (results travel to worker processes in the studies)
        return (_fit_warning, (str(self), self.code, self.unidentifies))


def _fit_warning(message: str, code: str, unidentifies: bool) -> FitWarning:
    return FitWarning(message, code, unidentifies=unidentifies)


def unidentifying(warnings) -> list[FitWarning]:
    """The warnings after which no exchange rate may be called "estimated"."""
    return [w for w in warnings if getattr(w, "unidentifies", False)]


class ExtrapolationWarning(UserWarning):
    """A query outside the measured n_real / n_synth range: the law, not the data, answers it."""


def warn_if_extrapolated(ds: xr.Dataset, stacklevel: int = 3) -> None:
    if "extrapolated" in ds and bool(np.asarray(ds["extrapolated"]).any()):
        n = int(np.asarray(ds["extrapolated"]).sum())
        warnings.warn(
            f"{n} queried point(s) lie outside the measured n_real/n_synth range: the fitted law "
            "extrapolates there (see the 'extrapolated' variable)",
            ExtrapolationWarning,
            stacklevel=stacklevel,
        )


class IdentifiabilityError(ValueError):
    """The cube cannot identify what was asked (too few sizes or seeds, a flat curve...)."""


@dataclass
class FitOptions:
    """What one fit was asked for. No defaults here: :func:`scaling.fit_equivalence`'s signature is their one home,
    and it builds this from its arguments."""

    reference: str
    n_boot: int
    ci: float
    ci_method: str
    law: str
    curve_law: str
    k: float
    robust: bool
    variance: str
    test_resampling: bool
    random_state: int | None

    def check(self) -> None:
        if not (0 < self.ci < 1):
            raise ValueError(f"ci: must lie strictly between 0 and 1, got {self.ci!r}")
        if int(self.n_boot) < 50:
            raise ValueError(
                f"n_boot: at least 50 replicates are needed for a {self.ci:.0%} interval, got {self.n_boot}"
            )
        if int(self.n_boot) > MAX_BOOT:
            raise ValueError(
                f"n_boot: at most {MAX_BOOT} replicates (each holds every cell's fit; 2000 give a 95% "
                f"interval's bounds to about 1%), got {self.n_boot}"
            )
        check_ci_method(self.ci_method)
        if self.law not in EQUIVALENCE_LAWS + ("auto",):
            raise ValueError(f"law: choose one of {EQUIVALENCE_LAWS + ('auto',)}, got {self.law!r}")
        if self.curve_law not in CURVE_LAWS + ("auto",):
            raise ValueError(f"curve_law: choose one of {CURVE_LAWS + ('auto',)}, got {self.curve_law!r}")
        if not self.k > 0:
            raise ValueError(f"k: the Wang-law scale must be positive, got {self.k!r}")
        if self.variance not in ("pooled", "cell"):
            raise ValueError(f"variance: choose 'pooled' or 'cell', got {self.variance!r}")


def check_ci_method(method, field: str = "ci_method") -> None:
    """The one check of an interval method's name (the fit's option, a query's, ``conf_int``'s)."""
    if method not in CI_METHODS:
        raise ValueError(f"{field}: choose one of {CI_METHODS}, got {method!r}")
