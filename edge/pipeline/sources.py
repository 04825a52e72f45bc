"""Frame sources: where the edge runtime's pictures come from.

Every source has the same small surface (`FrameSource`): `open()`, `read()` -> `Frame`
or None at the end of the stream, `close()`, and use as a context manager. `open()` and
`close()` are idempotent, and a closed source can be opened again (that is how a lost
camera is reopened). `open_source(spec)` is the one place a backend is chosen from the
`--source` string; nothing else in the runtime looks at the spec.

A source is *live* (camera, stream, picamera2) or not (file, folder, array). A live
source that fails is reopened by the capture thread; a non-live one ending ends the run,
or starts again from the first frame when it was made with `loop=True`.
"""
from __future__ import annotations

import abc
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from shelfsight.errors import ConfigError, RuntimeUnavailableError, SourceError
from shelfsight.images import UnreadableImage, is_image_file, read_image
from shelfsight.redact import redact_url

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_PICAMERA_SPEC = re.compile(r"^picamera2(?::(\d+))?$")
_CAMERA_DEVICE = re.compile(r"^/dev/video\d+$")


@dataclass(frozen=True)
class Frame:
    """One picture from a source.

    Attributes:
        image: BGR uint8 array, height x width x 3.
        index: position in the stream since the source object was created (keeps counting
            across loops and reopens, so it is unique per source).
        timestamp: wall-clock capture time, seconds since the epoch (`time.time()`).
        source: the source's name; for image files and folders, the image's path.
    """

    image: np.ndarray = field(repr=False)
    index: int
    timestamp: float
    source: str

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise SourceError(f"frame {self.index} from {self.source}: expected a BGR uint8 HxWx3 array, got {got}")


@runtime_checkable
class FrameSource(Protocol):
    """What the capture thread needs from a source.

    Attributes:
        name: printable name (the spec it was made from).
        live: True for cameras and streams (reopened when they fail), False for files.
        corrupt: inputs skipped so far because they could not be decoded.
        is_open: whether open() has been called since the last close().
    """

    name: str
    live: bool
    corrupt: int

    @property
    def is_open(self) -> bool: ...

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc: object) -> None: ...


class BaseSource(abc.ABC):
    """Base for sources: idempotent open/close, frame numbering, context manager.

    A subclass implements `_open()`, `_read()` (return `self._frame(image)` or None) and
    `_close()`, and sets `live`.
    """

    live = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.corrupt = 0
        self._opened = False
        self._next_index = 0

    @property
    def is_open(self) -> bool:
        return self._opened

    def open(self) -> None:
        if not self._opened:
            self._open()
            self._opened = True

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def read(self) -> Frame | None:
        if not self._opened:
            raise SourceError(f"source {self.name} is not open; call open() or use it in a with block")
        return self._read()

    def __enter__(self) -> "BaseSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _frame(self, image: np.ndarray, source: str | None = None) -> Frame:
        frame = Frame(image=image, index=self._next_index, timestamp=time.time(), source=source or self.name)
        self._next_index += 1
        return frame

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    @abc.abstractmethod
    def _read(self) -> Frame | None:
        """The next frame, or None at the end of the source."""


class ArraySource(BaseSource):
    """Frames from in-memory BGR arrays (tests, app code that already has pictures)."""

    def __init__(self, images: Sequence[np.ndarray], name: str = "array", loop: bool = False, live: bool = False) -> None:
        super().__init__(name)
        if len(images) == 0:
            raise SourceError(f"source {name}: no images given")
        self._images = list(images)
        self._loop = loop
        self.live = live
        self._position = 0

    def _open(self) -> None:
        self._position = 0

    def _read(self) -> Frame | None:
        if self._position >= len(self._images):
            if not self._loop:
                return None
            self._position = 0
        image = self._images[self._position]
        self._position += 1
        return self._frame(image)


