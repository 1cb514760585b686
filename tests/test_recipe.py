"""Recipe check: validation splits carved from the training set, the choice per size, the tuned config."""

import json

import numpy as np
import pytest

from runners.config import ConfigError, load_config
from runners.recipe import choose, real_sizes, validation_split

BASE = {
    "name": "r",
    "dataset": {"name": "digits"},
    "sources": ["real", "retrieval"],
    "n_real": [20, 40],
    "n_synth": [0, 20, 40],
    "seeds": [0, 1],
    "classifier": {"steps": 20},
}


def test_validation_split_is_stratified_disjoint_and_keeps_every_class_in_training():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 5)  # 50 images, 5 per class
    train, val = validation_split(labels, 0.2, rng)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 50
    assert np.bincount(labels[val], minlength=10).tolist() == [1] * 10
    assert set(labels[train]) == set(range(10))
    tiny = np.array([0, 0, 1, 2, 2, 2])  # a class with one image keeps it for training
    train, val = validation_split(tiny, 0.2, rng)
    assert 1 in tiny[train] and 1 not in tiny[val] and set(tiny[val]) == {0, 2}
    singletons = np.arange(10)  # one image per class: no stratified split, still 2 validation images (20%)
    train, val = validation_split(singletons, 0.2, rng)
    assert len(val) == 2 and len(train) == 8 and len(np.intersect1d(train, val)) == 0


def test_real_sizes_are_every_total_of_the_real_curve():
    sizes = real_sizes(load_config(BASE))
    assert list(sizes) == [20, 40, 60, 80] and sizes[40] == (20, 20)  # the first cell with that total


def test_choose_takes_the_best_mean_over_seeds_per_size():
    rows = [
        {"n_total": 20, "seed": s, "lr": lr, "weight_decay": 0.0, "val_accuracy": acc, "val_loss": 1.0, "n_val": 4}
        for s, lr, acc in [(0, 0.1, 0.9), (1, 0.1, 0.5), (0, 0.2, 0.7), (1, 0.2, 0.8)]
    ]
    best = choose(rows)
    assert best[20]["lr"] == 0.2 and best[20]["val_accuracy"] == pytest.approx(0.75)  # 0.75 beats 0.70


def test_a_tuned_recipe_sets_lr_and_weight_decay_by_training_set_size(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(
        json.dumps(
            {
                "sizes": {
                    "20": {"lr": 0.01, "weight_decay": 0.05, "val_accuracy": 0.5},
                    "80": {"lr": 0.002, "weight_decay": 0.0005},
                }
            }
        )
    )
    cfg = load_config({**BASE, "classifier": {"steps": 20, "tuned_recipe": str(path)}})
    assert cfg.recipe_for(20) == {"lr": 0.01, "weight_decay": 0.05}
    assert cfg.recipe_for(35) == {"lr": 0.01, "weight_decay": 0.05}  # log-nearest: 35 is nearer 20 than 80
    assert cfg.recipe_for(60) == {"lr": 0.002, "weight_decay": 0.0005}
    plain = load_config(BASE)
    # untuned: the config's own lr and weight decay (here the documented defaults) at every size
    assert plain.fingerprint() != cfg.fingerprint() and plain.recipe_for(60) == {"lr": 0.003, "weight_decay": 0.0005}
    assert "tuned per training-set size" in cfg.protocol()["recipe"]


@pytest.mark.parametrize(
    "content, field",
    [
        ("{", "classifier.tuned_recipe"),
        (json.dumps({"sizes": {}}), "classifier.tuned_recipe"),
        (json.dumps({"sizes": {"20": {"lr": -1, "weight_decay": 0}}}), "classifier.tuned_recipe.20.lr"),
        (json.dumps({"sizes": {"x": {"lr": 0.1, "weight_decay": 0}}}), "classifier.tuned_recipe"),
    ],
)
def test_a_bad_recipe_file_is_refused_naming_the_field(tmp_path, content, field):
    path = tmp_path / "tuned.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_config({**BASE, "classifier": {"steps": 20, "tuned_recipe": str(path)}})
    with pytest.raises(ConfigError, match="^classifier.tuned_recipe: no such file"):
        load_config({**BASE, "classifier": {"steps": 20, "tuned_recipe": str(tmp_path / "missing.json")}})


def test_a_tuned_recipe_refuses_a_fixed_lr(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"sizes": {"20": {"lr": 0.01, "weight_decay": 0.05}}}))
    with pytest.raises(ConfigError, match="^classifier.tuned_recipe: sets lr and weight_decay"):
        load_config({**BASE, "classifier": {"steps": 20, "lr": 0.004, "tuned_recipe": str(path)}})
