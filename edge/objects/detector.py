"""The `detector:PATH.tflite` proposal backend: an SSD-style TFLite object detector.

Models with the standard ``TFLite_Detection_PostProcess`` outputs are read as they are
(EfficientDet-Lite / SSD-MobileNet from MediaPipe Model Maker or the TF2 detection zoo):

    boxes   1 x N x 4   ymin, xmin, ymax, xmax, 0..1 of the input
    classes 1 x N       class ids (float)
    scores  1 x N       0..1
    count   1           valid rows

The roles are taken from the model's TFLite metadata where it names the outputs
("location", "category", "score", "number of detections"), else from the output names where
they say (detection_boxes, ..., num_detections), else from the op's output order (boxes,
classes, scores, count).
A model without that op, giving decoded ``boxes 1 x N x 4`` and ``scores 1 x N x C``, gets
NMS here. Either way boxes can be filtered by class id and score, and one class-agnostic NMS
pass removes boxes of different classes on one object. The frame is resized (stretched) to
the model's input (its size read from the model); float and int8 inputs get
``(pixel - mean) / std`` with mean and std from the options, else the metadata's
NormalizationOptions, else 127.5 / 127.5 (inputs in -1..1, as SSD-MobileNet and
EfficientDet-Lite take them); uint8 inputs get raw pixels (their quantisation is the
normalisation).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shelfsight.errors import ConfigError, ModelError

from ..runtime.interpreter import TFLiteModel, TensorInfo
from .boxes import Box, clip_box, nms
from .detector_metadata import read_detector_metadata

ROLES = ("boxes", "classes", "scores", "count")
DEFAULT_NORM = (127.5,)
_KEYWORDS = {"boxes": ("box", "location"), "classes": ("class", "categor"), "scores": ("score",),
             "count": ("num", "count")}


@dataclass(frozen=True)
class DetectorOptions:
    """Attributes:
        model: the .tflite file.
        classes: keep only these class ids (None: every class, i.e. class-agnostic).
        min_score: boxes under this score are dropped (0..1).
        iou_threshold: NMS overlap above which the weaker box goes (0..1).
        max_proposals: boxes per frame at most (best scores kept; the rest counted).
        mean, std: input normalisation for float / int8 inputs (uint8 inputs take raw pixels);
            None: the model's metadata, else 127.5.
        runtime, threads: passed to `TFLiteModel`.
    """

    model: Path
    classes: tuple[int, ...] | None = None
    min_score: float = 0.5
    iou_threshold: float = 0.5
    max_proposals: int = 16
    mean: float | None = None
    std: float | None = None
    runtime: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0 or not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"detector min_score must be 0..1 and iou_threshold 0..1, got {self.min_score!r} "
                              f"and {self.iou_threshold!r}")
        if isinstance(self.max_proposals, bool) or not isinstance(self.max_proposals, int) or self.max_proposals < 1:
            raise ConfigError(f"detector max_proposals must be a whole number >= 1, got {self.max_proposals!r}")
        if self.classes is not None and not isinstance(self.classes, tuple):
            raise ConfigError(f"detector classes must be a tuple of class ids or None, got {self.classes!r}")
        if self.std is not None and self.std <= 0:
            raise ConfigError(f"detector std must be > 0, got {self.std!r}")


def _shapes_ok(roles: dict[str, TensorInfo]) -> bool:
    shapes = {role: roles[role].shape for role in ROLES}
    n = shapes["boxes"][1] if len(shapes["boxes"]) == 3 else -1
    return (shapes["boxes"] == (1, n, 4) and shapes["classes"] == (1, n) and shapes["scores"] == (1, n)
            and int(np.prod(shapes["count"])) == 1)


def _check_shapes(roles: dict[str, TensorInfo], outputs: dict[str, TensorInfo], path: Path | str) -> None:
    if not _shapes_ok(roles):
        raise ModelError(f"{path}: outputs {describe(outputs)}; the metadata names them "
                         f"{', '.join(roles)}, but their shapes are not 1xNx4, 1xN, 1xN, 1")


def describe(outputs: dict[str, TensorInfo]) -> str:
    return ", ".join(f"{name} {'x'.join(map(str, o.shape)) or 'scalar'}" for name, o in outputs.items())


def output_roles(outputs: dict[str, TensorInfo], path: Path | str = "detector") -> tuple[dict[str, TensorInfo], bool]:
    """Which output is which: ``(roles, has_nms)``.

    Raises:
        ModelError: the outputs are neither the post-processing op's four nor boxes + scores.
    """
    expected = ("expected TFLite_Detection_PostProcess outputs (boxes 1xNx4, classes 1xN, scores 1xN, count 1) "
                "or decoded boxes 1xNx4 + scores 1xNxC")
    infos = sorted(outputs.items(), key=lambda item: item[1].index)
    if len(infos) == 4:
        named = {role: [o for n, o in infos if any(k in n.lower() for k in _KEYWORDS[role])] for role in ROLES}
        if all(len(found) == 1 for found in named.values()) and len({o.index for f in named.values() for o in f}) == 4:
            roles = {role: found[0] for role, found in named.items()}
        else:
            roles = dict(zip(ROLES, (o for _, o in infos)))
        if _shapes_ok(roles):
            return roles, True
    elif len(infos) == 2:
        by_rank = sorted((o for _, o in infos), key=lambda o: (o.shape[-1] != 4, o.index))
        boxes, scores = by_rank
        if len(boxes.shape) == 3 and boxes.shape[-1] == 4 and len(scores.shape) == 3 and \
                scores.shape[:2] == boxes.shape[:2]:
            return {"boxes": boxes, "scores": scores}, False
    raise ModelError(f"{path}: outputs {describe(outputs)}; {expected}")


class DetectorProposer:
    """Boxes from a TFLite detector. ``propose(frame_bgr) -> list[Box]``.

    Raises:
        ModelError: the file is not a loadable detector (its outputs are named in the message).
    """

    def __init__(self, options: DetectorOptions) -> None:
        self.options = options
        self.model = TFLiteModel(options.model, options.runtime, options.threads)
        metadata = read_detector_metadata(options.model)
        by_index = {o.index: o for o in self.model.outputs.values()}
        if metadata is not None and set(metadata.outputs) == set(ROLES):
            self.roles = {role: by_index[index] for role, index in metadata.outputs.items()}
            self.has_nms = True
            _check_shapes(self.roles, self.model.outputs, options.model)
        else:
            self.roles, self.has_nms = output_roles(self.model.outputs, options.model)
        self.mean = _norm(options.mean, metadata.mean if metadata is not None else None)
        self.std = _norm(options.std, metadata.std if metadata is not None else None)
        if (self.std <= 0).any():
            raise ModelError(f"{options.model}: metadata normalisation std {self.std.tolist()} must be > 0")
        self.capped = 0

    def propose(self, frame_bgr: np.ndarray) -> list[Box]:
        height, width = frame_bgr.shape[:2]
        rows, cols = self.model.input_size
        pixels = cv2.cvtColor(cv2.resize(frame_bgr, (cols, rows), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        if self.model.input.dtype != np.uint8:
            pixels = (pixels.astype(np.float32) - self.mean) / self.std
        out = self.model.run(pixels)
        raw = {role: out[info.name][0] for role, info in self.roles.items()}
        if self.has_nms:
            count = int(np.asarray(raw["count"]).reshape(-1)[0])
            corners, classes, scores = raw["boxes"][:count], raw["classes"][:count].astype(int), raw["scores"][:count]
        else:
            corners, classes = raw["boxes"], raw["scores"].argmax(-1)
            scores = raw["scores"][np.arange(len(classes)), classes]
        wanted = self.options.classes
        boxes = []
        for (y0, x0, y1, x1), cls, score in zip(corners, classes, scores):
            if score < self.options.min_score or (wanted is not None and int(cls) not in wanted):
                continue
            box = clip_box(x0 * width, y0 * height, x1 * width, y1 * height, width, height, float(score), int(cls))
            if box is not None:
                boxes.append(box)
        boxes = nms(boxes, self.options.iou_threshold)
        if len(boxes) > self.options.max_proposals:
            self.capped += len(boxes) - self.options.max_proposals
            boxes = boxes[: self.options.max_proposals]
        return boxes

    def close(self) -> None:
        self.model.close()


def _norm(given: float | None, from_metadata: tuple[float, ...] | None) -> np.ndarray:
    """The options' value, else the metadata's (per channel), else `DEFAULT_NORM`."""
    return np.asarray(given if given is not None else from_metadata or DEFAULT_NORM, np.float32)
