"""Bundle updates from the real reference server: resume, verification, signature,
health check, rollback; every failure leaves the running bundle in place."""
from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from shelfsight.bundle import MANIFEST, load_bundle, pack_archive
from shelfsight.edge.sync.bundle_store import BundleStore, check_bundle_id
from shelfsight.edge.sync.download import PART_SUFFIX
from shelfsight.edge.sync.outbox import Outbox
from shelfsight.edge.sync.signature import generate_keypair, load_private_key
from shelfsight.edge.sync.service import SyncConfig, SyncService
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.updates import UpdateOptions, Updater
from shelfsight.errors import BundleError, ConfigError
from shelfsight.tools.server.keys import sign_bundle

from sync_fakes import make_bundle, server, token_file

MODEL_A = bytes(range(256)) * 400          # 100 KiB
MODEL_B = bytes(reversed(range(256))) * 600  # 150 KiB


class Checks:
    """A fake health check and reload hook that record what they saw."""

    def __init__(self, healthy: bool = True, reload_ok: bool = True) -> None:
        self.healthy, self.reload_ok = healthy, reload_ok
        self.checked, self.reloaded = [], []

    def health_check(self, bundle_dir):
        self.checked.append(bundle_dir.name)
        if not self.healthy:
            raise RuntimeError("probe image gave NaN scores")

    def on_update(self, bundle_dir):
        if not self.reload_ok:
            raise RuntimeError("interpreter failed to allocate tensors")
        self.reloaded.append(load_bundle(bundle_dir).bundle_id)


@pytest.fixture
def setup(tmp_path):
    bundle_a = make_bundle(tmp_path / "pub" / "a", ["apple", "banana"], MODEL_A, bundle_id="bundle-a")
    bundle_b = make_bundle(tmp_path / "pub" / "b", ["apple", "banana", "lemon"], MODEL_B, bundle_id="bundle-b")
    srv = server(tmp_path, bundle=bundle_a)
    yield tmp_path, srv, bundle_a, bundle_b
    srv.stop()


def updater(tmp_path, srv, checks: Checks | None = None, public_key=None) -> Updater:
    checks = checks or Checks()
    http = HttpOptions(token_file=token_file(tmp_path), connect_timeout_s=1.0, read_timeout_s=5.0)
    options = UpdateOptions(manifest_url=srv.url + "/v1/manifest", http=http, public_key=public_key)
    return Updater(BundleStore(tmp_path / "device"), options, health_check=checks.health_check,
                   on_update=checks.on_update)


def install_a(tmp_path, srv) -> Updater:
    up = updater(tmp_path, srv)
    assert up.check_once().status == "updated"
    assert up.store.current_id == "bundle-a"
    return up


