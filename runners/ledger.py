"""The run folder's record of finished work, and who may write to it.

Resume is exact: every finished trial writes its result to ``ledger/<cell>.json`` (atomically) before it
reports, and a rerun only schedules cells without an entry. This is stricter than ``Tuner.restore``,
which replays the experiment state saved at its last snapshot and can rerun trials that finished after it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

from runners.storage import RunFolder, stored_name
from runners.config import ConfigError, protocol_label
from runners.pools import POOL_VERSION
from analysis.io import write_atomic


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


def fingerprint_parts(cfg, cell: dict) -> dict:
    """What determines one cell's numbers beyond its coordinates: the run's fixed fields (dataset, split,
    classifier and protocol), its source's options when it uses a pool (and the pool recipe's version), the
    package version, and the torch thread count (``cpus_per_trial`` changes accuracies in the 3rd decimal). Not
    the rest of the grid, and not the pool's size (cells take prefixes of prefix-stable pools): a run extended by
    seeds, n_real or n_synth values (larger ones too) or sources keeps its finished cells."""
    key = {"fixed": cfg.fixed_fingerprint(), "package": package_version(), "threads": cfg.threads}
    if cell["n_synth"] > 0:
        key.update(options=cfg.options(cell["source"]), pool_version=POOL_VERSION)
        if cfg.kind(cell["source"]) != cell["source"]:  # a named source: its kind too (the four kinds' names hash
            key["kind"] = cfg.kind(cell["source"])  # as they always did)
    return json.loads(json.dumps(key, default=list))


def cell_fingerprint(cfg, cell: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint_parts(cfg, cell), sort_keys=True).encode()).hexdigest()[:16]


# which field of the config a differing fingerprint part points at, for the refusal
_PART_FIELDS = {
    "fixed": "dataset/classifier",
    "package": "the package version",
    "threads": "resources.cpus_per_trial",
    "pool_version": "the pool recipe version",
}


def _differing_field(entry: dict, now: dict, source: str) -> str:
    """Name the config field behind a fingerprint mismatch; entries record their parts since they carry a
    checksum, older ones only the hash (then every candidate is named)."""
    parts = entry.get("fingerprint_parts")
    if not isinstance(parts, dict):
        return f"source_options.{source}, resources.cpus_per_trial or the package version"
    differ = [k for k in sorted(set(parts) | set(now)) if parts.get(k) != now.get(k)]
    return ", ".join(f"source_options.{source}" if k == "options" else _PART_FIELDS.get(k, k) for k in differ)


# the keys every ledger entry has (a trial writes them all); an entry without one cannot enter the cube
ENTRY_KEYS = ("accuracy", "loss", "cell_fingerprint", "source", "n_real", "n_synth", "seed")
CELL_COORDS = ("source", "n_real", "n_synth", "seed", "budget", "synth_weight")


def entry_checksum(entry: dict) -> str:
    """sha256 of an entry's content without its own checksum: an edit in place is detected on resume."""
    body = {k: v for k, v in entry.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ledger_entry(metrics: dict, cell: dict, parts: dict) -> dict:
    entry = {**metrics, **cell, "fingerprint_parts": parts}
    return {**entry, "checksum": entry_checksum(entry)}


def write_json_atomic(path: Path, payload: dict) -> None:
    """A JSON file written atomically, not uploaded (for what stays on one node); a run folder's artefacts go
    through :meth:`runners.storage.RunFolder.write_json`."""
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, default=str)))


def check_run_dir(cfg) -> dict | None:
    """Refuse to mix two different sweeps in one run directory (called with the run folder's lock held).

    A run may grow: the same fixed fields (dataset, split, classifier, protocol) and the same options for the
    sources it already has, with more seeds, n_real or n_synth values, or sources, reuse the folder; the
    stamp then records the extended config. Anything else is refused, naming the field. Writes nothing:
    returns the stamp to write (None when it is unchanged), which :func:`write_stamp` writes once every other
    check (the ledger's) has passed — a refused run leaves the folder as it was."""
    stamp = cfg.run_dir / "sweep.json"
    new = {
        "fingerprint": cfg.fingerprint(),
        "fixed": cfg.fixed_fingerprint(),
        "config": json.loads(json.dumps(cfg.as_written(), default=list)),
    }
    if not RunFolder(cfg).fetch(stamp):
        return new
    try:
        old = json.loads(stamp.read_text())
    except ValueError:
        raise ConfigError(
            f"storage: {stamp} is damaged (not JSON); it records which sweep owns the folder — "
            "restore it or choose another name"
        ) from None
    if not isinstance(old, dict):
        raise ConfigError(f"storage: {stamp} is damaged (not a JSON object); restore it or choose another name")
    if old.get("fingerprint") == cfg.fingerprint():
        return None
    if "fixed" not in old or not isinstance(old.get("config"), dict):  # a stamp from before runs could grow
        raise ConfigError(
            f"storage: {cfg.run_dir} holds a different sweep (fingerprint {old.get('fingerprint')}); "
            "choose another storage/name, or delete that folder"
        )
    _check_extension(cfg, old)
    new["growth"] = _growth(old["config"], cfg)
    return new


