"""A tap: the shopper confirms which product is on the tray.

Each confirmation becomes one ``confirmed`` event through the device's sinks and outbox (the
store's POS integration reads them): the run loop's event of that frame (``frame``, the model's
``label``, ``score``, ``predictions`` and ``matches``) plus::

    "kind": "confirmed", "kiosk_frame": the frame id the screen showed, "item_id", "sku", "name",
    "shown": the three products offered (item_id, confidence, why), "model_item": the first of
    them (None when the model said unknown), "model_correct": whether the shopper chose it.

A frame is confirmed once: the same tap again (a double tap, a second screen, a retried
request) answers with the first confirmation and writes nothing; another product for a
confirmed frame, or an older frame than the last confirmed one, is refused as a conflict.
Where the model was wrong or unsure, the photo is kept on the device and may teach it (`teach`);
with the ``sync_photos`` setting it is also handed to ``share`` (the station queues it for the
sync server), at once, or in review mode once staff approved it (`Teacher`).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

from shelfsight.errors import ShelfsightError

from ..pipeline.events import build_event
from ..pipeline.sources import Frame
from .candidates import catalog_items, choose
from .feedback import Photo
from .live import LiveView
from .teach import Teacher, Using

log = logging.getLogger(__name__)

REMEMBERED = 256  # confirmed frames whose answers are kept for repeated taps


class ConfirmError(Exception):
    """A tap that cannot be confirmed; ``status`` is the HTTP status the page gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Confirmations:
    """Turns taps into events, kept photos and teaching.

    Args:
        view: the live view (which frames a tap may name).
        using: the running recogniser for a block.
        teacher: keeps and teaches.
        emit: ``emit(event)`` to every sink and the outbox.
        share: ``share(photo)`` for each photo kept, unless the teacher is in review mode (its
            ``share`` then gets the photos staff approve). None: photos stay on the device.
    """

    def __init__(self, view: LiveView, using: Using, teacher: Teacher, emit: Callable[[dict], Any],
                 share: Callable[[Photo], Any] | None = None) -> None:
        self._view, self._using, self.teacher, self._emit = view, using, teacher, emit
        self._share = share
        self._lock = threading.Lock()
        self._done: OrderedDict[int, dict] = OrderedDict()
        self._last_frame = 0
        self.count = 0

    def confirm(self, frame_id: Any, item_id: Any) -> dict:
        """Confirm ``item_id`` for the kiosk frame ``frame_id``; returns the answer for the page.

        Raises:
            ConfirmError: 400 a malformed tap, 404 an item not in the catalog, 409 a frame already
                confirmed (as another product) or older than the last confirmed one, 410 a frame
                no longer held.
        """
        if isinstance(frame_id, bool) or not isinstance(frame_id, int) or frame_id < 1:
            raise ConfirmError(400, f"frame must be a kiosk frame id (a whole number >= 1), got {frame_id!r}")
        if not isinstance(item_id, str) or not item_id.strip():
            raise ConfirmError(400, f"item_id must be a catalog item id, got {item_id!r}")
        with self._lock:
            done = self._done.get(frame_id)
            if done is not None:
                if done["item_id"] == item_id:
                    return {**done, "duplicate": True}
                raise ConfirmError(409, f"frame {frame_id} was already confirmed as {done['item_id']!r}")
            if frame_id <= self._last_frame:
                raise ConfirmError(409, f"frame {frame_id} is older than the last confirmed frame "
                                        f"{self._last_frame}; tap the product on screen now")
            shown = self._view.held(frame_id)
            if shown is None or shown.recognition is None:
                raise ConfirmError(410, f"frame {frame_id} is no longer on screen; tap the product again")
            with self._using() as rec:
                items = catalog_items(rec)
                bundle_id = rec.bundle.bundle_id
            item = items.get(item_id)
            if item is None:
                raise ConfirmError(404, f"item {item_id!r} is not in this bundle's catalog; "
                                        f"choose one of the products offered, or search the catalog")
            known, offered = choose(shown.recognition, items, self.teacher.taught())
            model_item = offered[0].item_id if known and offered else None
            event = build_event(shown.recognition, Frame(shown.image, shown.source_frame, shown.captured,
                                                         shown.source))
            event.update({"kind": "confirmed", "kiosk_frame": frame_id, "item_id": item.item_id,
                          "sku": item.sku or item.item_id, "name": item.name or item.label or item.item_id,
                          "shown": [{"item_id": c.item_id, "confidence": c.confidence, "why": c.why}
                                    for c in offered],
                          "model_item": model_item, "model_correct": model_item == item.item_id})
            self._emit(event)
            self.count += 1
            answer = {"event_id": event["id"], "frame": frame_id, "item_id": item.item_id, "sku": event["sku"],
                      "name": event["name"], "model_correct": event["model_correct"], "kept": False, "taught": None}
            self._last_frame = frame_id
            self._done[frame_id] = answer
            while len(self._done) > REMEMBERED:
                self._done.popitem(last=False)
        if not answer["model_correct"]:
            answer = {**answer, **self._keep(event, item, model_item, bundle_id, shown)}
            with self._lock:
                self._done[frame_id] = answer
        return answer

    def _keep(self, event: dict, item: Any, model_item: str | None, bundle_id: str, shown: Any) -> dict:
        """Keep the photo and let it teach; the event is written whatever happens here (a full disk
        or a bundle without an index costs the lesson, not the sale)."""
        best = shown.recognition.predictions[0] if shown.recognition.predictions else None
        try:
            photo = self.teacher.store.add(event["id"], item.item_id, event["sku"], event["name"], item.label,
                                           model_item or (best.label if best else None),
                                           best.score if best else 0.0, bundle_id, shown.image)
        except (OSError, ValueError) as e:
            log.warning("the photo of confirmed frame %d was not kept: %s", event["kiosk_frame"], e)
            return {"kept": False, "taught": None}
        if self._share is not None and not self.teacher.review:
            try:
                self._share(photo)
            except (ShelfsightError, OSError) as e:  # kept on the device all the same (export)
                log.warning("the photo of confirmed frame %d was kept, not queued for sync: %s",
                            event["kiosk_frame"], e)
        try:
            return {"kept": True, "taught": self.teacher.kept(item.item_id)}
        except (ShelfsightError, OSError) as e:
            log.warning("confirmed photos of %s were not enrolled: %s", item.item_id, e)
            return {"kept": True, "taught": None, "teach_error": str(e)}
