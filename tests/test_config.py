"""Bad configs are refused up front, with the field named, and nothing is written."""

import copy

import pytest

from runners.config import ConfigError, load_config
from runners.sweep import run_sweep
from tests.valid_config import VALID

GOOD = VALID


def _with(path, value):
    cfg = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


BAD = [
    ("n_real", [-5, 10], "n_real"),
    ("n_real", [], "n_real"),
    ("n_synth", [0, 5000], "n_synth"),
    ("n_synth", [0, 10, 10], "n_synth"),
    ("seeds", ["a"], "seeds"),
    ("sources", ["real", "dalle"], "sources"),
    ("sources", [], "sources"),
    ("dataset", {"name": "mnist9"}, "dataset.name"),
    ("dataset", {"name": "cifar10"}, "dataset.root"),
    ("dataset", {"name": "medmnist", "path": "/nonexistent/blood.npz"}, "dataset.path"),
    ("classifier.recipe", "vit_huge", "classifier.recipe"),
    ("classifier.steps", 0, "classifier.steps"),
    ("test_fraction", 1.5, "test_fraction"),
    ("max_failures", -1, "max_failures"),
    ("name", "a/b", "name"),
    ("seeds", KeyError, "seeds"),
    ("bogus_field", 3, "bogus_field"),
]


@pytest.mark.parametrize("path, value, field", BAD, ids=[b[2] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_config_is_refused_naming_the_field(tmp_path, path, value, field):
    cfg = _with(path, value)
    cfg["storage"] = str(tmp_path / "runs")
    with pytest.raises(ConfigError, match=f"^{field}"):
        run_sweep(cfg, quiet=True)
    assert not (tmp_path / "runs").exists(), "nothing may be written for a refused config"


def test_unreadable_yaml_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="^config"):
        load_config(p)


@pytest.mark.parametrize(
    "name", ["digits", "digits_methods", "fashion_mnist", "fashion_mnist_gpu", "cifar10", "bloodmnist", "imagenet100"]
)
def test_shipped_configs_parse_and_dry_run(name, capsys, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # the paper configs' data/ and models/ are not here: the dry run lists them
    plan = run_sweep(Path(__file__).parent.parent / "configs" / f"{name}.yaml", dry_run=True)
    out = capsys.readouterr().out
    assert f"trials: {plan['trials']}" in out and plan["trials"] > 0 and "wall time on" in out


@pytest.mark.slow  # four interpreters importing torch: the full suite runs it, the fast lane does not
def test_the_config_refuses_the_seed_counts_the_fit_refuses():
    from analysis.options import MAX_SEEDS
    from runners import config

    assert config.MAX_SEEDS == MAX_SEEDS
    with pytest.raises(ConfigError, match="^seeds: at most 1000 seeds"):
        load_config(
            {
                "name": "t",
                "dataset": {"name": "digits"},
                "sources": ["real"],
                "n_real": [10],
                "n_synth": [0],
                "seeds": list(range(MAX_SEEDS + 1)),
            }
        )


def test_rooms_import_only_what_they_need():
    """The config validator needs no torch; a trial worker no statistics stack (the cube contract in analysis/cube.py
    only); the fit and the report never import runners."""
    import subprocess
    import sys

    probe = (
        "import sys, importlib; importlib.import_module({mod!r}); "
        "print(' '.join(sorted(m for m in {banned!r} if m in sys.modules)))"
    )
    cases = {
        "runners.config": ["torch", "diffusers", "faiss", "statsmodels", "ray"],
        "runners.trial": ["statsmodels", "scipy.optimize", "analysis.pipeline", "diffusers", "faiss", "scaling"],
        "scaling.fit": ["runners", "torch", "ray"],
        "scaling.report": ["runners", "torch", "ray"],
    }
    for mod, banned in cases.items():
        out = subprocess.run(
            [sys.executable, "-c", probe.format(mod=mod, banned=banned)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert not out, f"importing {mod} loads {out}"
