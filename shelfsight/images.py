"""Reading image files: decode with OpenCV, and refuse corrupt or truncated files.

OpenCV decodes a truncated JPEG into a half-grey picture with only a warning on stderr,
so completeness is checked on the bytes (JPEG end-of-image marker, PNG IEND chunk).

Before decoding, the size the header declares is checked against a pixel limit (Pillow reads
the header only): a few hundred KB of PNG can declare 20000x20000 and take gigabytes to
decode. The limit is ``max_pixels`` where given, else ``$SHELFSIGHT_MAX_IMAGE_PIXELS``, else
`DEFAULT_MAX_PIXELS`; an image over it is an `ImageTooLarge`, so every reader that skips
unreadable images skips (and counts) it too.
"""
from __future__ import annotations

import glob
import io
import os
import warnings
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: 120 MB decoded, sized for a small device; phone photos pass
MAX_PIXELS_ENV = "SHELFSIGHT_MAX_IMAGE_PIXELS"


class UnreadableImage(ValueError):
    """The file is not a complete image OpenCV can decode."""


class ImageTooLarge(UnreadableImage):
    """The image declares more pixels than the limit; refused before decoding."""


def max_pixels_limit() -> int:
    """The pixel limit from ``$SHELFSIGHT_MAX_IMAGE_PIXELS`` or the default.

    Raises:
        ConfigError: the variable is not a positive whole number.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive whole number of pixels")
    return int(text)


def check_pixels(data: bytes, name: str, max_pixels: int | None = None) -> None:
    """Refuse image bytes whose header declares more than ``max_pixels`` (see module docstring).

    Raises:
        ImageTooLarge: over the limit.
    """
    limit = max_pixels_limit() if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(io.BytesIO(data)) as header:  # reads the header, decodes nothing
                width, height = header.size
    except Image.DecompressionBombError:
        # Pillow's own refusal (over twice its MAX_IMAGE_PIXELS, ~179 MP) gives no size
        raise ImageTooLarge(f"{name}: over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP declared, "
                            f"which is over the {limit / 1e6:g} MP limit (${MAX_PIXELS_ENV})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return  # not a header Pillow knows: OpenCV decides whether it is an image
    if width * height > limit:
        raise ImageTooLarge(f"{name}: {width}x{height} pixels is over the {limit / 1e6:g} MP limit "
                            f"(${MAX_PIXELS_ENV})")


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes into a BGR uint8 array.

    Args:
        max_pixels: refuse images declaring more pixels (default: `max_pixels_limit`).

    Raises:
        ImageTooLarge: over the pixel limit (checked on the header, before decoding).
        UnreadableImage: empty, truncated or undecodable data.
    """
    if len(data) < 16:
        raise UnreadableImage(f"{name}: {len(data)} bytes is not an image")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise UnreadableImage(f"{name}: truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        raise UnreadableImage(f"{name}: truncated PNG (no IEND chunk)")
    check_pixels(data, name, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise UnreadableImage(f"{name}: not a decodable image")
    return image


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as BGR uint8. Raises UnreadableImage (ImageTooLarge over the pixel
    limit, see `decode_image`) or OSError if missing."""
    path = Path(path)
    return decode_image(path.read_bytes(), str(path), max_pixels)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def expand_image_args(args: Iterable[str]) -> list[str]:
    """Command-line image arguments as files: a folder gives its images (recursively, sorted),
    a glob its matches (for shells that did not expand it: quoted, or on Windows), a file itself.
    Raises ConfigError for a folder or glob with no images: nothing to do is a user mistake."""
    out: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if is_image_file(p))
        elif not path.exists() and glob.has_magic(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if is_image_file(Path(p)))
        else:
            out.append(arg)  # a missing or unreadable file is reported (and counted) where it is read
            continue
        if not found:
            raise ConfigError(f"{arg}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        out.extend(found)
    return out
