"""Faults a user, a disk or a cluster inflicts, each reproduced for real: a file-size limit (``RLIMIT_FSIZE``, as a
full disk refuses a write), a report killed half-way, credentials in a storage URI, a dataset cache edited in
place, a symlink planted in a run folder, leftovers of killed writers, cubes of different protocols. Plus the
exit-code table, and hypothesis fuzzing of the arguments of plan, next, adaptive sweeps and table. No Ray here
(the sweep's faults: tests/test_sweep.py and tests/test_storage.py)."""

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import scaling
from runners import storage
from runners.config import ConfigError, load_config
from scaling.cli import EXIT_CODES, build_parser, main
from analysis.cube import CubeError
from analysis.io import TEMP_PREFIX, clean_temp_files, temp_name, write_atomic
from tests.valid_config import valid_config

ROOT = Path(__file__).resolve().parents[1]
GOOD = valid_config(sources=["real", "retrieval"])


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cube") / "results.nc"
    cube = scaling.simulate_cube(
        n_real=(50, 100, 200),
        n_synth=(0, 100, 200),
        seeds=3,
        sources={"open_set": {"exchange_rate": 3.0}},
        random_state=1,
    )
    return scaling.save_cube(cube, path)


def _cli(args, *, file_limit: int | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``scaling ARGS`` in a fresh interpreter, optionally under a file-size limit (what a full disk does to a
    write: EFBIG instead of ENOSPC, the same OSError path)."""

    def limit():
        if file_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "scaling.cli", *args],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        cwd=cwd or ROOT,
        timeout=300,
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(TEMP_PREFIX + "*"))


# ------------------------------------------------------------------------------------------ exit codes


def test_every_exit_code_is_documented_in_the_help():
    text = build_parser().format_help()
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning[:30]}" in text


def test_exit_0_and_2(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "c.nc")]) == 0
    assert main(["simulate", "--out", str(tmp_path / "c.nc")]) == 2  # exists, no --overwrite
    assert "--out" in capsys.readouterr().err


def test_exit_5_a_write_refused_by_the_disk_names_the_file_and_keeps_the_old_one(tmp_path, cube_file):
    (tmp_path / "c.nc").write_bytes(b"the old cube")
    run = _cli(["simulate", "--out", str(tmp_path / "c.nc"), "--overwrite"], file_limit=5000)
    assert run.returncode == 5, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0] and str(tmp_path / "c.nc") in lines[0], run.stderr
    assert (tmp_path / "c.nc").read_bytes() == b"the old cube" and not _leftovers(tmp_path)
    report = _cli(["report", str(cube_file), "--out", str(tmp_path / "rep"), "--n-boot", "50"], file_limit=5000)
    assert report.returncode == 5 and str(tmp_path / "rep") in report.stderr, report.stderr
    assert len(report.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rep" / "report.md").exists() and not _leftovers(tmp_path / "rep")


def test_exit_70_a_bug_prints_its_traceback_and_says_so(monkeypatch, cube_file, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("a planted bug")

    monkeypatch.setattr(scaling, "fit_equivalence", broken)
    assert main(["fit", str(cube_file)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "a planted bug" in err and "internal error" in err


def test_exit_130_an_interrupted_command(monkeypatch, cube_file, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scaling, "fit_equivalence", interrupted)
    assert main(["fit", str(cube_file)]) == 130
    assert "interrupted" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ reports


def test_a_killed_report_leaves_the_previous_one_whole_and_the_next_cleans_up(tmp_path, cube_file):
    out = tmp_path / "rep"
    assert _cli(["report", str(cube_file), "--out", str(out), "--n-boot", "50"]).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("mine")  # a user's file beside the report is never touched
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "report", str(cube_file), "--out", str(out), "--n-boot", "50"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not list(out.glob(TEMP_PREFIX + "report.*/figures/*.png")):  # killed once the new figures are half drawn
        assert proc.poll() is None and time.time() < deadline, "the report ended before it drew a figure"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and TEMP_PREFIX not in str(p)}
    assert {k: v for k, v in after.items() if k != Path("notes.txt")} == before
    assert _cli(["report", str(cube_file), "--out", str(out), "--n-boot", "50"]).returncode == 0
    assert not _leftovers(out) and (out / "notes.txt").read_text() == "mine"


def test_cube_attributes_enter_the_report_as_inert_text(tmp_path):
    from scaling.report import write_report

    cube = scaling.simulate_cube(n_real=(50, 100, 200), n_synth=(0, 100, 200), seeds=3, random_state=2)
    cube.attrs["dataset"] = 'digits <img src="http://evil.example/x.png"> ![x](http://evil.example/y.png) ```'
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    text = write_report(path, tmp_path / "rep", n_boot=50).read_text()
    rendered = text.split("```")[::2]  # what a Markdown viewer renders: the text outside code fences
    assert text.count("```") % 2 == 0 and "&lt;img" in rendered[0]
    assert not any("<img" in part or "](http://evil" in part for part in rendered)


# ------------------------------------------------------------------------------------------ storage URIs


SECRET = "wJalr/XUtnFEMI+K7MDENG"


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://AKIDEXAMPLE:{SECRET.replace('/', '%2F').replace('+', '%2B')}@bucket/runs?endpoint_override=127.0.0.1:9&scheme=http",
        f"s3://bucket/runs?endpoint_override=127.0.0.1:9&access_key=AKIDEXAMPLE&secret_key={SECRET.replace('/', '%2F').replace('+', '%2B')}",
    ],
)
def test_credentials_in_a_storage_uri_go_to_the_environment_never_into_a_file(uri, monkeypatch):
    for key in storage.S3_CREDENTIALS.values():
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(storage, "_FROM_URIS", {})
    cfg = load_config({**GOOD, "storage": uri})
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET and os.environ["AWS_ACCESS_KEY_ID"] == "AKIDEXAMPLE"
    assert (
        cfg.storage == "s3://bucket/runs?endpoint_override=127.0.0.1:9&scheme=http"
        or cfg.storage == "s3://bucket/runs?endpoint_override=127.0.0.1:9"
    )
    stored = json.dumps(cfg.__dict__, default=str) + str(cfg.run_dir) + pickle.dumps(cfg).hex()
    assert SECRET not in stored and "AKIDEXAMPLE" not in stored  # sweep.json, provenance and Tune's pickle
    assert storage.worker_env()["AWS_SECRET_ACCESS_KEY"] == SECRET  # a cluster's workers get it through Ray


def test_a_redacted_uri_shows_no_secret_and_other_schemes_refuse_credentials():
    assert (
        storage.redact(f"s3://KEY:{SECRET}@b/x?secret_key={SECRET}&scheme=http")
        == "s3://KEY:***@b/x?secret_key=***&scheme=http"
    )
    with pytest.raises(ConfigError, match="^storage: gs://user:\\*\\*\\*@bucket/x carries credentials"):
        load_config({**GOOD, "storage": "gs://user:pw@bucket/x"})


def test_a_uri_is_a_scheme_at_the_start_not_any_text_holding_colon_slash_slash(tmp_path):
    assert storage.is_uri("s3://bucket/x") and storage.is_uri("file:///tmp/x")
    assert not storage.is_uri("runs/a://b") and not storage.is_uri("./s3:/bucket")
    cfg = load_config({**GOOD, "storage": str(tmp_path / "a://b")})
    assert cfg.run_dir == tmp_path / "a:" / "b" / "t"


# ------------------------------------------------------------------------------------------ run folders


def test_a_symlink_planted_as_a_run_log_is_refused_not_followed(tmp_path):
    from runners.trial import append_line

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "executions.log").symlink_to(victim)
    with pytest.raises(OSError):
        append_line(tmp_path / "executions.log", "real-r10-s0-seed0")
    assert victim.read_text() == "keep"


def test_leftovers_of_killed_writers_are_cleaned_and_atomic_files_get_the_usual_mode(tmp_path):
    (tmp_path / "ledger").mkdir()
    left = [
        tmp_path / f"{TEMP_PREFIX}results.nc.abc123.nc",
        tmp_path / "ledger" / f"{TEMP_PREFIX}real-r10-s0-seed0.json.x1.json",
        tmp_path / "pools" / temp_name("a.bin", "part-4242"),
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (tmp_path / "generators" / temp_name("closed_set-r10-seed0", "777")).mkdir(parents=True)
    kept = [tmp_path / "results.nc", tmp_path / "ledger" / "real-r10-s0-seed0.json", tmp_path / ".lock"]
    for path in kept:
        path.write_bytes(b"whole")
    assert clean_temp_files(tmp_path) == 4
    assert all(p.exists() for p in kept) and not _leftovers(tmp_path)
    written = write_atomic(tmp_path / "x.json", lambda tmp: tmp.write_text("{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by the group as any plain file, not 0600


def test_a_dataset_cache_edited_in_place_is_refused_naming_the_file(tmp_path, monkeypatch):
    from runners import data as rdata
    from tests.test_data_plane import write_cifar

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    spec = {"name": "cifar10", "root": str(write_cifar(tmp_path / "cifar"))}
    data = rdata.load_dataset(spec)
    rdata.verify_cache(spec)  # as built: fine
    pixels = Path(data.pixels.filename)
    raw = bytearray(pixels.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of one image
    pixels.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"^dataset: .*pixels\.npy was modified after it was written"):
        rdata.verify_cache(spec)


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_cifar_batches_of_every_pickle_protocol_load_and_code_is_still_refused(tmp_path, monkeypatch, protocol):
    from runners import data as rdata

    batch = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2]}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
    np.testing.assert_array_equal(rdata._load_batch(tmp_path / "b")[b"data"], batch[b"data"])

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "e").write_bytes(pickle.dumps({b"data": Evil()}, protocol=protocol))
    with pytest.raises(ValueError, match="refusing to load"):
        rdata._load_batch(tmp_path / "e")


def test_cubes_of_different_protocols_or_test_items_are_not_merged():
    a = scaling.simulate_cube(n_real=(50, 100), n_synth=(0, 100), seeds=[0, 1], random_state=3)
    b = scaling.simulate_cube(n_real=(50, 100), n_synth=(0, 100), seeds=[2, 3], random_state=4)
    a.attrs["protocol"] = json.dumps({"budget": "steps", "steps": 20})
    b.attrs["protocol"] = json.dumps({"budget": "steps", "steps": 30})
    with pytest.raises(CubeError, match="different protocols \\(steps differ"):
        scaling.merge_cubes(a, b)
    b.attrs["protocol"] = a.attrs["protocol"]
    scaling.merge_cubes(a, b)  # the same protocol: merged
    twin = a.copy(deep=True)
    if "test_correct" in twin:
        twin["test_correct"].values[0, 0, 0, 0, 0] ^= 1  # one test item of one done cell
        with pytest.raises(CubeError, match="'test_correct'"):
            scaling.merge_cubes(a, twin)


# ------------------------------------------------------------------------------------------ argument fuzzing


def _value():
    """An option value as a hostile user types it."""
    return st.one_of(
        st.integers(-3, 30).map(str),
        st.sampled_from(["nan", "inf", "-inf", "0", "1", "1.0", "2", "1e9", "", "x", "-0", "0.5"]),
    )


def _run(args, capsys) -> tuple[int, str]:
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's refusal
        rc = exc.code
    return rc, capsys.readouterr().err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=_value(),
    start=_value(),
    step=_value(),
    max_seeds=_value(),
    confirm=_value(),
    budget=_value(),
    target=st.sampled_from(["retrieval:10:10", "real:10:10", "retrieval:10:0", "retrieval:99:10", "x:1", "::"]),
)
def test_fuzzed_adaptive_arguments_are_refused_before_any_work(
    tmp_path, capsys, width, start, step, max_seeds, confirm, budget, target
):
    """Every combination ends in one error and exit 2, the config's grid checked after the options: a config
    that does not exist is the last thing a fully valid set of options meets."""
    args = [
        "sweep",
        str(tmp_path / "missing.yaml"),
        "--adaptive",
        "--target",
        target,
        "--width",
        width,
        "--start-seeds",
        start,
        "--step",
        step,
        "--max-seeds",
        max_seeds,
        "--confirm",
        confirm,
        "--budget",
        budget,
    ]
    rc, err = _run(args, capsys)
    assert rc == 2 and "Traceback" not in err and err.strip(), err
    assert not (tmp_path / "runs").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=_value(),
    sims=_value(),
    seeds=_value(),
    n_test=_value(),
    target=st.sampled_from(["open_set:25:400", "open_set:25:999", "real:25:50", "nope:25:50", "open_set:25", "a:b:c"]),
)
@example(width="2", sims="1", seeds="3", n_test="450", target="open_set:25:400")  # one that runs, every time
def test_fuzzed_plan_arguments_are_refused_or_answered(tmp_path, capsys, width, sims, seeds, n_test, target):
    args = [
        "plan",
        str(ROOT / "configs" / "digits.yaml"),
        "--target",
        target,
        "--width",
        width,
        "--sims",
        sims,
        "--seeds",
        seeds,
        "--n-test",
        n_test,
    ]
    valid = (
        target == "open_set:25:400"
        and _ok(width, lambda v: v > 1)
        and _ok(sims, lambda v: v >= 1, int)
        and _ok(seeds, lambda v: v >= 2, int)
        and _ok(n_test, lambda v: v >= 1, int)
    )
    if valid:  # a plan that runs: keep it short
        args[args.index("--sims") + 1] = "1"
        args[args.index("--seeds") + 1] = "3"
    rc, err = _run(args, capsys)
    assert rc == (0 if valid else 2) and "Traceback" not in err, (args, err)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=_value(),
    sims=_value(),
    add=_value(),
    target=st.sampled_from(["open_set:100:200", "open_set:100:999", "real:100:100", "closed_set:100:100", "1:2:3"]),
)
@example(width="1.5", sims="1", add="1", target="open_set:100:200")
def test_fuzzed_next_arguments_are_refused_or_answered(cube_file, capsys, width, sims, add, target):
    args = ["next", str(cube_file), "--target", target, "--width", width, "--sims", sims, "--add", add]
    valid = (
        target == "open_set:100:200"
        and _ok(width, lambda v: v > 1)
        and _ok(sims, lambda v: v >= 1, int)
        and _ok(add, lambda v: v >= 1, int)
    )
    if valid:
        args[args.index("--sims") + 1] = "1"
        args[args.index("--add") + 1] = "1"
    rc, err = _run(args, capsys)
    assert rc == (0 if valid else 2) and "Traceback" not in err, (args, err)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_boot=_value(),
    fmt=st.sampled_from(["markdown", "latex", "html", ""]),
    law=st.sampled_from(["auto", "wang", "bogus"]),
    ci=st.sampled_from(["jackknife", "percentile", "nope"]),
)
@example(n_boot="60", fmt="latex", law="auto", ci="jackknife")
def test_fuzzed_table_arguments_are_refused_or_answered(cube_file, capsys, n_boot, fmt, law, ci):
    args = ["table", str(cube_file), "--n-boot", n_boot, "--format", fmt, "--law", law, "--ci-method", ci]
    # a 95% interval needs 50 replicates: fewer is refused by the fit's options, naming n_boot
    valid = _ok(n_boot, lambda v: v >= 50, int) and fmt in ("markdown", "latex") and law != "bogus" and ci != "nope"
    if valid:
        args[args.index("--n-boot") + 1] = "60"
    rc, err = _run(args, capsys)
    assert rc == (0 if valid else 2) and "Traceback" not in err, (args, err)


def _ok(text: str, test, kind=float) -> bool:
    try:
        value = kind(text)
    except ValueError:
        return False
    return bool(np.isfinite(value) and test(value))


def test_a_smaller_grid_keeps_the_larger_cube_it_would_replace(tmp_path, capsys):
    from runners.sweep import _keep_a_larger_cube

    full = scaling.simulate_cube(n_real=(50, 100), n_synth=(0, 100), seeds=[0, 1, 2], random_state=5)
    path = scaling.save_cube(full, tmp_path / "results.nc")
    _keep_a_larger_cube(path, full)  # the same grid: nothing to keep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.nc"]
    _keep_a_larger_cube(path, full.isel(seed=[0]))  # a quick --set seeds=[0] on a finished run
    kept = [p for p in tmp_path.iterdir() if p.name != "results.nc"]
    assert not path.exists() and len(kept) == 1 and kept[0].name.startswith("results.")
    assert scaling.open_cube(kept[0]).sizes["seed"] == 3
    lost = int((full["status"].isel(seed=[1, 2]) == 1).sum())
    assert f"{lost} finished cell(s)" in capsys.readouterr().err


def test_an_image_that_cannot_be_decoded_is_named_before_any_trial(tmp_path, monkeypatch, capsys):
    """A dataset-content problem surfaces in the driver, before Ray starts: one line naming the file, exit 2."""
    import yaml
    from PIL import Image

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "9.png").write_bytes(b"not a png at all")
    cfg = {
        **GOOD,
        "sources": ["real"],
        "dataset": {"name": "imagefolder", "root": str(root), "image_size": 8},
        "n_real": [2],
        "n_synth": [0],
        "storage": str(tmp_path / "runs"),
        "test_fraction": 0.25,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "9.png cannot be decoded" in err[0], err
    assert not list((tmp_path / "cache" / "datasets").glob("imagefolder-*/meta.json"))  # no half-built cache
    assert not (tmp_path / "runs" / "t" / "ledger").exists()


# ------------------------------------------------------------------------------------------ integrity of artefacts


@pytest.fixture
def judged(tmp_path, monkeypatch):
    """A digits config with this node's judge trained (a few seconds) and copied into its run folder."""
    from runners.quality import judge_path, node_judge_path, prepare_judge

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    cfg = load_config({**GOOD, "storage": str(tmp_path / "runs")})
    record = prepare_judge(cfg)
    return cfg, record, node_judge_path(cfg), judge_path(cfg)


def _zero_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.zero_() for k, v in load_file(path).items()}, str(path))  # still a valid safetensors file


