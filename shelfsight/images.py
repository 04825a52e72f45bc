"""Reading image files: decode with OpenCV, and refuse corrupt or truncated files.

OpenCV decodes a truncated JPEG into a half-grey picture with only a warning on stderr,
so completeness is checked on the bytes (JPEG end-of-image marker, PNG IEND chunk).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class UnreadableImage(ValueError):
    """The file is not a complete image OpenCV can decode."""


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes into a BGR uint8 array.

    Raises:
        UnreadableImage: empty, truncated or undecodable data.
    """
    if len(data) < 16:
        raise UnreadableImage(f"{name}: {len(data)} bytes is not an image")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise UnreadableImage(f"{name}: truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        raise UnreadableImage(f"{name}: truncated PNG (no IEND chunk)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise UnreadableImage(f"{name}: not a decodable image")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as BGR uint8. Raises UnreadableImage (or OSError if missing)."""
    path = Path(path)
    return decode_image(path.read_bytes(), str(path))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
