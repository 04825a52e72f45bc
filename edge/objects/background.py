"""The `background` proposal backend: a learned empty scene, and whatever differs from it.

For fixed cameras (conveyor, tray, counter). OpenCV's background subtractor (MOG2 or KNN)
learns the empty scene, from the first ``learn_frames`` frames of the run or from a scene
file made by ``shelfsight calibrate``; from then on it keeps learning slowly
(``relearn_rate``) so lighting drift is absorbed. Per frame: foreground mask (shadows, which
the subtractor marks 127, are dropped), opening (removes specks) and closing (fills holes),
outer contours, their bounding boxes kept within the area and aspect limits, largest first,
at most ``max_proposals`` (the rest counted in ``capped``).

Limits, by design of background subtraction:
- touching or overlapping objects form one blob, hence one box;
- an object that stays still is learned into the background after roughly
  ``1 / relearn_rate`` frames (0 turns relearning off: then a lighting change shows as one
  huge blob, refused by ``max_area``);
- the camera must not move; a moved camera needs a new calibration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shelfsight import atomic
from shelfsight.errors import ConfigError

from .boxes import Box, clip_box

METHODS = ("mog2", "knn")
SCENE_FRAMES = 30  # frames a scene file keeps: enough for the subtractor's per-pixel model


@dataclass(frozen=True)
class BackgroundOptions:
    """Attributes:
        method: "mog2" or "knn" (OpenCV's subtractors).
        learn_frames: frames learned at the start, without proposals, when there is no scene file.
        scene: a scene file from ``shelfsight calibrate`` (then nothing is learned at the start).
        relearn_rate: learning rate once learned (0..1; 0 freezes the background).
        threshold: MOG2 ``varThreshold`` / KNN ``dist2Threshold``; None: OpenCV's default (16 / 400).
        work_width: frames are subtracted at this width (speed), boxes scaled back to the frame.
        min_area, max_area: box area as a share of the frame (0..1).
        min_aspect, max_aspect: box width / height.
        kernel: morphology kernel size at ``work_width`` (pixels, odd).
        max_proposals: boxes per frame at most (largest kept; the rest counted).
    """

    method: str = "mog2"
    learn_frames: int = 30
    scene: Path | None = None
    relearn_rate: float = 0.0005
    threshold: float | None = None
    work_width: int = 320
    min_area: float = 0.004
    max_area: float = 0.5
    min_aspect: float = 0.2
    max_aspect: float = 5.0
    kernel: int = 5
    max_proposals: int = 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"background method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, low in (("learn_frames", 1), ("work_width", 32), ("kernel", 1), ("max_proposals", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"background {name} must be a whole number >= {low}, got {value!r}")
        if not 0.0 <= self.relearn_rate <= 1.0:
            raise ConfigError(f"background relearn_rate must be 0..1, got {self.relearn_rate!r}")
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            raise ConfigError(f"background areas need 0 <= min_area < max_area <= 1, got "
                              f"{self.min_area!r} and {self.max_area!r}")
        if not 0.0 < self.min_aspect < self.max_aspect:
            raise ConfigError(f"background aspects need 0 < min_aspect < max_aspect, got "
                              f"{self.min_aspect!r} and {self.max_aspect!r}")
        if self.threshold is not None and self.threshold <= 0:
            raise ConfigError(f"background threshold must be > 0 or None, got {self.threshold!r}")


class BackgroundProposer:
    """Boxes of what is not the learned empty scene. ``propose(frame_bgr) -> list[Box]``."""

    def __init__(self, options: BackgroundOptions | None = None) -> None:
        self.options = options or BackgroundOptions()
        self._subtractor = _subtractor(self.options)
        self.learned_frames = 0
        self.capped = 0  # proposals over max_proposals, over the whole run
        size = self.options.kernel
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))
        if self.options.scene is not None:
            for frame in load_scene(self.options.scene):
                self.learn(frame)
            self.learned_frames = max(self.learned_frames, self.options.learn_frames)

    @property
    def learning(self) -> bool:
        return self.learned_frames < self.options.learn_frames

    def learn(self, frame_bgr: np.ndarray) -> None:
        """Learn one frame of the empty scene."""
        self._subtractor.apply(self._small(frame_bgr), learningRate=-1)
        self.learned_frames += 1

    def propose(self, frame_bgr: np.ndarray) -> list[Box]:
        """Boxes of the foreground in ``frame_bgr``; none while the scene is being learned."""
        if self.learning:
            self.learn(frame_bgr)
            return []
        small = self._small(frame_bgr)
        mask = self._subtractor.apply(small, learningRate=self.options.relearn_rate)
        mask = np.where(mask == 255, 255, 0).astype(np.uint8)  # 127 = shadow
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        height, width = frame_bgr.shape[:2]
        scale = width / small.shape[1]
        boxes = [b for b in (self._box(cv2.boundingRect(c), scale, width, height) for c in contours) if b]
        boxes.sort(key=lambda b: -b.area)
        if len(boxes) > self.options.max_proposals:
            self.capped += len(boxes) - self.options.max_proposals
            boxes = boxes[: self.options.max_proposals]
        return boxes

    def _box(self, rect: tuple[int, int, int, int], scale: float, width: int, height: int) -> Box | None:
        x, y, w, h = rect
        box = clip_box(x * scale, y * scale, (x + w) * scale, (y + h) * scale, width, height)
        o = self.options
        if box is None or not o.min_area <= box.area / (width * height) <= o.max_area:
            return None
        return box if o.min_aspect <= box.w / box.h <= o.max_aspect else None

    def _small(self, frame_bgr: np.ndarray) -> np.ndarray:
        height, width = frame_bgr.shape[:2]
        target = self.options.work_width
        if width <= target:
            return frame_bgr
        return cv2.resize(frame_bgr, (target, max(1, round(height * target / width))), interpolation=cv2.INTER_AREA)


def _subtractor(options: BackgroundOptions):
    if options.method == "mog2":
        sub = cv2.createBackgroundSubtractorMOG2(detectShadows=True)
        if options.threshold is not None:
            sub.setVarThreshold(options.threshold)
    else:
        sub = cv2.createBackgroundSubtractorKNN(detectShadows=True)
        if options.threshold is not None:
            sub.setDist2Threshold(options.threshold)
    return sub


def save_scene(frames: list[np.ndarray], path: str | Path) -> Path:
    """Write an empty-scene file: up to `SCENE_FRAMES` frames, evenly picked from ``frames``.

    Raises:
        ConfigError: no frames, or frames of different sizes.
    """
    if not frames:
        raise ConfigError("a scene needs at least one frame of the empty scene")
    if len({f.shape for f in frames}) != 1:
        raise ConfigError(f"scene frames differ in size: {sorted({f.shape for f in frames})}")
    picked = [frames[i] for i in np.linspace(0, len(frames) - 1, min(len(frames), SCENE_FRAMES)).round().astype(int)]
    stack = np.stack(picked)
    return atomic.write_with(path, lambda f: np.savez_compressed(f, frames=stack))


def load_scene(path: str | Path) -> np.ndarray:
    """The frames of a scene file (K x H x W x 3 uint8).

    Raises:
        ConfigError: the file is missing or not a scene file.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            frames = data["frames"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: not a scene file from `shelfsight calibrate` ({e})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ConfigError(f"{path}: scene frames are {frames.dtype} {frames.shape}, expected K x H x W x 3 uint8")
    return frames
