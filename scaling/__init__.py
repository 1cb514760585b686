"""How many synthetic training images is one real image worth?

Public face of the package: the cube contract (``open_cube``, ``save_cube``, ``validate_cube``,
``merge_cubes``), ``simulate_cube``, ``fit_equivalence`` and ``run_sweep``.
"""

from scaling.cube import CubeError, empty_cube, merge_cubes, open_cube, save_cube, status_counts, validate_cube
from scaling.fit import fit_equivalence
from scaling.simulate import planted_truth, simulate_cube

__version__ = "0.1.0"


def run_sweep(config, **overrides):
    """Run a Ray Tune sweep from a config (path, dict or SweepConfig); returns the cube path.

    Imported lazily so ``import scaling`` stays light (no torch or ray) for analysis-only users.
    """
    from runners.sweep import run_sweep as _run

    return _run(config, **overrides)


__all__ = ["CubeError", "empty_cube", "fit_equivalence", "merge_cubes", "open_cube", "planted_truth", "run_sweep",
           "save_cube", "simulate_cube", "status_counts", "validate_cube"]