def test_the_judge_records_its_checksum_and_zeroed_weights_are_refused_naming_the_file(judged):
    from runners.integrity import IntegrityError, file_checksum
    from runners.quality import check_judges, prepare_judge

    cfg, record, node, run_copy = judged
    assert record["sha256"] == file_checksum(node) == file_checksum(run_copy)
    _zero_weights(node)
    with pytest.raises(IntegrityError, match=rf"^the judge: {node} was modified after it was written"):
        check_judges(cfg)
    other = load_config({**GOOD, "name": "t2", "storage": str(cfg.run_dir.parent)})
    with pytest.raises(IntegrityError, match="retrain this node's judge"):  # no later run folder inherits it
        prepare_judge(other)


def test_a_sweep_with_a_truncated_judge_exits_2_naming_the_judge_before_ray_starts(judged, tmp_path, capsys):
    import yaml

    cfg, _, node, run_copy = judged
    run_copy.write_bytes(run_copy.read_bytes()[:100])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "storage": str(cfg.run_dir.parent)}))
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the judge: {run_copy} was modified" in err[0], err
    assert not (cfg.run_dir / "ledger").exists()  # refused before any work


def test_a_judge_copy_without_a_record_is_kept_only_when_it_is_this_nodes_judge_or_reproduces_its_accuracy(judged):
    from safetensors.torch import load_file, save_file

    from runners.integrity import IntegrityError, file_checksum
    from runners.quality import verified_judge

    cfg, record, node, run_copy = judged
    meta = run_copy.with_suffix(".json")
    old = {k: v for k, v in record.items() if k != "sha256"}  # what an older version wrote
    meta.write_text(json.dumps(old))
    assert verified_judge(cfg)["sha256"] == record["sha256"]  # the same bytes: the record is added
    assert json.loads(meta.read_text())["sha256"] == record["sha256"]
    # trained on another CPU: other bytes (float kernels differ), the accuracy its record states
    meta.write_text(json.dumps(old))
    save_file({k: v + 1e-7 * v.abs().max() for k, v in load_file(run_copy).items()}, str(run_copy))
    assert file_checksum(run_copy) != record["sha256"]
    assert verified_judge(cfg)["sha256"] == file_checksum(run_copy)
    meta.write_text(json.dumps({**old, "test_accuracy": old["test_accuracy"] - 0.05}))  # a record it cannot match
    with pytest.raises(IntegrityError, match="carries no checksum record"):
        verified_judge(cfg)
    meta.write_text(json.dumps(old))
    _zero_weights(run_copy)
    with pytest.raises(IntegrityError, match="carries no checksum record"):
        verified_judge(cfg)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda meta: meta.write_text(""), r"the record .*meta\.json is unreadable \(.*\)"),
        (
            lambda meta: meta.write_text(
                json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "checksums"})
            ),
            r"the record .*meta\.json holds no checksums",
        ),
    ],
    ids=["empty meta.json", "checksums removed"],
)
def test_a_dataset_cache_without_its_checksum_record_is_refused_naming_the_record(
    tmp_path, monkeypatch, damage, message
):
    from runners import data as rdata
    from tests.test_data_plane import write_cifar

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "cache"))
    spec = {"name": "cifar10", "root": str(write_cifar(tmp_path / "cifar"))}
    pixels = Path(rdata.load_dataset(spec).pixels.filename)
    pixels.write_bytes(bytes(255 - b for b in pixels.read_bytes()))  # every pixel inverted...
    damage(pixels.parent / "meta.json")  # ...and the record that would tell
    with pytest.raises(ValueError, match=rf"^dataset: {message}; delete .* to rebuild it"):
        rdata.verify_cache(spec)


