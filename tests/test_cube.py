"""The cube contract: round trip, atomic writes, one clear error per malformed cube, merging."""

import json

import numpy as np
import pytest
import xarray as xr

import scaling
from analysis.cube import CubeError, STATUS_DONE, STATUS_PENDING


@pytest.fixture()
def cube():
    return scaling.simulate_cube(n_real=(50, 100), n_synth=(0, 50), seeds=2, random_state=3)


def test_round_trip_preserves_values_and_attrs(cube, tmp_path):
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    back = scaling.open_cube(path)
    xr.testing.assert_allclose(back[["accuracy", "loss"]], cube[["accuracy", "loss"]])
    assert back["status"].dtype == np.int8
    assert json.loads(back.attrs["classes"]) == json.loads(cube.attrs["classes"])
    # plain xarray can read it too
    with xr.open_dataset(path) as plain:
        assert set(plain.dims) >= {"source", "n_real", "n_synth", "seed"}


def test_save_refuses_to_overwrite_and_leaves_no_temp_files(cube, tmp_path):
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        scaling.save_cube(cube, path)
    assert path.read_bytes() == before
    scaling.save_cube(cube, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["c.nc"]


def _broken(cube, how):
    c = cube.copy(deep=True)
    if how == "dims":
        return c.rename({"seed": "replicate"})
    if how == "negative":
        return c.assign_coords(n_real=[-50, 100])
    if how == "range":
        c["accuracy"][0, 0, 0, 0] = 1.5
        return c
    if how == "duplicate":
        return c.assign_coords(n_synth=[50, 50])
    if how == "dtype":
        return c.assign_coords(n_real=[50.5, 100.0])
    if how == "attrs":
        del c.attrs["n_test"]
        return c
    if how == "missing_var":
        return c.drop_vars("status")
    if how == "status":
        c["status"][0, 0, 0, 0] = 7
        return c
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how, field",
    [
        ("dims", "dims"),
        ("negative", "n_real"),
        ("range", "accuracy"),
        ("duplicate", "duplicate"),
        ("dtype", "integers"),
        ("attrs", "n_test"),
        ("missing_var", "status"),
        ("status", "status"),
    ],
)
def test_malformed_cubes_are_refused_naming_the_field(cube, how, field):
    with pytest.raises(CubeError, match=field):
        scaling.validate_cube(_broken(cube, how))


def test_missing_reference_source_is_named(cube):
    with pytest.raises(CubeError, match="no 'real' source"):
        scaling.fit_equivalence(cube.sel(source=["closed_set"]), "closed_set")


def test_not_a_netcdf_file(tmp_path):
    bogus = tmp_path / "bogus.nc"
    bogus.write_text("hello")
    with pytest.raises(CubeError, match="not a readable NetCDF"):
        scaling.open_cube(bogus)
    with pytest.raises(CubeError, match="no such cube"):
        scaling.open_cube(tmp_path / "absent.nc")


def test_merge_is_an_outer_join(cube):
    a = cube.sel(seed=[0])
    b = cube.sel(seed=[1], n_real=[100])
    merged = scaling.merge_cubes(a, b)
    assert merged.sizes["seed"] == 2
    assert int(merged["status"].sel(seed=1, n_real=50).max()) == STATUS_PENDING
    assert bool(np.isnan(merged["accuracy"].sel(seed=1, n_real=50)).all())
    np.testing.assert_allclose(merged["accuracy"].sel(seed=1, n_real=100), cube["accuracy"].sel(seed=1, n_real=100))


def test_merge_refuses_a_cell_computed_twice_with_different_values(cube):
    other = cube.copy(deep=True)
    other["accuracy"][0, 0, 0, 0] = other["accuracy"][0, 0, 0, 0] - 0.1
    with pytest.raises(CubeError, match="computed in both"):
        scaling.merge_cubes(cube, other)
    # the same values merge fine
    assert int((scaling.merge_cubes(cube, cube.copy(deep=True))["status"] == STATUS_DONE).sum()) == cube["status"].size


def test_merge_keeps_per_pool_variables_without_an_n_synth_dimension():
    import xarray as xr

    cube = scaling.simulate_cube(seeds=4, random_state=0)
    shape = tuple(cube.sizes[d] for d in ("source", "n_real", "seed"))
    cube["pool_label_accuracy"] = xr.DataArray(
        np.random.default_rng(0).random(shape), dims=("source", "n_real", "seed")
    )
    merged = scaling.merge_cubes(cube.isel(seed=[0, 1]), cube.isel(seed=[2, 3]))
    assert merged["pool_label_accuracy"].dims == ("source", "n_real", "seed")
    np.testing.assert_allclose(merged["pool_label_accuracy"].values, cube["pool_label_accuracy"].values)
    np.testing.assert_allclose(merged["accuracy"].values, cube["accuracy"].values)


def test_a_merged_cube_with_pool_quality_is_reported(tmp_path):
    import xarray as xr

    from scaling.report import write_report

    cube = scaling.simulate_cube(seeds=4, random_state=0)
    shape = tuple(cube.sizes[d] for d in ("source", "n_real", "seed"))
    for var in ("pool_label_accuracy", "pool_frechet_distance", "pool_domain_accuracy", "pool_label_noise"):
        cube[var] = xr.DataArray(np.random.default_rng(1).random(shape), dims=("source", "n_real", "seed"))
    path = scaling.save_cube(scaling.merge_cubes(cube.isel(seed=[0, 1]), cube.isel(seed=[2, 3])), tmp_path / "m.nc")
    text = write_report(path, tmp_path / "rep", n_boot=60).read_text()
    assert "## Pool quality" in text and "## Answer" in text


def test_variables_carry_cf_long_name_and_units_through_netcdf(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    cube = scaling.simulate_cube(seeds=2, random_state=0)
    back = scaling.open_cube(scaling.save_cube(cube, tmp_path / "c.nc"))
    assert back["accuracy"].attrs["long_name"] == "test top-1 accuracy" and back["accuracy"].attrs["units"] == "1"
    assert back["train_seconds"].attrs["units"] == "s"
    assert back["status"].attrs["flag_meanings"] == "pending done failed"
    lines = back["accuracy"].sel(source="real", n_real=50).mean("seed").plot()
    ax = lines[0].axes
    assert ax.get_ylabel() == "test top-1 accuracy [1]" and ax.get_xlabel().startswith("images added from the source")
