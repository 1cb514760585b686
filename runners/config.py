"""Sweep configs: read YAML, validate every field before anything runs, one message naming the field."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from runners.checks import (
    key_text,
    ConfigError,
    check_dataset_spec,
    known_keys,
    number,
    require,
)
from analysis.cube import REFERENCE
from runners.data import DATASET_SHAPES, DATASET_SIZES, absolute_paths, is_file
from runners.storage import check_storage_uri, is_uri, local_path, mirror_root, split_credentials
from runners.options import CLASSIFIER_DEFAULTS, CPUS_PER_TRIAL, DEFAULT_WIDTH, PRECISIONS, RECIPES
from runners.sources import REGISTRY, SOURCES
from runners.sources.base import Facts

GRID_FIELDS = ("sources", "n_real", "n_synth", "seeds")  # a run folder may grow along these (runners.ledger)


BUDGETS = ("steps", "epochs")
# the fit refuses cubes with more seeds (analysis.options.MAX_SEEDS; a trial worker must not import the
# statistics stack to read it, so the number is repeated here and tests/test_config.py checks the two agree)
MAX_SEEDS = 1000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load lets a repeated key silently win; a config with one is refused instead."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` (YAML 1.1 merge keys): merged below, and a
            continue  # key written here overrides the merged one, as YAML defines — not a duplicate
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"{key}: appears twice in the same mapping (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def section_reference() -> str:
    """The Markdown tables of docs/configuration.md for the typed sections: every key, its default, what it does."""
    out = []
    for name, section in (("classifier", Classifier), ("resources", Resources)):
        out += [f"### `{name}`", "", "| key | default | meaning |", "|---|---|---|"]
        for f in fields(section):
            if f.name != "written":
                default = "unset" if f.default is None else f"`{json.dumps(f.default)}`"
                out.append(f"| `{f.name}` | {default} | {f.metadata['doc']} |")
        out.append("")
    return "\n".join(out)


def _keys(section) -> tuple[str, ...]:
    """The keys a section's type accepts (``written`` is bookkeeping, not a key); any other key is refused — a typo
    like gpu_per_trial would otherwise be ignored and silently run a GPU config on CPU."""
    return tuple(f.name for f in fields(section) if f.name != "written")


def _check_classifier(raw) -> dict:
    clf = known_keys(raw, "classifier", _keys(Classifier))
    require(
        clf.get("recipe", CLASSIFIER_DEFAULTS["recipe"]) in RECIPES,
        "classifier.recipe",
        f"unknown recipe {clf.get('recipe')!r}; choose from {RECIPES}",
    )
    for key in ("batch_size", "width"):
        if key in clf:
            number(clf[key], f"classifier.{key}", integer=True, low=1)
    if "steps" in clf:  # the one-cycle learning-rate schedule needs a warm-up phase of at least 2 steps
        number(clf["steps"], "classifier.steps", integer=True, low=10)
    if "lr" in clf:
        number(clf["lr"], "classifier.lr", low=0, low_open=True, high=10)
    if "weight_decay" in clf:
        number(clf["weight_decay"], "classifier.weight_decay", low=0, high=10)
    if "label_smoothing" in clf:
        number(clf["label_smoothing"], "classifier.label_smoothing", low=0, high=0.99)
    if "flip" in clf:
        require(isinstance(clf["flip"], bool), "classifier.flip", f"must be true or false, got {clf['flip']!r}")
    if clf.get("precision") is not None:
        require(
            clf["precision"] in PRECISIONS,
            "classifier.precision",
            f"choose one of {PRECISIONS} (unset: bf16 on CUDA, fp32 on CPU), got {clf['precision']!r}",
        )
    budgets = clf.get("budget", "steps")
    budgets = budgets if isinstance(budgets, list) else [budgets]
    require(
        budgets and all(b in BUDGETS for b in budgets) and len(set(budgets)) == len(budgets),
        "classifier.budget",
        f"must be one of {BUDGETS} or a list of them without repeats, got {clf.get('budget')!r}",
    )
    if "epochs" in clf:
        number(clf["epochs"], "classifier.epochs", low=0, low_open=True, high=1e6)
    if "max_steps" in clf:
        number(clf["max_steps"], "classifier.max_steps", integer=True, low=10)
    weights = clf.get("synth_weight")
    weights = weights if isinstance(weights, list) else [weights]
    for w in weights:
        if w is not None:
            number(w, "classifier.synth_weight", low=0, high=1, low_open=True)
            require(w < 1, "classifier.synth_weight", f"must be < 1 (a batch needs some real images), got {w!r}")
    require(
        len(set(weights)) == len(weights) and weights,
        "classifier.synth_weight",
        f"has duplicates: {clf.get('synth_weight')!r}",
    )
    if "tuned_recipe" in clf:
        clf["tuned_recipe"] = _tuned_recipe(clf["tuned_recipe"])
        require(
            "lr" not in clf and "weight_decay" not in clf,
            "classifier.tuned_recipe",
            "sets lr and weight_decay per training-set size: remove classifier.lr / weight_decay",
        )
    if clf.get("device") is not None:
        dev = clf["device"]
        require(
            isinstance(dev, str) and re.fullmatch(r"cpu|cuda(:\d+)?", dev) is not None,
            "classifier.device",
            f"must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}",
        )
    return clf


def _tuned_recipe(value) -> dict:
    """``{size: {lr, weight_decay}}`` from a ``scaling tune-recipe`` file (or the table itself): the values, not
    the path, enter the fingerprint, so a re-tuned file is another sweep."""
    field_name = "classifier.tuned_recipe"
    if isinstance(value, str):
        require(is_file(value), field_name, f"no such file: {value}")
        try:
            value = json.loads(Path(value).read_text()).get("sizes")
        except (ValueError, AttributeError):
            raise ConfigError(f"{field_name}: {value} is not a recipe file written by `scaling tune-recipe`") from None
    require(isinstance(value, dict) and value, field_name, "must hold a non-empty 'sizes' table")
    table = {}
    for size, entry in value.items():
        require(
            str(size).isdigit() and int(size) > 0 and isinstance(entry, dict),
            field_name,
            f"size {size!r}: expected a positive size mapped to {{lr, weight_decay}}",
        )
        lr = number(entry.get("lr"), f"{field_name}.{size}.lr", low=0, low_open=True, high=10)
        wd = number(entry.get("weight_decay"), f"{field_name}.{size}.weight_decay", low=0, high=10)
        table[str(int(size))] = {"lr": float(lr), "weight_decay": float(wd)}
    return table


def _check_resources(raw) -> dict:
    res = known_keys(raw, "resources", _keys(Resources))
    for key in _keys(Resources):
        if res.get(key) is not None:
            number(res[key], f"resources.{key}", low=0, high=4096)
    require(float(res.get("cpus_per_trial", CPUS_PER_TRIAL)) > 0, "resources.cpus_per_trial", "must be positive")
    return res


def _opt(default, doc: str):
    """A section field: its default and the one line the configuration reference prints for it."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class _Section:
    """A typed config section. ``written`` holds the keys the config set: they alone enter the fingerprint and the
    run folder's stamp (:meth:`as_written`), so a run folder keeps its cells' keys when a default is added."""

    written: tuple[str, ...] = ()

    def as_written(self) -> dict:
        """The section as the config wrote it."""
        return {k: getattr(self, k) for k in self.written}


