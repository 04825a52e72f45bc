"""Boxes in frame pixels and the few operations on them: overlap (IoU), NMS, clipping, which overlap.

A box is ``(x, y, w, h)`` in pixels of the frame it was found in, top-left origin. Arrays of
boxes are N x 4 float arrays in the same layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """One object proposal.

    Attributes:
        x, y, w, h: pixels in the frame (w, h >= 1).
        score: the detector's confidence (1.0 for the background model).
        class_id: the detector's class (None for the background model).
    """

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    class_id: int | None = None

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int, score: float = 1.0,
             class_id: int | None = None) -> Box | None:
    """Corners to a `Box` clipped to the frame; None when nothing of it is left."""
    left, top = max(0, int(round(x0))), max(0, int(round(y0)))
    right, bottom = min(width, int(round(x1))), min(height, int(round(y1)))
    if right - left < 1 or bottom - top < 1:
        return None
    return Box(left, top, right - left, bottom - top, float(score), class_id)


def as_array(boxes: list[Box]) -> np.ndarray:
    return np.asarray([b.to_list() for b in boxes], np.float32).reshape(-1, 4)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N x 4, xywh) with every box in ``b`` (M x 4)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    inter = (np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
             * np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None))
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(boxes: list[Box], iou_threshold: float) -> list[Box]:
    """Non-maximum suppression over all classes (OpenCV's), best score first."""
    if len(boxes) < 2:
        return list(boxes)
    keep = cv2.dnn.NMSBoxes([b.to_list() for b in boxes], [b.score for b in boxes], 0.0, iou_threshold)
    return [boxes[i] for i in np.asarray(keep, int).reshape(-1)]


def overlapping(boxes: list[Box]) -> list[bool]:
    """For each box, whether it overlaps (shares pixels with) another box of the list."""
    if len(boxes) < 2:
        return [False] * len(boxes)
    iou = iou_matrix(as_array(boxes), as_array(boxes))
    np.fill_diagonal(iou, 0.0)
    return (iou > 0).any(axis=1).tolist()
