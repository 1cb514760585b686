"""Files written whole or not at all: the one home of atomic writes and of cleaning up after killed writers.

Imported by every room that writes (runners, scaling, paper_figures); imports nothing of the package.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# the process's umask, read once (reading it means setting it): atomic writes get the mode a plain open() gives
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# every temporary name the package writes starts with this: cleaning up removes these and nothing of the user's
TEMP_PREFIX = ".scaling-tmp."


def temp_name(name: str, tag: str) -> str:
    """A temporary name beside ``name`` (``.scaling-tmp.<name>.<tag>``): hidden from the run folder's readers
    (a leading dot) and recognisable by :func:`clean_temp_files` as the package's own."""
    return f"{TEMP_PREFIX}{name}.{tag}"


def write_atomic(path: str | os.PathLike, write) -> Path:
    """``write(tmp)`` to a temp file beside ``path``, then rename it over ``path``.

    Readers never see a half-written file, and concurrent writers of the same content cannot corrupt it.
    The temp name is :data:`TEMP_PREFIX` + the name + a random part, and keeps the suffix (``np.savez`` would
    otherwise append ``.npz``); it is removed on failure, and :func:`clean_temp_files` removes those a killed
    writer left. The file gets the usual mode (``0o666`` less the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk or a size limit: name the file the caller asked for
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def clean_temp_files(folder: str | os.PathLike, *, recursive: bool = True) -> int:
    """Remove what the package's interrupted writes left in ``folder`` (and below it, when ``recursive``): the
    files and folders whose names start with :data:`TEMP_PREFIX` — atomic writes, downloads, generator folders, report
    staging. Nothing else is touched, whatever its name. Call it only while no writer can be active (the run
    lock held). Returns how many were removed."""
    folder = Path(folder)
    found = folder.rglob(TEMP_PREFIX + "*") if recursive else folder.glob(TEMP_PREFIX + "*")
    removed = 0
    for path in sorted(found, reverse=True):  # children before their folders
        if not path.exists() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed
