"""How good is a pool, measured against real test images by a fixed *judge* classifier.

The judge is trained once per node and dataset on every non-test real image. Each pool records: the judge's agreement
with the pool's labels, the Fréchet distance between pool and real test images in the judge's feature
space, and a linear real-vs-pool domain classifier's balanced accuracy. Test images only ever serve as
this yardstick; no model is selected on them.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import linalg

from runners import streams
from runners.storage import RunFolder
from runners.data import cache_root, dataset_of, non_test
from runners.integrity import file_checksum, read_record, verify_file
from runners.options import content_hash
from runners.pools import dataset_spec
from runners.train import build_model, train_classifier
from analysis.io import write_atomic

JUDGE = {"recipe": "small_cnn", "width": 16, "steps": 300, "batch_size": 64, "lr": 0.004}
FEATURES_KEPT = 256  # judge features stored per pool for the domain-gap figure


def judge_path(cfg) -> Path:
    return cfg.run_dir / "judge" / f"judge-{content_hash({**dataset_spec(cfg), 'judge': JUDGE})}.safetensors"


def node_judge_path(cfg) -> Path:
    """This node's copy of the judge (``$SCALING_CACHE/judges/``). The judge depends on the dataset, its split,
    ``JUDGE`` and the torch threads it trains with — not on the run — so every run folder on a node reuses one
    training instead of repeating it (a few seconds on digits, minutes on CIFAR-10)."""
    return cache_root().parent / "judges" / f"{judge_path(cfg).stem}-threads{cfg.threads}.safetensors"


def prepare_judge(cfg) -> dict:
    """Train (once per node and dataset) the classifier on every non-test real image; it labels and embeds
    pools. The run folder holds its own copy (uploaded with the run), so a run stays self-contained. Both copies
    are checked against the checksum recorded when the judge was trained before either is used."""
    path = judge_path(cfg)
    meta_path = path.with_suffix(".json")
    run = RunFolder(cfg)
    if run.fetch(meta_path) and run.fetch(path):
        return verified_judge(cfg)
    node = node_judge_path(cfg)
    _node_judge(cfg)
    for src, dst in ((node, path), (node.with_suffix(".json"), meta_path)):
        run.write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    return verified_judge(cfg)


def _node_judge(cfg) -> dict:
    """This node's judge record, the judge trained first when absent or trained by a version that recorded no
    checksum (its training is exact: the same data, recipe, seed and threads give the same weights)."""
    node = node_judge_path(cfg)
    if not (node.exists() and node.with_suffix(".json").exists()) or "sha256" not in _judge_record(node):
        _train_judge(cfg, node)
    return _check_judge(node, f"delete it and {node.with_suffix('.json').name} to retrain this node's judge")


def _judge_record(weights: Path) -> dict:
    """The ``.json`` beside a judge's weights: its test accuracy, training time, recipe and sha256."""
    return read_record(weights.with_suffix(".json"), "the judge", f"delete it and {weights}")


def _check_judge(weights: Path, way_out: str) -> dict:
    record = _judge_record(weights)
    verify_file(weights, record.get("sha256"), "the judge", way_out)
    return record


def verified_judge(cfg) -> dict:
    """The run folder's judge record, its weights checked against it. A run copy from a version that recorded
    no checksum is kept when its bytes are this node's verified judge, or when it reproduces the test accuracy
    its record states (a judge trained on another CPU differs in its weights: float kernels differ between
    machines, and 300 steps amplify that — the pools it scored were scored with it); then the record is added."""
    path = judge_path(cfg)
    run = RunFolder(cfg)
    run.fetch(path)  # a remote run folder on a fresh node: the weights and their record, both
    run.fetch(path.with_suffix(".json"))
    way_out = f"delete it and {path.with_suffix('.json').name} (in {path.parent}) to copy this node's judge again"
    record = _judge_record(path)
    if "sha256" not in record:
        node_record = _node_judge(cfg)
        checksum = file_checksum(path)
        if checksum == node_record["sha256"] or _reproduces_its_accuracy(cfg, path, record):
            record = {**record, "sha256": checksum}
            run.write_json(path.with_suffix(".json"), record)
    verify_file(path, record.get("sha256"), "the judge", way_out)
    return record


def _reproduces_its_accuracy(cfg, path: Path, record: dict) -> bool:
    """Whether a judge's weights give, on this run's test images, the test accuracy its record states (to the
    image): weights edited or swapped for another dataset's do not."""
    data, test_idx = dataset_of(cfg)
    try:
        model, mean, std = _judge(str(path), data.images.shape[1], len(data.classes))
    except (RuntimeError, KeyError, OSError):  # not loadable as this dataset's judge
        return False
    _, preds = _outputs(model, mean, std, data.images.subset(test_idx))
    hits = int((preds == data.labels[test_idx]).sum())
    stated = record.get("test_accuracy")
    return isinstance(stated, (int, float)) and abs(hits - stated * len(test_idx)) < 0.5