@dataclass(frozen=True)
class Classifier(_Section):
    """The ``classifier:`` section, validated; every default is written here once."""

    recipe: str = _opt(CLASSIFIER_DEFAULTS["recipe"], f"classifier builder: {' or '.join(RECIPES)}")
    steps: int = _opt(CLASSIFIER_DEFAULTS["steps"], "optimiser steps (>= 10) with budget steps")
    batch_size: int = _opt(CLASSIFIER_DEFAULTS["batch_size"], "images per step")
    lr: float = _opt(CLASSIFIER_DEFAULTS["lr"], "peak learning rate of the one-cycle schedule (AdamW)")
    weight_decay: float = _opt(CLASSIFIER_DEFAULTS["weight_decay"], "AdamW weight decay")
    label_smoothing: float = _opt(CLASSIFIER_DEFAULTS["label_smoothing"], "label smoothing of the loss")
    width: int | None = _opt(
        None,
        "channels of the first layer; unset: the recipe's own ("
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_WIDTH.items())
        + ")",
    )
    device: str | None = _opt(None, "cpu, cuda or cuda:N; unset: the device Ray gives the trial")
    flip: bool = _opt(False, "random horizontal flips (true or false)")
    precision: str | None = _opt(None, "fp32 or bf16 autocast; unset: bf16 when trials run on a GPU, fp32 on CPU")
    budget: str | list = _opt("steps", "steps, epochs, or a list of both (a protocol axis of the cube)")
    epochs: float = _opt(30, "with budget epochs: passes over the training set")
    max_steps: int = _opt(2000, "with budget epochs: the cap on steps")
    synth_weight: float | list | None = _opt(
        None, "probability a batch item is synthetic, in (0, 1), or a list; unset: uniform pooling"
    )
    tuned_recipe: dict | None = _opt(None, "a `scaling tune-recipe` file: lr and weight decay per training-set size")

    @property
    def model_width(self) -> int:
        """``width``, else the recipe's default."""
        return int(self.width or DEFAULT_WIDTH.get(self.recipe, DEFAULT_WIDTH["small_cnn"]))

    def training(self) -> dict:
        """The settings every classifier of the sweep trains with, as ``runners.train.train_classifier``
        arguments (steps, lr and weight decay depend on the cell: :meth:`SweepConfig.train_steps`,
        :meth:`SweepConfig.recipe_for`)."""
        return {
            "batch_size": int(self.batch_size),
            "label_smoothing": float(self.label_smoothing),
            "width": self.model_width,
            "device": self.device,
            "flip": bool(self.flip),
        }


