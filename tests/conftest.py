"""Test-wide settings: the dataset cache of every test run lives in a temporary folder, never in ~/.cache."""

import os
import tempfile

# set at import (before any Ray cluster starts) so trial and source workers inherit it
os.environ.setdefault("SCALING_CACHE", tempfile.mkdtemp(prefix="scaling-cache-"))

# The modules of the longest end-to-end tests (a paper config on CPU, kills and resumes, cluster placement: 1-2 min
# each) run first, so the two test processes of `pytest -n 2` finish together instead of one waiting on a long
# tail. Whole modules move, so module-scoped fixtures (a Ray session, a packed sweep) are still set up once.
LONGEST_FIRST = ("test_paper_rehearsal.py", "test_gpu_placement.py", "test_storage.py", "test_sweep.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module, and among the other modules, the collection order
