"""The Ray Tune sweep on digits: a valid cube, exact resume after the driver is killed."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

import scaling
from runners.memorisation import AUDIT_FIELDS
from runners.config import ConfigError, load_config

pytestmark = pytest.mark.slow  # Ray sweeps and generator training: the fast lane is -m "not slow"

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "sources": ["real"],
    "n_real": [10, 30],
    "n_synth": [0, 10, 30],
    "seeds": [0, 1],
    "classifier": {"width": 8, "steps": 15, "batch_size": 32},
    "resources": {"cpus_per_trial": 1, "num_cpus": 2},
}


@pytest.fixture(scope="module", autouse=True)
def _own_ray_processes():
    """Every Ray this module starts (in process, in subprocess drivers, in simulated clusters) lives under its own
    temp root; afterwards only processes under that root are killed. ``ray stop --force`` would also kill a
    user's sweep running beside the tests."""
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = root
    yield
    import ray

    ray.shutdown()  # the module's shared Ray (see _one_ray)
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old
    for pid in filter(str.isdigit, os.listdir("/proc")):  # Linux; leftovers of SIGKILLed drivers
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if root in cmdline and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _one_ray(request, _own_ray_processes):
    """In-process sweeps of this module share one Ray: started here once, reused by ``run_sweep`` (which starts
    and stops Ray only when none is running) instead of each paying Ray's start and stop (~5 s). Tests marked
    ``fresh_ray`` get none: fault injection through the environment reaches only workers started after it is
    set, and a simulated cluster must start its own. Drivers in subprocesses always start their own Ray."""
    import ray

    if request.node.get_closest_marker("fresh_ray"):
        ray.shutdown()
    elif not ray.is_initialized():
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR"
        )
    yield


def _executions(run_dir: Path) -> Counter:
    log = run_dir / "executions.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_sweep_writes_a_valid_cube_and_a_rerun_computes_nothing(tmp_path):
    cfg = {**TINY, "storage": str(tmp_path)}
    path = scaling.run_sweep(cfg, quiet=True)
    cube = scaling.open_cube(path)
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    acc = cube["accuracy"].sel(source="real")
    assert float(acc.sel(n_synth=30).mean()) > float(acc.sel(n_synth=0).mean())  # more real data helps
    assert cube["per_class_accuracy"].sizes["class"] == 10
    prov = json.loads(cube.attrs["provenance"])
    assert prov["config"]["name"] == "tiny" and prov["torch"] and prov["ray"]
    before = _executions(tmp_path / "tiny")
    assert sum(before.values()) == 12 and max(before.values()) == 1
    scaling.run_sweep(cfg, quiet=True)
    assert _executions(tmp_path / "tiny") == before  # nothing ran again


def test_a_different_config_cannot_reuse_the_run_folder(tmp_path):
    cfg = {**TINY, "storage": str(tmp_path), "seeds": [0]}
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "sweep.json").write_text(json.dumps({"fingerprint": "something-else"}))
    with pytest.raises(ConfigError, match="^storage"):
        scaling.run_sweep(cfg, quiet=True)


def _held(tmp_path: Path, cell: str) -> tuple[dict, Path]:
    """Env that makes ``cell``'s trial wait for a file (runners.trial.hold_if_asked): while it waits the
    sweep cannot finish, so a kill or a signal lands mid-sweep by construction, not by timing."""
    release = tmp_path / "release"
    return {**os.environ, "SCALING_HOLD_CELL": f"{cell}:{release}"}, release