@dataclass(frozen=True)
class Resources(_Section):
    """The ``resources:`` section, validated; every default is written here once (resources never enter a
    fingerprint: they change where and how fast cells run, not their numbers — but for ``cpus_per_trial``, which
    sets the torch threads and enters each cell's key, :func:`runners.ledger.fingerprint_parts`)."""

    cpus_per_trial: float = _opt(CPUS_PER_TRIAL, "CPUs (and torch threads) per trial and per source job")
    gpus_per_trial: float = _opt(0.0, "GPUs per trial; a fraction packs trials on one GPU")
    gpus_per_source_job: float | None = _opt(
        None, "GPUs per generator training, sampling or retrieval job; unset: 1 when trials use GPUs, else 0"
    )
    num_cpus: float | None = _opt(None, "CPUs of the local Ray instance; unset: every CPU of the machine")


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: built only by :func:`load_config`; the one config type, also what Ray workers get."""

    name: str
    dataset: dict
    sources: tuple[str, ...]
    n_real: tuple[int, ...]
    n_synth: tuple[int, ...]
    seeds: tuple[int, ...]
    classifier: Classifier = field(default_factory=Classifier)
    resources: Resources = field(default_factory=Resources)
    storage: str = "runs"
    test_fraction: float = 0.25
    max_failures: int = 2
    source_options: dict = field(default_factory=dict)
    # protocol: replace — the user's budgets N and replaced counts k; n_real / n_synth then hold the grid the
    # design lives on (bases N - k and N, counts 0 and k) and ``design`` the (n_real, n_synth) cells that run
    replace: dict | None = None
    design: tuple | None = None

    def cells(self) -> list[dict]:
        """Every trial. n_synth = 0 is one experiment for all sources, computed once as 'real'.

        With several protocol settings (lists under ``classifier.budget`` / ``classifier.synth_weight``) every
        cell also names its ``budget`` and ``synth_weight``: the base-only and real-source cells do not depend
        on the synthetic weight (real images are interchangeable), so they run once per budget.
        """
        out = []
        planned = None if self.design is None else set(map(tuple, self.design))  # built once, not per cell

        def in_design(r, s):
            return planned is None or (r, s) in planned

        settings = [(b, w) for b in self.budgets for w in self.synth_weights] if self.multi_protocol else [None]
        for r in self.n_real:
            for seed in self.seeds:
                for setting in settings:
                    tag = {} if setting is None else {"budget": setting[0], "synth_weight": setting[1]}
                    shared = setting is None or setting[1] == self.synth_weights[0]  # once per budget
                    base_tag = {} if setting is None else {"budget": setting[0], "synth_weight": None}
                    if 0 in self.n_synth and shared and in_design(r, 0):
                        out.append({"source": "real", "n_real": r, "n_synth": 0, "seed": seed, **base_tag})
                    for src in self.sources:
                        if src == "real" and not shared:
                            continue
                        for s in self.n_synth:
                            if s > 0 and in_design(r, s):
                                out.append(
                                    {
                                        "source": src,
                                        "n_real": r,
                                        "n_synth": s,
                                        "seed": seed,
                                        **(base_tag if src == "real" else tag),
                                    }
                                )
        return out

    def pool_bases(self) -> list[int]:
        """Base sizes that have synthetic cells (pools and closed-set generators are needed only there)."""
        if self.design is None:
            return list(self.n_real)
        return sorted({int(r) for r, s in self.design if s > 0})

    # ---------------------------------------------------------------- the training protocol
    @property
    def budgets(self) -> list[str]:
        b = self.classifier.budget
        return list(b) if isinstance(b, (list, tuple)) else [b]

    @property
    def synth_weights(self) -> list:
        w = self.classifier.synth_weight
        return list(w) if isinstance(w, (list, tuple)) else [w]

    @property
    def multi_protocol(self) -> bool:
        return len(self.budgets) * len(self.synth_weights) > 1

    def protocol_labels(self) -> list[str]:
        """The cube's ``protocol`` coordinate: one label per (budget, synthetic weight) setting."""
        return [protocol_label(b, w) for b in self.budgets for w in self.synth_weights]

    def train_steps(self, budget: str, n_total: int) -> int:
        """Optimiser steps of one classifier: fixed (``steps``), or ``epochs`` passes over its training set,
        capped at ``max_steps`` and at least 10 (the one-cycle schedule needs a warm-up)."""
        clf = self.classifier
        if budget == "steps":
            return int(clf.steps)
        return int(min(int(clf.max_steps), max(10, math.ceil(float(clf.epochs) * n_total / self.batch_size))))

    def recipe_for(self, n_total: int) -> dict:
        """lr and weight decay for a training set of ``n_total`` images: the tuned values of the nearest size
        (log scale) when ``classifier.tuned_recipe`` is set, else the config's own."""
        table = self.classifier.tuned_recipe
        if not table:
            return {"lr": float(self.classifier.lr), "weight_decay": float(self.classifier.weight_decay)}
        sizes = np.array([int(k) for k in table])
        nearest = sizes[np.argmin(np.abs(np.log(sizes) - np.log(max(n_total, 1))))]
        return dict(table[str(int(nearest))])

    @property
    def recipe(self) -> str:
        return self.classifier.recipe

    @property
    def width(self) -> int:
        """The classifier's width: ``classifier.width``, else its recipe's default."""
        return self.classifier.model_width

    @property
    def batch_size(self) -> int:
        return int(self.classifier.batch_size)

    @property
    def cpus_per_trial(self) -> float:
        return float(self.resources.cpus_per_trial)

    @property
    def trial_resources(self) -> dict:
        """What one trial asks Ray for: ``{"CPU": cpus_per_trial, "GPU": gpus_per_trial}`` (a fraction packs
        trials on one GPU). The sweep and the dry run both read it."""
        return {"CPU": self.cpus_per_trial, "GPU": float(self.resources.gpus_per_trial or 0)}

    @property
    def source_job_resources(self) -> dict:
        """What one source job (generator training and sampling, retrieval, the judge) asks Ray for:
        ``gpus_per_source_job``, else a whole GPU when trials use GPUs (a generator training is one indivisible,
        memory-hungry job) and none when they do not. The sweep and the dry run both read it."""
        gpus = self.resources.gpus_per_source_job
        if gpus is None:
            gpus = 1.0 if self.trial_resources["GPU"] > 0 else 0.0
        return {"CPU": self.cpus_per_trial, "GPU": float(gpus)}

    @property
    def precision(self) -> str:
        """The classifier's numeric precision: ``classifier.precision``, else bf16 when trials run on a GPU
        (``classifier.device`` cuda, or ``resources.gpus_per_trial`` > 0) and fp32 on CPU."""
        if self.classifier.precision:
            return self.classifier.precision
        on_gpu = str(self.classifier.device or "").startswith("cuda") or self.trial_resources["GPU"] > 0
        return "bf16" if on_gpu else "fp32"

    def protocol(self) -> dict:
        """The training protocol as recorded in the cube attrs and printed in the report."""
        clf = self.classifier
        return {
            "precision": self.precision,
            "mode": "add"
            if self.replace is None
            else f"replace (budgets {self.replace['budgets']}, replaced {self.replace['replaced']})",
            "budget": self.budgets if self.multi_protocol else self.budgets[0],
            "steps": int(clf.steps),
            "epochs": float(clf.epochs),
            "max_steps": int(clf.max_steps),
            "synth_weight": self.synth_weights if self.multi_protocol else self.synth_weights[0],
            "batch_size": self.batch_size,
            "sampling": "uniform over real + synthetic images"
            if self.synth_weights == [None]
            else "a batch item is synthetic with probability synth_weight (None: uniform pooling)",
            "recipe": {"tuned per training-set size": clf.tuned_recipe}
            if clf.tuned_recipe
            else "one lr and weight_decay for every size",
        }

    def fixed_fields(self) -> dict:
        """What every cell of a run folder shares and must not change when the run is extended: everything the
        fingerprint hashes except the grid (``GRID_FIELDS``) and the sources' options (each cell's fingerprint
        holds its own source's options)."""
        keep = {
            k: v
            for k, v in self.as_written().items()
            if k not in ("storage", "resources", "max_failures", "name", "source_options", *GRID_FIELDS)
        }
        keep.pop("design", None)  # follows from the grid (replace runs keep `replace` itself fixed)
        if self.replace is None:
            keep.pop("replace", None)
        _resolved_precision(keep, self.precision)
        return json.loads(json.dumps(keep, default=list))

    def fixed_fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fixed_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of what determines the numbers (not storage or resources)."""
        keep = {k: v for k, v in self.as_written().items() if k not in ("storage", "resources", "max_failures", "name")}
        if self.replace is None:  # add (the default) hashes exactly as before replace existed
            keep.pop("replace", None)
            keep.pop("design", None)
        _resolved_precision(keep, self.precision)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def as_written(self) -> dict:
        """The config as its fields were validated, each section as the config wrote it: what the fingerprints
        hash, the run folder's stamp records and :func:`load_config` takes back."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["classifier"], out["resources"] = self.classifier.as_written(), self.resources.as_written()
        return copy.deepcopy(out)

    @property
    def run_dir(self) -> Path:
        """The run folder: the storage path itself, or this node's mirror of a remote storage
        (:mod:`runners.storage`)."""
        return (mirror_root(self.storage) if is_uri(self.storage) else Path(self.storage)) / self.name

    @property
    def threads(self) -> int:
        """Torch threads per trial or source job: the CPUs Ray allots it, so packed workers do not oversubscribe."""
        return max(1, int(self.cpus_per_trial))

    def kind(self, source: str) -> str:
        """The kind of a named source (:data:`runners.sources.REGISTRY`): ``source_options.<name>.kind``, else the
        name itself (the names of the kinds — real, closed_set, open_set, ... — are sources of their own kind)."""
        return source_kind(source, self.source_options.get(source))

    def module(self, source: str):
        """The module of a named source's kind: its options, checks, prices and pool building."""
        return REGISTRY[self.kind(source)]

    def options(self, source: str) -> dict:
        """The resolved options of one source (defaults filled in, without ``kind``), as the pool cache keys hash
        them. A generator's unset precision resolves like the classifier's: bf16 when source jobs run on a GPU — and
        then enters the keys, a different precision being a different estimand — and fp32 (absent, as before the
        option) on CPU."""
        raw = {k: v for k, v in (self.source_options.get(source) or {}).items() if k != "kind"}
        try:
            opts = self.module(source).options(raw)
        except ValueError as exc:
            raise ConfigError(f"source_options.{source}.{exc}") from None
        if "generator" in opts and "precision" not in opts["generator"] and self.source_job_resources["GPU"] > 0:
            opts = {**opts, "generator": {**opts["generator"], "precision": "bf16"}}
        return opts


