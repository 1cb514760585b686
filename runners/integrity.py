"""One integrity rule for every artefact the package caches or stores: the package records a sha256 when it
writes a file and checks it before the file is used. A file whose record is missing is refused like one that
does not match it (never used unchecked); each refusal is one line naming the file and the way out.

Dataset caches (``meta.json`` ``checksums``), the judge (its ``.json``), pools (their meta's ``sha256``),
generator folders (``meta.json`` ``files``) and ledger entries (``checksum``) all go through here.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path


class IntegrityError(ValueError):
    """A cached or stored file that is not the one the package wrote (or that carries no record of it)."""


def file_checksum(path: str | os.PathLike) -> str:
    """sha256 of a file, streamed in 8 MiB blocks (hashlib.file_digest needs Python 3.11; the package runs on 3.10)."""
    return _checksum(str(path), *_identity(path))


def _identity(path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


@lru_cache(maxsize=256)
def _checksum(path: str, size: int, mtime_ns: int, inode: int) -> str:
    # keyed by size, mtime and inode too: a trial worker that loads one pool for many cells hashes it once, and a
    # file replaced or edited in place (a new inode or mtime) is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, recorded, what: str, way_out: str) -> None:
    """Refuse ``path`` unless it exists and its sha256 equals ``recorded`` (the record written with it).

    ``what`` names the artefact (``"the judge"``), ``way_out`` says how to get a good one back
    (``"delete it to retrain it"``)."""
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{what}: {path} is missing; {way_out}")
    if not isinstance(recorded, str) or not recorded:
        raise IntegrityError(f"{what}: {path} carries no checksum record (written by another version?); {way_out}")
    if file_checksum(path) != recorded:
        raise IntegrityError(f"{what}: {path} was modified after it was written (checksum mismatch); {way_out}")


def read_record(path: str | os.PathLike, what: str, way_out: str) -> dict:
    """The JSON object a record file holds (the checksums written beside an artefact); an unreadable file or one
    that is not an object is refused naming it, never read as "no record"."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IntegrityError(f"{what}: the record {path} is unreadable ({detail}); {way_out}") from None
    if not isinstance(record, dict):
        raise IntegrityError(f"{what}: the record {path} is not a JSON object; {way_out}")
    return record


def folder_checksums(folder: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative POSIX paths), except the names in ``skip``."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): file_checksum(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def verify_folder(folder: str | os.PathLike, recorded, what: str, way_out: str, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse ``folder`` unless its files are exactly those ``recorded`` (from :func:`folder_checksums`)."""
    folder = Path(folder)
    if not isinstance(recorded, dict) or not recorded:
        raise IntegrityError(f"{what}: {folder} carries no checksum record (written by another version?); {way_out}")
    have = folder_checksums(folder, skip=skip)
    for name in sorted(set(recorded) | set(have)):
        if name not in have:
            raise IntegrityError(f"{what}: {folder / name} is missing; {way_out}")
        if name not in recorded:
            raise IntegrityError(f"{what}: {folder / name} was not written with it; {way_out}")
        if have[name] != recorded[name]:
            raise IntegrityError(
                f"{what}: {folder / name} was modified after it was written (checksum mismatch); {way_out}"
            )
