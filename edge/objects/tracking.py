"""Tracking: stable ids for the objects of consecutive frames, by box overlap and appearance.

Each frame's boxes are matched to the open tracks by a score ``w * IoU + (1 - w) * cosine``
(the crop embedding against the track's running mean embedding), allowed where the boxes
overlap enough, or where they look alike and the centres are near (a fast object on a
conveyor, a frame dropped). Matching is greedy, best score first: with the handful of
objects a counter or conveyor camera sees it gives the assignment an optimal solver would,
without a solver dependency on the device.

A track is *confirmed* after ``confirm_frames`` matched frames and *leaves* after more than
``max_missed`` frames without a match. Its label is smoothed: the label with the highest
sum of scores over its frames (unknown votes too), reported with that label's best frame. A
sighting whose box touches the frame's edge (the object partly out of view, entering or
leaving) votes with ``edge_weight`` only, and is the best frame only when there is no whole one.

Why not a tracker library: norfair, motpy and supervision's ByteTrack all pull SciPy (and
filterpy, rich or matplotlib) onto the device for a Kalman filter and a Hungarian solver;
none of them uses the embedding the recogniser gives for free for association except
through a custom distance, and their track lifecycles do not give the confirmation / leave
events this mode needs. This module is the ~150 lines that do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shelfsight.embeddings import l2_normalize
from shelfsight.errors import ConfigError

from ..runtime.postprocess import Recognition
from .boxes import Box, as_array, iou_matrix
from .crops import CropResult


@dataclass(frozen=True)
class TrackingOptions:
    """Attributes:
        min_iou: overlap with the track's last box that allows a match on its own (0..1).
        min_similarity: embedding cosine that allows a match with less overlap (-1..1) ...
        max_distance: ... when the centres are at most this many track-box diagonals apart.
        iou_weight: weight of IoU against cosine in the match score (0..1).
        confirm_frames: matched frames before a track is confirmed (its first event).
        max_missed: frames without a match after which a track leaves (its last event).
        momentum: share of the old mean embedding kept per matched frame (0..1).
        edge_weight: vote weight of a sighting at the frame's edge, against 1 for a whole one (0..1).
    """

    min_iou: float = 0.2
    min_similarity: float = 0.7
    max_distance: float = 1.0
    iou_weight: float = 0.5
    confirm_frames: int = 3
    max_missed: int = 8
    momentum: float = 0.8
    edge_weight: float = 0.25

    def __post_init__(self) -> None:
        for name, low, high in (("min_iou", 0.0, 1.0), ("min_similarity", -1.0, 1.0), ("iou_weight", 0.0, 1.0),
                                ("momentum", 0.0, 1.0), ("edge_weight", 0.0, 1.0), ("max_distance", 0.0, float("inf"))):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"tracking {name} must be {low}..{high}, got {value!r}")
        for name, low in (("confirm_frames", 1), ("max_missed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"tracking {name} must be a whole number >= {low}, got {value!r}")


@dataclass
class Sighting:
    """One frame of a track: where it was, what the recogniser said."""

    box: Box
    recognition: Recognition
    frame: int
    time: float
    weight: float = 1.0  # its vote's weight (less where the object is partly out of view)


@dataclass
class Track:
    """One object across frames (mutable: the tracker updates it every frame); id 0 until confirmed."""

    id: int
    first: Sighting
    last: Sighting
    embedding: np.ndarray
    hits: int = 1
    missed: int = 0
    confirmed: bool = False
    votes: dict[str | None, float] = field(default_factory=dict)
    best: dict[str | None, Sighting] = field(default_factory=dict)
    crossings: list[dict] = field(default_factory=list)
    barcode: dict | None = None
    state: dict = field(default_factory=dict)  # per-track state of the stages around the tracker

    @property
    def box(self) -> Box:
        return self.last.box

    @property
    def label(self) -> str | None:
        """The smoothed label: highest sum of scores over the track's frames (ties: first seen)."""
        return max(self.votes, key=self.votes.get)

    @property
    def best_sighting(self) -> Sighting:
        """The frame with the best score for the smoothed label."""
        return self.best[self.label]

    def observe(self, sighting: Sighting, embedding: np.ndarray, momentum: float) -> None:
        label, score = sighting.recognition.label, sighting.recognition.score
        self.votes[label] = self.votes.get(label, 0.0) + score * sighting.weight
        best = self.best.get(label)
        if best is None or (sighting.weight, score) > (best.weight, best.recognition.score):
            self.best[label] = sighting
        self.last = sighting
        self.embedding = l2_normalize(momentum * self.embedding + (1.0 - momentum) * embedding)