class _ImageFilesSource(BaseSource):
    """Frames read from a fixed list of image files; unreadable files are skipped and counted."""

    def __init__(self, name: str, paths: Sequence[Path], loop: bool) -> None:
        super().__init__(name)
        self._paths = tuple(paths)
        self._loop = loop
        self._position = 0

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def _open(self) -> None:
        self._position = 0

    def _read(self) -> Frame | None:
        for _ in range(len(self._paths)):
            if self._position >= len(self._paths):
                if not self._loop:
                    return None
                self._position = 0
            path = self._paths[self._position]
            self._position += 1
            try:
                return self._frame(read_image(path), source=str(path))
            except (UnreadableImage, OSError) as err:
                self.corrupt += 1
                log.warning("skipping unreadable image %s: %s", path, err)
        return None  # a whole pass found nothing readable: looping would spin forever


class ImageFolderSource(_ImageFilesSource):
    """Every image file in a folder (not recursive), in sorted name order.

    Files that cannot be decoded are skipped, logged and counted in `corrupt`.
    """

    def __init__(self, folder: str | Path, loop: bool = False) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"source {folder}: not a folder")
        paths = sorted(p for p in folder.iterdir() if is_image_file(p))
        if not paths:
            raise SourceError(f"source {folder}: no image files (.jpg .jpeg .png .bmp .webp) in the folder")
        super().__init__(str(folder), paths, loop)