def check_target(cfg, target: tuple[str, int, int]) -> None:
    """A target rate (``--target SOURCE:N_REAL:N_SYNTH``) must be a synthetic cell of the config's grid."""
    source, n_real, n_synth = target
    if source == REFERENCE or source not in cfg.sources:
        raise ConfigError(f"--target: {source!r} is not a synthetic source of this config ({list(cfg.sources)})")
    if n_real not in cfg.n_real or n_synth not in cfg.n_synth or n_synth == 0:
        raise ConfigError(
            f"--target: ({n_real}, {n_synth}) is not a cell of the grid (n_real {list(cfg.n_real)}, "
            f"n_synth {list(cfg.n_synth)}, n_synth > 0)"
        )


def _resolved_precision(fields: dict, precision: str) -> None:
    """What a fingerprint records of the precision: the resolved one, and only when it is not fp32 (a different
    precision is a different estimand; an unset or fp32 precision keeps the keys runs had before the option)."""
    fields["classifier"] = {k: v for k, v in fields["classifier"].items() if k != "precision"}
    if precision != "fp32":
        fields["precision"] = precision


def protocol_label(budget: str, synth_weight) -> str:
    """``steps``, ``epochs-w0.25``: a budget policy and, when set, the synthetic sampling weight."""
    return budget if synth_weight is None else f"{budget}-w{synth_weight:g}"


