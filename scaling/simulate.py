"""Draw a cube from planted laws: the test oracle and a planning tool ("how many seeds do I need?")."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.stats import binom

from analysis.equivalence import law_neq
from analysis.cube import DIMS, STATUS_FAILED, TEST_DIM, empty_cube, fill_planted


SPEC_KEYS = ("exchange_rate", "wang", "saturating")


def planted_neq(spec: Mapping, n_real: np.ndarray, n_synth: np.ndarray) -> np.ndarray:
    """The real equivalent a source spec plants: ``{"exchange_rate": rho}``, ``{"wang": [c1, c2, k]}`` or
    ``{"saturating": [rho0, R*]}`` (first images worth 1/rho0 real ones, at most R* real images per base image).
    """
    n_real, n_synth = np.asarray(n_real, float), np.asarray(n_synth, float)
    if "exchange_rate" in spec:
        rho = float(spec["exchange_rate"])
        if rho <= 0:
            raise ValueError(f"sources: exchange_rate must be positive, got {rho}")
        return n_synth / rho
    if "wang" in spec:
        c1, c2, k = (float(v) for v in spec["wang"])
        if c2 <= 1 or c1 <= 0 or k <= 0:
            raise ValueError(f"sources: wang needs c1 > 0, c2 > 1, k > 0, got {spec['wang']}")
        p = {"a": np.array([np.log(c1) / k]), "g": np.array([1 / np.log(c2)])}
        flat = law_neq("wang", p, n_real.ravel(), np.maximum(n_synth.ravel(), 1e-12))[0].reshape(n_real.shape)
        return np.where(n_synth > 0, flat, 0.0)
    if "saturating" in spec:
        rho0, rstar = (float(v) for v in spec["saturating"])
        if rho0 <= 0 or rstar <= 0:
            raise ValueError(f"sources: saturating needs rho0 > 0 and R* > 0, got {spec['saturating']}")
        return -n_real * rstar * np.expm1(-n_synth / (rho0 * n_real * rstar))
    raise ValueError(f"sources: each source needs one of {SPEC_KEYS}, got keys {sorted(spec)}")


# the planted truth of simulate_cube() and of `scaling simulate` when no source is named
DEFAULT_SOURCES = {"closed_set": {"exchange_rate": 4.0}, "open_set": {"wang": [2.0, 3.0, 1000.0]}}


def simulate_cube(
    n_real: Sequence[int] = (50, 100, 200, 400, 800),
    n_synth: Sequence[int] = (0, 50, 100, 200, 400, 800),
    seeds: int | Sequence[int] = 5,
    sources: Mapping[str, Mapping] | None = None,
    *,
    E: float = 0.03,
    B: float = 2.0,
    beta: float = 0.5,
    C: float = 0.0,
    seed_sd: float = 0.05,
    hetero: float = 0.0,
    n_test: int = 2000,
    n_classes: int = 10,
    fail_fraction: float = 0.0,
    item_sd: float | None = None,
    random_state: int | None = 0,
    dataset: str = "simulated",
) -> xr.Dataset:
    """A cube whose truth is known.

    The real error curve is ``e(n) = E + B (n + C)^-beta`` (``C > 0``: a curve that flattens at small n,
    which the plain power law does not assume); a source with real equivalent ``n_eq`` has the error of
    ``n_real + n_eq`` real images. Each (seed, n_real) gets a multiplicative random effect on the error,
    ``exp(N(0, sd))`` (the luck of the base subset), shared by every source and ``n_synth``, with
    ``sd = seed_sd * (e / 0.1)**hetero`` (``hetero != 0``: seed noise that changes with accuracy). A source
    spec may add ``"generator_sd"``: a random effect ``exp(N(0, generator_sd))`` on that source's n_eq per
    (n_real, seed), shared by all of its cells (a generator trained per base subset that came out well or
    badly). Each cell then gets binomial test-set noise with ``n_test`` images. ``n_synth = 0`` is one
    experiment shared by all sources, as in a real sweep. The truth goes into ``attrs["truth"]``.

    ``item_sd`` (e.g. 1.0) also records which test images each cell got right (``test_correct``): every
    test image has a difficulty ``N(0, 1)`` shared by all cells, and a cell with ``k`` correct answers gets
    right the ``k`` images with the lowest ``item_sd * difficulty + N(0, 1)``.
    """
    sources = dict(sources or DEFAULT_SOURCES)
    sources = {"real": {"exchange_rate": 1.0}, **{k: v for k, v in sources.items() if k != "real"}}
    rng = np.random.default_rng(random_state)
    seed_ids = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else list(seeds)
    cube = empty_cube(
        list(sources),
        n_real,
        n_synth,
        seed_ids,
        dataset=dataset,
        n_test=n_test,
        classes=[str(c) for c in range(n_classes)],
        provenance={"simulated": True, "random_state": random_state},
    )
    R, Sy = np.meshgrid(cube["n_real"].values, cube["n_synth"].values, indexing="ij")
    effects = rng.normal(0.0, seed_sd, size=(len(seed_ids), len(cube["n_real"])))
    acc = np.empty(cube["accuracy"].shape)
    base_noise = rng.random((len(seed_ids), len(cube["n_real"])))  # shared n_synth=0 draw
    zero = cube["n_synth"].values == 0
    # drawn only when asked for, so cubes without generator effects keep their random stream
    gen_shape = (len(sources), len(seed_ids), len(cube["n_real"]))
    gen_z = (
        rng.normal(0.0, 1.0, size=gen_shape)
        if any("generator_sd" in v for v in sources.values())
        else np.zeros(gen_shape)
    )
    for i, (name, spec) in enumerate(sources.items()):
        n_eq = planted_neq(spec, R, Sy)
        for s in range(len(seed_ids)):
            neq_s = n_eq * np.exp(float(spec.get("generator_sd", 0.0)) * gen_z[i, s])[:, None]
            err_true = E + B * (R + neq_s + C) ** (-beta)
            sd = (err_true / 0.1) ** hetero  # 1 when hetero = 0: the seed effect as drawn
            err = np.clip(err_true * np.exp(effects[s][:, None] * sd), 1e-6, 1 - 1e-6)
            draws = rng.binomial(n_test, 1 - err) / n_test
            # the n_synth=0 cell is the same training run for every source: one shared uniform draw
            draws[:, zero] = binom.ppf(base_noise[s][:, None], n_test, 1 - err[:, zero]) / n_test
            acc[i, :, :, s] = draws
    fill_planted(cube, acc)
    if item_sd is not None:
        packed = _items(acc, n_test, item_sd, rng)
        packed[:, :, zero] = packed[:1, :, zero]  # n_synth = 0 is one training run shared by every source
        cube["test_correct"] = (DIMS + (TEST_DIM,), packed)
    if fail_fraction > 0:
        failed = rng.random(acc.shape) < fail_fraction
        for name in ("accuracy", "loss", "train_seconds", "source_seconds"):
            cube[name].values[failed] = np.nan
        cube["status"].values[failed] = STATUS_FAILED
    truth = {"E": E, "B": B, "beta": beta, "C": C, "seed_sd": seed_sd, "hetero": hetero, "sources": sources}
    cube.attrs["truth"] = json.dumps(truth)
    return cube


def simulate_protocols(settings: Mapping[str, Mapping], random_state: int | None = 0, **kwargs) -> xr.Dataset:
    """A protocol sweep with known truths: ``settings`` maps a protocol label (``steps``, ``steps-w0.5``) to the
    ``sources`` of :func:`simulate_cube`; every setting shares the reference curve and seed effects (the same
    ``random_state``), as settings of one sweep share their base subsets. ``attrs["truth"]`` holds them all."""
    if not settings:
        raise ValueError("settings: give at least one protocol label -> sources")
    cubes = [simulate_cube(sources=dict(v), random_state=random_state, **kwargs) for v in settings.values()]
    cube = xr.concat(cubes, dim="protocol", combine_attrs="override")
    cube = cube.assign_coords(protocol=np.array(list(settings), dtype=str))
    cube = cube.transpose(*DIMS, "protocol", ...)
    cube["status"] = cube["status"].astype(np.int8)
    cube.attrs["truth"] = json.dumps({label: json.loads(c.attrs["truth"]) for label, c in zip(settings, cubes)})
    return cube


def _items(acc: np.ndarray, n_test: int, item_sd: float, rng) -> np.ndarray:
    """Packed per-image correctness whose count matches every cell's accuracy exactly."""
    difficulty = rng.normal(size=n_test)
    score = item_sd * difficulty + rng.normal(size=acc.shape + (n_test,))
    rank = np.argsort(np.argsort(score, axis=-1), axis=-1)
    correct = rank < np.rint(acc * n_test)[..., None]
    return np.packbits(correct, axis=-1)


def planted_truth(cube: xr.Dataset) -> dict:
    return json.loads(cube.attrs["truth"])
