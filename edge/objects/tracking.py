"""Tracking: stable ids for the objects of consecutive frames, by box overlap and appearance.

Each frame's boxes are matched to the open tracks by a score ``w * IoU + (1 - w) * cosine``
(the crop embedding against the track's running mean embedding), allowed where the boxes
overlap enough, or where they look alike and the centres are near (a fast object on a
conveyor, a frame dropped). Matching is greedy, best score first: with the handful of
objects a counter or conveyor camera sees it gives the assignment an optimal solver would,
without a solver dependency on the device.

A track is *confirmed* after ``confirm_frames`` matched frames and *leaves* after more than
``max_missed`` frames without a match. Its label is decided on the whole track, not voted frame
by frame (temporal ensembling): the class scores and the embeddings of its sightings are
averaged, weighted by how much of the object each crop shows, and the average goes through the
recogniser's own post-processing (`CropRecognizer.decide`: retrieval fusion on the mean
embedding, top-k, similar items), as one photo's outputs would. "Unknown" is decided on the
track too: the mean over its sightings of the top class score (what the bundle's threshold was
calibrated on, one image at a time) against that threshold. A frame under the threshold is not a
vote for "unknown" that outweighs the class its scores still point to, and a frame that scores a
little lower through compression or blur is evened out by the others.

A sighting counts 1, ``edge_weight`` where its box touches the frame's edge and
``overlap_weight`` where it overlaps another box of the frame (the crop holds part of another
object), the product of both where both; a weight of 0 counts only while the track has no
sighting of more. By default a sighting at the edge counts only then: its box holds part of the
object (entering or leaving), a view the single-image path never sees and the recogniser names
worse. On the README's conveyor of val photos, with its frames as generated (before any codec),
each whole crop names its photo as the photo alone does, while the slivers at the edges tipped
a close call even at a quarter weight. An object that never shows whole is named from its
partial sightings. The track's best frame is its best-scoring whole sighting of the decided class.

Why not a tracker library: norfair, motpy and supervision's ByteTrack all pull SciPy (and
filterpy, rich or matplotlib) onto the device for a Kalman filter and a Hungarian solver;
none of them uses the embedding the recogniser gives for free for association except
through a custom distance, and their track lifecycles do not give the confirmation / leave
events this mode needs. This module is the ~300 lines that do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from shelfsight.embeddings import l2_normalize
from shelfsight.errors import ConfigError

from ..runtime.postprocess import Recognition
from .boxes import Box, as_array, iou_matrix
from .crops import CropResult

#: Turns a track's mean class scores (C,), mean unit-norm embedding (D,) and mean top score into
#: its `Recognition` (`CropRecognizer.decide`).
Decide = Callable[[np.ndarray, np.ndarray, float], Recognition]


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
        edge_weight: weight in the track's label of a sighting at the frame's edge, against 1 for
            a whole one (0..1; 0: it counts only while the track has no other).
        overlap_weight: weight of a sighting whose box overlaps another box of its frame (0..1).
    """

    min_iou: float = 0.2
    min_similarity: float = 0.7
    max_distance: float = 1.0
    iou_weight: float = 0.5
    confirm_frames: int = 3
    max_missed: int = 8
    momentum: float = 0.8
    edge_weight: float = 0.0
    overlap_weight: float = 0.25

    def __post_init__(self) -> None:
        for name, low, high in (("min_iou", 0.0, 1.0), ("min_similarity", -1.0, 1.0), ("iou_weight", 0.0, 1.0),
                                ("momentum", 0.0, 1.0), ("edge_weight", 0.0, 1.0), ("overlap_weight", 0.0, 1.0),
                                ("max_distance", 0.0, float("inf"))):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"tracking {name} must be {low}..{high}, got {value!r}")
        for name, low in (("confirm_frames", 1), ("max_missed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"tracking {name} must be a whole number >= {low}, got {value!r}")

    def weight(self, at_edge: bool, overlapping: bool) -> float:
        """A sighting's weight in its track's label."""
        return (self.edge_weight if at_edge else 1.0) * (self.overlap_weight if overlapping else 1.0)


@dataclass
class Sighting:
    """One frame of a track: where it was, what the recogniser said of that crop alone."""

    box: Box
    recognition: Recognition
    frame: int
    time: float
    weight: float = 1.0  # its weight in the track's label (less where the object is partly out of view)


@dataclass
class Evidence:
    """Sums over a track's sightings of their class scores (C,), unit-norm embeddings (D,) and top
    class scores: row 0 weighted, of the sightings of weight > 0; row 1 plain, of those of weight 0,
    which make the mean only while there is no other."""

    scores: np.ndarray  # (2, C)
    embedding: np.ndarray  # (2, D)
    top_score: np.ndarray = field(default_factory=lambda: np.zeros(2))
    weight: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def add(self, result: CropResult, weight: float) -> None:
        row, weight = (0, weight) if weight > 0 else (1, 1.0)
        self.scores[row] += weight * np.asarray(result.scores, np.float64)
        self.embedding[row] += weight * np.asarray(result.embedding, np.float64)
        self.top_score[row] += weight * float(np.max(result.scores))
        self.weight[row] += weight

    def mean(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean class scores, mean embedding made unit-norm, mean top score)."""
        row = 0 if self.weight[0] > 0 else 1
        return ((self.scores[row] / self.weight[row]).astype(np.float32),
                l2_normalize(self.embedding[row].astype(np.float32)), float(self.top_score[row] / self.weight[row]))

    @classmethod
    def empty_like(cls, result: CropResult) -> "Evidence":
        return cls(np.zeros((2, np.size(result.scores))), np.zeros((2, np.size(result.embedding))))


@dataclass
class Track:
    """One object across frames (mutable: the tracker updates it every frame); id 0 until confirmed."""

    id: int
    first: Sighting
    last: Sighting
    embedding: np.ndarray  # running mean for association (recent frames count more)
    decide: Decide = field(repr=False)
    hits: int = 1
    missed: int = 0
    confirmed: bool = False
    evidence: Evidence | None = None
    best: dict[int, Sighting] = field(default_factory=dict)  # per class: the best sighting naming it first
    crossings: list[dict] = field(default_factory=list)
    barcode: dict | None = None
    state: dict = field(default_factory=dict)  # per-track state of the stages around the tracker
    _decided: tuple[int, Recognition] | None = field(default=None, repr=False)
    _observed: int = field(default=0, repr=False)

    @property
    def box(self) -> Box:
        return self.last.box

    @property
    def recognition(self) -> Recognition:
        """The track's recognition: its sightings' mean outputs through `decide` (once per new sighting)."""
        if self._decided is None or self._decided[0] != self._observed:
            self._decided = (self._observed, self.decide(*self.evidence.mean()))
        return self._decided[1]

    @property
    def label(self) -> str | None:
        """The track's label (None: unknown)."""
        return self.recognition.label

    @property
    def best_sighting(self) -> Sighting:
        """The best-weighted, best-scoring sighting whose own top class is the track's (any, if none is)."""
        predictions = self.recognition.predictions
        best = self.best.get(predictions[0].index) if predictions else None
        return best or max(self.best.values(), key=_rank, default=self.last)

    def observe(self, sighting: Sighting, result: CropResult, momentum: float) -> None:
        if self.evidence is None or self.evidence.scores.shape[1] != np.size(result.scores):
            self.evidence = Evidence.empty_like(result)  # the first sighting, or a reloaded bundle's classes
        self.evidence.add(result, sighting.weight)
        predictions = sighting.recognition.predictions
        if predictions:
            best = self.best.get(predictions[0].index)
            if best is None or _rank(sighting) > _rank(best):
                self.best[predictions[0].index] = sighting
        self.last = sighting
        self._observed += 1
        self.embedding = l2_normalize(momentum * self.embedding + (1.0 - momentum) * result.embedding)


def _rank(sighting: Sighting) -> tuple[float, float]:
    return sighting.weight, sighting.recognition.score


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

    def __init__(self, decide: Decide, options: TrackingOptions | None = None) -> None:
        """Args:
            decide: a track's recognition from its sightings' mean outputs (`CropRecognizer.decide`).
            options: matching, confirmation, leaving and the sightings' weights.
        """
        self.decide = decide
        self.options = options or TrackingOptions()
        self.tracks: list[Track] = []
        self.opened = self.closed = 0

    def update(self, boxes: list[Box], results: list[CropResult], frame: int, time: float,
               at_edge: list[bool] | None = None, overlapping: list[bool] | None = None) -> TrackUpdate:
        """One frame's boxes and their crops' results (``at_edge``: which boxes touch the frame's
        edge; ``overlapping``: which overlap another box of the frame)."""
        if len(boxes) != len(results):
            raise ValueError(f"{len(boxes)} boxes for {len(results)} crop results")
        o = self.options
        weights = [o.weight(edge, overlap) for edge, overlap in zip(at_edge or [False] * len(boxes),
                                                                     overlapping or [False] * len(boxes))]
        embeddings = np.stack([r.embedding for r in results]) if results else np.zeros((0, 0), np.float32)
        pairs = associate(self.tracks, boxes, embeddings, o)
        matched_tracks = {t for t, _ in pairs}
        matched_boxes = {b for _, b in pairs}
        seen, confirmed = [], []
        for t, b in pairs:
            track = self.tracks[t]
            track.observe(Sighting(boxes[b], results[b].recognition, frame, time, weights[b]), results[b], o.momentum)
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
                track = Track(0, sighting, sighting, results[b].embedding.astype(np.float32), self.decide)
                track.observe(sighting, results[b], 1.0)
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
