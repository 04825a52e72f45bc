"""The feedback store: photos shoppers confirmed where the model was wrong or unsure, on the device.

    STORE_DIR/feedback.db        SQLite: one row per kept photo (what was chosen, what the model
                                 said, its teaching status)
    STORE_DIR/photos/<n>.jpg     the photo (what the recogniser saw when the shopper tapped)

A photo's status moves one way: ``pending`` (counted towards teaching) -> ``held`` (review mode:
waiting for staff) -> ``enrolling`` -> ``enrolled``, or -> ``discarded`` (its image deleted).
Each move is one conditional UPDATE, so two threads (or a flood of taps) cannot move a photo
twice, and no photo is ever enrolled twice. A photo found ``enrolling`` when the store opens
(the process died while enrolling) is counted as enrolled: at most once, never twice.

Images leave the device only through `export` (a CSV manifest and the images: a dataset for the
next training round) or, with the kiosk's ``sync_photos`` setting, as one `feedback_event` per
kept photo through the sync outbox; the confirmed events carry no picture.
"""
from __future__ import annotations

import base64
import csv
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from shelfsight.atomic import DEVICE_DATA_MODE, create_private, write_bytes
from shelfsight.errors import ConfigError

from ..pipeline.events import iso_time

DB, PHOTOS = "feedback.db", "photos"
STATUSES = ("pending", "held", "enrolling", "enrolled", "discarded")
MANIFEST_COLUMNS = ("path", "item_id", "sku", "name", "label", "predicted", "score", "status", "confirmed_at",
                    "bundle_id", "event_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    item_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    predicted TEXT,
    score REAL NOT NULL,
    bundle_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_item ON photos(item_id, status);
"""


@dataclass(frozen=True)
class Photo:
    id: int
    event_id: str
    item_id: str
    sku: str
    name: str
    label: str
    predicted: str | None
    score: float
    bundle_id: str
    status: str
    created: float

    @property
    def file(self) -> str:
        return f"{PHOTOS}/{self.id}.jpg"


class FeedbackStore:
    """The photos a kiosk keeps (see the module docstring); thread-safe. ``close()`` is idempotent.

    Raises:
        ConfigError: ``directory`` is a file, or its database is not a feedback store.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"feedback store {self.directory} is a file; expected a folder")
        (self.directory / PHOTOS).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            create_private(self.directory / DB)  # shoppers' photos and taps: the device owner's only
            self._db: sqlite3.Connection | None = sqlite3.connect(self.directory / DB, check_same_thread=False,
                                                                   isolation_level=None)
            self._db.executescript(_SCHEMA)
            self._db.execute("UPDATE photos SET status = 'enrolled' WHERE status = 'enrolling'")
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"{self.directory / DB}: not a feedback store ({e})") from None

    @classmethod
    def open_existing(cls, directory: str | Path) -> "FeedbackStore":
        """A store that must already exist (`export` reads one; it never makes an empty one)."""
        if not (Path(directory) / DB).is_file():
            raise ConfigError(f"{directory}: no feedback store here (expected {DB}, written by `shelfsight kiosk`)")
        return cls(directory)

    def add(self, event_id: str, item_id: str, sku: str, name: str, label: str, predicted: str | None,
            score: float, bundle_id: str, image_bgr: np.ndarray, quality: int = 95) -> Photo:
        """Keep one confirmed photo (the image first, then its row: a row always has its image)."""
        ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image_bgr.shape} photo as JPEG")
        with self._lock:
            db = self._open_db()
            row = db.execute("INSERT INTO photos (event_id, item_id, sku, name, label, predicted, score, bundle_id,"
                             " status, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                             (event_id, item_id, sku, name, label, predicted, float(score), bundle_id, time.time()))
            photo_id = row.lastrowid
            try:
                write_bytes(self.directory / PHOTOS / f"{photo_id}.jpg", data.tobytes(), DEVICE_DATA_MODE)
            except BaseException:
                db.execute("DELETE FROM photos WHERE id = ?", (photo_id,))
                raise
        return self.photo(photo_id)

    def photo(self, photo_id: int) -> Photo:
        rows = self._select("WHERE id = ?", (photo_id,))
        if not rows:
            raise KeyError(photo_id)
        return rows[0]

    def photos(self, item_id: str | None = None, status: str | None = None) -> list[Photo]:
        """Kept photos, oldest first, of one item and/or status."""
        where, args = [], []
        if item_id is not None:
            where.append("item_id = ?")
            args.append(item_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        return self._select(("WHERE " + " AND ".join(where)) if where else "", tuple(args))

    def path(self, photo: Photo) -> Path:
        return self.directory / photo.file

    def move(self, photo_ids: Iterable[int], to: str, from_: str) -> list[int]:
        """Move the photos still in status ``from_`` to ``to``; returns the ids that moved."""
        if to not in STATUSES or from_ not in STATUSES:
            raise ConfigError(f"photo status must be one of {', '.join(STATUSES)}, got {from_!r} -> {to!r}")
        moved = []
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for photo_id in photo_ids:
                    if db.execute("UPDATE photos SET status = ? WHERE id = ? AND status = ?",
                                  (to, photo_id, from_)).rowcount:
                        moved.append(photo_id)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if to == "discarded":
            for photo_id in moved:
                (self.directory / PHOTOS / f"{photo_id}.jpg").unlink(missing_ok=True)
        return moved

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._open_db().execute("SELECT status, COUNT(*) FROM photos GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)

    def taught(self) -> set[str]:
        """Items with enrolled photos."""
        with self._lock:
            rows = self._open_db().execute("SELECT DISTINCT item_id FROM photos WHERE status = 'enrolled'")
            return {r[0] for r in rows}

    def queue(self) -> list[dict]:
        """The photos held for staff, per item: item_id, name, photo ids (oldest first)."""
        groups: dict[str, dict] = {}
        for p in self.photos(status="held"):
            group = groups.setdefault(p.item_id, {"item_id": p.item_id, "sku": p.sku, "name": p.name, "photos": []})
            group["photos"].append(p.id)
        return list(groups.values())

    def export(self, out: str | Path) -> dict:
        """Write the kept photos (all but discarded ones) as a dataset: ``out/manifest.csv`` and
        ``out/images/<item_id>/<n>.jpg``. Returns counts. Refuses a folder that is not empty."""
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"{out}: exists and is not an empty folder; export writes a new dataset")
        photos = [p for p in self.photos() if p.status != "discarded"]
        rows, missing = [], 0
        for p in photos:
            src = self.path(p)
            if not src.is_file():
                missing += 1
                continue
            rel = Path("images") / _safe(p.item_id) / f"{p.id}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / rel)
            rows.append((rel.as_posix(), p.item_id, p.sku, p.name, p.label, p.predicted or "", f"{p.score:.5f}",
                         p.status, iso_time(p.created), p.bundle_id, p.event_id))
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(rows)
        return {"photos": len(rows), "items": len({r[1] for r in rows}), "missing_images": missing,
                "manifest": str(out / "manifest.csv")}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise ConfigError(f"the feedback store {self.directory} is closed")
        return self._db

    def _select(self, where: str, args: tuple) -> list[Photo]:
        with self._lock:
            rows = self._open_db().execute(
                "SELECT id, event_id, item_id, sku, name, label, predicted, score, bundle_id, status, created "
                f"FROM photos {where} ORDER BY id", args).fetchall()
        return [Photo(*r) for r in rows]


def feedback_event(photo: Photo, jpeg: bytes) -> dict:
    """The ``feedback`` event that carries a kept photo to the sync server (``sync_photos``).

    Its id is the confirmed event's id + ``-photo``: the outbox and the server hold it once however
    often it is sent. ``jpeg`` is the photo's file as kept (base64 in the event, as ``run
    --jpeg-quality`` attaches frames)."""
    return {"id": f"{photo.event_id}-photo", "kind": "feedback", "time": iso_time(photo.created),
            "confirmed_event": photo.event_id, "photo": photo.id, "item_id": photo.item_id, "sku": photo.sku,
            "name": photo.name, "label": photo.label, "predicted": photo.predicted, "score": photo.score,
            "bundle_id": photo.bundle_id, "jpeg": base64.b64encode(jpeg).decode("ascii")}


def _safe(name: str) -> str:
    """A folder name for an item id (no separators, no leading dot)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return cleaned or "_"
