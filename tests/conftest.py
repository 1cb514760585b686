"""Test-wide settings: the dataset cache of every test run lives in a temporary folder, never in ~/.cache."""

import os
import tempfile

# set at import (before any Ray cluster starts) so trial and source workers inherit it
os.environ.setdefault("SCALING_CACHE", tempfile.mkdtemp(prefix="scaling-cache-"))
