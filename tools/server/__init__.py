"""The server side of sync: the reference sync server (`server`), the ed25519 keys that sign
bundles (`keys`) and the fault-injection test of device and server together (`faults`).

Names are loaded on first use (``python -m shelfsight.tools.server.faults device`` runs as
a light subprocess).
"""
from __future__ import annotations

from .. import lazy_exports

_EXPORTS = {"Faults": "server", "ServerConfig": "server", "SyncServer": "server", "sync_server": "server",
            "sign_bundle": "keys", "sync_keys": "keys", "FaultPlan": "faults", "run_fault_test": "faults"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
