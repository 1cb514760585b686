"""GPU placement without a GPU: Ray with two logical GPUs runs a sweep whose trials ask for a quarter of a GPU and
whose source jobs ask for a whole one. On a machine without CUDA the tensors stay on the CPU (torch finds no
device); Ray still schedules and assigns the logical GPUs exactly as it would real ones. Checked from the runs' own
records (ledger entries of trials, pool meta of source jobs), and against what the dry run prices."""

import json
import os
import tempfile
from pathlib import Path

import pytest
import ray
import yaml

import scaling
from runners.checks import files_checked_later
from runners.config import load_config
from runners.plan import placement_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "packed",
    "dataset": {"name": "digits"},
    "sources": ["real", "closed_set"],
    "n_real": [25, 50],
    "n_synth": [0, 20],
    "seeds": [0, 1],
    # fp32: a GPU config resolves to bf16, whose autocast on this CPU is several times slower (what is checked here
    # is where the trials ran, not their precision)
    "classifier": {"width": 8, "steps": 60, "batch_size": 32, "precision": "fp32"},
    "source_options": {
        "closed_set": {"preset": "tiny", "train_steps": 20, "sample_steps": 2, "sample_batch": 20, "precision": "fp32"}
    },
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25, "gpus_per_source_job": 1, "num_cpus": 8},
}


def _max_overlap(spans) -> int:
    """The most intervals open at one moment."""
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    cfg_path = tmp / "packed.yaml"
    cfg_path.write_text(yaml.safe_dump({**CONFIG, "storage": str(tmp / "runs")}))
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rg", dir="/tmp")  # short socket paths, our own processes
    # 8 logical CPUs and 2 logical GPUs on this machine: the sweep uses the Ray session it finds
    ray.init(num_cpus=8, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        path = scaling.run_sweep(str(cfg_path), quiet=True)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
    run_dir = Path(path).parent
    trials = [json.loads(p.read_text()) for p in (run_dir / "ledger").glob("*.json")]
    pools = [json.loads(p.read_text()) for p in (run_dir / "pools").rglob("*.json") if "closed_set" in p.read_text()]
    return load_config(str(cfg_path)), trials, pools


def test_every_trial_saw_the_gpu_ray_assigned_it(packed_run):
    _, trials, _ = packed_run
    assert len(trials) == 12
    for t in trials:
        assert len(t["gpu_ids"]) == 1 and t["cuda_visible_devices"] == t["gpu_ids"][0], t
        assert t["assigned"] == {"CPU": 1.0, "GPU": 0.25}
    assert {t["gpu_ids"][0] for t in trials} == {"0", "1"}  # both logical GPUs were used


def test_up_to_four_trials_shared_one_gpu_and_up_to_eight_ran_at_once(packed_run):
    _, trials, _ = packed_run
    spans = [(t["started_at"], t["ended_at"]) for t in trials]
    at_once = _max_overlap(spans)
    assert 3 <= at_once <= 8, at_once  # more than one trial per GPU, never more than 2 GPUs / 0.25
    for gpu in ("0", "1"):
        assert _max_overlap([(t["started_at"], t["ended_at"]) for t in trials if t["gpu_ids"] == [gpu]]) <= 4


def test_source_jobs_held_a_whole_logical_gpu(packed_run):
    _, _, pools = packed_run
    assert len(pools) == 4  # one closed-set generator per (n_real, seed)
    for meta in pools:
        assert meta["assigned"]["GPU"] == 1.0 and len(meta["gpu_ids"]) == 1, meta


def test_the_dry_run_prices_the_placement_the_sweep_asked_for(packed_run):
    cfg, trials, pools = packed_run
    priced = placement_of(cfg)
    assert priced["trial"] == trials[0]["assigned"]
    assert priced["source_job"] == pools[0]["assigned"]


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_for_every_shipped_config_the_dry_run_prices_the_gpus_the_sweep_asks_for(config):
    """A source job on a GPU config gets a whole GPU unless gpus_per_source_job says otherwise — and the dry
    run's cost table (its wall time on 8 GPUs) is computed with exactly that per-job request."""
    import io

    from runners.costs import cost_table_lines
    from runners.plan import print_plan, stages

    with files_checked_later():
        cfg = load_config(str(ROOT / "configs" / config))
    res = yaml.safe_load((ROOT / "configs" / config).read_text()).get("resources") or {}  # as the user wrote it
    expected = (
        float(res["gpus_per_source_job"])
        if res.get("gpus_per_source_job") is not None
        else (1.0 if float(res.get("gpus_per_trial") or 0) > 0 else 0.0)
    )
    assert cfg.source_job_resources["GPU"] == expected
    assert cfg.trial_resources["GPU"] == float(res.get("gpus_per_trial") or 0)
    if cfg.trial_resources["GPU"] == 0:
        return  # a CPU config: no GPU table
    out = io.StringIO()
    print_plan(cfg, out, gpus=8)
    for row in cost_table_lines(stages(cfg, "gpu"), "gpu", 8.0, expected):
        assert row in out.getvalue(), row