def check_judges(cfg) -> None:
    """Before Ray starts: every judge this sweep may use (this node's and the run folder's) that carries a
    checksum record matches it, so a damaged judge is one line naming it (exit 2), never pool scores measured
    with it or a source job's failure. Judges without a record are settled by :func:`prepare_judge`."""
    for weights in (node_judge_path(cfg), judge_path(cfg)):
        if weights.exists() and weights.with_suffix(".json").exists() and "sha256" in _judge_record(weights):
            _check_judge(weights, f"delete it and {weights.with_suffix('.json').name} (in {weights.parent})")


def _train_judge(cfg, target: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the judge's weights depend on the threads it trains with (its name says so)
    try:
        _train_judge_with_threads(cfg, target)
    finally:
        torch.set_num_threads(threads)


def _train_judge_with_threads(cfg, target: Path) -> None:
    data, test_idx = dataset_of(cfg)
    train = non_test(data, test_idx)
    # uint8-backed views: the judge holds every non-test image as uint8 and converts batches
    out = train_classifier(
        data.images.subset(train),
        data.labels[train],
        data.images.subset(test_idx),
        data.labels[test_idx],
        len(data.classes),
        return_model=True,
        seed=streams.shared_seed("classifier"),
        **JUDGE,
    )
    mean, std = out["norm"]
    state = {k: v.contiguous() for k, v in out["model"].state_dict().items()}
    state.update(norm_mean=mean.contiguous(), norm_std=std.contiguous())
    write_atomic(target, lambda p: save_file(state, str(p)))
    meta = {
        "test_accuracy": out["accuracy"],
        "train_seconds": out["train_seconds"],
        **JUDGE,
        "sha256": file_checksum(target),
    }
    write_atomic(target.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta)))


def _judge(path, in_ch: int, n_classes: int):
    """(model, mean, std) of the judge weights at ``path``, loaded once per content (a file replaced in place is
    loaded again)."""
    return _judge_of(str(path), file_checksum(path), in_ch, n_classes)


@lru_cache(maxsize=2)
def _judge_of(path: str, checksum: str, in_ch: int, n_classes: int):
    state = load_file(path)
    mean, std = state.pop("norm_mean"), state.pop("norm_std")
    model = build_model(JUDGE["recipe"], in_ch, n_classes, JUDGE["width"])
    model.load_state_dict(state)
    return model.eval(), mean, std


def judge_outputs(cfg, images) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, predicted labels) of the judge for float images in [0, 1] (an array or a
    :class:`runners.data.FloatImages` view, converted 1024 rows at a time)."""
    data, _ = dataset_of(cfg)
    verified_judge(cfg)  # hashed once per process and file (runners.integrity)
    return _outputs(*_judge(str(judge_path(cfg)), data.images.shape[1], len(data.classes)), images)


def _outputs(model, mean, std, images) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features, predicted labels) of a judge for float images in [0, 1], 1024 rows at a time."""
    feats, preds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 1024):
            x = (torch.as_tensor(images[i : i + 1024], dtype=torch.float32) - mean) / std
            f = model[:-1](x)
            feats.append(f.numpy())
            preds.append(model[-1](f).argmax(1).numpy())
    if not feats:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2): FID's formula in the judge's feature space."""
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb)
    if not np.isfinite(root).all():  # a collapsed pool has a singular covariance: shift both by eps I, as FID does
        eps = 1e-6 * np.eye(len(sa))
        root = linalg.sqrtm((sa + eps) @ (sb + eps))
    root = root.real if np.iscomplexobj(root) else root
    return float(mu @ mu + np.trace(sa + sb - 2 * root))


def domain_classifier(real: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Can a linear classifier tell the pool from real images in the judge's feature space?

    Returns the 3-fold cross-validated balanced accuracy (0.5: indistinguishable) and the unit weight
    vector of the fit on everything (the axis along which the domains separate; the domain-gap figure
    projects on it).
    """
    # scikit-learn is imported here: ~0.8 s per process, and trial workers import this module without fitting
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(pool))
    x = np.concatenate([real[rng.permutation(len(real))[:n]], pool[rng.permutation(len(pool))[:n]]])
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = float(cross_val_score(clf, x, y, cv=3, scoring="balanced_accuracy").mean()) if n >= 6 else float("nan")
    clf.fit(x, y)
    scaler, lr = clf[0], clf[1]
    w = lr.coef_[0] / scaler.scale_  # the direction in raw feature space
    return acc, (w / max(np.linalg.norm(w), 1e-12)).astype(np.float32)


def measure(cfg, images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[dict, dict]:
    """(quality record, arrays kept for figures) of a pool's images against the real test images."""
    prepare_judge(cfg)
    feats, preds = judge_outputs(cfg, images)
    data, test_idx = dataset_of(cfg)
    # the real side of FD and of the domain classifier is the test images: disjoint from every pool (real and
    # retrieval pools are drawn from the non-test images, which would otherwise sit on both sides)
    real_feats, _ = judge_outputs(cfg, data.images.subset(test_idx))
    domain_acc, direction = domain_classifier(real_feats, feats, streams.rng("domain", seed))
    record = {
        "label_accuracy": float((preds == labels).mean()),
        "frechet_distance": frechet_distance(feats, real_feats),
        "domain_accuracy": domain_acc,
    }
    return record, {"features": feats[:FEATURES_KEPT].astype(np.float32), "domain_direction": direction}
