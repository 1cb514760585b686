"""A fit's parameters as statsmodels shows them: ``params`` (a Series of estimates with a fixed index per law
family), ``bse``, ``conf_int(alpha, method)``, ``flags``, and the full table ``param_table()``.

The index is fixed: every reference law's parameters (``reference.power.E``, ``reference.m3.C``, ...) and every
equivalence law's (``effective.k``, ``wang.c2``, ...) are rows whatever law the fit chose; a law that was not
fitted has NaN estimates. Earlier releases returned the table itself as ``params`` (columns estimate, lower,
upper, se_wls, flag, note; reference rows named after the chosen law only, e.g. ``reference.E``). That reading
keeps working for one release through :class:`ParamSeries`, with a ``DeprecationWarning`` naming the new call.
"""

from __future__ import annotations

import warnings

import pandas as pd

PARAM_COLUMNS = ("estimate", "lower", "upper", "se_wls", "flag", "note")


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} reads the parameter table through `params`, which is now a Series of estimates; use "
        f"{new} (this form goes away in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )


class ParamSeries(pd.Series):
    """The estimates, indexed by parameter name; reading it as the former table still works, with a warning."""

    _metadata = ["_table", "_chosen"]

    @property
    def _constructor(self):  # arithmetic and selections give plain Series
        return pd.Series

    @classmethod
    def from_table(cls, table: pd.DataFrame, chosen_curve: str) -> "ParamSeries":
        out = cls(table["estimate"].astype(float), name="estimate")
        out._table = table
        out._chosen = chosen_curve
        return out

    def _translate(self, key):
        """A former row name (``reference.E``: the chosen reference law's E) in the fixed index."""
        if isinstance(key, str) and key not in self.index and key.startswith("reference.") and key.count(".") == 1:
            return f"reference.{self._chosen}.{key.split('.', 1)[1]}"
        return key

    def __getitem__(self, key):
        if isinstance(key, str) and key in PARAM_COLUMNS:
            _deprecated(f"params[{key!r}]", f"param_table()[{key!r}] (or conf_int(), bse, flags)")
            return self._table[key]
        if isinstance(key, list) and key and all(isinstance(k, str) and k in PARAM_COLUMNS for k in key):
            _deprecated(f"params[{key!r}]", f"param_table()[{key!r}]")
            return self._table[key]
        return super().__getitem__(self._translate(key))

    @property
    def loc(self):
        return _LegacyLoc(self)

    def iterrows(self):
        _deprecated("params.iterrows()", "param_table().iterrows()")
        return self._table.iterrows()


class _LegacyLoc:
    """``params.loc[name]`` is the estimate; ``params.loc[name, column]`` (the former table) warns and works."""

    def __init__(self, series: ParamSeries):
        self._s = series

    def __getitem__(self, key):
        s = self._s
        if (
            isinstance(key, tuple)
            and len(key) == 2
            and isinstance(key[1], (str, list))
            and (key[1] in PARAM_COLUMNS if isinstance(key[1], str) else all(k in PARAM_COLUMNS for k in key[1]))
        ):
            _deprecated(f"params.loc[{key[0]!r}, {key[1]!r}]", f"param_table().loc[{key[0]!r}, {key[1]!r}]")
            return s._table.loc[s._translate(key[0]), key[1]]
        return pd.Series(s).loc[s._translate(key) if isinstance(key, str) else key]
