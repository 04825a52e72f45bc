"""The fleet's bundles in an S3-compatible object store, against a real S3 endpoint on loopback
(moto's ThreadedMotoServer, from the [dev] extra): `shelfsight fleet bundle add` publishes a
signed bundle there, the sync server serves it, and a device's updater fetches and verifies it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shelfsight.bundle import load_bundle, pack_archive
from shelfsight.edge.sync.bundle_store import BundleStore
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.signature import generate_keypair
from shelfsight.edge.sync.updates import UpdateOptions, Updater
from shelfsight.errors import BundleError, ConfigError
from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.bundles import open_bundle_store
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.keys import sign_bundle
from shelfsight.tools.server.s3bundles import S3BundleStore
from shelfsight.tools.server.storage import open_storage
from sync_fakes import make_bundle

from cli_run import run_cli
from fleet_support import fresh_database, postgres  # noqa: F401  (fixture)

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "fleet-bundles"
STORE = f"s3://{BUCKET}/prod"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API (moto) on 127.0.0.1, for this module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    """The environment a user sets for an S3-compatible store, and a fresh bucket."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fleet-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fleet-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3")
    for bucket in client.list_buckets().get("Buckets", []):  # the module's server is shared: start empty
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket["Name"], Key=obj["Key"])
        client.delete_bucket(Bucket=bucket["Name"])
    client.create_bucket(Bucket=BUCKET)
    return client


def keys(client) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def fleet(capsys, data, *args) -> str:
    code, out, err = run_cli(["fleet", "--data-dir", data, "--bundle-store", STORE, *args], capsys)
    assert code == 0, err
    return out


def _device(tmp_path, server) -> Updater:
    """A device updater with its token and the fleet's public key, following ``server``."""
    http = HttpOptions(token_file=tmp_path / "device.token", connect_timeout_s=1.0, read_timeout_s=10.0)
    return Updater(BundleStore(tmp_path / "device"), UpdateOptions(manifest_url=server.url + "/v1/manifest",
                                                                   http=http, public_key=tmp_path / "key.pub"),
                   health_check=load_bundle)  # the model is fake bytes: the manifest must load


def test_a_bundle_published_to_s3_is_fetched_and_verified_by_a_device(tmp_path, s3, capsys):
    generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    v1 = make_bundle(tmp_path / "v1", ["a", "b"], b"model one" * 500, bundle_id="v1")
    sign_bundle(v1, tmp_path / "key.pem")  # a directory: v1/manifest.json.sig travels with it
    v2 = pack_archive(make_bundle(tmp_path / "v2", ["a", "b", "c"], b"model two" * 500, bundle_id="v2"),
                      tmp_path / "v2.tar.gz")
    sign_bundle(v2, tmp_path / "key.pem")  # an archive: v2.tar.gz.sig beside it
    data = tmp_path / "server"
    token = open_storage(f"sqlite:///{data / 'events.db'}").add_device("STORE-1-CAM-1")
    (tmp_path / "device.token").write_text(token + "\n")

    assert fleet(capsys, data, "bundle", "add", v1) == "v1\n"
    assert fleet(capsys, data, "bundle", "add", v2) == "v2\n"
    generations = {k.split("/")[2] for k in keys(s3) if not k.endswith("stored.json")}
    assert len(generations) == 2 and all(k.startswith("prod/v") for k in keys(s3))
    assert [k.split("/", 3)[-1] for k in keys(s3) if k.startswith("prod/v2/")] == \
        ["v2.tar.gz", "v2.tar.gz.sig", "stored.json"]
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="prod/v1/stored.json")["Body"].read())
    assert (record["kind"], sorted(record["files"])) == \
        ("directory", ["bundle/labels.txt", "bundle/manifest.json", "bundle/manifest.json.sig", "bundle/model.tflite"])
    assert open_storage(f"sqlite:///{data / 'events.db'}").bundle_location("v1") == f"{STORE}/v1/"
    fleet(capsys, data, "rollout", "start", "v1", "--percent", "100")
    fleet(capsys, data, "rollout", "promote")

    with SyncServer(ServerConfig(data_dir=data, port=free_port(), bundle_store=STORE)) as server:
        device = _device(tmp_path, server)
        first = device.check_once()
        assert (first.status, device.store.current_id) == ("updated", "v1")
        assert (device.store.current / "model.tflite").read_bytes() == b"model one" * 500

        fleet(capsys, data, "rollout", "start", "v2", "--percent", "100")
        fleet(capsys, data, "rollout", "promote")
        second = device.check_once()  # an archive offer, its signature from the object store
        assert (second.status, device.store.current_id) == ("updated", "v2")
        assert (device.store.current / "labels.txt").read_text() == "a\nb\nc\n"
        assert device.check_once().status == "current"
        device.session.close()
    # the server served local copies, one per generation
    assert sorted(p.name for p in (data / "bundle-cache").iterdir()) == ["v1", "v2"]