def test_first_install_then_update_keeps_previous(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    checks = Checks()
    up = updater(tmp_path, srv, checks)
    result = up.check_once()
    assert (result.status, result.bundle_id, result.running_id) == ("updated", "bundle-a", "bundle-a")
    assert (tmp_path / "device" / "current").is_symlink()
    assert load_bundle(tmp_path / "device" / "current").model_path.read_bytes() == MODEL_A
    assert up.check_once().status == "current"
    srv.state.bundle = bundle_b
    result = up.check_once()
    assert (result.status, result.running_id) == ("updated", "bundle-b")
    assert up.store.previous.name == "bundle-a"
    assert checks.checked == ["bundle-a", "bundle-b"] and checks.reloaded == ["bundle-a", "bundle-b"]
    assert list((tmp_path / "device" / "staging").iterdir()) == []


def test_old_versions_are_pruned_to_current_and_previous(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    srv.state.bundle = bundle_b
    assert up.check_once().status == "updated"
    srv.state.bundle = make_bundle(tmp_path / "pub" / "c", ["x"], b"model c", bundle_id="bundle-c")
    assert up.check_once().status == "updated"
    assert sorted(p.name for p in up.store.versions.iterdir()) == ["bundle-b", "bundle-c"]
    assert up.store.links() == ("bundle-c", "bundle-b")


def test_truncated_download_resumes_with_range(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    srv.state.bundle = bundle_b
    srv.state.faults.truncate_downloads, srv.state.faults.truncate_name = 1, "model.tflite"
    first = up.check_once()
    assert first.status == "unavailable" and "interrupted" in first.reason
    assert up.store.current_id == "bundle-a"
    part = up.store.staging_dir("bundle-b") / ("model.tflite" + PART_SUFFIX)
    assert part.stat().st_size == len(MODEL_B) // 2
    second = up.check_once()
    assert second.status == "updated" and up.store.current_id == "bundle-b"
    assert srv.state.range_requests == 1
    assert load_bundle(up.store.current).model_path.read_bytes() == MODEL_B


def test_resume_interrupted_twice(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    srv.state.bundle = bundle_b
    srv.state.faults.truncate_downloads = 3  # labels.txt cut halfway, then its rest cut twice more
    assert [up.check_once().status for _ in range(4)] == ["unavailable"] * 3 + ["updated"]
    assert srv.state.range_requests == 3
    assert load_bundle(up.store.current).labels == ("apple", "banana", "lemon")


def test_wrong_checksum_is_refused(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    (bundle_b / "model.tflite").write_bytes(MODEL_A[:len(MODEL_B)] + b"\0" * (len(MODEL_B) - len(MODEL_A)))
    srv.state.bundle = bundle_b
    result = up.check_once()
    assert result.status == "refused" and "does not match its sha256" in result.reason
    assert up.store.current_id == "bundle-a" and not up.store.staging_dir("bundle-b").exists()
    assert not up.store.version_dir("bundle-b").exists()


def test_signatures(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    generate_keypair(tmp_path / "good.key", tmp_path / "good.pub")
    generate_keypair(tmp_path / "evil.key", tmp_path / "evil.pub")
    sign_bundle(bundle_a, tmp_path / "good.key")
    up = updater(tmp_path, srv, public_key=tmp_path / "good.pub")
    assert up.check_once().status == "updated"

    srv.state.bundle = bundle_b  # not signed at all
    result = up.check_once()
    assert result.status == "refused" and "not signed" in result.reason

    sign_bundle(bundle_b, tmp_path / "evil.key")
    result = up.check_once()
    assert result.status == "refused" and "does not verify" in result.reason
    assert up.store.current_id == "bundle-a"

    sign_bundle(bundle_b, tmp_path / "good.key")
    manifest = json.loads((bundle_b / MANIFEST).read_text())
    manifest["thresholds"] = {"unknown": 0.0}  # tampered after signing
    (bundle_b / MANIFEST).write_text(json.dumps(manifest))
    result = up.check_once()
    assert result.status == "refused" and "does not verify" in result.reason
    assert up.store.current_id == "bundle-a"

    srv.state.signing_key = load_private_key(tmp_path / "good.key")  # the server signs on the fly
    assert up.check_once().status == "updated" and up.store.current_id == "bundle-b"


def test_failed_health_check_keeps_old_bundle_and_is_not_retried(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    up.health_check = Checks(healthy=False).health_check
    srv.state.bundle = bundle_b
    result = up.check_once()
    assert result.status == "unhealthy" and "probe image gave NaN scores" in result.reason
    assert (result.running_id, up.store.current_id) == ("bundle-a", "bundle-a")
    assert not up.store.version_dir("bundle-b").exists()
    assert "bundle-b" in up.store.refused()
    assert up.check_once().status == "current"  # same manifest (ETag): nothing new
    again = updater(tmp_path, srv)  # after a restart: remembered, not downloaded again
    assert again.check_once().status == "skipped"


def test_failed_reload_rolls_back(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    up.on_update = Checks(reload_ok=False).on_update
    srv.state.bundle = bundle_b
    result = up.check_once()
    assert result.status == "rolled_back" and "failed to allocate tensors" in result.reason
    assert up.store.links() == ("bundle-a", None)
    assert not up.store.version_dir("bundle-b").exists()


def test_archive_offer(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    archive = pack_archive(bundle_b, tmp_path / "pub" / "b.tar.gz")
    srv.state.bundle = archive
    srv.state.faults.truncate_downloads = 1
    assert up.check_once().status == "unavailable"
    result = up.check_once()
    assert result.status == "updated" and srv.state.range_requests == 1
    assert load_bundle(up.store.current).labels == ("apple", "banana", "lemon")


def test_archive_with_path_traversal_is_refused(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    archive = tmp_path / "pub" / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_b / MANIFEST, arcname=MANIFEST)
        data = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    srv.state.bundle = archive
    result = up.check_once()
    assert result.status == "refused" and "unsafe member '../../escaped.txt'" in result.reason
    assert up.store.current_id == "bundle-a"
    assert not list(tmp_path.rglob("escaped.txt"))


def test_manifest_naming_paths_is_refused_before_download(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    manifest = json.loads((bundle_b / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 10}
    (bundle_b / MANIFEST).write_text(json.dumps(manifest))
    srv.state.bundle = bundle_b
    result = up.check_once()
    assert result.status == "refused" and "expected plain file names" in result.reason
    assert not up.store.staging_dir("bundle-b").exists()


def test_disk_error_keeps_old_bundle_and_download(setup, monkeypatch):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    srv.state.bundle = bundle_b

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(up.store, "add_version", disk_full)
    result = up.check_once()
    assert result.status == "failed" and "No space left on device" in result.reason
    assert up.store.current_id == "bundle-a"
    assert (up.store.staging_dir("bundle-b") / "model.tflite").stat().st_size == len(MODEL_B)
    monkeypatch.undo()
    assert up.check_once().status == "updated"


def test_server_down_is_unavailable(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    up = install_a(tmp_path, srv)
    srv.stop()
    result = up.check_once()
    assert result.status == "unavailable" and "ConnectionError" in result.reason
    assert up.store.current_id == "bundle-a"


def test_background_poller_and_reports_in_outbox(setup):
    tmp_path, srv, bundle_a, bundle_b = setup
    http = HttpOptions(token_file=token_file(tmp_path), connect_timeout_s=1.0, read_timeout_s=5.0)
    config = SyncConfig(outbox=tmp_path / "outbox.db", store_dir=tmp_path / "device",
                        updates=UpdateOptions(manifest_url=srv.url + "/v1/manifest", http=http, interval_s=0.05))
    checks = Checks()
    with SyncService(config, health_check=checks.health_check, on_update=checks.on_update) as service:
        deadline = time.monotonic() + 10
        while service.store.current_id != "bundle-a" and time.monotonic() < deadline:
            time.sleep(0.02)
        checks.healthy = False
        srv.state.bundle = bundle_b
        while "bundle-b" not in service.store.refused() and time.monotonic() < deadline:
            time.sleep(0.02)
    with Outbox(tmp_path / "outbox.db") as box:
        reports = [(e["status"], e["bundle_id"], e["running_id"]) for e in box.claim().events]
    assert reports == [("updated", "bundle-a", "bundle-a"), ("unhealthy", "bundle-b", "bundle-a")]


def test_store_install_rollback_and_ids(tmp_path):
    a = make_bundle(tmp_path / "a", ["x"], b"a", bundle_id="v1")
    b = make_bundle(tmp_path / "b", ["x"], b"b", bundle_id="v2")
    store = BundleStore(tmp_path / "store")
    assert store.current is None and store.current_id is None
    store.install(a)
    store.install(pack_archive(b, tmp_path / "b.tar.gz"))
    assert store.links() == ("v2", "v1")
    assert store.rollback() == "v1" and store.links() == ("v1", "v2")
    with pytest.raises(BundleError, match="is not a plain name"):
        check_bundle_id("../v3")
    with pytest.raises(ConfigError, match="keep_versions must be >= 2"):
        BundleStore(tmp_path / "s2", keep_versions=1)
    (b / "model.tflite").write_bytes(b"c")
    with pytest.raises(BundleError, match="model.tflite does not match its sha256"):
        store.install(b)
    assert store.links() == ("v1", "v2")