class ImageFileSource(_ImageFilesSource):
    """One image file: one frame, or the same frame again and again with `loop=True`."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"source {path}: not a file")
        super().__init__(str(path), [path], loop)


class VideoCaptureSource(BaseSource):
    """OpenCV VideoCapture: a video file, a V4L2 camera, an RTSP/HTTP stream or a GStreamer pipeline.

    Args:
        target: file path, URL, pipeline string, or camera index.
        backend: an OpenCV `cv2.CAP_*` API preference.
        live: cameras and streams are live; files are not.
        loop: for files only, start again from the first frame at the end.
        name: printable name; defaults to str(target).
    """

    def __init__(self, target: str | int, backend: int = cv2.CAP_ANY, live: bool = False, loop: bool = False,
                 name: str | None = None) -> None:
        super().__init__(name or str(target))
        if loop and live:
            raise ConfigError(f"loop applies to files and folders; source {self.name} is a live camera or stream")
        self._target = target
        self._backend = backend
        self.live = live
        self._loop = loop
        self._capture: cv2.VideoCapture | None = None

    def _open(self) -> None:
        if self._backend == cv2.CAP_GSTREAMER and not opencv_has_gstreamer():
            raise RuntimeUnavailableError(
                f"source {self.name}: GStreamer pipelines need OpenCV built with GStreamer; this OpenCV "
                f"{cv2.__version__} has none (use the distribution's python3-opencv, or a build with WITH_GSTREAMER=ON)")
        device = self._v4l2_device()
        if device is not None and not Path(device).exists():  # asking OpenCV would log its own warnings
            raise SourceError(f"source {self.name}: {device} does not exist (is the camera connected?)")
        capture = cv2.VideoCapture(self._target, self._backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"source {self.name}: OpenCV could not open it")
        self._capture = capture

    def _v4l2_device(self) -> str | None:
        """The /dev/videoN node of a V4L2 camera, or None for other targets."""
        if self._backend != cv2.CAP_V4L2:
            return None
        if isinstance(self._target, int):
            return f"/dev/video{self._target}"
        return self._target if _CAMERA_DEVICE.match(str(self._target)) else None

    def _close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _read(self) -> Frame | None:
        ok, image = self._capture.read()
        if not ok and self._loop:
            self._close()
            self._open()
            ok, image = self._capture.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return self._frame(image)


class Picamera2Source(BaseSource):
    """A Raspberry Pi camera through picamera2 (libcamera), delivering BGR frames.

    picamera2's "RGB888" format is laid out B, G, R in memory, which is OpenCV's order.
    """

    live = True

    def __init__(self, camera_num: int = 0, size: tuple[int, int] = (640, 480)) -> None:
        super().__init__(f"picamera2:{camera_num}")
        if camera_num < 0:
            raise ConfigError(f"picamera2 camera number must be >= 0, got {camera_num}")
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"picamera2 size must be (width, height) > 0, got {size}")
        self._camera_num = camera_num
        self._size = (int(size[0]), int(size[1]))
        self._camera = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as err:
            raise RuntimeUnavailableError(
                f"source {self.name}: picamera2 is not installed (on Raspberry Pi OS: apt install python3-picamera2)"
            ) from err
        try:
            camera = Picamera2(self._camera_num)
            camera.configure(camera.create_video_configuration(main={"size": self._size, "format": "RGB888"}))
            camera.start()
        except (RuntimeError, IndexError, OSError) as err:
            raise SourceError(f"source {self.name}: camera could not be started: {err}") from err
        self._camera = camera

    def _close(self) -> None:
        if self._camera is not None:
            camera, self._camera = self._camera, None
            try:
                camera.stop()
            finally:
                camera.close()

    def _read(self) -> Frame | None:
        try:
            image = self._camera.capture_array("main")
        except (RuntimeError, OSError) as err:
            log.warning("picamera2 capture failed: %s", err)
            return None
        return self._frame(np.ascontiguousarray(image[:, :, :3]))


def opencv_has_gstreamer() -> bool:
    """True when this OpenCV build has the GStreamer video I/O backend."""
    return re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None


def open_source(spec: str, loop: bool = False) -> FrameSource:
    """Choose the backend for a `--source` string and make the source (not yet opened).

    Recognised, in this order:
        "picamera2" or "picamera2:N"   -> Picamera2Source (camera N)
        a string containing "!"        -> GStreamer pipeline through OpenCV (live)
        "N" (digits) or "/dev/videoN"  -> V4L2 camera through OpenCV (live)
        rtsp:// http(s):// rtmp:// ... -> network stream through OpenCV/FFmpeg (live)
        an existing folder             -> ImageFolderSource
        an existing image file         -> ImageFileSource
        any other existing file        -> video file through OpenCV

    Args:
        spec: the source string.
        loop: restart files and folders at their end (an error for live sources).

    Raises:
        SourceError: the spec names nothing that exists or is recognised.
        ConfigError: `loop` asked for a live source.
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("source is empty; expected a camera index, file, folder, URL, pipeline or picamera2")
    live = _live_backend(spec)
    if live is not None:
        if loop:
            raise ConfigError(f"--loop applies to files and folders; source {spec} is a live camera or stream")
        return live
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop=loop)
    if path.is_file():
        if is_image_file(path):
            return ImageFileSource(path, loop=loop)
        return VideoCaptureSource(str(path), cv2.CAP_ANY, live=False, loop=loop, name=str(path))
    raise SourceError(
        f"source {spec!r} is not an existing file or folder, a camera index, a stream URL "
        f"({', '.join(STREAM_SCHEMES)}), a GStreamer pipeline (with '!') or picamera2[:N]")


def _live_backend(spec: str) -> FrameSource | None:
    match = _PICAMERA_SPEC.match(spec)
    if match:
        return Picamera2Source(int(match.group(1) or 0))
    if "!" in spec:
        return VideoCaptureSource(spec, cv2.CAP_GSTREAMER, live=True, name=redact_url(spec))
    camera_api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    if spec.isdigit():
        return VideoCaptureSource(int(spec), camera_api, live=True, name=f"camera:{spec}")
    if _CAMERA_DEVICE.match(spec):
        return VideoCaptureSource(spec, camera_api, live=True, name=spec)
    if spec.lower().startswith(STREAM_SCHEMES):
        return VideoCaptureSource(spec, cv2.CAP_FFMPEG, live=True, name=redact_url(spec))
    return None

