"""The training protocol as a sweep axis: budget policy, synthetic weight, the protocol dimension of a cube."""

import numpy as np
import pytest
import torch

import scaling
from runners.config import ConfigError, load_config
from runners.train import batch_indices
from analysis.cube import CubeError

BASE = {
    "name": "p",
    "dataset": {"name": "digits"},
    "sources": ["real", "open_set"],
    "n_real": [20, 40],
    "n_synth": [0, 20, 40],
    "seeds": [0, 1],
    "classifier": {"steps": 20, "batch_size": 32},
}


def _cfg(**clf):
    return load_config({**BASE, "classifier": {**BASE["classifier"], **clf}})


def test_one_protocol_keeps_the_cells_and_fingerprint_of_before():
    plain = _cfg()
    assert not plain.multi_protocol and all("budget" not in c for c in plain.cells())
    assert len(plain.cells()) == 2 * 2 * (1 + 2 * 2)  # n_real x seeds x (base + sources x positive n_synth)
    # a config without protocol keys hashes exactly as before they existed (run folders resume)
    assert plain.fingerprint() == load_config(BASE).fingerprint()


def test_a_protocol_sweep_shares_base_and_real_cells_across_weights():
    cfg = _cfg(budget=["steps", "epochs"], synth_weight=[None, 0.25, 0.5])
    assert cfg.protocol_labels() == ["steps", "steps-w0.25", "steps-w0.5", "epochs", "epochs-w0.25", "epochs-w0.5"]
    cells = cfg.cells()
    per_budget_seed_r = 1 + 2 + 3 * 2  # base once, real once, open_set once per weight (2 n_synth each)
    assert len(cells) == 2 * 2 * 2 * per_budget_seed_r
    real = [c for c in cells if c["source"] == "real"]
    assert all(c["synth_weight"] is None for c in real)  # real images are interchangeable: no weight
    keys = {(c["source"], c["n_real"], c["n_synth"], c["seed"], c["budget"], c["synth_weight"]) for c in cells}
    assert len(keys) == len(cells)


def test_epochs_budget_scales_steps_with_the_training_set_within_bounds():
    cfg = _cfg(budget="epochs", epochs=10, max_steps=100, batch_size=20)
    assert cfg.train_steps("epochs", 20) == 10  # 10 epochs x 20 / 20 = 10
    assert cfg.train_steps("epochs", 60) == 30
    assert cfg.train_steps("epochs", 10_000) == 100  # the cap
    assert cfg.train_steps("epochs", 5) == 10  # the floor: the one-cycle schedule needs a warm-up
    assert cfg.train_steps("steps", 10_000) == 20


