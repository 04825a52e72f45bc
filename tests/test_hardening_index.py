"""Issue 14, high 1 and 2: the signed manifest covers the search index (index.json, its
generation files by digest, enrolments sealed by the device), and updates install bundles
with an index from a directory offer and from an archive offer (real loopback server)."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shelfsight.bundle import INDEX_SPEC_FILE, MANIFEST, file_entry, load_bundle, pack_archive, write_manifest
from shelfsight.edge.catalog.enroll import EnrolledDelta
from shelfsight.edge.catalog.items import Catalog, CatalogItem
from shelfsight.edge.catalog.search import CatalogIndex, IndexOptions
from shelfsight.edge.catalog.tuning import TuningOptions
from shelfsight.edge.sync.bundle_store import BundleStore
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.signature import generate_keypair
from shelfsight.edge.sync.updates import UpdateOptions, Updater
from shelfsight.errors import BundleError, IndexMismatchError
from shelfsight.tools.server.keys import sign_bundle

from sync_fakes import make_bundle, server, token_file

ITEMS = {"apple": "Apple", "banana": "Banana", "lemon": "Lemon"}
DIRECTIONS = np.eye(8, dtype=np.float32)[:3]


def indexed_bundle(root: Path, bundle_id: str, model: bytes) -> Path:
    """A small bundle (arbitrary model bytes) with an exact index of three items, written
    through Bundle.with_index as `shelfsight index` does."""
    make_bundle(root, list(ITEMS), model, bundle_id=bundle_id)
    bundle = load_bundle(root)
    catalog = Catalog(CatalogItem(i, label=i, sku=i.upper(), name=n) for i, n in ITEMS.items())
    vectors = np.repeat(DIRECTIONS, 2, axis=0) + 0.01
    index = CatalogIndex.build(vectors, [i for i in ITEMS for _ in range(2)], catalog, root, bundle.model_sha256,
                               IndexOptions(TuningOptions(backend="exact")))
    bundle.with_index(index.spec, index.files)
    index.close()
    return root


def search_names(bundle_dir: Path) -> list[str]:
    """What `search` answers for the three items' directions, through the bundle loader."""
    bundle = load_bundle(bundle_dir)
    with CatalogIndex.load(bundle.root, bundle.model_sha256) as index:
        return [index.search(d, 1)[0].name for d in DIRECTIONS]


