"""A fit's parameters as statsmodels shows them: ``params`` (a Series of estimates with a fixed index per law
family), ``bse``, ``conf_int(ci, ci_method)``, ``flags``, and the full table ``param_table()``.

The index is fixed: every reference law's parameters (``reference.power.E``, ``reference.m3.C``, ...) and every
equivalence law's (``effective.k``, ``wang.c2``, ...) are rows whatever law the fit chose; a law that was not
fitted has NaN estimates.
"""

PARAM_COLUMNS = ("estimate", "lower", "upper", "se_wls", "flag", "note")
