"""Run folders on object stores: ``storage: s3://bucket/prefix`` (or ``gs://``, ``hdfs://``, ``file://``).

Everything a sweep keeps — ledger entries, pools, generator weights, the judge, ``sweep.json``, ``results.nc``
and ``features.nc`` — is written where the code always wrote it, in the *run folder*; for a URI that folder is a
node-local mirror (``$SCALING_CACHE/runs/<hash of the URI>/<name>``) and each artefact is uploaded as one object
right after it is complete (:func:`push`), and downloaded on first use on any node (:func:`pull`). One object PUT
is all-or-nothing, so a reader never sees half a file, as with the atomic renames of a local folder. The
filesystem is ``pyarrow.fs`` — the layer Ray Tune itself uses for ``storage_path`` — with its usual credentials
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` on every node, or instance roles). A URI's query names the
endpoint of an S3-compatible server: ``s3://bucket/runs?endpoint_override=host:9000&scheme=http``.

Code reaches all of this through :class:`RunFolder`: ``write``/``write_json`` write an artefact atomically and
upload it, ``fetch``/``fetch_tree`` download on first use, ``lock`` holds the folder for one sweep — so a new
artefact cannot forget its upload. Kept node-local, not uploaded: the run lock, Ray Tune's own experiment folder (the ledger, not Tune's state,
decides what resumes), and the diagnostic logs ``executions.log`` / ``failures.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from filelock import FileLock, Timeout
from pyarrow import fs as pafs

from analysis.io import temp_name, write_atomic

URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# credentials an S3 URI may carry (``s3://KEY:SECRET@bucket`` or ``?access_key=..&secret_key=..``) and the
# environment variables pyarrow reads them from on every node
S3_CREDENTIALS = {
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}
# what a URI carried, kept only in this process's memory (for the Ray workers of a cluster, see ``worker_env``)
_FROM_URIS: dict[str, str] = {}


def is_uri(storage: str) -> bool:
    """A scheme followed by ``://`` at the start (``s3://``, ``file://``); a local path merely containing
    ``://`` is a path."""
    return _SCHEME.match(str(storage)) is not None


def split_credentials(uri: str) -> str:
    """The URI without its credentials, which move into this process's environment (``AWS_*``, read by pyarrow
    here and inherited by the Ray workers it starts): a secret is never printed, hashed into the mirror's name,
    stored in ``sweep.json``, the cube's provenance or Tune's experiment state. Other schemes carry none."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secrets = {S3_CREDENTIALS[k]: v for k, v in query if k in S3_CREDENTIALS}
    if parts.password is not None or parts.username is not None:
        if parts.scheme != "s3":
            raise ValueError(
                f"{redact(uri)} carries credentials; give them to {parts.scheme} through its usual "
                "environment or configuration instead"
            )
        secrets.update(
            {"AWS_ACCESS_KEY_ID": unquote(parts.username or ""), "AWS_SECRET_ACCESS_KEY": unquote(parts.password or "")}
        )
    if not secrets:
        return uri
    os.environ.update(secrets)
    _FROM_URIS.update(secrets)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    kept = "&".join(q for q in parts.query.split("&") if q.partition("=")[0] not in S3_CREDENTIALS)  # as written
    return urlunsplit((parts.scheme, netloc, parts.path, kept, parts.fragment))


def redact(text: str) -> str:
    """``text`` with any URI password and credential query value replaced by ``***`` (for messages)."""
    text = re.sub(r"(://[^/@\s:]*):[^@\s]*@", r"\1:***@", str(text))  # a password may hold an unencoded '/'
    return re.sub(rf"(\b(?:{'|'.join(S3_CREDENTIALS)})=)[^&\s]*", r"\1***", text)


def worker_env() -> dict[str, str]:
    """The credentials a storage URI carried, for the ``runtime_env`` of a Ray cluster's workers."""
    return dict(_FROM_URIS)


def check_storage_uri(storage: str) -> str | None:
    """None if ``storage`` is a URI this package can write to (checked without connecting), else why not."""
    if not is_uri(storage):
        return f"{redact(storage)!r} is not a URI (scheme://...)"
    scheme = urlsplit(storage).scheme
    if scheme == "file":
        host = urlsplit(storage).netloc
        if host not in ("", "localhost"):  # file://runs parses 'runs' as a host: the files would land elsewhere
            return (
                f"{redact(storage)!r} names the host {host!r}; a file:// URI holds an absolute path "
                f"(file:///abs/path, three slashes) — for a folder relative to here, give the path itself"
            )
        return None
    if scheme not in URI_SCHEMES:
        return f"unsupported URI scheme {scheme!r}; use a path, file://, or one of {', '.join(URI_SCHEMES)}"
    if not urlsplit(storage).netloc:
        return f"{redact(storage)!r} names no bucket or host"
    return None


def local_path(storage: str) -> Path | None:
    """The local folder of a plain path or a file:// URI; None for a remote URI."""
    if not is_uri(storage):
        return Path(storage)
    parts = urlsplit(storage)
    return Path(parts.path) if parts.scheme == "file" else None