def test_count(name: str, test_fraction: float) -> int:
    """Test images exactly as ``runners.data.test_indices`` draws them (per-class rounding)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        counts = np.bincount(load_digits().target)
        return int(sum(int(round(c * test_fraction)) for c in counts))
    return round(DATASET_SIZES[name] * test_fraction)


def _int_list(raw: dict, key: str, minimum: int) -> list[int]:
    v = raw.get(key)
    v = list(v) if isinstance(v, tuple) else v  # a SweepConfig passed back in holds tuples
    require(isinstance(v, list) and len(v) > 0, key, f"must be a non-empty list of integers, got {v!r}")
    require(all(isinstance(x, int) and not isinstance(x, bool) for x in v), key, f"must hold integers only, got {v!r}")
    require(all(x >= minimum for x in v), key, f"values must be >= {minimum}, got {v!r}")
    require(len(set(v)) == len(v), key, f"has duplicates: {v!r}")
    return sorted(v)


def apply_settings(raw: dict, settings) -> dict:
    """``KEY=VALUE`` overrides (``scaling sweep --set classifier.steps=20``): a dotted key reaches into nested
    mappings (created where missing), the value is parsed as YAML (``20`` an int, ``[0, 1]`` a list, ``null``)."""
    out = json.loads(json.dumps(raw, default=str)) if settings else raw  # a deep copy: the caller's dict is kept
    for item in settings or ():
        key, sep, text = str(item).partition("=")
        require(
            sep == "=" and key.strip() != "", "--set", f"expected KEY=VALUE (e.g. classifier.steps=20), got {item!r}"
        )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML ({' '.join(str(exc).split())})") from None
        *parents, leaf = key.strip().split(".")
        node = out
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            require(
                isinstance(node, dict),
                "--set " + key,
                f"{'.'.join(parents[: depth + 1])} is not a mapping, so it has no field {leaf!r}",
            )
        node[leaf] = value
    return out


def load_config(source, settings=(), **overrides) -> SweepConfig:
    """A SweepConfig from a path, a dict or a SweepConfig, validated; ``settings`` are ``KEY=VALUE`` overrides
    (dotted keys, YAML values: :func:`apply_settings`), ``overrides`` replace top-level keys."""
    if isinstance(source, SweepConfig):
        raw = source.as_written()
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        path = Path(source)
        require(path.exists(), "config", f"no such file: {path}")
        require(path.is_file(), "config", f"{path} is a folder, not a YAML file")
        try:
            raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
        except UnicodeDecodeError:
            raise ConfigError(f"config: {path} is not a text (YAML) file") from None
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())  # one line, whatever the parser printed
            raise ConfigError(f"config: {path} is not valid YAML ({detail})") from None
        require(isinstance(raw, dict), "config", f"{path} must hold a mapping of fields")
    raw = apply_settings(raw, settings)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = set(SweepConfig.__dataclass_fields__) | {"protocol"}
    unknown = sorted(map(str, set(raw) - known))
    require(not unknown, key_text(unknown[0]) if unknown else "", f"unknown field (known: {sorted(known)})")
    for key in ("name", "dataset", "sources", "n_real", "n_synth", "seeds"):
        require(key in raw, key, "is required")
    require(
        isinstance(raw["name"], str) and NAME_PATTERN.match(raw["name"]) is not None,
        "name",
        f"must be a plain folder name (letters, digits, '.', '_', '-'; no '/' or leading '.'), got {raw['name']!r}",
    )
    storage = raw.get("storage", "runs")
    require(isinstance(storage, str) and storage.strip() != "", "storage", f"must be a path, got {storage!r}")
    if is_uri(storage):  # an object store (s3://, gs://, ...) or file://; checked without connecting
        problem = check_storage_uri(storage)
        require(problem is None, "storage", problem or "")
        try:  # credentials in the URI move to the environment: nothing stores or prints them
            storage = split_credentials(storage)
        except ValueError as exc:
            raise ConfigError(f"storage: {exc}") from None
        storage = str(local_path(storage)) if local_path(storage) is not None else storage
    require("\x00" not in storage, "storage", f"{storage!r} holds a NUL byte: not a path")
    # 's3:/bucket/runs' (one slash) is a typo for a URI, not a local folder named 's3:'
    one_slash = re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)", storage)
    require(
        one_slash is None,
        "storage",
        f"{storage!r} looks like a URI with one slash; write "
        f"{re.sub(':/', '://', storage, count=1)!r} (or ./ before a local folder whose name has a colon)",
    )
    require(not is_file(storage), "storage", f"{storage} is a file, not a folder")
    ds = raw["dataset"]
    check_dataset_spec(ds, "dataset")
    ds = absolute_paths(ds)
    sources, raw["source_options"] = _named_sources(raw.get("sources"), raw.get("source_options"))
    n_real = _int_list(raw, "n_real", 1)
    n_synth = _int_list(raw, "n_synth", 0)
    seeds = _int_list(raw, "seeds", 0)
    require(len(seeds) <= MAX_SEEDS, "seeds", f"at most {MAX_SEEDS} seeds (the fit refuses more), got {len(seeds)}")
    tf = raw.get("test_fraction", 0.25)
    number(tf, "test_fraction")
    require(0 < tf < 1, "test_fraction", f"must lie in (0, 1), got {tf!r}")
    clf = _check_classifier(raw.get("classifier"))
    res = _check_resources(raw.get("resources"))
    if str(clf.get("device") or "").startswith("cuda"):
        require(
            float(res.get("gpus_per_trial") or 0) > 0,
            "classifier.device",
            "'cuda' needs resources.gpus_per_trial > 0 (Ray gives a trial no GPU otherwise)",
        )
    mf = raw.get("max_failures", 2)
    number(mf, "max_failures", integer=True, low=0, high=100)
    size = DATASET_SIZES.get(ds["name"])
    if size is not None:
        available = size - test_count(ds["name"], tf)
        require(
            max(n_real) <= available,
            "n_real",
            f"max(n_real) = {max(n_real)} exceeds the {available} non-test images of {ds['name']}",
        )
    source_options = _source_options(raw, sources, ds, n_real, n_synth, tf)
    replace, design = raw.get("replace"), raw.get("design")
    require(
        (replace is None) == (design is None),
        "design",
        "is derived from protocol: replace (set protocol, n_real and n_synth instead)",
    )
    if replace is None:  # a SweepConfig passed back in carries its replace design already expanded
        n_real, n_synth, replace, design = _protocol_design(raw.get("protocol", "add"), n_real, n_synth)
    elif raw.get("protocol", "replace") != "replace":
        raise ConfigError("protocol: a config with a replace design cannot switch protocol")
    # absolute: Ray workers run in their own working directories
    return SweepConfig(
        name=raw["name"],
        dataset=ds,
        sources=tuple(sources),
        n_real=tuple(n_real),
        n_synth=tuple(n_synth),
        seeds=tuple(seeds),
        classifier=Classifier(**clf, written=tuple(clf)),
        resources=Resources(**res, written=tuple(res)),
        storage=storage if is_uri(storage) else str(Path(storage).resolve()),
        test_fraction=float(tf),
        max_failures=mf,
        source_options=source_options,
        replace=replace,
        design=None if design is None else tuple(tuple(map(int, c)) for c in design),
    )


def _protocol_design(protocol, n_real: list[int], n_synth: list[int]):
    """add: the full n_real x n_synth grid. replace: ``n_real`` are budgets N, ``n_synth`` the numbers k of real
    images replaced by synthetic ones; the cell (N, k) trains on N - k real + k synthetic images — exactly the add
    cell (n_real = N - k, n_synth = k) — next to the all-real budget (N, 0) and the base (N - k, 0) its gain is
    measured against. Returns (grid n_real, grid n_synth, replace record, design cells)."""
    require(protocol in ("add", "replace"), "protocol", f"must be 'add' or 'replace', got {protocol!r}")
    if protocol == "add":
        return n_real, n_synth, None, None
    replaced = [k for k in n_synth if k > 0]
    require(replaced, "n_synth", "protocol: replace needs at least one positive number of replaced images")
    require(
        max(replaced) < min(n_real),
        "n_synth",
        f"protocol: replace keeps at least one real image: every "
        f"replaced count must be below every budget, got n_synth {n_synth} with n_real {n_real}",
    )
    design = (
        {(n, 0) for n in n_real}
        | {(n - k, k) for n in n_real for k in replaced}
        | {(n - k, 0) for n in n_real for k in replaced}
    )
    grid_r = sorted({r for r, _ in design})
    return grid_r, sorted({0, *replaced}), {"budgets": list(n_real), "replaced": replaced}, sorted(design)


def source_kind(name: str, options: dict | None) -> str:
    """A source's kind: its ``kind`` option, else its name (a name of a kind is a source of that kind)."""
    return (options or {}).get("kind") or name


def _named_sources(sources, options) -> tuple[list[str], dict]:
    """The sweep's source names and their options. ``sources`` is a list of names (each a kind's name, or a name
    whose ``source_options`` entry sets ``kind``) or a mapping ``name -> {kind: ..., options}``, which is the same
    config written in one place: it becomes the list plus ``source_options`` (so the fingerprint of a config does
    not depend on which way it was written)."""
    options = options if options is not None else {}
    require(isinstance(options, dict), "source_options", f"must be a mapping source -> options, got {options!r}")
    options = dict(options)
    if isinstance(sources, dict):
        for name, value in sources.items():
            require(
                value is None or isinstance(value, dict),
                f"sources.{key_text(str(name))}",
                f"must be a mapping of options (kind: ...), got {value!r}",
            )
            require(
                name not in options,
                f"source_options.{key_text(str(name))}",
                "is set under sources as well: write its options in one place",
            )
            if value:
                options[name] = dict(value)
        sources = list(sources)
    sources = list(sources) if isinstance(sources, tuple) else sources
    require(isinstance(sources, list) and sources, "sources", f"must be a non-empty list, got {sources!r}")
    require(len(set(map(str, sources))) == len(sources), "sources", f"has duplicates: {sources!r}")
    for name in sources:
        require(
            isinstance(name, str) and NAME_PATTERN.match(name) is not None,
            "sources",
            f"{name!r} is not a plain name (letters, digits, '.', '_', '-')",
        )
        value = options.get(name)
        kind = value.get("kind") if isinstance(value, dict) else None
        if kind is None:
            require(
                name in SOURCES,
                "sources",
                f"{name!r} is neither a kind ({', '.join(SOURCES)}) nor given one: set source_options.{name}.kind",
            )
            continue
        field_name = f"source_options.{name}.kind"
        require(kind in SOURCES, field_name, f"unknown kind {kind!r}; choose from {SOURCES}")
        require(
            name != REFERENCE or kind == REFERENCE,
            field_name,
            f"the name {REFERENCE!r} is the reference (more real images) and cannot be of kind {kind}; "
            "give this source another name",
        )
        require(
            kind != REFERENCE or name == REFERENCE,
            field_name,
            f"{REFERENCE!r} is the reference source (more real images): one per sweep, named {REFERENCE!r}",
        )
        require(
            name not in SOURCES or kind == name,
            field_name,
            f"the name {name!r} is the {name} kind itself and cannot be of kind {kind}; give this source another name",
        )
    return sources, options