def _wait_for(predicate, proc, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the sweep ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (Linux /proc), parents before children."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(pid))
    tree, i = [root], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL a driver and every process it started (its Ray node: GCS, raylet, trial workers), as a crashed
    machine would lose them, and wait until they are gone. The tree is frozen (SIGSTOP) first, so no worker can
    spawn, finish a trial or upload a ledger entry between being found and being killed; a process group alone
    misses Ray workers that left the group, and their titles ("ray::...") no longer say where they came from."""
    frozen: list[int] = []
    while new := [p for p in _descendants(proc.pid) if p not in frozen]:
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        frozen += new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while not all(_gone(pid) for pid in frozen):
        assert time.time() < deadline, "the killed node's processes did not go away"
        time.sleep(0.05)


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "storage": str(tmp_path / "interrupted")}))
    run_dir = tmp_path / "interrupted" / "tiny"
    env, release = _held(tmp_path, "real-r30-s30-seed1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(
        lambda: release.with_suffix(".held").exists() and sum(_executions(run_dir).values()) >= 3,
        proc,
        "3 trials finished and the held one started",
    )
    _kill_node(proc)  # the driver dies mid-sweep with its Ray node, as on a crash
    done_before = _executions(run_dir)
    assert 3 <= sum(done_before.values()) < 12 and "real-r30-s30-seed1" not in done_before
    path = scaling.run_sweep(cfg_path, quiet=True)
    runs = _executions(run_dir)
    assert max(runs.values()) == 1, f"a finished trial ran twice: {runs}"
    assert sum(runs.values()) == 12
    resumed = scaling.open_cube(path)
    fresh = scaling.open_cube(scaling.run_sweep({**TINY, "storage": str(tmp_path / "fresh")}, quiet=True))
    np.testing.assert_allclose(resumed["accuracy"].values, fresh["accuracy"].values)  # deterministic on CPU
    np.testing.assert_array_equal(resumed["status"].values, fresh["status"].values)


@pytest.mark.fresh_ray
def test_a_failing_trial_is_retried_then_recorded_failed_and_the_sweep_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_FAIL_CELLS", "real-r10-s30-seed1")  # Ray workers inherit the driver's env
    cfg = {**TINY, "storage": str(tmp_path), "max_failures": 1}
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    bad = dict(source="real", n_real=10, n_synth=30, seed=1)
    assert int(cube["status"].sel(bad)) == 2 and np.isnan(float(cube["accuracy"].sel(bad)))
    assert (tmp_path / "tiny" / "failures.log").read_text().split() == ["real-r10-s30-seed1"] * 2  # 1 + 1 retry
    assert int((cube["status"] == 1).sum()) == cube["status"].size - 1


@pytest.mark.fresh_ray
def test_cluster_runs_trials_on_both_nodes_and_survives_losing_the_worker(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    env, release = _held(tmp_path, "real-r30-s30-seed1")
    monkeypatch.setenv("SCALING_HOLD_CELL", env["SCALING_HOLD_CELL"])  # the nodes' workers inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        cfg_path = tmp_path / "tiny.yaml"
        slow = {
            **TINY,
            "classifier": {"width": 8, "steps": 120, "batch_size": 32},
            "storage": str(tmp_path),
            "max_failures": 3,
        }
        cfg_path.write_text(yaml.safe_dump(slow))
        run_dir = tmp_path / "tiny"
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet", "--address", cluster.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def nodes():
            # "[!.]": not the temp file of an entry being written
            return {json.loads(p.read_text())["node"] for p in (run_dir / "ledger").glob("[!.]*.json")}

        _wait_for(
            lambda: len(nodes()) == 2 and release.with_suffix(".held").exists(),
            proc,
            "trials finished on both nodes and the held one started",
        )
        cluster.remove_node(worker)  # the worker node dies mid-sweep (the held trial has not finished)
        assert "real-r30-s30-seed1" not in _executions(run_dir)
        release.touch()  # a held trial on the head goes on; one on the lost worker is retried without holding
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()[-2000:]
        cube = scaling.open_cube(run_dir / "results.nc")
        assert int((cube["status"] == 1).sum()) == cube["status"].size  # every cell done
    finally:
        cluster.shutdown()


ALL_SOURCES = {
    **TINY,
    "name": "four",
    "sources": ["real", "closed_set", "open_set", "retrieval"],
    "n_real": [20],
    "n_synth": [0, 10, 20],
    "source_options": {
        "closed_set": {"block_out_channels": [8, 16], "train_steps": 10, "batch_size": 8, "sample_steps": 3},
        "open_set": {"block_out_channels": [8, 16], "train_steps": 10, "batch_size": 8, "sample_steps": 3},
    },
}


def test_all_four_sources_run_as_ray_tasks_and_a_rerun_trains_no_generator(tmp_path):
    cfg = {**ALL_SOURCES, "storage": str(tmp_path)}
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    assert list(cube["source"].values) == ["real", "closed_set", "open_set", "retrieval"]
    assert (cube["source_seconds"].sel(source="closed_set", n_synth=20) > 0).all()
    assert (cube["pool_label_accuracy"] >= 0).all() and np.isfinite(cube["pool_frechet_distance"]).all()
    assert np.isfinite(cube["pool_label_noise"].sel(source="retrieval")).all()
    # the memorisation audit of every pool: real images copy nothing of the base; each source says what it compared
    assert np.isfinite(cube["pool_copy_share"]).all() and np.isfinite(cube["pool_nn_distance_ratio"]).all()
    assert float(cube["pool_copy_share"].sel(source="real").max()) < 0.1
    assert (cube["pool_copy_share_low"] <= cube["pool_copy_share"]).all()
    assert (cube["pool_copy_share"] <= cube["pool_copy_share_high"]).all()
    assert json.loads(cube["pool_copy_share"].attrs["reference"]) == {
        "real": "base subset",
        "closed_set": "training set (the base subset)",
        "open_set": "training set (every non-test image)",
        "retrieval": "base subset",
    }
    run_dir = tmp_path / "four"
    generators = sorted((run_dir / "generators").iterdir())
    assert len(generators) == 3  # a closed-set UNet per (n_real, seed) = 2, one open-set UNet
    stamps = [os.stat(g / "diffusion_pytorch_model.safetensors").st_mtime_ns for g in generators]
    (run_dir / "ledger" / "closed_set-r20-s20-seed0.json").unlink()  # one trial lost: rerun it, train nothing
    scaling.run_sweep(cfg, quiet=True)
    assert [os.stat(g / "diffusion_pytorch_model.safetensors").st_mtime_ns for g in generators] == stamps
    assert _executions(run_dir)["closed_set-r20-s20-seed0"] == 2 and sum(_executions(run_dir).values()) == 18 + 1
    _check_features_and_figures(tmp_path, cube)


def test_named_sources_of_one_kind_run_as_ray_tasks_sharing_their_pool_and_the_open_set_generator(tmp_path):
    """Two names of open_set with the same options read one pool (so the same classifier seed gives the same
    accuracies), and img2img and personalised start from that open-set generator: it is trained once."""
    gen = ALL_SOURCES["source_options"]["open_set"]
    cfg = {
        **ALL_SOURCES,
        "name": "named",
        "storage": str(tmp_path),
        "source_options": None,  # written under sources instead
        "sources": {
            "real": None,
            "open_set": gen,
            "again": {"kind": "open_set", **gen},
            "boomerang": {"kind": "img2img", "strength": 0.5, **gen},
            "personal": {"kind": "personalised", "adapt_steps": 3, **gen},
        },
    }
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    assert list(cube["source"].values) == ["real", "open_set", "again", "boomerang", "personal"]
    np.testing.assert_array_equal(
        cube["accuracy"].sel(source="again").values, cube["accuracy"].sel(source="open_set").values
    )
    assert json.loads(cube.attrs["source_kinds"])["boomerang"] == "img2img"
    assert json.loads(cube.attrs["shared_generator_sources"]) == ["open_set", "again", "boomerang", "personal"]
    run_dir = tmp_path / "named"
    pools = sorted(p.name.split("-")[0] for p in (run_dir / "pools").glob("*.json"))
    assert pools == ["img2img"] * 2 + ["open_set"] * 2 + ["personalised"] * 2 + ["real"] * 2  # again: none of its own
    # the open-set UNet once, and one adaptation per (n_real, seed)
    assert len(list((run_dir / "generators").iterdir())) == 1 + 2


def _check_features_and_figures(tmp_path, cube):
    """The domain-gap and sample figures read only the features.nc written beside the cube."""
    import xarray as xr

    from paper_figures import domain_gap, samples
    from scaling.report import render_figures

    feats = xr.open_dataset(tmp_path / "four" / "features.nc", engine="h5netcdf").load()
    assert feats["features"].sizes["item"] == 256 and np.isfinite(feats["real_features"].values).all()
    d = domain_gap.embedding_data(feats, cube)
    assert set(d["pools"]) == {"closed_set", "open_set", "retrieval"}
    assert d["pools"]["retrieval"]["pca"].shape == (20, 2)  # max(n_synth) = 20 pool images
    assert 0 <= d["pools"]["closed_set"]["domain_accuracy"] <= 1
    fig = samples.figure(feats)
    assert len(fig.axes) == 4 and fig.axes[0].images[0].get_array().shape[0] == 10 * 9  # 10 classes of 8+1 px
    paths = render_figures(tmp_path / "four" / "results.nc", tmp_path / "figs", n_boot=50)
    assert {"domain_gap", "samples", "equivalence"} <= set(paths)


@pytest.mark.fresh_ray
def test_a_source_job_that_keeps_failing_stops_the_sweep_with_one_clear_error_and_exit_3(tmp_path, monkeypatch, capsys):
    from scaling.cli import main

    monkeypatch.setenv("SCALING_FAIL_CELLS", "pool:retrieval-r20-seed1")
    cfg = {
        **ALL_SOURCES,
        "sources": ["real", "retrieval"],
        "source_options": {},
        "storage": str(tmp_path),
        "max_failures": 0,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "retrieval pool for n_real=20 seed=1 failed" in err[0], err
    assert not (tmp_path / "four" / "executions.log").exists()  # no trial ran on a missing pool


@pytest.mark.fresh_ray
def test_a_sweep_whose_every_cell_failed_exits_4(tmp_path, monkeypatch, capsys):
    from scaling.cli import main

    monkeypatch.setenv("SCALING_FAIL_CELLS", "real-r10-s0-seed0,real-r10-s0-seed1")
    cfg = {**TINY, "n_real": [10], "n_synth": [0], "storage": str(tmp_path), "max_failures": 0}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 4
    assert "every cell failed" in capsys.readouterr().err
    cube = scaling.open_cube(tmp_path / "tiny" / "results.nc")
    assert (cube["status"] == 2).all()  # both recorded failed, none pending


def test_two_configs_started_together_into_one_storage_do_not_mix(tmp_path):
    """The race that used to mix 5 cells of each: one sweep gets the run folder, the other is refused."""
    procs = []
    for seeds in ([0, 1], [5, 6]):
        path = tmp_path / f"c{seeds[0]}.yaml"
        path.write_text(yaml.safe_dump({**TINY, "n_real": [10], "seeds": seeds, "storage": str(tmp_path / "runs")}))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "scaling.cli", "sweep", str(path), "--quiet"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "in use by another sweep" in loser or "holds a different sweep" in loser, loser
    cube = scaling.open_cube(tmp_path / "runs" / "tiny" / "results.nc")
    winner_seeds = [0, 1] if results[0][0] == 0 else [5, 6]
    assert cube["seed"].values.tolist() == winner_seeds
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    ledger = {json.loads(p.read_text())["seed"] for p in (tmp_path / "runs" / "tiny" / "ledger").glob("*.json")}
    assert ledger == set(winner_seeds)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_exits_130_with_a_resume_line_and_the_rerun_finishes_the_rest(tmp_path, signum):
    """SIGINT is Ctrl-C; SIGTERM is what SLURM, Kubernetes and ``timeout`` send: both stop the sweep cleanly."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "storage": str(tmp_path / "runs")}))
    run_dir = tmp_path / "runs" / "tiny"
    env, release = _held(tmp_path, "real-r30-s30-seed1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for(
        lambda: release.with_suffix(".held").exists() and sum(_executions(run_dir).values()) >= 2,
        proc,
        "2 trials finished and the held one started",
    )
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "rerun the same command to resume" in err.decode()
    cube = scaling.open_cube(run_dir / "results.nc")  # saved on the way out: every finished cell is in it
    assert int((cube["status"] == 1).sum()) >= 2
    from runners.storage import run_lock

    with run_lock(run_dir):  # released
        pass
    if signum == signal.SIGTERM:
        return  # what a rerun resumes does not depend on the signal: checked once, after Ctrl-C
    before = _executions(run_dir)
    cube = scaling.open_cube(scaling.run_sweep(cfg_path, quiet=True))
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    assert max(_executions(run_dir).values()) == 1 and sum(before.values()) < 12


def test_two_real_sweeps_merge_into_one_cube_that_reports(tmp_path):
    """Two sweeps of the same design over different seeds (two run folders), merged and reported."""
    from scaling.report import write_report

    design = {**TINY, "sources": ["real", "retrieval"], "n_real": [10, 30, 60], "n_synth": [0, 20, 40]}
    a = scaling.open_cube(
        scaling.run_sweep({**design, "name": "a", "seeds": [0, 1], "storage": str(tmp_path)}, quiet=True)
    )
    b = scaling.open_cube(
        scaling.run_sweep({**design, "name": "b", "seeds": [2, 3], "storage": str(tmp_path)}, quiet=True)
    )
    # the judge trained once on this node: run b holds a copy (its measured training time is a's to the last digit)
    judges = [sorted((tmp_path / name / "judge").glob("*.json")) for name in ("a", "b")]
    assert len(judges[0]) == 1 and json.loads(judges[0][0].read_text()) == json.loads(judges[1][0].read_text())
    merged = scaling.merge_cubes(a, b)
    assert merged.sizes["seed"] == 4 and int((merged["status"] == 1).sum()) == merged["status"].size
    assert merged["pool_label_noise"].dims == ("source", "n_real", "seed")
    path = scaling.save_cube(merged, tmp_path / "merged.nc")
    text = write_report(path, tmp_path / "report", n_boot=60).read_text()
    assert "## Answer" in text and "## Pool quality" in text and "**retrieval**" in text


def test_a_protocol_sweep_writes_a_protocol_dimension_and_shares_real_cells(tmp_path):
    cfg = {
        **TINY,
        "name": "proto",
        "sources": ["real", "retrieval"],
        "n_real": [10, 30],
        "n_synth": [0, 20],
        "seeds": [0, 1],
        "storage": str(tmp_path),
        "classifier": {**TINY["classifier"], "budget": ["steps", "epochs"], "epochs": 5, "synth_weight": [None, 0.5]},
    }
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    assert list(cube["protocol"].values) == ["steps", "steps-w0.5", "epochs", "epochs-w0.5"]
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    runs = _executions(tmp_path / "proto")
    assert sum(runs.values()) == 2 * 2 * 2 * (1 + 1 + 2) and max(runs.values()) == 1  # base, real, retrieval x 2 w
    acc = cube["accuracy"]
    # real and base-only cells are one training run per budget, shared by every weight
    np.testing.assert_array_equal(
        acc.sel(source="real", protocol="steps"), acc.sel(source="real", protocol="steps-w0.5")
    )
    np.testing.assert_array_equal(acc.sel(n_synth=0, protocol="epochs"), acc.sel(n_synth=0, protocol="epochs-w0.5"))
    # the weight changes the retrieval cells (it changes which images the batches see)
    assert not np.array_equal(
        acc.sel(source="retrieval", n_synth=20, protocol="steps"),
        acc.sel(source="retrieval", n_synth=20, protocol="steps-w0.5"),
    )
    assert json.loads(cube.attrs["protocol"])["budget"] == ["steps", "epochs"]


def test_recipe_check_tunes_per_size_and_a_sweep_trains_with_the_chosen_values(tmp_path):
    from runners.recipe import tune_recipe

    cfg = {**TINY, "name": "tuned", "seeds": [0], "storage": str(tmp_path)}
    path = tune_recipe(cfg, lrs=[0.002, 0.02], weight_decays=[5e-4], seeds=[0], quiet=True)
    table = json.loads(path.read_text())
    assert sorted(map(int, table["sizes"])) == [10, 20, 30, 40, 60]  # every total of the real curve
    assert len(table["trials"]) == 5 * 2 and all(r["n_val"] >= 1 for r in table["trials"])
    for size, v in table["sizes"].items():  # the choice is the best validation accuracy of that size
        accs = {r["lr"]: r["val_accuracy"] for r in table["trials"] if r["n_total"] == int(size)}
        assert v["val_accuracy"] == max(accs.values()) and accs[v["lr"]] == v["val_accuracy"]
    clf = {k: v for k, v in TINY["classifier"].items()}
    run = {**cfg, "name": "tuned-run", "classifier": {**clf, "tuned_recipe": str(path)}}
    cube = scaling.open_cube(scaling.run_sweep(run, quiet=True))
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    entry = json.loads((tmp_path / "tuned-run" / "ledger" / "real-r10-s30-seed0.json").read_text())
    assert entry["lr"] == table["sizes"]["40"]["lr"]  # 10 base + 30 added = 40 images


def test_a_run_grows_by_a_seed_and_an_n_synth_value_and_only_new_cells_run(tmp_path):
    small = {**TINY, "storage": str(tmp_path / "grown")}
    scaling.run_sweep(small, quiet=True)
    run_dir = tmp_path / "grown" / "tiny"
    assert sum(_executions(run_dir).values()) == 12
    # a seed, a value inside the range and one above the largest (its pools grow, keeping their prefixes)
    extended = {**small, "seeds": [0, 1, 2], "n_synth": [0, 10, 20, 30, 40]}  # 2 n_real x 5 n_synth x 3 seeds
    grown = scaling.open_cube(scaling.run_sweep(extended, quiet=True))
    runs = _executions(run_dir)
    assert sum(runs.values()) == 30 and max(runs.values()) == 1, runs  # the 18 new cells ran, the old 12 did not
    assert grown.sizes["seed"] == 3 and grown.sizes["n_synth"] == 5
    fresh = scaling.open_cube(scaling.run_sweep({**extended, "storage": str(tmp_path / "fresh")}, quiet=True))
    np.testing.assert_array_equal(grown["accuracy"].values, fresh["accuracy"].values)  # as if run in one go
    print(f"extend: first run 12 executions, extension {sum(runs.values()) - 12} (of 30 cells)")
    # what would change finished cells is refused, naming the field, before anything runs
    with pytest.raises(ConfigError, match="^classifier"):
        scaling.run_sweep({**extended, "classifier": {**TINY["classifier"], "steps": 16}}, quiet=True)
    assert sum(_executions(run_dir).values()) == 30


def test_adaptive_rounds_extend_one_run_folder_and_record_their_decisions(tmp_path):
    from scaling.adaptive import run_adaptive

    cfg = {
        **TINY,
        "sources": ["real", "retrieval"],
        "storage": str(tmp_path),
        "seeds": [0, 1, 2, 3, 4],
        "name": "adapt",
    }
    lines = []
    out = run_adaptive(
        cfg, ("retrieval", 30, 30), width=1.000001, start=3, step=1, max_seeds=4, quiet=True, out=lines.append
    )
    rounds = out["rounds"]
    assert [r["seeds"] for r in rounds] == [3, 4] and rounds[-1]["decision"].startswith("stop: 4 seeds")
    assert rounds[0]["decision"].startswith("+1 seed")
    run_dir = tmp_path / "adapt"
    runs = _executions(run_dir)
    per_seed = 2 * (1 + 2 * 2)  # n_real x (base + n_synth>0 x (real, retrieval))
    assert sum(runs.values()) == 4 * per_seed and max(runs.values()) == 1  # round 2 ran only the new seed's cells
    assert json.loads((run_dir / "adaptive.json").read_text())["rounds"] == rounds
    assert len(lines) == 2 and "round 2: 4 seeds" in lines[1]
    with pytest.raises(ConfigError, match="^--target"):
        run_adaptive(cfg, ("closed_set", 30, 30), width=2.0, quiet=True)


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # how a shell script starts a background job (`cmd &`)


@pytest.mark.parametrize(
    "phase, hold, signum",
    [
        ("checks", "driver:checks", signal.SIGTERM),
        ("sources", "pool:retrieval-r10-seed0", signal.SIGTERM),
        ("trials", "real-r10-s0-seed0", signal.SIGHUP),
    ],
    ids=["checks-sigterm", "sources-sigterm", "trials-sighup"],
)
def test_a_background_sweep_stops_the_same_way_in_every_phase(tmp_path, phase, hold, signum):
    """A job started by a script (SIGINT ignored) gets SIGTERM from a scheduler or SIGHUP from a closed terminal
    while the driver checks the run folder, while sources are prepared, or while trials run: exit 130, the
    resume line, and (once Ray ran) the cube as far as it got."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "sources": ["real", "retrieval"], "storage": str(tmp_path / "runs")}))
    env, release = _held(tmp_path, hold)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_ignore_sigint,
    )
    _wait_for(release.with_suffix(".held").exists, proc, f"the {phase} phase held")
    started = time.time()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "rerun the same command to resume" in err.decode() and time.time() - started < 60
    run_dir = tmp_path / "runs" / "tiny"
    if phase != "checks":
        cube = scaling.open_cube(run_dir / "results.nc")
        assert int((cube["status"] == 0).sum()) > 0  # pending cells: the rerun computes them
    from runners.storage import run_lock

    with run_lock(run_dir):  # released
        pass


@pytest.mark.fresh_ray
def test_a_full_disk_inside_a_source_job_exits_5_naming_the_pool(tmp_path, monkeypatch, capsys):
    from runners.pools import pool_paths
    from scaling.cli import main

    monkeypatch.setenv("SCALING_FAIL_CELLS", "pool:retrieval-r10-seed0")
    monkeypatch.setenv("SCALING_FAIL_ERRNO", "28")  # OSError(28) without a path, as a full disk raises it
    cfg = {**TINY, "sources": ["real", "retrieval"], "storage": str(tmp_path), "max_failures": 0}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["sweep", str(path), "--quiet"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    npz = pool_paths(load_config(cfg), "retrieval", 10, 0)[0]
    assert len(err) == 1 and "No space left on device" in err[0] and str(npz) in err[0], err


def test_pools_written_before_the_memorisation_audit_are_audited_and_no_cell_reruns(tmp_path):
    cfg = {**TINY, "name": "audit", "sources": ["real", "retrieval"], "n_real": [10], "storage": str(tmp_path)}
    scaling.run_sweep(cfg, quiet=True)
    run_dir = tmp_path / "audit"
    audited = {}
    for meta_path in (run_dir / "pools").glob("*.json"):  # as a version without the audit wrote them
        meta = json.loads(meta_path.read_text())
        audited[meta_path.name] = {k: meta.pop(k) for k in AUDIT_FIELDS}
        meta_path.write_text(json.dumps(meta))
    arrays = {p.name: p.read_bytes() for p in (run_dir / "pools").glob("*.npz")}
    runs = sum(_executions(run_dir).values())
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    assert sum(_executions(run_dir).values()) == runs  # no trial ran again
    assert {p.name: p.read_bytes() for p in (run_dir / "pools").glob("*.npz")} == arrays
    for meta_path in (run_dir / "pools").glob("*.json"):  # the same scores, written back beside the old record
        meta = json.loads(meta_path.read_text())
        assert {k: meta[k] for k in AUDIT_FIELDS} == audited[meta_path.name]
    assert np.isfinite(cube["pool_copy_share"]).all()
