"""The real device-side updater against a fleet server: each device with its own token is
offered its rollout's bundle, signed by the server and verified by the device as before;
a canary whose health check fails reports it and the rollout rolls back on its own."""
from __future__ import annotations

from shelfsight.bundle import load_bundle
from shelfsight.edge.sync.bundle_store import BundleStore
from shelfsight.edge.sync.http import HttpOptions
from shelfsight.edge.sync.signature import generate_keypair
from shelfsight.edge.sync.updates import UpdateOptions, Updater
from shelfsight.tools.server import ServerConfig, SyncServer
from shelfsight.tools.server.bundles import DirectoryBundleStore
from shelfsight.tools.server.faults import free_port
from shelfsight.tools.server.storage import open_storage
from sync_fakes import make_bundle


def device_updater(tmp_path, url: str, name: str, token: str, public_key, fails_on: str | None = None) -> Updater:
    (tmp_path / f"{name}.token").write_text(token + "\n")
    http = HttpOptions(token_file=tmp_path / f"{name}.token", connect_timeout_s=1.0, read_timeout_s=5.0,
                       device_id=name)

    def health_check(bundle_dir):
        if load_bundle(bundle_dir).bundle_id == fails_on:
            raise RuntimeError("probe image gave NaN scores")

    options = UpdateOptions(manifest_url=url + "/v1/manifest", http=http, public_key=public_key)
    return Updater(BundleStore(tmp_path / "devices" / name), options, health_check=health_check)


def test_rollout_to_real_devices_with_signatures_and_a_failing_canary(tmp_path):
    data = tmp_path / "server"
    generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    bundles = DirectoryBundleStore(data / "bundles")
    store = open_storage(f"sqlite:///{data / 'events.db'}")
    for version in ("v1", "v2", "v3"):
        bundle_id = bundles.put(make_bundle(tmp_path / version, ["a", "b"], version.encode() * 1000, bundle_id=version))
        store.add_bundle(bundle_id, str(bundles.path(bundle_id)))
    tokens = {name: store.add_device(name, group) for name, group in
              (("north-1", "north"), ("north-2", "north"), ("south-1", "south"))}
    store.start_rollout("v1", percent=100)
    store.end_rollout("promoted")
    config = ServerConfig(data_dir=data, port=free_port(), signing_key=tmp_path / "key.pem")
    with SyncServer(config) as server:
        devices = {name: device_updater(tmp_path, server.url, name, token, tmp_path / "key.pub",
                                        fails_on="v2" if name == "north-2" else None) for name, token in tokens.items()}
        assert {name: up.check_once().status for name, up in devices.items()} == \
            {"north-1": "updated", "north-2": "updated", "south-1": "updated"}
        assert {up.store.current_id for up in devices.values()} == {"v1"}

        store.start_rollout("v2", group="north")
        assert devices["south-1"].check_once().status == "current"  # south is never offered v2
        assert (devices["north-1"].check_once().status, devices["north-1"].store.current_id) == ("updated", "v2")
        failed = devices["north-2"].check_once()  # its health check fails: it keeps v1 and says so
        assert (failed.status, failed.running_id) == ("unhealthy", "v1")
        r = devices["north-2"].session.request("POST", server.url + "/v1/events",
                                              json={"events": [failed.to_event()]})
        assert r.status_code == 200
        rollout = store.rollouts()[-1]
        assert (rollout.bundle, rollout.state) == ("v2", "rolled_back")
        assert rollout.reason == ("north-2: device update unhealthy: health check failed: "
                                  "RuntimeError: probe image gave NaN scores")
        # north-1 is offered v1 again (the stable bundle); south-1 never saw v2
        assert devices["south-1"].check_once().status == "current"
        assert devices["north-1"].check_once().running_id == "v1"
    assert store.device("north-2").bundle_id == "v1"  # what it runs, from its bundle_update event
    store.close()