@pytest.mark.parametrize(
    "clf, field",
    [
        ({"budget": "time"}, "classifier.budget"),
        ({"budget": ["steps", "steps"]}, "classifier.budget"),
        ({"synth_weight": 1.0}, "classifier.synth_weight"),
        ({"synth_weight": 0}, "classifier.synth_weight"),
        ({"synth_weight": [0.5, 0.5]}, "classifier.synth_weight"),
        ({"synth_weight": "half"}, "classifier.synth_weight"),
        ({"epochs": -1}, "classifier.epochs"),
        ({"max_steps": 5}, "classifier.max_steps"),
    ],
)
def test_bad_protocol_settings_name_the_field(clf, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        _cfg(**clf)


def test_synthetic_weight_sets_the_share_of_synthetic_batch_items():
    gen = torch.Generator().manual_seed(0)
    for w in (0.1, 0.5, 0.9):
        idx = torch.cat([batch_indices(100, 512, gen, synth_from=90, synth_weight=w) for _ in range(20)])
        share = float((idx >= 90).float().mean())
        assert share == pytest.approx(w, abs=0.02)  # 10240 draws: sd ~0.005
    plain = torch.cat([batch_indices(100, 512, gen) for _ in range(20)])
    assert float((plain >= 90).float().mean()) == pytest.approx(0.1, abs=0.02)  # uniform pooling: 10 of 100 rows


TRUTH = {
    "steps": {"open_set": {"exchange_rate": 4.0}},
    "steps-w0.5": {"open_set": {"exchange_rate": 2.0}},
    "steps-w0.8": {"open_set": {"exchange_rate": 3.0}},
}


def test_fit_protocols_recovers_each_planted_rate_and_marks_the_best_weight():
    cube = scaling.simulate_protocols(TRUTH, seeds=5, random_state=0)
    with pytest.raises(CubeError, match="^protocol: the cube sweeps training protocols"):
        scaling.fit_equivalence(cube, "open_set")
    table = scaling.protocol_table(scaling.fit_protocols(cube, n_boot=100), n_synth=400)
    for label, spec in TRUTH.items():
        row = table[(table.protocol == label) & (table.n_real == 200)].iloc[0]
        assert row.lower <= spec["open_set"]["exchange_rate"] <= row.upper, (label, row.rho, row.lower, row.upper)
    best = table[table.best & (table.n_real == 200)]
    assert list(best.protocol) == ["steps-w0.5"]  # the weight whose planted rate is lowest


def test_protocol_cube_validates_slices_and_round_trips(tmp_path):
    cube = scaling.simulate_protocols(TRUTH, seeds=3, random_state=1)
    back = scaling.open_cube(scaling.save_cube(cube, tmp_path / "p.nc"))
    assert back["accuracy"].dims == ("source", "n_real", "n_synth", "seed", "protocol")
    one = scaling.protocol_slice(back, "steps-w0.5")
    assert "protocol" not in one.dims and one.attrs["protocol_setting"] == "steps-w0.5"
    scaling.validate_cube(one)
    with pytest.raises(CubeError, match="^protocol: 'steps-w0.3' is not in the cube"):
        scaling.protocol_slice(back, "steps-w0.3")
    bad = back.assign_coords(protocol=["a", "a", "b"])
    with pytest.raises(CubeError, match="^coords: 'protocol' must hold distinct strings"):
        scaling.validate_cube(bad)
    with pytest.raises(CubeError, match="^dims: one cube sweeps training protocols"):
        scaling.merge_cubes(back, one)


def test_replace_runs_budget_cells_as_add_cells_of_the_smaller_base():
    cfg = load_config({**BASE, "n_real": [40, 60], "n_synth": [0, 10, 20], "protocol": "replace"})
    assert cfg.replace == {"budgets": [40, 60], "replaced": [10, 20]}
    assert cfg.n_real == (20, 30, 40, 50, 60) and cfg.n_synth == (0, 10, 20)
    design = set(cfg.design)
    assert {(30, 10), (20, 20), (50, 10), (40, 20)} <= design  # N - k real + k synthetic
    assert {(40, 0), (60, 0), (30, 0), (20, 0), (50, 0)} <= design  # the all-real budgets and the bases
    assert (60, 20) not in design and (20, 10) not in design  # the rest of the grid is not run
    cells = {(c["source"], c["n_real"], c["n_synth"]) for c in cfg.cells()}
    assert ("open_set", 30, 10) in cells and ("open_set", 40, 10) not in cells
    assert cfg.pool_bases() == [20, 30, 40, 50]
    assert load_config(cfg).fingerprint() == cfg.fingerprint()  # a SweepConfig passed back in is not re-expanded
    assert cfg.protocol()["mode"].startswith("replace")


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"protocol": "swap"}, "protocol"),
        ({"protocol": "replace", "n_synth": [0, 20]}, "n_synth"),
        ({"protocol": "replace", "n_synth": [0]}, "n_synth"),
        ({"design": [[20, 0]]}, "design"),
    ],
)
def test_bad_replace_designs_name_the_field(extra, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_config({**BASE, **extra})


def test_a_replace_cube_counts_cells_outside_its_design_as_not_excluded():
    import json

    cube = scaling.simulate_cube(seeds=4, sources={"open_set": {"exchange_rate": 3.0}}, random_state=0)
    design = [
        (int(r), int(s)) for r in cube["n_real"].values for s in cube["n_synth"].values if s == 0 or r in (100, 200)
    ]
    keep = np.array([[(int(r), int(s)) in set(design) for s in cube["n_synth"].values] for r in cube["n_real"].values])
    cube["accuracy"] = cube["accuracy"].where(keep[None, :, :, None])
    cube["status"] = cube["status"].where(keep[None, :, :, None], 0).astype(np.int8)
    cube.attrs["design"] = json.dumps([list(c) for c in design])
    fit = scaling.fit_equivalence(cube, "open_set", n_boot=60)
    assert fit.excluded == {} and fit.excluded_reference == {}
    q = fit.exchange_rate(200, 400)
    assert float(q.lower) <= 3.0 <= float(q.upper)


def test_rate_vs_weight_figure_puts_pooling_at_its_effective_share():
    import matplotlib

    matplotlib.use("Agg")
    from paper_figures import protocol as protocol_figure

    cube = scaling.simulate_protocols(TRUTH, seeds=3, random_state=2)
    table = scaling.protocol_table(scaling.fit_protocols(cube, n_boot=60), n_synth=400)
    fig = protocol_figure.figure(table)
    xs = {round(float(x), 4) for ln in fig.axes[0].lines if ln.get_marker() == "s" for x in ln.get_xdata()}
    shown = sorted(set(table["n_real"]))
    shown = sorted({shown[0], shown[len(shown) // 2], shown[-1]})
    assert xs == {round(400 / (r + 400), 4) for r in shown}  # uniform pooling samples n_synth / n_total
