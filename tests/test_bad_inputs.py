"""Nothing silently wrong: bad configs, cubes, arguments and faults each get one clear line naming the field or
file, a non-zero exit, and leave nothing written — run through the command line as a user would. Plus fuzzing:
random mutations of a good config or cube give a clean error or a valid object, never a traceback."""

import copy
import re
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scaling
from runners.config import ConfigError, SweepConfig, load_config
from runners.ledger import cell_fingerprint, fingerprint_parts, ledger_entry
from runners.storage import RunFolderBusy, run_lock
from scaling.cli import main
from tests.valid_config import VALID

GOOD = VALID


def _set(cfg, path, value):
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {}) if isinstance(node.get(p), dict) or p not in node else node[p]
    if value is KeyError:
        node.pop(last, None)
    else:
        node[last] = value
    return cfg


# (config path, value, what the one-line message must name)
BAD_CONFIGS = [
    ("classifier.lr", float("inf"), "classifier.lr"),
    ("classifier.lr", float("nan"), "classifier.lr"),
    ("classifier.lr", -0.1, "classifier.lr"),
    ("classifier.stpes", 20, "classifier.stpes"),
    ("classifier.width", -4, "classifier.width"),
    ("classifier.width", 0, "classifier.width"),
    ("classifier.device", "cuda", "classifier.device"),
    ("classifier.device", "tpu", "classifier.device"),
    ("classifier.flip", "no", "classifier.flip"),
    ("classifier.steps", True, "classifier.steps"),
    ("classifier.steps", 2.5, "classifier.steps"),
    ("classifier.steps", 5, "classifier.steps"),  # the one-cycle schedule divides by zero below 10 steps
    ("classifier.batch_size", 0, "classifier.batch_size"),
    ("classifier.weight_decay", -1, "classifier.weight_decay"),
    ("classifier.label_smoothing", 1.5, "classifier.label_smoothing"),
    ("classifier.recipe", "vit_huge", "classifier.recipe"),
    ("classifier", 7, "classifier"),
    ("resources", 5, "resources"),
    ("resources.gpu_per_trial", 1, "resources.gpu_per_trial"),
    ("resources.gpus_per_trial", 1, "resources.gpus_per_trial"),  # this machine has no GPU: would wait forever
    ("resources.cpus_per_trial", 64, "resources.cpus_per_trial"),  # more than the 2 CPUs Ray is given
    ("resources.cpus_per_trial", 0, "resources.cpus_per_trial"),
    ("resources.cpus_per_trial", "two", "resources.cpus_per_trial"),
    ("resources.num_cpus", -1, "resources.num_cpus"),
    ("name", "..", "name"),
    ("name", "../escape", "name"),
    ("name", "", "name"),
    ("name", 5, "name"),
    ("storage", "ftp://host/x", "storage"),  # an object store this package cannot write to
    ("storage", "s3:///no-bucket", "storage"),
    ("storage", "runs\x00x", "storage"),  # a NUL byte: Path.resolve() would raise a bare ValueError
    ("dataset", "digits", "dataset"),
    ("dataset.root", "/tmp", "dataset.root"),
    ("dataset", {"name": "imagefolder", "root": "/nonexistent/crawl"}, "dataset.root"),
    ("dataset", {"name": "cifar10", "root": "/"}, "dataset.root"),
    ("dataset", {"name": "digits9"}, "dataset.name"),
    ("n_real", [True], "n_real"),
    ("n_real", "10", "n_real"),
    ("n_real", [1338], "n_synth"),  # 1338 + 10 = 1348: digits has 1347 non-test images, not 1348
    ("n_synth", [-1], "n_synth"),
    ("seeds", [0, 0], "seeds"),
    ("seeds", KeyError, "seeds"),
    ("test_fraction", True, "test_fraction"),
    ("test_fraction", 0, "test_fraction"),
    ("max_failures", 1.5, "max_failures"),
    ("max_failures", True, "max_failures"),
    ("sources", "real", "sources"),
    ("sources", ["real", "dalle"], "sources"),
    ("source_options", {"closed_set": {}}, "source_options.closed_set"),
    ("bogus_field", 3, "bogus_field"),
]