def attack(bundle_dir: Path, out_archive: Path, monkeypatch, rewrite_index: bool = True,
           enrolled: bool = True, in_place: bool = False) -> Path:
    """The attack from the issue: keep the signed manifest, rewrite index.json to point at a new
    catalog.N.json with an injected product name, add an enrolled.npz from another device
    (``in_place``: only edit a value of index.json)."""
    work = out_archive.parent / (out_archive.name + ".work")
    shutil.copytree(bundle_dir, work)
    if in_place:
        spec = json.loads((work / INDEX_SPEC_FILE).read_text())
        (work / INDEX_SPEC_FILE).write_text(json.dumps(dict(spec, k=1), indent=1) + "\n")
    if rewrite_index:
        spec = json.loads((work / INDEX_SPEC_FILE).read_text())
        old = spec["files"]["catalog"]
        items = [CatalogItem(i, label=i, sku=i.upper(), name="INJECTED " + n) for i, n in ITEMS.items()]
        Catalog(items).save(work / "catalog.7.json")
        del spec["checksums"][old]
        spec["files"]["catalog"] = "catalog.7.json"
        spec["checksums"]["catalog.7.json"] = file_entry(work / "catalog.7.json")
        (work / INDEX_SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    if enrolled:
        spec = json.loads((work / INDEX_SPEC_FILE).read_text())
        with monkeypatch.context() as m:
            m.setenv("SHELFSIGHT_DEVICE_KEY", "the attacker's own device")
            EnrolledDelta(spec["model_sha256"], spec["dimension"]).added(
                CatalogItem("evil", name="INJECTED"), DIRECTIONS[:1]).save(work / "enrolled.npz")
    with tarfile.open(out_archive, "w:gz") as tar:
        for f in sorted(work.iterdir()):
            tar.add(f, arcname=f.name)
    return out_archive


@pytest.fixture
def signed(tmp_path):
    generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    good = indexed_bundle(tmp_path / "pub" / "a", "bundle-a", b"model A" * 100)
    archive = pack_archive(good, tmp_path / "pub" / "a.tar.gz")
    sign_bundle(archive, tmp_path / "key.pem")
    return tmp_path, good, archive


def test_manifest_lists_index_json_and_its_generation_files(tmp_path):
    root = indexed_bundle(tmp_path / "b", "bundle-b", b"model")
    manifest = load_bundle(root).manifest
    spec = json.loads((root / INDEX_SPEC_FILE).read_text())
    assert manifest["files"][INDEX_SPEC_FILE] == file_entry(root / INDEX_SPEC_FILE)
    assert set(spec["checksums"]) <= set(manifest["files"])
    assert search_names(root) == ["Apple", "Banana", "Lemon"]


def test_pack_archive_holds_only_covered_files(tmp_path, monkeypatch):
    root = indexed_bundle(tmp_path / "b", "bundle-b", b"model")
    (root / "notes.txt").write_text("left over from a build")
    index = CatalogIndex.load(root, load_bundle(root).model_sha256)
    index.enroll(CatalogItem("kiwi", name="Kiwi"), DIRECTIONS[0] + DIRECTIONS[1])
    with tarfile.open(pack_archive(root, tmp_path / "b.tar.gz")) as tar:
        names = sorted(tar.getnames())
    assert names == sorted([MANIFEST, *load_bundle(root).manifest["files"]])
    assert "notes.txt" not in names and "enrolled.npz" not in names and INDEX_SPEC_FILE in names


def test_repacked_archive_with_rewritten_index_is_refused_locally(signed, monkeypatch):
    tmp_path, good, archive = signed
    bad = attack(good, tmp_path / "bad-index.tar.gz", monkeypatch, enrolled=False)
    with pytest.raises(BundleError, match=r": index\.json is \d+ bytes, manifest says \d+$") as e:
        load_bundle(bad)  # index.json is listed in the signed manifest
    assert "\n" not in str(e.value)


def test_repacked_archive_with_foreign_enrolments_is_refused_locally(signed, monkeypatch):
    tmp_path, good, archive = signed
    bad = attack(good, tmp_path / "bad-enrolled.tar.gz", monkeypatch, rewrite_index=False)
    bundle = load_bundle(bad)
    with pytest.raises(IndexMismatchError, match=r"enrolled\.npz: enrolled items not sealed by this device"):
        CatalogIndex.load(bundle.root, bundle.model_sha256)


def test_enrolments_on_this_device_survive_restart_and_rebuild(tmp_path, monkeypatch):
    root = indexed_bundle(tmp_path / "b", "bundle-b", b"model")
    sha = load_bundle(root).model_sha256
    kiwi = DIRECTIONS[0] + DIRECTIONS[1]
    with CatalogIndex.load(root, sha) as index:
        index.enroll(CatalogItem("kiwi", name="Kiwi"), kiwi)
    with CatalogIndex.load(root, sha) as index:  # sealed with this device's key: accepted
        assert index.search(kiwi, 1)[0].name == "Kiwi"
        index.rebuild()  # on the device, the (signed) manifest stays as it is
    with CatalogIndex.load(root, sha) as index:  # the rebuilt index.json carries this device's seal
        assert index.search(kiwi, 1)[0].name == "Kiwi" and index.spec["generation"] == 1
    monkeypatch.setenv("SHELFSIGHT_DEVICE_KEY", "another device")
    with pytest.raises(BundleError, match=r"index\.json is not covered"):
        CatalogIndex.load(root, sha)


def test_device_key_file_is_created_0600(tmp_path, monkeypatch):
    from shelfsight.edge.catalog.seal import device_key, key_path

    monkeypatch.delenv("SHELFSIGHT_DEVICE_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = device_key()
    assert key_path() == tmp_path / "config" / "shelfsight" / "device.key"
    assert key_path().stat().st_mode & 0o777 == 0o600 and len(key) == 64
    assert device_key() == key  # read back, not made again


def test_legacy_manifest_index_must_equal_index_json(tmp_path):
    root = indexed_bundle(tmp_path / "b", "bundle-b", b"model")
    manifest = load_bundle(root).manifest
    files = {n: e for n, e in manifest["files"].items() if n != INDEX_SPEC_FILE}
    manifest = write_manifest(root, dict(manifest, files=files))  # as written before index.json was listed
    assert INDEX_SPEC_FILE not in manifest["files"]
    assert search_names(root) == ["Apple", "Banana", "Lemon"]
    spec = json.loads((root / INDEX_SPEC_FILE).read_text())
    (root / INDEX_SPEC_FILE).write_text(json.dumps(dict(spec, k=3)))
    with pytest.raises(BundleError, match=r"index\.json is not covered by the manifest"):
        search_names(root)


# ---- updates -------------------------------------------------------------------------------

def index_health_check(bundle_dir: Path) -> None:
    """Stands in for the model probe: opens the index through the loader and searches it."""
    assert search_names(bundle_dir) == ["Apple", "Banana", "Lemon"]


def updater(tmp_path, srv, public_key=None) -> Updater:
    http = HttpOptions(token_file=token_file(tmp_path), connect_timeout_s=1.0, read_timeout_s=5.0)
    options = UpdateOptions(manifest_url=srv.url + "/v1/manifest", http=http, public_key=public_key)
    return Updater(BundleStore(tmp_path / "device"), options, health_check=index_health_check)


@pytest.mark.parametrize("offer", ["directory", "archive", "legacy directory"])
def test_update_installs_a_bundle_with_an_index(tmp_path, offer):
    bundle = indexed_bundle(tmp_path / "pub" / "a", "bundle-a", b"model A" * 100)
    if offer == "legacy directory":  # index.json present, not listed: fetched all the same
        manifest = load_bundle(bundle).manifest
        write_manifest(bundle, dict(manifest, files={n: e for n, e in manifest["files"].items()
                                                     if n != INDEX_SPEC_FILE}))
    if offer == "archive":
        bundle = pack_archive(bundle, tmp_path / "pub" / "a.tar.gz")
    srv = server(tmp_path, bundle=bundle)
    try:
        up = updater(tmp_path, srv)
        result = up.check_once()
        assert (result.status, result.running_id) == ("updated", "bundle-a"), result.reason
        assert (up.store.current / INDEX_SPEC_FILE).is_file()
        assert search_names(up.store.current) == ["Apple", "Banana", "Lemon"]
    finally:
        srv.stop()


def test_update_refuses_the_repacked_signed_archive_and_keeps_running(signed, monkeypatch):
    tmp_path, good, archive = signed
    running = indexed_bundle(tmp_path / "pub" / "x", "bundle-x", b"model X" * 100)
    srv = server(tmp_path, bundle=running, signing_key=tmp_path / "key.pem")
    try:
        up = updater(tmp_path, srv, public_key=tmp_path / "key.pub")
        assert up.check_once().status == "updated"
        variants = (("catalog.7.json", {"enrolled": False}), ("enrolled.npz", {"rewrite_index": False}),
                    ("catalog.7.json", {}), ("index.json", {"rewrite_index": False, "enrolled": False, "in_place": True}))
        for n, (named, kwargs) in enumerate(variants):
            bad = attack(good, tmp_path / "pub" / f"bad-{n}.tar.gz", monkeypatch, **kwargs)
            shutil.copy(str(archive) + ".sig", str(bad) + ".sig")  # the publisher's valid signature
            srv.state.bundle = bad
            srv.state.signing_key = None
            result = up.check_once()
            assert result.status == "refused" and "\n" not in result.reason and named in result.reason, result
            assert up.store.current_id == "bundle-x"
            assert search_names(up.store.current) == ["Apple", "Banana", "Lemon"]  # the good bundle keeps running
    finally:
        srv.stop()


def test_store_install_copies_covered_files_and_this_devices_enrolments(tmp_path):
    root = indexed_bundle(tmp_path / "b", "bundle-b", b"model")
    (root / "notes.txt").write_text("not part of the bundle")
    kiwi = DIRECTIONS[0] + DIRECTIONS[1]
    with CatalogIndex.load(root, load_bundle(root).model_sha256) as index:
        index.enroll(CatalogItem("kiwi", name="Kiwi"), kiwi)
    version = BundleStore(tmp_path / "device").install(root)
    assert sorted(p.name for p in version.iterdir()) == sorted([MANIFEST, "enrolled.npz",
                                                                *load_bundle(root).manifest["files"]])
    with CatalogIndex.load(version, load_bundle(version).model_sha256) as index:
        assert index.search(kiwi, 1)[0].name == "Kiwi"
