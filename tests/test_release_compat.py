"""What the previous release wrote stays valid: shipped configs keep their fingerprints, and a run folder it
finished (tests/data/previous_release: digits, real + retrieval, 12 trials, written by release 869f054) resumes with
no cell recomputed."""

import json
import shutil

import numpy as np
from pathlib import Path

import scaling
from runners.checks import files_checked_later
from runners.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = Path(__file__).parent / "data" / "previous_release"
# load_config(path).fingerprint() of each shipped config under the previous release, read from PROBE: a config's
# dataset paths are made absolute, so the fingerprint of a config naming a folder depends on where it is read
PROBE = Path("/tmp/scaling-fingerprint-probe")
PREVIOUS_FINGERPRINTS = {
    "bloodmnist.yaml": "2200ea93b0c368b0",
    "cifar10.yaml": "d0027cc01348b15a",
    "digits.yaml": "3af1621ac55f0451",
    "digits_protocol.yaml": "0413df4db59f90d0",
    "digits_replace.yaml": "00e4864d03bda234",
    "digits_tuned.yaml": "fa354e9d1ef8a7e3",
    "imagenet100.yaml": "9eb92e2d4d14b97e",
}
NEW_CONFIGS = ("fashion_mnist.yaml", "fashion_mnist_gpu.yaml", "digits_methods.yaml")  # shipped since
# paper configs whose grid grew by the methods of both papers (named sources): a different sweep, so another
# fingerprint — but every cell of the previous config keeps its key, and a run folder of it grows into the new one
GROWN = ("cifar10.yaml", "imagenet100.yaml")
PREVIOUS_CONFIGS = Path(__file__).parent / "data" / "previous_configs"  # those configs as the previous release shipped


def _load(path):
    with files_checked_later():  # paper datasets need not be in place to be fingerprinted
        return load_config(path)


def test_every_shipped_config_keeps_its_fingerprint(monkeypatch):
    shutil.copytree(ROOT / "configs", PROBE / "configs", dirs_exist_ok=True)
    monkeypatch.chdir(PROBE)
    now = {name: _load(Path("configs") / name).fingerprint() for name in PREVIOUS_FINGERPRINTS if name not in GROWN}
    assert now == {k: v for k, v in PREVIOUS_FINGERPRINTS.items() if k not in GROWN}
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == sorted({*PREVIOUS_FINGERPRINTS, *NEW_CONFIGS})


def test_grown_paper_configs_keep_every_previous_cell_and_extend_its_run_folder(monkeypatch, tmp_path):
    from runners.ledger import _check_extension, cell_fingerprint

    shutil.copytree(ROOT / "configs", PROBE / "configs", dirs_exist_ok=True)
    shutil.copytree(PREVIOUS_CONFIGS, PROBE / "previous", dirs_exist_ok=True)
    monkeypatch.chdir(PROBE)
    for name in GROWN:
        before, after = _load(Path("previous") / name), _load(Path("configs") / name)
        assert before.fingerprint() == PREVIOUS_FINGERPRINTS[name]  # the stored file is the previous release's
        assert set(before.sources) < set(after.sources) and after.fixed_fingerprint() == before.fixed_fingerprint()
        keys = {json.dumps(c, sort_keys=True) for c in after.cells()}
        for cell in before.cells():
            assert json.dumps(cell, sort_keys=True) in keys
            assert cell_fingerprint(after, cell) == cell_fingerprint(before, cell), (name, cell)
        stamp = {
            "fixed": before.fixed_fingerprint(),
            "config": json.loads(json.dumps(before.as_written(), default=list)),
        }
        _check_extension(after, stamp)  # the previous run folder is extended, not refused


def test_the_previous_releases_run_folder_resumes_with_no_cell_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "fresh-node"))  # no judge, no dataset cache on this node
    run_dir = tmp_path / "previous"
    shutil.copytree(PREVIOUS, run_dir, ignore=shutil.ignore_patterns("config.yaml"))
    ledger = {p.name: p.read_bytes() for p in (run_dir / "ledger").glob("*.json")}
    pools = {p.name: p.read_bytes() for p in (run_dir / "pools").iterdir()}
    stamp = json.loads((run_dir / "sweep.json").read_text())
    cfg = load_config(PREVIOUS / "config.yaml", storage=str(tmp_path))
    assert cfg.fingerprint() == stamp["fingerprint"]
    cube = scaling.open_cube(scaling.run_sweep(cfg, quiet=True))
    assert not (run_dir / "executions.log").exists()  # no trial ran
    assert int((cube["status"] == 1).sum()) == cube["status"].size == 16
    assert {p.name: p.read_bytes() for p in (run_dir / "ledger").glob("*.json")} == ledger
    # these pools predate checksums, so they cannot be verified: neither rebuilt nor audited while no trial needs them
    assert {p.name: p.read_bytes() for p in (run_dir / "pools").iterdir()} == pools
    assert np.isnan(cube["pool_copy_share"]).all()
    # the judge copy carried no checksum: it was kept because it is this node's judge or gives its recorded accuracy
    judge = json.loads(next((run_dir / "judge").glob("*.json")).read_text())
    assert len(judge["sha256"]) == 64


def test_on_the_digits_cube_fit_one_source_and_the_report_print_the_same_numbers(tmp_path, capsys):
    """tests/data/digits_results.nc is the cube `scaling sweep configs/digits.yaml` wrote (2-core CPU, 5 seeds)."""
    from scaling.cli import main
    from scaling.report import write_report

    cube_path = Path(__file__).parent / "data" / "digits_results.nc"
    assert main(["fit", str(cube_path), "--source", "closed_set"]) == 0
    printed = capsys.readouterr().out
    cube = scaling.open_cube(cube_path)
    alone = scaling.fit_equivalence(cube, "closed_set").answer_rows()
    together = scaling.fit_equivalence(cube)["closed_set"].answer_rows()
    assert [(r["estimate"], r["lower"], r["upper"], r["verdict"]) for r in alone] == [
        (r["estimate"], r["lower"], r["upper"], r["verdict"]) for r in together
    ]
    assert f"rho = {alone[0]['estimate']:.4g} [{alone[0]['lower']:.4g}, inf]" in printed
    report = write_report(cube_path, tmp_path / "report", n_boot=200).read_text()
    lower = f"{alone[0]['lower']:.3g}"  # the closed_set line of n_real = 25 (every source has one)
    line = next(x for x in report.splitlines() if x.startswith("  - n_real = 25:") and f"[{lower}, " in x)
    assert f"rho {alone[0]['estimate']:.3g} [{alone[0]['lower']:.3g}, ∞]" in line
