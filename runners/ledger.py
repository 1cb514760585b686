"""The run folder's record of finished work, and who may write to it.

Resume is exact: every finished trial writes its result to ``ledger/<cell>.json`` (atomically) before it
reports, and a rerun only schedules cells without an entry. This is stricter than ``Tuner.restore``,
which replays the experiment state saved at its last snapshot and can rerun trials that finished after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import socket
import sys
import time
from pathlib import Path

from runners import storage
from runners.config import ConfigError, protocol_label
from runners.pools import POOL_VERSION
from scaling.cube import write_atomic


class RunFolderBusy(RuntimeError):
    """Another sweep holds the run folder's lock."""


def cell_key(cell: dict) -> str:
    key = f"{cell['source']}-r{cell['n_real']}-s{cell['n_synth']}-seed{cell['seed']}"
    if "budget" in cell:  # a sweep over training protocols: the setting is part of the cell
        key += f"-{protocol_label(cell['budget'], cell['synth_weight'])}"
    return key


def ledger_path(cfg, cell: dict) -> Path:
    return cfg.run_dir / "ledger" / f"{cell_key(cell)}.json"


def package_version() -> str:
    """From the installed metadata: workers need not import ``scaling`` (and statsmodels with it)."""
    try:
        return importlib.metadata.version("synth-scaling")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cell_fingerprint(cfg, cell: dict) -> str:
    """What determines one cell's numbers beyond its coordinates: the run's fixed fields (dataset, split,
    classifier and protocol), its source's options when it uses a pool (and the pool recipe's version), the
    package version, and the torch thread count (``cpus_per_trial`` changes accuracies in the 3rd decimal). Not
    the rest of the grid, and not the pool's size (cells take prefixes of prefix-stable pools): a run extended by
    seeds, n_real or n_synth values (larger ones too) or sources keeps its finished cells."""
    key = {"fixed": cfg.fixed_fingerprint(), "package": package_version(), "threads": cfg.threads}
    if cell["n_synth"] > 0:
        key.update(options=cfg.options(cell["source"]), pool_version=POOL_VERSION)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, default=str)))


def check_run_dir(cfg) -> None:
    """Refuse to mix two different sweeps in one run directory (called with the run folder's lock held).

    A run may grow: the same fixed fields (dataset, split, classifier, protocol) and the same options for the
    sources it already has, with more seeds, n_real or n_synth values, or sources, reuse the folder; the
    stamp then records the extended config. Anything else is refused, naming the field."""
    stamp = cfg.run_dir / "sweep.json"
    if storage.pull(cfg, stamp):
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            raise ConfigError(f"storage: {stamp} is damaged (not JSON); it records which sweep owns the folder — "
                              "restore it or choose another name") from None
        if old.get("fingerprint") == cfg.fingerprint():
            return
        if "fixed" not in old:  # written before runs could grow: the whole sweep must match
            raise ConfigError(f"storage: {cfg.run_dir} holds a different sweep (fingerprint {old.get('fingerprint')}); "
                              "choose another storage/name, or delete that folder")
        _check_extension(cfg, old)
        grown = _growth(old["config"], cfg)
        print(f"extending the run in {cfg.run_dir}: {grown}; finished cells are kept", file=sys.stderr)
    write_json_atomic(stamp, {"fingerprint": cfg.fingerprint(), "fixed": cfg.fixed_fingerprint(),
                              "config": json.loads(json.dumps(cfg.__dict__, default=list))})
    storage.push(cfg, stamp)


def _check_extension(cfg, old: dict) -> None:
    """The stamp's run and ``cfg`` differ only along the grid (and in options of sources the run did not have)."""
    before = old["config"]
    if old["fixed"] != cfg.fixed_fingerprint():
        now = cfg.fixed_fields()
        changed = sorted(k for k in set(now) | set(before) if k in now and json.loads(json.dumps(before.get(k), default=list))
                         != now[k]) or ["protocol"]
        raise ConfigError(f"{changed[0]}: differs from the run in {cfg.run_dir} (it changes every finished cell); "
                          "a run can only grow by seeds, n_real or n_synth values, or sources — use another name")
    for src in set(before.get("sources", [])) & set(cfg.sources):
        was = (before.get("source_options") or {}).get(src) or {}
        if json.loads(json.dumps(was, default=list)) != json.loads(json.dumps(cfg.source_options.get(src) or {}, default=list)):
            raise ConfigError(f"source_options.{src}: differs from the run in {cfg.run_dir} (its pools and cells were "
                              "made with the old options) — use another name")


def _growth(before: dict, cfg) -> str:
    parts = []
    for key in ("sources", "n_real", "n_synth", "seeds"):
        added = [v for v in getattr(cfg, key) if v not in before.get(key, [])]
        if added:
            parts.append(f"+{key} {added}")
    return ", ".join(parts) or "a smaller grid (cells outside it are kept in the ledger)"


def check_ledger(cfg) -> set[str]:
    """Keys of the finished cells of this grid; a damaged entry, or one computed under another cell fingerprint
    (package version, thread count, pool recipe), is refused before anything runs — never reused, never silently
    overwritten. Entries of cells outside the grid (a run that shrank) are left alone."""
    done = set()
    storage.pull_tree(cfg, cfg.run_dir / "ledger")  # a remote run folder: entries finished on any node
    wanted = {cell_key(c): c for c in cfg.cells()}
    for path in sorted((cfg.run_dir / "ledger").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"ledger: {path} is damaged (not JSON); delete it to recompute that cell") from None
        if path.stem not in wanted:
            continue
        theirs, current = entry.get("cell_fingerprint"), cell_fingerprint(cfg, wanted[path.stem])
        if theirs is not None and theirs != current:
            raise ConfigError(f"resources.cpus_per_trial: {path.name} was computed under cell fingerprint {theirs} "
                              f"(package version or torch threads differ from now: {package_version()}, "
                              f"{cfg.threads} thread(s)); resume with the same package and cpus_per_trial, "
                              "or use another name")
        done.add(path.stem)
    return done


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir/.lock`` for a whole sweep: two sweeps into one folder would mix their cells.

    Created with O_EXCL (atomic on POSIX and NFSv3+); a lock left by a process that is gone (same host,
    dead PID) is taken over with a message; one held elsewhere is refused, naming its holder.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                print(f"taking over a stale lock of {run_dir} (pid {holder.get('pid')} is gone)", file=sys.stderr)
                lock.unlink(missing_ok=True)
                continue
            raise RunFolderBusy(f"storage: {run_dir} is in use by another sweep (pid {holder.get('pid')} on "
                                f"{holder.get('host')} since {holder.get('since')}); wait for it, or delete "
                                f"{lock} if that process is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
