"""The one valid config the bad-input and fault tables start from: digits, the reference only, a 2 x 2 x 2 grid,
a classifier small enough that a sweep of it takes seconds. Each table changes one field of a copy."""

import copy

VALID = {
    "name": "t",
    "dataset": {"name": "digits"},
    "sources": ["real"],
    "n_real": [10, 20],
    "n_synth": [0, 10],
    "seeds": [0, 1],
    "classifier": {"steps": 10, "width": 8},
    "resources": {"cpus_per_trial": 1, "num_cpus": 2},
}


def valid_config(**changes) -> dict:
    """A fresh copy of :data:`VALID` with top-level ``changes``."""
    return {**copy.deepcopy(VALID), **changes}