def test_a_bundle_signed_by_another_key_is_refused_by_the_device(tmp_path, s3, capsys):
    generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    v1 = make_bundle(tmp_path / "v1", ["a"], b"m" * 100, bundle_id="v1")
    sign_bundle(v1, tmp_path / "other.pem")
    data = tmp_path / "server"
    token = open_storage(f"sqlite:///{data / 'events.db'}").add_device("cam")
    (tmp_path / "device.token").write_text(token + "\n")
    fleet(capsys, data, "bundle", "add", v1)
    fleet(capsys, data, "rollout", "start", "v1", "--percent", "100")
    with SyncServer(ServerConfig(data_dir=data, port=free_port(), bundle_store=STORE)) as server:
        device = _device(tmp_path, server)
        result = device.check_once()
        device.session.close()
    assert (result.status, device.store.current_id) == ("refused", None)
    assert "signature" in result.reason


def test_storing_an_id_again_replaces_it_and_removes_the_old_generation(tmp_path, s3):
    store = S3BundleStore(STORE, tmp_path / "cache", refresh_s=0)
    assert store.put(make_bundle(tmp_path / "a", ["x"], b"first", bundle_id="b1")) == "b1"
    served = store.path("b1")
    assert (served / "model.tflite").read_bytes() == b"first"
    store.put(make_bundle(tmp_path / "b", ["x"], b"second", bundle_id="b1"))
    assert len({k.split("/")[2] for k in keys(s3) if not k.endswith("stored.json")}) == 1
    again = store.path("b1")
    assert again != served and (again / "model.tflite").read_bytes() == b"second"
    assert [p.name for p in (tmp_path / "cache" / "b1").iterdir()] == [again.parent.name]  # the old copy is gone
    store.put(make_bundle(tmp_path / "c", ["x"], b"other", bundle_id="b2"))
    assert store.ids() == ["b1", "b2"]
    assert store.location("b2") == f"{STORE}/b2/"


def test_a_damaged_object_is_refused_not_served(tmp_path, s3):
    store = S3BundleStore(STORE, tmp_path / "cache")
    store.put(make_bundle(tmp_path / "a", ["x"], b"weights", bundle_id="b1"))
    (model_key,) = [k for k in keys(s3) if k.endswith("/model.tflite")]
    s3.put_object(Bucket=BUCKET, Key=model_key, Body=b"WEIGHTS")
    with pytest.raises(BundleError, match=r"b1/bundle/model\.tflite is 7 bytes sha256 \w{12}, its record says "
                                          r"7 bytes sha256 \w{12}"):
        store.path("b1")
    assert [p.name for p in (tmp_path / "cache" / "b1").iterdir()] == []  # nothing half-fetched is left