@pytest.mark.parametrize("path, value, field", BAD_CONFIGS, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD_CONFIGS])
def test_bad_config_exits_2_naming_the_field_and_writes_nothing(tmp_path, capsys, path, value, field):
    cfg = _set({**copy.deepcopy(GOOD), "storage": str(tmp_path / "runs")}, path, value)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    rc = main(["sweep", str(cfg_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and f"error: {field}" in err, err
    assert not (tmp_path / "runs").exists(), "nothing may be written for a refused config"


def test_storage_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**GOOD, "storage": str(tmp_path / "file")}))
    assert main(["sweep", str(cfg_path), "--quiet"]) == 2
    assert "error: storage" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_a_uri_with_one_slash_is_refused_not_made_a_local_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**GOOD, "storage": "s3:/bucket/runs"}))
    assert main(["sweep", str(cfg_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: storage" in err and "'s3://bucket/runs'" in err, err
    assert not (tmp_path / "s3:").exists()


@pytest.mark.parametrize("kind", ["directory", "binary", "duplicate key", "a list", "missing", "bad yaml"])
def test_bad_config_file_exits_2_naming_the_file(tmp_path, capsys, kind):
    path = tmp_path / "c.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "duplicate key":
        path.write_text("name: a\nname: b\n")
    elif kind == "a list":
        path.write_text("- 1\n- 2\n")
    elif kind == "bad yaml":
        path.write_text("name: [unclosed")
    rc = main(["sweep", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert ("name: appears twice" in err) if kind == "duplicate key" else ("c.yaml" in err)


def test_source_option_errors_name_the_option(tmp_path, capsys):
    for opts, field in [
        ({"retrieval": {"encoder": "magic"}}, "source_options.retrieval.encoder"),
        ({"retrieval": {"dedup_threshold": 2}}, "source_options.retrieval.dedup_threshold"),
        ({"closed_set": {"train_steps": 0}}, "source_options.closed_set.train_steps"),
    ]:
        cfg = {
            **GOOD,
            "sources": ["real", "retrieval", "closed_set"],
            "source_options": opts,
            "storage": str(tmp_path / "runs"),
        }
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump(cfg))
        assert main(["sweep", str(p), "--quiet"]) == 2
        assert f"error: {field}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------- cubes


def _cube_file(tmp_path, mutate=None, name="c.nc"):
    cube = scaling.simulate_cube(seeds=3, n_real=(50, 100, 200), n_synth=(0, 50, 100, 200), random_state=0)
    if mutate is not None:
        cube = mutate(cube)
    path = tmp_path / name
    cube.to_netcdf(path, engine="h5netcdf")
    return path


def _drop_status(c):
    return c.drop_vars("status")


def _acc_above_one(c):
    c["accuracy"].values[0, 0, 0, 0] = 1.5
    return c


def _duplicate_seed(c):
    return c.assign_coords(seed=[0, 0, 1])


def _status_seven(c):
    c["status"].values[0, 0, 0, 0] = 7
    return c


def _no_real(c):
    return c.sel(source=["closed_set", "open_set"])


def _n_test_zero(c):
    c.attrs["n_test"] = 0
    return c


def _bad_provenance(c):
    c.attrs["provenance"] = "{not json"
    return c


BAD_CUBES = [
    (_drop_status, "status"),
    (_acc_above_one, "accuracy"),
    (_duplicate_seed, "seed"),
    (_status_seven, "status"),
    (_n_test_zero, "n_test"),
    (_bad_provenance, "provenance"),
]


def test_fit_without_the_reference_source_names_it(tmp_path, capsys):
    assert main(["fit", str(_cube_file(tmp_path, _no_real))]) == 2
    assert "real" in capsys.readouterr().err


def test_report_without_the_reference_source_renders_and_says_why(tmp_path):
    text = _report_text(tmp_path, _cube_file(tmp_path, _no_real, name="results.nc"))
    assert "No exchange rate can be estimated from this cube: the cube has no 'real' reference source" in text


@pytest.mark.parametrize("mutate, field", BAD_CUBES, ids=[b[1] + "-" + b[0].__name__ for b in BAD_CUBES])
@pytest.mark.parametrize("command", ["fit", "report"])
def test_bad_cube_exits_2_naming_the_field(tmp_path, capsys, mutate, field, command):
    path = _cube_file(tmp_path, mutate)
    args = [command, str(path), "--n-boot", "60"] + (["--out", str(tmp_path / "rep")] if command == "report" else [])
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("content", [b"", b"not a netcdf file at all", None])
def test_unreadable_cube_file_is_named(tmp_path, capsys, content):
    path = tmp_path / "c.nc"
    if content is not None:
        path.write_bytes(content)
    assert main(["fit", str(path)]) == 2
    assert "c.nc" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, field", [(["--source", "dalle"], "source"), (["--n-boot", "5"], "n_boot"), (["--ci", "1.5"], "ci")]
)
def test_bad_fit_arguments_name_the_field(tmp_path, capsys, args, field):
    path = _cube_file(tmp_path)
    assert main(["fit", str(path)] + args) == 2
    assert field in capsys.readouterr().err


def test_simulate_refuses_to_overwrite_naming_the_flag(tmp_path, capsys):
    out = tmp_path / "sim.nc"
    out.write_text("keep me")
    assert main(["simulate", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def _report_text(tmp_path, path) -> str:
    """``scaling report`` must succeed; its Markdown."""
    assert main(["report", str(path), "--out", str(tmp_path / "rep"), "--n-boot", "60"]) == 0
    return (tmp_path / "rep" / "report.md").read_text()


def test_report_survives_a_damaged_features_file_and_says_so(tmp_path):
    path = _cube_file(tmp_path, name="results.nc")
    (tmp_path / "features.nc").write_bytes(b"garbage")
    text = _report_text(tmp_path, path)
    assert "features.nc" in text and "not readable" in text


def test_report_renders_a_real_only_cube_and_says_why_there_is_no_rate(tmp_path):
    text = _report_text(tmp_path, _cube_file(tmp_path, lambda c: c.sel(source=["real"]), name="results.nc"))
    assert "No exchange rate can be estimated" in text and "Not shown, and why" in text


# ---------------------------------------------------------------------------------------------- faults


def _run_folder(tmp_path):
    cfg = {**GOOD, "storage": str(tmp_path / "runs")}
    run_dir = tmp_path / "runs" / "t"
    (run_dir / "ledger").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(json.dumps({"fingerprint": load_config(cfg).fingerprint()}))
    return cfg, run_dir


def _files(root: Path) -> dict:
    """Every file of a run folder and its bytes, but the lock file: it stays after a sweep (a kernel lock is
    taken on it; deleting it on release would let a second sweep lock a file nobody else sees)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def _entry(cfg: dict, cell: dict, **metrics) -> str:
    """A well-formed ledger entry of ``cell`` as a trial under ``cfg`` would write it."""
    sweep = load_config(cfg)
    body = {"accuracy": 0.9, "loss": 0.3, "cell_fingerprint": cell_fingerprint(sweep, cell), **metrics}
    return json.dumps(ledger_entry(body, cell, fingerprint_parts(sweep, cell)))


CELL = {"source": "real", "n_real": 10, "n_synth": 0, "seed": 0}


def test_truncated_ledger_entry_is_named_and_nothing_is_touched(tmp_path, capsys):
    cfg, run_dir = _run_folder(tmp_path)
    (run_dir / "ledger" / "real-r10-s0-seed0.json").write_text('{"accuracy": 0.9')
    before = _files(run_dir)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(p), "--quiet"]) == 2
    assert "real-r10-s0-seed0.json" in capsys.readouterr().err
    assert _files(run_dir) == before


def test_ledger_from_another_thread_count_is_refused_not_reused(tmp_path, capsys):
    cfg, run_dir = _run_folder(tmp_path)
    two_threads = _set(copy.deepcopy(cfg), "resources.cpus_per_trial", 2)
    (run_dir / "ledger" / "real-r10-s0-seed0.json").write_text(_entry(two_threads, CELL))
    before = _files(run_dir)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(p), "--quiet"]) == 2
    assert "error: resources.cpus_per_trial:" in capsys.readouterr().err
    assert _files(run_dir) == before


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda cfg: "{}", "lacks accuracy"),
        (lambda cfg: "[1, 2]", "not a JSON object"),
        (lambda cfg: _entry(cfg, {**CELL, "seed": 1}), "another cell (seed = 1"),  # copied onto another cell's name
        (lambda cfg: _entry(cfg, CELL).replace('"accuracy": 0.9', '"accuracy": 0.99'), "checksum"),  # edited in place
    ],
)
def test_a_ledger_entry_that_is_not_this_cells_result_is_refused(tmp_path, capsys, damage, named):
    cfg, run_dir = _run_folder(tmp_path)
    (run_dir / "ledger" / "real-r10-s0-seed0.json").write_text(damage(cfg))
    before = _files(run_dir)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "real-r10-s0-seed0.json" in err and named in err, err
    assert _files(run_dir) == before


def test_damaged_sweep_stamp_is_named(tmp_path, capsys):
    cfg, run_dir = _run_folder(tmp_path)
    (run_dir / "sweep.json").write_text("{")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(p), "--quiet"]) == 2
    assert "sweep.json" in capsys.readouterr().err


def test_a_folder_locked_by_a_live_sweep_is_refused_naming_its_holder(tmp_path, capsys):
    cfg, run_dir = _run_folder(tmp_path)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with run_lock(run_dir):  # another sweep in this process holds the kernel lock
        before = _files(run_dir)
        assert main(["sweep", str(p), "--quiet"]) == 2
        assert _files(run_dir) == before
    err = capsys.readouterr().err
    assert "in use by another sweep" in err and f"pid {os.getpid()}" in err, err


@pytest.mark.parametrize("left", ["", '{"host": "elsewhere", "pid": 1}', '{"pid": 2'])
def test_a_lock_file_left_behind_blocks_nobody(tmp_path, left):
    """A killed sweep, or a full disk that left the lock file empty or half-written: the kernel lock died with
    its holder, so the next sweep takes the folder and writes who holds it now."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(left)
    with run_lock(run_dir):
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with run_lock(run_dir):
                pass
    with run_lock(run_dir):  # released: free again
        pass


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_cifar_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    from runners.data import load_dataset

    root = tmp_path / "cifar"
    root.mkdir()
    for f in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ):
        (root / f).write_bytes(pickle.dumps(_Evil()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is not a CIFAR batch"):  # the first file read (batches.meta) names itself
        load_dataset({"name": "cifar10", "root": str(root)})
    assert not (tmp_path / "pwned").exists()


def test_a_real_cifar_batch_still_loads(tmp_path):
    from runners.data import load_dataset

    root = tmp_path / "cifar"
    root.mkdir()
    rng = np.random.default_rng(0)
    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        batch = {
            b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8),
            b"labels": [0, 1, 2, 3],
            b"filenames": [b"a", b"b", b"c", b"d"],
            b"batch_label": b"x",
        }
        (root / f).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    data = load_dataset({"name": "cifar10", "root": str(root)})
    assert data.images.shape == (24, 3, 32, 32) and data.classes[0] == "c0"


# ---------------------------------------------------------------------------------------------- fuzzing

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 2000), max_size=4),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
_paths = st.sampled_from(
    [
        "name",
        "dataset",
        "dataset.name",
        "dataset.root",
        "sources",
        "n_real",
        "n_synth",
        "seeds",
        "test_fraction",
        "max_failures",
        "storage",
        "classifier",
        "classifier.steps",
        "classifier.lr",
        "classifier.flip",
        "classifier.width",
        "classifier.device",
        "resources",
        "resources.cpus_per_trial",
        "resources.gpus_per_trial",
        "source_options",
        "extra",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(_paths, _value), min_size=1, max_size=3))
def test_fuzzed_configs_give_a_config_error_or_a_config(mutations):
    cfg = copy.deepcopy(GOOD)
    for path, value in mutations:
        try:
            _set(cfg, path, value)
        except (AttributeError, TypeError):  # a parent replaced by a non-mapping: the mutation itself is moot
            pass
    try:
        load_config(cfg)
    except ConfigError as exc:
        written = {path.split(".")[0] for path, _ in mutations}  # an unknown key is named as the user wrote it
        _assert_names_a_field(str(exc), set(SweepConfig.__dataclass_fields__) | {"protocol", "config"} | written)


_CUBE = scaling.simulate_cube(seeds=2, n_real=(50, 100, 200), n_synth=(0, 50, 100), random_state=0)


@settings(max_examples=60, deadline=None)
@given(
    var=st.sampled_from(["accuracy", "status", "loss", "n_real", "seed", "attrs"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-300, 300), st.text(max_size=5)),
)
def test_fuzzed_cubes_give_a_cube_error_or_a_cube(var, value):
    cube = _CUBE.copy(deep=True)
    try:
        if var == "attrs":
            cube.attrs["n_test"] = value
        elif var in ("n_real", "seed"):
            vals = cube[var].values.astype(object)
            vals[0] = value
            cube = cube.assign_coords({var: vals})
        else:
            arr = cube[var].values.astype(object) if isinstance(value, str) else cube[var].values
            arr.flat[0] = value
            cube[var] = (cube[var].dims, arr)
    except (ValueError, TypeError, OverflowError):  # numpy refuses the value itself
        return
    try:
        scaling.validate_cube(cube)
    except scaling.CubeError as exc:
        message = str(exc)
        _assert_names_a_field(message, {"coords", "variables", "attrs", "dims", "cube"})
        quoted = re.match(r"^\w+: '([^']+)'", message)  # the section's entry, where the message names one
        assert quoted is None or quoted.group(1) in set(cube.variables) | set(cube.attrs), message


def _assert_names_a_field(message: str, fields: set) -> None:
    """One line that starts with the dotted path of a field that exists, then ': ' and the reason."""
    match = re.match(r"^([A-Za-z_][\w]*)(?:[.\[][^:\s]*)?: \S", message)
    assert match and "\n" not in message, f"does not start with a field: {message!r}"
    assert match.group(1) in fields, f"names {match.group(1)!r}, not a field ({sorted(fields)}): {message!r}"
