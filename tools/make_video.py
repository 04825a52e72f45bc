"""Make a test video from still images: each image held for a number of frames on a
640x480 canvas, with short blank gaps between products (so each is a new appearance).

    python -m shelfsight.tools.make_video OUT.mp4 IMG... [--fps 30] [--hold 15] [--gap 5]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import click
import cv2
import numpy as np

from shelfsight.errors import ConfigError
from shelfsight.images import read_image


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit ``image`` into width x height, centred on grey."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 128, np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas


def make_video(images: Sequence[str | Path], out: str | Path, fps: int = 30, hold: int = 15, gap: int = 5,
               size: tuple[int, int] = (640, 480)) -> Path:
    """Write an MJPG .avi or mp4v .mp4 video; returns its path. Blank gaps are flat dark frames."""
    out = Path(out)
    if not images:
        raise ConfigError("make_video needs at least one image")
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(out), fourcc, fps, size)
    if not writer.isOpened():
        raise ConfigError(f"cannot write video {out} (codec for {out.suffix} missing?)")
    blank = np.full((size[1], size[0], 3), 8, np.uint8)
    try:
        for path in images:
            frame = letterbox(read_image(path), *size)
            for _ in range(hold):
                writer.write(frame)
            for _ in range(gap):
                writer.write(blank)
    finally:
        writer.release()
    return out


@click.command()
@click.argument("out", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--fps", type=int, default=30, show_default=True)
@click.option("--hold", type=int, default=15, show_default=True, help="Frames each image is shown.")
@click.option("--gap", type=int, default=5, show_default=True, help="Dark frames between images.")
def main(out, images, fps, hold, gap):
    """Make a 640x480 test video from still images."""
    click.echo(make_video(images, out, fps, hold, gap))


if __name__ == "__main__":
    main()
