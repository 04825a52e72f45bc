"""Taps teach: after ``teach_after`` confirmed photos of one product the model got wrong (or
called unknown), the device enrols them with its own on-device enrolment (`CatalogIndex.enroll`,
as `shelfsight enroll` does: each photo embedded by the running model), so the next shopper is
shown that product first (`candidates`); in review mode they wait for staff instead, and with
the kiosk's ``sync_photos`` a photo goes to the sync server only once staff approved it.

One lock serialises every decision, and the store moves each photo's status with a conditional
update: a flood of taps or two screens at once enrol each photo once.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, ContextManager, Iterable

import numpy as np

from shelfsight.errors import ConfigError, ShelfsightError
from shelfsight.images import UnreadableImage, read_image

from .candidates import catalog_items
from .feedback import FeedbackStore, Photo

log = logging.getLogger(__name__)

Using = Callable[[], ContextManager[Any]]  # the running recogniser, held for the block


class Teacher:
    """Decides when kept photos are enrolled, and enrols them.

    Args:
        store: the feedback store.
        using: ``using()`` gives the running recogniser for a block (a reload waits meanwhile).
        teach_after: photos of one item that trigger enrolment (0: never).
        review: hold them for staff (`approve` / `discard`) instead.
        next_frame_id: the kiosk frame id the next recognition gets (reported with an enrolment:
            frames from it on are recognised with it).
        share: ``share(photo)`` for each photo staff approve (``sync_photos`` in review mode; out of
            review mode `Confirmations` shares each photo as it is kept). None: nothing is shared.
    """

    def __init__(self, store: FeedbackStore, using: Using, teach_after: int, review: bool,
                 next_frame_id: Callable[[], int] = lambda: 0, share: Callable[[Photo], Any] | None = None) -> None:
        self.store, self._using = store, using
        self._share = share
        self.teach_after, self.review = teach_after, review
        self._next_frame_id = next_frame_id
        self._lock = threading.Lock()
        self._taught = store.taught()
        self.enrolments = 0

    def taught(self) -> frozenset[str]:
        """Items this device was taught (their confirmed photos enrolled)."""
        return frozenset(self._taught)

    def kept(self, item_id: str) -> dict | None:
        """A photo of ``item_id`` was kept: enrol or hold its photos once there are enough.
        Returns what happened ({"enrolled": ...} or {"held": ...}), None when nothing did."""
        if self.teach_after == 0:
            return None
        with self._lock:
            if self.review:
                held = self.store.photos(item_id, "held")
                pending = [p.id for p in self.store.photos(item_id, "pending")]
                if held or len(pending) >= self.teach_after:
                    moved = self.store.move(pending, "held", "pending")
                    return {"held": item_id, "photos": len(held) + len(moved)}
                return None
            if len(self.store.photos(item_id, "pending")) < self.teach_after:
                return None
            return self._enroll(item_id, "pending")

    def approve(self, item_id: str, photo_ids: Iterable[int] | None = None) -> dict:
        """Staff approved held photos of ``item_id`` (all of them, or those of ``photo_ids``): enrol them.

        Raises:
            KeyError: none of those photos of that item are held.
        """
        with self._lock:
            result = self._enroll(item_id, "held", photo_ids)
        if result is None:
            raise KeyError(item_id)
        return result

    def discard(self, item_id: str, photo_ids: Iterable[int] | None = None) -> int:
        """Staff discarded held photos of ``item_id`` (all of them, or those of ``photo_ids``): their
        images are deleted. Returns how many.

        Raises:
            KeyError: none of those photos of that item are held.
        """
        with self._lock:
            moved = self.store.move(self._held(item_id, "held", photo_ids), "discarded", "held")
        if not moved:
            raise KeyError(item_id)
        return len(moved)

    def _held(self, item_id: str, status: str, photo_ids: Iterable[int] | None) -> list[int]:
        """Ids of the photos of ``item_id`` in ``status``: all, or those also in ``photo_ids``."""
        ids = [p.id for p in self.store.photos(item_id, status)]
        if photo_ids is None:
            return ids
        wanted = set(photo_ids)
        return [i for i in ids if i in wanted]

    def _enroll(self, item_id: str, status: str, photo_ids: Iterable[int] | None = None) -> dict | None:
        ids = self.store.move(self._held(item_id, status, photo_ids), "enrolling", status)
        if not ids:
            return None
        try:
            with self._using() as rec:
                if getattr(rec, "index", None) is None:
                    raise ConfigError("this bundle has no search index to enrol into; build one with "
                                      "`shelfsight index BUNDLE --catalog DATA`")
                item = catalog_items(rec).get(item_id)
                if item is None:
                    raise ConfigError(f"item {item_id!r} is no longer in the running bundle's catalog")
                vectors, used = [], []
                for photo_id in ids:
                    try:
                        vectors.append(rec.embed(read_image(self.store.path(self.store.photo(photo_id)))))
                        used.append(photo_id)
                    except (UnreadableImage, OSError) as e:
                        log.warning("kept photo %d is not readable, not enrolled: %s", photo_id, e)
                if vectors:
                    rec.index.enroll(item, np.stack(vectors))  # the exact catalog record: more photos of it
                from_frame = self._next_frame_id()
        except BaseException:
            self.store.move(ids, status, "enrolling")  # nothing was enrolled: they wait again
            raise
        self.store.move(used, "enrolled", "enrolling")
        self.store.move(sorted(set(ids) - set(used)), "discarded", "enrolling")
        if used:
            self.enrolments += 1
            self._taught.add(item_id)
        log.info("enrolled %d confirmed photos of %s", len(used), item_id)
        if status == "held" and self._share is not None:  # staff approved them: they may leave the device
            for photo_id in used:
                try:
                    self._share(self.store.photo(photo_id))
                except (ShelfsightError, OSError) as e:
                    log.warning("approved photo %d was enrolled, not queued for sync: %s", photo_id, e)
        return {"enrolled": item_id, "photos": len(used), "from_frame": from_frame}


@contextlib.contextmanager
def holding(obj: Any):
    """`using` for a plain recogniser (tests, tools)."""
    yield obj