def _source_options(raw: dict, sources: list[str], ds: dict, n_real: list[int], n_synth: list[int], tf: float) -> dict:
    """Validate every source's options up front: the mapping here, each source's own options in its module
    (``check``, behind :data:`runners.sources.REGISTRY`)."""
    opts = raw.get("source_options") or {}
    require(isinstance(opts, dict), "source_options", f"must be a mapping source -> options, got {opts!r}")
    for src, value in opts.items():
        require(src in sources, f"source_options.{src}", f"is not one of this sweep's sources {sources}")
        require(value is None or isinstance(value, dict), f"source_options.{src}", f"must be a mapping, got {value!r}")
    size = DATASET_SIZES.get(ds["name"])
    free = None if size is None else size - test_count(ds["name"], tf) - max(n_real)
    out = {}
    for src in sources:
        facts = Facts(
            src, ds, DATASET_SHAPES.get(ds["name"]), free, tuple(n_real), tuple(n_synth)
        )  # fmt: skip
        written = dict(opts.get(src) or {})
        kind = written.pop("kind", None)
        try:
            checked = REGISTRY[kind or src].check(written, facts)
        except ConfigError:
            raise
        except ValueError as exc:  # a source's own message starts with the option it names
            raise ConfigError(f"source_options.{src}.{exc}") from None
        if src in opts:
            # the kind is kept only where it was written: a config of today's four names hashes as it always did
            out[src] = {"kind": kind, **checked} if kind else checked
    return out
