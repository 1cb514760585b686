"""``scaling calibrate CONFIG``: time the work a config's cost model prices, on this machine, in about a minute.

Each entry runs the real code path (``train_classifier``'s step loop, ``train_diffusion``, ``sample_diffusion``,
the retrieval encoder, a faiss flat index) for a few seconds on random data of the config's image shape, and
is written to the user-level throughput table (:func:`runners.costs.save_measured`) as ``measured on <device>``.
On a CPU, large generator batches are timed at a smaller batch and reported per image (said in the basis).
"""

from __future__ import annotations

import time

import torch

from runners.costs import save_measured
from runners.data import dataset_facts
from runners.timing import GENERATOR_RATES, classifier_rate, device_name


def calibrate(cfg, out=print) -> dict:
    """Measure the entries a config needs; returns {key: (value, basis)} as written to the user table."""
    _, shape = dataset_facts(cfg.dataset)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(cfg.threads)  # what one trial or source job gets in a sweep: the dry run prices slots
    where = device_name()
    day = time.strftime("%Y-%m-%d")
    GENERATOR_RATES.clear()
    # each source times what its dry-run stages price; two generator sources share one measurement
    measured = [classifier_rate(cfg, shape)] + [m for s in cfg.sources for m in cfg.module(s).calibrate(cfg, s, shape)]
    entries = {}
    for key, value, note in {m[0]: m for m in measured}.values():
        entries[key] = (float(value), f"measured on {where} (scaling calibrate {day}{'; ' + note if note else ''})")
        out(f"  {key:<40} {value:>12.4g} /s   {entries[key][1]}")
    search = {k: v for k, v in entries.items() if k.startswith("search/")}  # faiss searches on the CPU everywhere
    path = save_measured(device, {k: v for k, v in entries.items() if k not in search})
    if search:
        save_measured("cpu", search)
    out(f"written to {path} (dry runs now use these for '{device}')")
    return entries
