"""Offline-first sync with a server: a durable event outbox and its uploader, and signed
model updates (poll, resumable download, verify, health-check, atomic swap, rollback)."""
from .bundle_store import BundleStore
from .http import AuthError, HttpOptions, SyncError
from .outbox import Outbox, OutboxOptions, OutboxSink
from .service import SyncConfig, SyncService
from .updates import UpdateOptions, Updater, UpdateResult
from .uploader import UploadOptions, Uploader

__all__ = ["AuthError", "BundleStore", "HttpOptions", "Outbox", "OutboxOptions", "OutboxSink", "SyncConfig",
           "SyncError", "SyncService", "UpdateOptions", "UpdateResult", "Updater", "UploadOptions", "Uploader"]