def mirror_root(storage: str) -> Path:
    """Where a remote storage's run folders are mirrored on this node."""
    base = Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling").expanduser()
    return base / "runs" / hashlib.sha256(storage.encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _filesystem(storage: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(storage)


def remote(cfg) -> tuple[pafs.FileSystem, str] | None:
    """(filesystem, base path of the run folder) for a remote storage, else None."""
    if local_path(cfg.storage) is not None:
        return None
    filesystem, base = _filesystem(cfg.storage)
    return filesystem, f"{base.rstrip('/')}/{cfg.name}"


def _remote_path(cfg, path: Path) -> tuple[pafs.FileSystem, str] | None:
    where = remote(cfg)
    if where is None:
        return None
    filesystem, base = where
    return filesystem, f"{base}/{Path(path).relative_to(cfg.run_dir).as_posix()}"


class StorageError(OSError):
    """The run folder's store stayed unreachable through every retry, or a disk refused a write."""


class PermanentStorageError(StorageError):
    """The store answered, and no retry can change its answer: the bucket does not exist, the credentials are
    refused. The sweep stops at the first one (exit 5) instead of retrying every upload of every trial."""


# pyarrow raises a plain OSError for every store error and carries the S3 error code only in its text, so the
# text is all there is to tell a refusal from a dropped connection (a retry fixes only the latter)
PERMANENT_STORE_ERRORS = (
    "NO_SUCH_BUCKET",
    "The specified bucket does not exist",
    "To create buckets, enable the allow_bucket_creation option",
    "ACCESS_DENIED",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "EXPIRED_TOKEN",
)


def is_permanent(exc: OSError) -> bool:
    return any(code in str(exc) for code in PERMANENT_STORE_ERRORS)


# seconds between the attempts of one storage call: a store that is back within ~30 s loses nothing
RETRY_DELAYS = (1, 2, 4, 8, 16)


def with_retries(what: str, call):
    """``call()``, retried with exponential backoff on I/O errors (a store restarting, a dropped connection);
    after the last attempt one :class:`StorageError` naming ``what``. Ray Tune's callback never sees it: the
    calls run in trials and in the driver outside Tune's loop."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return call()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            raise StorageError(f"storage: {what} failed: {redact(str(exc)).splitlines()[0]}") from exc
        except OSError as exc:  # pyarrow raises OSError for network and server errors alike: transient
            if is_permanent(exc):
                raise PermanentStorageError(f"storage: {what} failed: {redact(str(exc)).splitlines()[0]}") from exc
            if delay is None:
                raise StorageError(
                    f"storage: {what} failed after {len(RETRY_DELAYS) + 1} attempts: {redact(str(exc)).splitlines()[0]}"
                ) from exc
            time.sleep(delay)


def push(cfg, path: Path) -> None:
    """Upload one finished file of the run folder (no-op for local storage), retried until the store has it."""
    target = _remote_path(cfg, path)
    if target is None:
        return
    filesystem, key = target

    def upload():
        filesystem.create_dir(key.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as src, filesystem.open_output_stream(key) as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)

    with_retries(f"uploading {key}", upload)


def push_tree(cfg, folder: Path) -> None:
    """Upload the files of a finished folder (a generator's weights) that the store lacks."""
    target = _remote_path(cfg, folder)
    if target is None:
        return
    filesystem, key = target
    listing = with_retries(
        f"listing {key}", lambda: filesystem.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    )
    have = {info.path for info in listing}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and f"{key}/{path.relative_to(folder).as_posix()}" not in have:
            push(cfg, path)


def pull(cfg, path: Path) -> bool:
    """Make ``path`` of the run folder present locally, downloading it if the store has it; returns whether it
    exists now. Downloads go to a temporary name first: a reader never sees half a file."""
    path = Path(path)
    if path.exists():
        return True
    target = _remote_path(cfg, path)
    if target is None:
        return False
    filesystem, key = target
    if with_retries(f"reading {key}", lambda: filesystem.get_file_info(key).type) != pafs.FileType.File:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name, f"part-{os.getpid()}"))

    def download():
        with filesystem.open_input_stream(key) as src, open(tmp, "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)

    with_retries(f"downloading {key}", download)
    tmp.replace(path)
    return True


def pull_tree(cfg, folder: Path) -> None:
    """Download every file under ``folder`` of the run folder that this node lacks."""
    target = _remote_path(cfg, folder)
    if target is None:
        return
    filesystem, key = target
    infos = with_retries(
        f"listing {key}", lambda: filesystem.get_file_info(pafs.FileSelector(key, recursive=True, allow_not_found=True))
    )
    for info in infos:
        if info.type == pafs.FileType.File:
            pull(cfg, Path(folder) / info.path[len(key) + 1 :])


def reconcile(cfg) -> int:
    """Upload every artefact of this node's mirror that the store lacks (an object deleted from the bucket, an
    upload lost with a node), so "a sweep resumes from the bucket alone" stays true after every rerun; what the
    store has and the mirror lacks is downloaded on first use (:func:`pull`). One listing, then one PUT per
    missing object; returns how many were uploaded. No-op for local storage."""
    where = remote(cfg)
    if where is None or not cfg.run_dir.exists():
        return 0
    filesystem, base = where
    listing = with_retries(
        f"listing {base}",
        lambda: filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)),
    )
    have = {info.path for info in listing if info.type == pafs.FileType.File}
    uploaded = 0
    for path in sorted(cfg.run_dir.rglob("*")):
        rel = path.relative_to(cfg.run_dir)
        if not path.is_file() or _node_local(rel) or f"{base}/{rel.as_posix()}" in have:
            continue
        push(cfg, path)
        uploaded += 1
    return uploaded


