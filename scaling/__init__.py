"""How many synthetic training images is one real image worth?

Public face of the package: the cube contract (``open_cube``, ``save_cube``, ``validate_cube``,
``merge_cubes``), ``simulate_cube``, ``fit_equivalence`` and ``run_sweep``.

Names resolve on first use (PEP 562): a Ray worker that needs the cube contract imports ``analysis.cube`` only,
not the statistics stack (statsmodels, scipy.optimize) or torch and Ray.
"""

from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("synth-scaling")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_HOMES = {
    "CubeError": "analysis.cube",
    "empty_cube": "analysis.cube",
    "merge_cubes": "analysis.cube",
    "open_cube": "analysis.cube",
    "save_cube": "analysis.cube",
    "status_counts": "analysis.cube",
    "validate_cube": "analysis.cube",
    "protocol_slice": "analysis.cube",
    "fit_equivalence": "scaling.fit",
    "fit_protocols": "scaling.fit",
    "protocol_table": "scaling.fit",
    "planted_truth": "scaling.simulate",
    "simulate_cube": "scaling.simulate",
    "simulate_protocols": "scaling.simulate",
    "run_sweep": "runners.sweep",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