def test_s3_mistakes_are_one_line(tmp_path, s3, capsys, monkeypatch):
    store = S3BundleStore(STORE, tmp_path / "cache")
    with pytest.raises(BundleError, match=r"^bundle 'nope' is not in the bundle store s3://fleet-bundles/prod$"):
        store.path("nope")
    with pytest.raises(ConfigError, match=r"expected s3://BUCKET or s3://BUCKET/PREFIX"):
        open_bundle_store("s3:///prefix-without-bucket")
    with pytest.raises(ConfigError, match=r"bundle store 'gs://b/p': expected a directory or s3://BUCKET/PREFIX"):
        open_bundle_store("gs://b/p")
    bundle = make_bundle(tmp_path / "a", ["x"], b"w", bundle_id="b1")
    code, out, err = run_cli(["fleet", "--data-dir", tmp_path / "d", "--bundle-store", "s3://no-such-bucket/p",
                              "bundle", "add", bundle], capsys)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [err.strip()] and "s3://no-such-bucket/p: storing b1: NoSuchBucket" in err
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not a url")
    code, out, err = run_cli(["fleet", "--data-dir", tmp_path / "d", "--bundle-store", STORE,
                              "bundle", "add", bundle], capsys)
    assert (code, err) == (2, "error: cannot set up the S3 client from the environment: "
                              "Invalid endpoint: not a url\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, out, err = run_cli(["fleet", "--data-dir", tmp_path / "d", "--bundle-store", STORE,
                              "bundle", "add", bundle], capsys)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "Could not connect to the endpoint URL" in err


def test_a_bundle_stored_again_while_a_worker_trusts_its_old_record_is_fetched_anew(tmp_path, s3):
    worker_a = S3BundleStore(STORE, tmp_path / "cache", refresh_s=60)
    worker_b = S3BundleStore(STORE, tmp_path / "cache", refresh_s=60)
    worker_a.put(make_bundle(tmp_path / "one", ["x"], b"first", bundle_id="b1"))
    old = worker_a.path("b1")
    worker_b.put(make_bundle(tmp_path / "two", ["x"], b"second", bundle_id="b1"))  # the old generation is deleted
    new = worker_b.path("b1")  # and worker b's fetch removes the old local copy
    assert not old.exists()
    assert worker_a.path("b1") == new and (new / "model.tflite").read_bytes() == b"second"


def test_two_workers_serve_one_s3_bundle_to_many_devices_at_once(tmp_path, s3, postgres, capsys):  # noqa: F811
    url = fresh_database(postgres)
    store = open_storage(url, 1)
    tokens = [store.add_device(f"cam-{i}") for i in range(8)]
    store.close()
    archive = pack_archive(make_bundle(tmp_path / "v1", ["a"], b"weights" * 20000, bundle_id="v1"),
                           tmp_path / "v1.tar.gz")
    for args in (["bundle", "add", archive], ["rollout", "start", "v1", "--percent", "100"], ["rollout", "promote"]):
        code, out, err = run_cli(["fleet", "--database", url, "--bundle-store", STORE, *args], capsys)
        assert code == 0, err
    port, data = free_port(), tmp_path / "server"
    proc = subprocess.Popen([sys.executable, "-m", "shelfsight", "sync-server", "--workers", "2", "--database", url,
                             "--data-dir", str(data), "--port", str(port), "--bundle-store", STORE],
                            stderr=subprocess.PIPE, text=True)  # the S3 environment is inherited
    base = f"http://127.0.0.1:{port}"

    def fetch(token: str) -> tuple[str, bytes]:
        auth = {"Authorization": f"Bearer {token}", "Connection": "close"}
        manifest = requests.get(base + "/v1/manifest", headers=auth, timeout=30)
        assert manifest.status_code == 200, manifest.text
        name = manifest.headers["X-Shelfsight-Archive"]
        body = requests.get(f"{base}/v1/bundles/{name}", headers=auth, timeout=30)
        assert body.status_code == 200, body.text
        return body.headers["X-Shelfsight-Worker"], body.content

    try:
        deadline, up = time.monotonic() + 60, set()
        while len(up) < 2:  # both workers accepting (the second may start later)
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                up.add(requests.get(base + "/healthz", headers={"Connection": "close"}, timeout=1)
                       .headers.get("X-Shelfsight-Worker"))
                up.discard(None)
            except requests.ConnectionError:
                time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(fetch, tokens * 3))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert {content for _, content in answers} == {archive.read_bytes()}
    assert len({worker for worker, _ in answers}) == 2
    (generation,) = (data / "bundle-cache" / "v1").iterdir()  # fetched into one copy, no staging left behind
    assert not generation.name.startswith(".")