NODE_LOCAL = ("tune", "executions.log", "failures.log")  # never uploaded (see the module's docstring)


def _node_local(rel: Path) -> bool:
    return rel.parts[0] in NODE_LOCAL or any(part.startswith(".") for part in rel.parts)


def stored_name(cfg, path: Path) -> str:
    """How a message names a run-folder file: the path, and for a remote run folder the store's object too, so
    "delete it" reaches the copy a rerun would download again."""
    target = _remote_path(cfg, path)
    if target is None:
        return str(path)
    scheme = urlsplit(cfg.storage).scheme
    return f"{scheme}://{target[1]} (mirrored at {path})"


def check_writable(folder: Path, what: str) -> None:
    """Refuse, naming the folder, a folder this node cannot write (a read-only mount, a full disk), before Ray
    starts: otherwise the first write inside a Ray task fails after its retries."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temp_name("write-check", ""), dir=folder)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise StorageError(exc.errno, f"{what}: cannot write here ({exc.strerror or exc})", str(folder)) from None


class RunFolderBusy(RuntimeError):
    """Another sweep holds the run folder's lock."""


class RunFolder:
    """A sweep's run folder (``cfg.run_dir``: the local folder, or this node's mirror of a URI storage) and the
    one way artefacts enter and leave it: written whole (atomic rename), then uploaded; read after a download
    on first use. Cheap to make (it holds the config only), so Ray tasks and trials make their own."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.path = cfg.run_dir

    def write(self, path: Path, write) -> Path:
        """``write(tmp)`` into a temp file renamed over ``path``, then upload it (retried; no-op locally)."""
        write_atomic(path, write)
        push(self.cfg, Path(path))
        return Path(path)

    def write_json(self, path: Path, payload) -> Path:
        return self.write(path, lambda tmp: tmp.write_text(json.dumps(payload, default=str)))

    def upload(self, path: Path) -> Path:
        """Upload a file written whole by other means (a cube, a pool's arrays)."""
        push(self.cfg, Path(path))
        return Path(path)

    def upload_tree(self, folder: Path) -> None:
        push_tree(self.cfg, Path(folder))

    def fetch(self, path: Path) -> bool:
        """Whether ``path`` exists here now, downloading it first if only the store has it."""
        return pull(self.cfg, Path(path))

    def fetch_tree(self, folder: Path) -> None:
        pull_tree(self.cfg, Path(folder))

    def reconcile(self) -> int:
        return reconcile(self.cfg)

    def lock(self):
        """Hold the folder for one sweep (:func:`run_lock`)."""
        return run_lock(self.path)


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir/.lock`` for a whole sweep: two sweeps into one folder would mix their cells.

    A kernel lock (``filelock``): it dies with its holder, so a killed sweep leaves nothing to take over, and
    a lock file that could not be written in full (a full disk) cannot block anyone. Who holds it (host, pid,
    since) is written inside the lock file after it is taken, for the refusal's message only.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusy(
            f"storage: {run_dir} is in use by another sweep ({_holder(path)}); wait for it to finish"
        ) from None
    try:
        _write_holder(path)
        yield
    finally:
        lock.release()


def _write_holder(path: Path) -> None:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        with open(path, "r+") as fh:
            fh.truncate()
            fh.write(json.dumps(me))
    except OSError:  # the lock is held either way; only the message of a refused sweep loses its holder
        pass


def _holder(path: Path) -> str:
    """Who holds the lock: the text its holder wrote, checked against the kernel's lock table where there is one
    (Linux ``/proc/locks``): text left by an earlier holder, or by none, must not name the wrong process."""
    try:
        holder = json.loads(path.read_text())
        written = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
        written_pid = int(holder["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        written, written_pid = "holder unknown", None
    live = _kernel_lock_holder(path)
    if live is None or live == written_pid:
        return written
    return f"pid {live} on {socket.gethostname()}"


def _kernel_lock_holder(path: Path) -> int | None:
    """The pid holding an flock on ``path`` according to ``/proc/locks`` (Linux, same host), else None."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4261 00:2f:123456 0 EOF"; a blocked waiter's line carries "->" first
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            try:
                return int(parts[4])
            except ValueError:
                continue
    return None