def write_stamp(cfg, stamp: dict | None) -> None:
    """Record the run's (possibly extended) config in ``sweep.json`` after every check has passed."""
    if stamp is None:
        return
    if "growth" in stamp:
        print(f"extending the run in {cfg.run_dir}: {stamp.pop('growth')}; finished cells are kept", file=sys.stderr)
    RunFolder(cfg).write_json(cfg.run_dir / "sweep.json", stamp)


def _check_extension(cfg, old: dict) -> None:
    """The stamp's run and ``cfg`` differ only along the grid (and in options of sources the run did not have)."""
    before = old["config"]
    if old["fixed"] != cfg.fixed_fingerprint():
        now = cfg.fixed_fields()
        changed = sorted(
            k
            for k in set(now) | set(before)
            if k in now and json.loads(json.dumps(before.get(k), default=list)) != now[k]
        ) or ["protocol"]
        raise ConfigError(
            f"{changed[0]}: differs from the run in {cfg.run_dir} (it changes every finished cell); "
            "a run can only grow by seeds, n_real or n_synth values, or sources — use another name"
        )
    for src in set(before.get("sources", [])) & set(cfg.sources):
        was = (before.get("source_options") or {}).get(src) or {}
        if json.loads(json.dumps(was, default=list)) != json.loads(
            json.dumps(cfg.source_options.get(src) or {}, default=list)
        ):
            raise ConfigError(
                f"source_options.{src}: differs from the run in {cfg.run_dir} (its pools and cells were "
                "made with the old options) — use another name"
            )


def _growth(before: dict, cfg) -> str:
    parts = []
    for key in ("sources", "n_real", "n_synth", "seeds"):
        added = [v for v in getattr(cfg, key) if v not in before.get(key, [])]
        if added:
            parts.append(f"+{key} {added}")
    return ", ".join(parts) or "a smaller grid (cells outside it are kept in the ledger)"


def check_ledger(cfg) -> set[str]:
    """Keys of the finished cells of this grid. Each entry of the grid is verified before anything runs: JSON
    with every key a trial writes, the coordinates of the cell its file is named after, its checksum (entries
    that carry one), and the cell fingerprint of now (package version, thread count, source options, pool
    recipe). A failing entry is refused naming the file and the field — never reused, never silently
    overwritten. Entries of cells outside the grid (a run that shrank) are left alone."""
    done = set()
    RunFolder(cfg).fetch_tree(cfg.run_dir / "ledger")  # a remote run folder: entries finished on any node
    wanted = {cell_key(c): c for c in cfg.cells()}
    for path in sorted((cfg.run_dir / "ledger").glob("[!.]*.json")):
        if path.stem in wanted:  # temp files of interrupted writes (".name...") never are
            verify_entry(cfg, path, wanted[path.stem])
            done.add(path.stem)
    return done


def read_entry(path: Path, name: str | None = None) -> dict:
    name = name or str(path)
    try:
        entry = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"ledger: {name} is damaged (not JSON); delete it to recompute that cell") from None
    if not isinstance(entry, dict):
        raise ConfigError(f"ledger: {name} is damaged (not a JSON object); delete it to recompute that cell")
    return entry


def verify_entry(cfg, path: Path, cell: dict) -> dict:
    """The entry at ``path``, checked to be a finished result of ``cell`` under the current fingerprint."""
    name = stored_name(cfg, path)  # a remote run folder: the store's object, which a rerun would download again
    entry = read_entry(path, name)
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"ledger: {name} lacks {', '.join(missing)}; delete it to recompute that cell")
    moved = [k for k in CELL_COORDS if k in cell and entry.get(k) != cell[k]]
    if moved:
        raise ConfigError(
            f"ledger: {name} holds the result of another cell ({moved[0]} = {entry.get(moved[0])!r}, "
            f"its name says {cell[moved[0]]!r}); delete it to recompute that cell"
        )
    if "checksum" not in entry:  # every entry the package writes carries one: an entry without it is unverifiable
        raise ConfigError(f"ledger: {name} carries no checksum record; delete it to recompute that cell")
    if entry["checksum"] != entry_checksum(entry):
        raise ConfigError(
            f"ledger: {name} was modified after it was written (checksum mismatch); delete it to recompute that cell"
        )
    now = fingerprint_parts(cfg, cell)
    theirs = entry["cell_fingerprint"]
    if theirs != cell_fingerprint(cfg, cell):
        raise ConfigError(
            f"{_differing_field(entry, now, cell['source'])}: {path.name} was computed under cell "
            f"fingerprint {theirs}, which differs from now (package {package_version()}, "
            f"{cfg.threads} torch thread(s)); resume with the settings it was made with, or use "
            "another name"
        )
    return entry
