"""Run folders in an object store: a real S3-compatible server (moto's, started on 127.0.0.1 by the test),
reached through pyarrow.fs exactly as a cluster reaches S3. Skipped with a message if the server cannot start."""

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

import scaling
from runners import storage
from runners.config import ConfigError, load_config
from tests.test_sweep import TINY, _held, _kill_node, _own_ray_processes, _wait_for  # noqa: F401 (the autouse Ray fixture)

pytestmark = pytest.mark.slow
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
SERVERS: dict = {}  # endpoint -> the running server, so a test can take it down and bring it back


def _restart(endpoint: str, down_s: float) -> None:
    """Stop the S3 server for ``down_s`` seconds, then serve again on the same port; moto keeps its objects in
    this process, so the bucket comes back as it was, as a restarted S3 endpoint would."""
    from moto.server import ThreadedMotoServer

    host, port = endpoint.split(":")
    SERVERS[endpoint].stop()
    time.sleep(down_s)
    SERVERS[endpoint] = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
    SERVERS[endpoint].start()


@pytest.fixture(scope="module")
def s3():
    """(endpoint host:port) of a fresh S3 server with a bucket named 'bucket'."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"no S3-compatible server to start (pip install 'moto[server]'): {exc}")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to serve means the test cannot run here
        pytest.skip(f"the S3 server could not start on 127.0.0.1:{port}: {exc}")
    SERVERS[f"127.0.0.1:{port}"] = server
    old = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bucket")
    yield f"127.0.0.1:{port}"
    SERVERS.pop(f"127.0.0.1:{port}").stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _uri(endpoint: str, prefix: str) -> str:
    return f"s3://bucket/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _bucket_ledger(cfg) -> set[str]:
    filesystem, base = storage.remote(cfg)
    from pyarrow import fs

    infos = filesystem.get_file_info(fs.FileSelector(f"{base}/ledger", allow_not_found=True))
    return {Path(i.path).stem for i in infos if i.path.endswith(".json")}


def test_push_and_pull_round_trip_and_a_missing_object_is_not_there(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "node"))
    cfg = load_config({**TINY, "storage": _uri(s3, "unit")})
    assert cfg.run_dir.is_relative_to(tmp_path / "node" / "runs")  # a node-local mirror
    f = cfg.run_dir / "pools" / "a.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x" * 5_000_000)
    storage.push(cfg, f)
    f.unlink()
    assert storage.pull(cfg, f) and f.read_bytes() == b"x" * 5_000_000
    assert not storage.pull(cfg, cfg.run_dir / "pools" / "missing.bin")
    assert not list(f.parent.glob(".*part*"))  # no partial download left behind


def test_a_bucket_only_sweep_is_killed_and_resumed_without_recomputing_finished_trials(s3, tmp_path):
    uri = _uri(s3, "runs")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "storage": uri}))
    env, release = _held(tmp_path, "real-r30-s30-seed1")
    node_a = tmp_path / "node-a"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env={**env, **CREDENTIALS, "SCALING_CACHE": str(node_a)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = load_config({**TINY, "storage": uri})
    _wait_for(
        lambda: release.with_suffix(".held").exists() and len(_bucket_ledger(probe)) >= 3,
        proc,
        "3 trials in the bucket and the held one started",
    )
    _kill_node(proc)  # the driver dies mid-sweep with its node: no trial of node A may finish and upload after this
    done_before = _bucket_ledger(probe)
    assert 3 <= len(done_before) < 12 and "real-r30-s30-seed1" not in done_before
    # another machine: nothing local survives, the bucket is the only storage
    node_b = tmp_path / "node-b"
    resumed = subprocess.run(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env={**os.environ, **CREDENTIALS, "SCALING_CACHE": str(node_b)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    mirror = node_b / "runs" / storage.mirror_root(uri).name / "tiny"  # node B's mirror of the run folder
    ran = Counter((mirror / "executions.log").read_text().split())
    assert not set(ran) & done_before, f"finished trials ran again: {set(ran) & done_before}"
    assert max(ran.values()) == 1 and len(ran) + len(done_before) == 12
    print(f"bucket-only resume: {len(done_before)} trials finished before the kill, {len(ran)} run after it, 0 twice")
    assert _bucket_ledger(probe) == done_before | set(ran)
    cube = scaling.open_cube(mirror / "results.nc")
    assert int((cube["status"] == 1).sum()) == cube["status"].size
    filesystem, base = storage.remote(probe)
    with filesystem.open_input_stream(f"{base}/results.nc") as fh:  # the bucket's cube is the one written
        assert fh.read() == (mirror / "results.nc").read_bytes()
    assert np.isfinite(cube["accuracy"].values).all()


def test_a_store_down_mid_sweep_loses_nothing_and_credentials_in_the_uri_are_never_stored(s3, tmp_path):
    """The S3 endpoint goes away for 8 s while trials finish and upload (uploads are retried with backoff), with
    the credentials given only inside the URI: the sweep ends with exit 0, every entry reaches the bucket, and the
    secret appears in no file of the run folder (sweep.json, results.nc, Tune's experiment state) nor in the
    output."""
    secret = "Sup3rSecretKey"
    uri = f"s3://test:{secret}@bucket/outage?endpoint_override={s3}&scheme=http&region=us-east-1"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "storage": uri}))
    env, release = _held(tmp_path, "real-r30-s30-seed1")
    env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    node = tmp_path / "node"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path)],
        env={**env, "AWS_DEFAULT_REGION": "us-east-1", "SCALING_CACHE": str(node)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    probe = load_config({**TINY, "storage": uri})
    _wait_for(
        lambda: release.with_suffix(".held").exists() and len(_bucket_ledger(probe)) >= 2,
        proc,
        "2 trials in the bucket and the held one started",
    )
    _restart(s3, down_s=8)  # trials finishing meanwhile retry their uploads
    release.touch()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert len(_bucket_ledger(probe)) == 12
    mirror = node / "runs" / storage.mirror_root(probe.storage).name / "tiny"
    assert not any(secret.encode() in path.read_bytes() for path in mirror.rglob("*") if path.is_file())
    assert secret not in out.decode() + err.decode()


def _delete_objects(endpoint: str, prefix: str, *, bucket_too: bool = False) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{endpoint}")
    for obj in client.list_objects_v2(Bucket="bucket", Prefix=prefix).get("Contents", []):
        client.delete_object(Bucket="bucket", Key=obj["Key"])
    if bucket_too:
        for obj in client.list_objects_v2(Bucket="bucket").get("Contents", []):
            client.delete_object(Bucket="bucket", Key=obj["Key"])
        client.delete_bucket(Bucket="bucket")


def test_objects_deleted_from_the_bucket_are_uploaded_again_by_a_rerun_and_a_bad_entry_names_the_object(
    s3, tmp_path, monkeypatch
):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "node"))
    cfg = {**TINY, "n_real": [10], "storage": _uri(s3, "reconcile")}
    scaling.run_sweep(cfg, quiet=True)
    probe = load_config(cfg)
    before = _bucket_ledger(probe)
    assert len(before) == 6
    _delete_objects(s3, "reconcile/tiny/ledger/real-r10-s0")  # two entries lost from the bucket
    assert len(_bucket_ledger(probe)) == 4
    scaling.run_sweep(cfg, quiet=True)  # this node still has its mirror: nothing to compute, the bucket is refilled
    assert _bucket_ledger(probe) == before
    # an entry replaced in the bucket by another cell's: the refusal names the object a rerun would download again
    filesystem, base = storage.remote(probe)
    mirror = probe.run_dir / "ledger"
    with filesystem.open_output_stream(f"{base}/ledger/real-r10-s0-seed0.json") as fh:
        fh.write((mirror / "real-r10-s10-seed0.json").read_bytes())
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "fresh-node"))
    with pytest.raises(
        ConfigError, match=r"ledger: s3://bucket/reconcile/tiny/ledger/real-r10-s0-seed0\.json \(mirrored"
    ):
        scaling.run_sweep(cfg, quiet=True)


def test_a_missing_bucket_is_one_exit_5_at_the_first_failure(s3, tmp_path, monkeypatch, capsys):
    from scaling.cli import main

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "node"))
    path = tmp_path / "c.yaml"
    uri = f"s3://no-such-bucket/runs?endpoint_override={s3}&scheme=http&region=us-east-1"
    path.write_text(yaml.safe_dump({**TINY, "storage": uri}))
    started = time.time()
    assert main(["sweep", str(path), "--quiet"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-bucket" in err[0] and time.time() - started < 20, err


def test_a_bucket_deleted_mid_sweep_ends_the_sweep_at_the_first_failed_upload(s3, tmp_path):
    import boto3

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "storage": _uri(s3, "gone")}))
    env, release = _held(tmp_path, "real-r10-s0-seed0")  # the first trial: the bucket goes before most have run
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "sweep", str(cfg_path), "--quiet"],
        env={**env, **CREDENTIALS, "SCALING_CACHE": str(tmp_path / "node")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(release.with_suffix(".held").exists, proc, "the held trial started")
        _delete_objects(s3, "", bucket_too=True)
        started = time.time()
        release.touch()
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 5, err.decode()[-3000:]
        last = err.decode().strip().splitlines()[-1]
        # refused at once, not after the retries a dropped connection gets (6 attempts over 31 s per upload, and
        # every trial's own retries: such a sweep had not ended after 400 s)
        assert "Bucket 'bucket' not found" in last and "attempts" not in last, last
        assert time.time() - started < 300  # a retried sweep had not ended after 400 s
    finally:
        boto3.client("s3", endpoint_url=f"http://{s3}").create_bucket(Bucket="bucket")  # for the tests after
