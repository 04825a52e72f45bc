"""The server side of sync: the sync server (`server`; several worker processes with
`workers`), its storage on SQLite or PostgreSQL (`storage`), per-device tokens and admin
routes (`auth`, `tokens`), staged rollouts (`rollouts`, `fleet`), the fleet's bundles
(`bundles`: a directory, or an S3-compatible object store in `s3bundles`), `shelfsight
fleet` (`fleet_cli`), the ed25519 keys that sign bundles (`keys`), the fault-injection test of device and server together (`faults`) and the fleet load test
(`loadtest`, on a throwaway PostgreSQL from `pgtemp`).

Names are loaded on first use (``python -m shelfsight.tools.server.faults device`` runs as
a light subprocess).
"""
from __future__ import annotations

from .. import lazy_exports

_EXPORTS = {"Faults": "server", "ServerConfig": "server", "SyncServer": "server", "sync_server": "server",
            "sign_bundle": "keys", "sync_keys": "keys", "FaultPlan": "faults", "run_fault_test": "faults",
            "open_storage": "storage", "DirectoryBundleStore": "bundles", "open_bundle_store": "bundles",
            "S3BundleStore": "s3bundles", "fleet": "fleet_cli",
            "LoadPlan": "loadtest", "run_load_test": "loadtest", "TempPostgres": "pgtemp"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