def test_a_ledger_entry_without_its_checksum_is_refused_not_reused(tmp_path):
    from runners.ledger import cell_fingerprint, fingerprint_parts, ledger_entry, ledger_path, verify_entry

    cfg = load_config({**GOOD, "storage": str(tmp_path)})
    cell = cfg.cells()[0]
    metrics = {"accuracy": 0.5, "loss": 1.0, "cell_fingerprint": cell_fingerprint(cfg, cell)}
    path = ledger_path(cfg, cell)
    path.parent.mkdir(parents=True)
    entry = ledger_entry(metrics, cell, fingerprint_parts(cfg, cell))
    path.write_text(json.dumps(entry))
    assert verify_entry(cfg, path, cell)["accuracy"] == 0.5
    edited = {k: v for k, v in entry.items() if k != "checksum"} | {"loss": 1e-4, "accuracy": 1.0}
    path.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match=rf"^ledger: {path} carries no checksum record; delete it"):
        verify_entry(cfg, path, cell)


def test_a_pool_edited_in_place_is_refused_naming_it(tmp_path):
    from runners.integrity import IntegrityError
    from runners.pools import Pool, load_pool, pool_paths, save_pool

    cfg = load_config({**GOOD, "storage": str(tmp_path)})
    pool = Pool({"images": np.zeros((4, 1, 8, 8), np.uint8), "labels": np.arange(4)}, {"size": 4})
    save_pool(cfg, "retrieval", 10, 0, pool)
    assert load_pool(cfg, "retrieval", 10, 0, 4)[1].tolist() == [0, 1, 2, 3]
    npz, _ = pool_paths(cfg, "retrieval", 10, 0)
    np.savez(npz, images=np.zeros((4, 1, 8, 8), np.uint8), labels=np.array([9, 9, 9, 9]))
    with pytest.raises(IntegrityError, match=rf"^pool: {npz} was modified after it was written"):
        load_pool(cfg, "retrieval", 10, 0, 4)


