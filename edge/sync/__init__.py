"""Offline-first sync with a server: a durable event outbox and its uploader, a heartbeat
with the device's health, and signed model updates (poll, resumable download, verify,
health-check, atomic swap, rollback)."""
from .bundle_store import BundleStore
from .heartbeat import Heartbeat, HeartbeatOptions
from .http import AuthError, HttpOptions, SyncError
from .outbox import Outbox, OutboxOptions, OutboxSink
from .service import SyncConfig, SyncService
from .updates import UpdateOptions, Updater, UpdateResult
from .uploader import UploadOptions, Uploader

__all__ = ["AuthError", "BundleStore", "Heartbeat", "HeartbeatOptions", "HttpOptions", "Outbox", "OutboxOptions",
           "OutboxSink", "SyncConfig", "SyncError", "SyncService", "UpdateOptions", "UpdateResult", "Updater",
           "UploadOptions", "Uploader"]