def associate(tracks: list[Track], boxes: list[Box], embeddings: np.ndarray,
              options: TrackingOptions) -> list[tuple[int, int]]:
    """Greedy matching, best score first: ``[(track index, box index), ...]``."""
    if not tracks or not boxes:
        return []
    iou = iou_matrix(as_array([t.box for t in tracks]), as_array(boxes))
    similarity = np.stack([t.embedding for t in tracks]) @ np.asarray(embeddings, np.float32).T
    track_centres = np.array([t.box.center for t in tracks], np.float32)
    box_centres = np.array([b.center for b in boxes], np.float32)
    diagonals = np.array([np.hypot(t.box.w, t.box.h) for t in tracks], np.float32)[:, None]
    distance = np.linalg.norm(track_centres[:, None, :] - box_centres[None, :, :], axis=-1) / diagonals
    allowed = (iou >= options.min_iou) | ((similarity >= options.min_similarity) & (distance <= options.max_distance))
    score = options.iou_weight * iou + (1.0 - options.iou_weight) * similarity
    pairs, used_t, used_b = [], set(), set()
    for flat in np.argsort(-np.where(allowed, score, -np.inf), axis=None, kind="stable"):
        t, b = divmod(int(flat), len(boxes))
        if not allowed[t, b]:
            break
        if t not in used_t and b not in used_b:
            pairs.append((t, b))
            used_t.add(t)
            used_b.add(b)
    return pairs


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame changed: tracks seen in it, newly confirmed, and those that left."""

    seen: tuple[Track, ...]
    confirmed: tuple[Track, ...]
    left: tuple[Track, ...]


class Tracker:
    """Turns per-frame boxes and crop results into tracks.

    A track gets its id when it is confirmed: 1, 2, 3, ... in order of confirmation, never
    repeated; tentative tracks (id 0) that vanish before confirmation leave no trace.
    """

    def __init__(self, options: TrackingOptions | None = None) -> None:
        self.options = options or TrackingOptions()
        self.tracks: list[Track] = []
        self.opened = self.closed = 0

    def update(self, boxes: list[Box], results: list[CropResult], frame: int, time: float,
               at_edge: list[bool] | None = None) -> TrackUpdate:
        """One frame's boxes and their crops' results (``at_edge``: which boxes touch the frame's edge)."""
        if len(boxes) != len(results):
            raise ValueError(f"{len(boxes)} boxes for {len(results)} crop results")
        weights = [self.options.edge_weight if edge else 1.0 for edge in (at_edge or [False] * len(boxes))]
        o = self.options
        embeddings = np.stack([r.embedding for r in results]) if results else np.zeros((0, 0), np.float32)
        pairs = associate(self.tracks, boxes, embeddings, o)
        matched_tracks = {t for t, _ in pairs}
        matched_boxes = {b for _, b in pairs}
        seen, confirmed = [], []
        for t, b in pairs:
            track = self.tracks[t]
            track.observe(Sighting(boxes[b], results[b].recognition, frame, time, weights[b]), results[b].embedding,
                          o.momentum)
            track.hits += 1
            track.missed = 0
            seen.append(track)
        left, kept = [], []
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.missed += 1
                if track.missed > o.max_missed:
                    self.closed += track.confirmed
                    if track.confirmed:
                        left.append(track)
                    continue
            kept.append(track)
        for b in range(len(boxes)):
            if b not in matched_boxes:
                sighting = Sighting(boxes[b], results[b].recognition, frame, time, weights[b])
                track = Track(0, sighting, sighting, results[b].embedding.astype(np.float32))
                track.observe(sighting, results[b].embedding, 1.0)
                kept.append(track)
                seen.append(track)
        for track in seen:
            if not track.confirmed and track.hits >= o.confirm_frames:
                self.opened += 1
                track.confirmed, track.id = True, self.opened
                confirmed.append(track)
        self.tracks = kept
        return TrackUpdate(tuple(seen), tuple(confirmed), tuple(left))

    def finish(self) -> tuple[Track, ...]:
        """End every open track (the source ended): the confirmed ones, as having left."""
        left = tuple(t for t in self.tracks if t.confirmed)
        self.closed += len(left)
        self.tracks = []
        return left