def test_a_generator_file_changed_after_training_is_refused(tmp_path):
    from diffusers import UNet2DModel

    from runners.generative import load_generator, save_generator
    from runners.integrity import IntegrityError

    model = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4,
    )  # fmt: skip
    folder = tmp_path / "generators" / "g"
    save_generator(model, folder, {"train_seconds": 1.0})
    assert load_generator(folder)[1] == {"train_seconds": 1.0}
    _zero_weights(folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(IntegrityError, match=r"^generator: .*diffusion_pytorch_model\.safetensors was modified"):
        load_generator(folder)


# ------------------------------------------------------------------------------------------ inert text

HOSTILE = {
    "html": "<img src=x onerror=alert(1)>",
    "newline": "gen\n# Heading injected\n- bullet",
    "latex": r"\immediate\write18{rm -rf x}&%_$#^~",
    "link": "![x](http://evil.example/y.png)|cell",
}


@pytest.fixture(scope="module")
def hostile_fit():
    """A planted cube whose synthetic sources carry hostile names, and its fit."""
    cube = scaling.simulate_cube(
        n_real=(50, 100, 200),
        n_synth=(0, 100, 200),
        seeds=3,
        sources={f"s{i}": {"exchange_rate": 2.0 + i} for i in range(len(HOSTILE))},
        random_state=3,
    )
    names = {f"s{i}": name for i, name in enumerate(HOSTILE.values())}
    cube = cube.assign_coords(source=[names.get(s, s) for s in cube["source"].values])
    return cube, scaling.fit_equivalence(cube, n_boot=50)


def _rendered_markdown(text: str) -> str:
    return "".join(text.split("```")[::2])  # what a Markdown viewer renders: the text outside code fences


def test_hostile_source_names_are_inert_in_the_report(hostile_fit, tmp_path):
    from scaling.report import write_report

    cube, _ = hostile_fit
    path = scaling.save_cube(cube, tmp_path / "c.nc")
    text = _rendered_markdown(write_report(path, tmp_path / "rep", n_boot=50).read_text())
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "](http://evil" not in text and "\\|cell" in text
    assert not any(line.startswith("# Heading injected") or line == "- bullet" for line in text.splitlines())
    assert text.count("\n# ") == 0 and text.startswith("# ")  # one title; no heading from a name


def test_hostile_source_names_are_inert_in_every_summary_renderer(hostile_fit):
    import html.parser

    _, res = hostile_fit
    for name in HOSTILE.values():
        summary = res[name].summary()
        md = summary.as_markdown()
        assert "<img" not in md and "](http" not in md and "\n# Heading" not in md
        latex = summary.as_latex()
        assert r"\immediate" not in latex.replace(r"\textbackslash{}immediate", "")
        assert not any(line.startswith("# ") or line == "- bullet" for line in latex.splitlines())

        class Tags(html.parser.HTMLParser):
            found: list = []

            def handle_starttag(self, tag, attrs):
                self.found.append(tag)

        parser = Tags()
        parser.found = []
        parser.feed(summary.as_html())
        assert "img" not in parser.found
    latex = res.to_latex()
    assert r"\textbackslash{}immediate\textbackslash{}write18\{rm -rf x\}\&\%\_\$\#" in latex


def test_hostile_source_names_are_inert_in_figure_titles(hostile_fit):
    import matplotlib

    matplotlib.use("Agg")
    from paper_figures import heatmap
    from paper_figures.style import source_label

    cube, _ = hostile_fit
    fig = heatmap.figure(cube)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert source_label(HOSTILE["latex"]) in titles and all("\n" not in t for t in titles)
    fig.canvas.draw()  # a '$' pair would be parsed as mathtext and fail to render here
    assert "\\$" in source_label(HOSTILE["latex"]) and "\n" not in source_label(HOSTILE["newline"])
    _, res = hostile_fit
    ax = res[HOSTILE["latex"]].plot()  # a result's own plot titles the source the same way
    ax.figure.canvas.draw()
    assert ax.get_title().startswith(source_label(HOSTILE["latex"]))


def test_a_report_removes_only_its_own_temp_files(tmp_path, cube_file):
    out = tmp_path / "rep"
    mine = [out / "notes" / "deep" / ".draft.tmp", out / ".video.mp4.part-3", out / ".x.tmp123", out / "a.tmp"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's")
    (out / temp_name("report", "killed")).mkdir()  # what a killed report of this package left
    assert _cli(["report", str(cube_file), "--out", str(out), "--n-boot", "50"]).returncode == 0
    assert all(p.read_text() == "the user's" for p in mine) and not _leftovers(out)


# ------------------------------------------------------------------------------------------ config bounds and forms


def test_yaml_merge_keys_are_read_as_yaml_defines_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: t\ndataset: {name: digits}\nsources: [real]\nn_real: [10]\nn_synth: [0, 10]\nseeds: [0]\n"
        "resources: &small {cpus_per_trial: 1, num_cpus: 2}\n"
        "classifier:\n  <<: {width: 8, steps: 20}\n  steps: 30\n"
    )
    cfg = load_config(path)
    assert cfg.width == 8 and cfg.classifier.steps == 30


@pytest.mark.parametrize(
    "setting, field",
    [("width", 100_000), ("steps", 10**12), ("batch_size", 10**9)],
    ids=["width", "steps", "batch_size"],
)
def test_a_classifier_too_large_to_fit_or_finish_is_refused_with_its_field_before_any_work(tmp_path, setting, field):
    with pytest.raises(ConfigError, match=rf"^classifier\.{setting}: one trial"):
        scaling.run_sweep({**GOOD, "storage": str(tmp_path), "classifier": {setting: field}}, quiet=True)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("uri", ["file://runs", "file://relruns/sub"])
def test_a_file_uri_with_a_host_is_refused_not_written_elsewhere(uri):
    with pytest.raises(ConfigError, match=r"^storage: .* names the host .*file:///abs/path"):
        load_config({**GOOD, "storage": uri})
    assert load_config({**GOOD, "storage": "file:///tmp/abs"}).run_dir == Path("/tmp/abs/t")


def test_a_busy_run_folder_names_the_live_holder_not_stale_text(tmp_path):
    held = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from runners.storage import run_lock\n"
         f"with run_lock(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert held.stdout.readline().strip() == "held"
        (tmp_path / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "last year"}))
        with pytest.raises(storage.RunFolderBusy, match=rf"in use by another sweep \(pid {held.pid} on "):
            with storage.run_lock(tmp_path):
                pass
    finally:
        held.kill()
        held.wait()


def test_a_cache_folder_that_cannot_be_written_exits_5_naming_it_before_ray_starts(tmp_path, monkeypatch, capsys):
    import yaml

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SCALING_CACHE", str(blocked / "cache"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "storage": str(tmp_path / "runs")}))
    assert main(["sweep", str(path), "--quiet"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SCALING_CACHE: cannot write here" in err[0] and str(blocked) in err[0], err
