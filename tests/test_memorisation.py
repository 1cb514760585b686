"""The memorisation audit plants its truth: replays of the reference score about 1, held-out real images about 0,
replays under small noise still as copies; the copy share's interval covers at its level; every pool of a sweep
carries the scores into the cube."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from runners.memorisation import audit, copy_share_interval, nearest_two


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    return x[order[:100]], x[order[100:500]], x[order[500:1000]]  # reference (a base), held-out, yardstick


def test_replays_of_the_reference_score_as_copies(digits):
    reference, _, yardstick = digits
    replays = reference[np.random.default_rng(1).integers(0, len(reference), 400)]
    record = audit(replays, reference, yardstick, np.random.default_rng(2))
    assert record["copy_share"] == 1.0
    assert record["nn_distance_ratio"] == 0.0
    assert 0.98 < record["copy_share_low"] < 1.0 == record["copy_share_high"]  # exact bound, not [1, 1]


def test_held_out_real_images_score_about_zero_and_as_novel_as_real_data(digits):
    reference, held_out, yardstick = digits
    record = audit(held_out, reference, yardstick, np.random.default_rng(2))
    assert record["copy_share"] < 0.02
    assert 0.9 < record["nn_distance_ratio"] < 1.1
    assert record["copy_share_low"] <= record["copy_share"] <= record["copy_share_high"]


def test_replays_under_small_noise_still_score_as_copies(digits):
    reference, _, yardstick = digits
    rng = np.random.default_rng(3)
    replays = reference[rng.integers(0, len(reference), 400)]
    noisy = np.clip(replays + rng.normal(0, 0.03, replays.shape), 0, 1).astype(np.float32)
    record = audit(noisy, reference, yardstick, np.random.default_rng(2))
    assert record["copy_share"] > 0.95
    assert record["nn_distance_ratio"] < 0.5


def test_a_mixed_pool_recovers_its_planted_share(digits):
    reference, held_out, yardstick = digits
    replays = reference[np.random.default_rng(4).integers(0, len(reference), 120)]
    record = audit(np.concatenate([replays, held_out[:280]]), reference, yardstick, np.random.default_rng(2))
    assert record["copy_share_low"] <= 0.3 <= record["copy_share_high"]
    assert abs(record["copy_share"] - 0.3) < 0.03


def test_the_copy_share_interval_covers_at_its_level():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(1000):
        copies = rng.random(400) < 0.3
        low, high = copy_share_interval(copies, rng)
        hits += low <= 0.3 <= high
    assert 0.93 <= hits / 1000 <= 0.97


def test_duplicates_inside_the_reference_do_not_hide_a_replay(digits):
    reference, _, _ = digits
    doubled = np.concatenate([reference, reference[:10]])
    d = nearest_two(reference[:10], doubled)
    assert np.all(d[:, 0] == 0) and np.all(d[:, 1] > 0)


def _audited_cube(copy_share: float):
    import json

    import xarray as xr

    import scaling

    cube = scaling.simulate_cube(seeds=4, random_state=0)
    dims = ("source", "n_real", "seed")
    shape = tuple(cube.sizes[d] for d in dims)
    share = np.full(shape, copy_share)
    for var, value in (
        ("pool_copy_share", share),
        ("pool_copy_share_low", share - 0.02),
        ("pool_copy_share_high", np.minimum(share + 0.02, 1)),
        ("pool_nn_distance_ratio", np.full(shape, 0.1)),
    ):
        cube[var] = xr.DataArray(value, dims=dims)
    cube["pool_copy_share"].attrs["reference"] = json.dumps(
        {s: "training set (the base subset)" for s in cube["source"].values}
    )
    return cube


def test_the_answer_states_the_copy_share_beside_the_rate_and_says_when_a_generator_replays(tmp_path):
    import scaling
    from scaling.report import write_report

    cube = _audited_cube(0.9)
    source = [s for s in cube["source"].values if s != "real"][0]
    res = scaling.fit_equivalence(cube, source=source, n_boot=50)
    text = str(res.summary())
    assert "Memorisation audit of the pools" in text
    assert "pool: 90% copies of its training set (the base subset) [88%, 92%]" in text
    assert "the generator replays its training set (the base subset)" in text
    assert res.answer_rows()[0]["copy_share"] == pytest.approx(0.9)
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    report = write_report(path, tmp_path / "rep", n_boot=50).read_text()
    assert "Pool: 90% copies of its training set" in report and "memorisation.png" in report
    quiet = str(scaling.fit_equivalence(_audited_cube(0.1), source=source, n_boot=50).summary())
    assert "pool: 10% copies" in quiet and "replays its" not in quiet and "off the data" not in quiet
    far = _audited_cube(0.0)
    far["pool_nn_distance_ratio"][:] = 1.6
    text = str(scaling.fit_equivalence(far, source=source, n_boot=50).summary())
    assert "no replays: its images lie farther from the training set than new real images do" in text


def test_rates_of_several_datasets_are_drawn_against_their_copy_share_in_one_panel(tmp_path, capsys):
    import scaling
    from scaling.cli import main

    paths = []
    for name, share in (("digits", 0.9), ("fashion_mnist", 0.05)):
        cube = _audited_cube(share)
        cube.attrs["dataset"] = name
        paths.append(str(scaling.save_cube(cube, tmp_path / f"{name}.nc")))
    assert main(["table", *paths, "--n-boot", "50", "--memorisation-figure", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert "copies there" in out and "90%" in out and "5%" in out
    assert (tmp_path / "fig" / "memorisation.png").stat().st_size > 10_000
