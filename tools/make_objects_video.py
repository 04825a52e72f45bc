"""Generated videos for the per-object mode, with exact ground truth (seeded).

Product photos are pasted as rectangles onto a static textured background and moved in
straight lines: several at once, entering and leaving the frame. Two scenes:

    counter   a few products crossing a counter at once, in both directions, at different speeds
    conveyor  N products one after another, left to right, in a known order

    python -m shelfsight.tools.make_objects_video OUT.avi --scene conveyor --items 100 [--seed 0]

Writes OUT (MJPG .avi or mp4v .mp4) and OUT.json: per item its path, and per frame the
visible boxes (x, y, w, h, clipped) with the item number and whether the item is whole.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import click
import cv2
import numpy as np

from shelfsight import atomic
from shelfsight.errors import ConfigError
from shelfsight.images import read_image

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "grocery-sample"


@dataclass(frozen=True)
class Item:
    """One product's path: it is at (x0 + speed * (t - start), y) at frame t."""

    label: str
    image: str
    start: int
    x0: float
    y: int
    speed: float
    size: int

    def box(self, t: int) -> tuple[int, int, int, int]:
        return (int(round(self.x0 + self.speed * (t - self.start))), self.y, self.size, self.size)


def catalog_products(root: Path = SAMPLE) -> list[tuple[str, Path]]:
    """(label, iconic image) of every class of a Grocery-Store-layout dataset, in classes.csv order."""
    with open(root / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [(row[0], root / row[4].lstrip("/")) for row in rows]


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A static textured scene: smooth blotches and a fine grain, seeded."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(60, 150, (height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-12, 13, (height, width, 1))
    scene = np.clip(coarse.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(scene, (3, 3), 0)


def counter_scene(products: Sequence[tuple[str, Path]], width: int = 640, height: int = 480,
                  seed: int = 0, count: int = 6, size: int = 120) -> list[Item]:
    """``count`` products in lanes (alternately moving right and left), several in view at once, never touching."""
    rng = np.random.default_rng(seed)
    lanes = max(1, (height - 20) // (size + 30))
    speeds = [float(rng.uniform(5.0, 9.0)) * (1 if lane % 2 == 0 else -1) for lane in range(lanes)]
    picks = rng.permutation(len(products))
    items = []
    for i in range(count):
        label, image = products[int(picks[i % len(picks)])]
        lane = i % lanes
        speed = speeds[lane]  # one speed per lane: items of a lane never catch up with each other
        x0 = -size if speed > 0 else width
        items.append(Item(label, str(image), start=i * 25, x0=float(x0), y=10 + lane * (size + 30),
                          speed=speed, size=size))
    return items


def conveyor_scene(products: Sequence[tuple[str, Path]], items: int = 100, width: int = 320, height: int = 240,
                   seed: int = 0, size: int = 64, gap: int = 48, speed: float = 8.0) -> list[Item]:
    """``items`` products in a known (seeded) order, left to right, ``gap`` pixels apart."""
    rng = np.random.default_rng(seed)
    order = rng.integers(len(products), size=items)
    spacing = (size + gap) / speed  # frames between two items
    return [Item(products[k][0], str(products[k][1]), start=int(round(i * spacing)), x0=float(-size),
                 y=(height - size) // 2, speed=speed, size=size) for i, k in enumerate(order)]


def length(items: Sequence[Item], width: int) -> int:
    """Frames until the last item has left."""
    return max(it.start + int(np.ceil((width + it.size) / abs(it.speed))) + 1 for it in items) + 5


def frames(items: Sequence[Item], width: int, height: int, seed: int = 0,
           empty: int = 0) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """(frame, truth) per frame: ``empty`` frames of the bare scene first, then the items moving.

    Truth lists the items in view: item number, label, box (clipped to the frame), and
    "whole": whether the item is entirely inside the frame.
    """
    scene = background(width, height, seed)
    patches = {}
    for it in items:
        if (it.image, it.size) not in patches:
            patches[(it.image, it.size)] = cv2.resize(read_image(it.image), (it.size, it.size),
                                                      interpolation=cv2.INTER_AREA)
    for _ in range(empty):
        yield scene.copy(), []
    for t in range(length(items, width)):
        frame, truth = scene.copy(), []
        for n, it in enumerate(items):
            if t < it.start:
                continue
            x, y, w, h = it.box(t)
            x0, x1, y0, y1 = max(0, x), min(width, x + w), max(0, y), min(height, y + h)
            if x1 <= x0 or y1 <= y0:
                continue
            frame[y0:y1, x0:x1] = patches[(it.image, it.size)][y0 - y:y1 - y, x0 - x:x1 - x]
            whole = x0 == x and y0 == y and x1 == x + w and y1 == y + h
            truth.append({"item": n, "label": it.label, "box": [x0, y0, x1 - x0, y1 - y0], "whole": whole})
        yield frame, truth


def write_video(items: Sequence[Item], out: str | Path, width: int, height: int, fps: int = 30, seed: int = 0,
                empty: int = 30) -> Path:
    """Write the video and its ground truth (OUT.json); returns the video's path."""
    out = Path(out)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if out.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(out), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise ConfigError(f"cannot write video {out} (codec for {out.suffix} missing?)")
    per_frame = []
    try:
        for frame, truth in frames(items, width, height, seed, empty):
            writer.write(frame)
            per_frame.append(truth)
    finally:
        writer.release()
    atomic.write_text(out.with_suffix(out.suffix + ".json"), json.dumps(
        {"size": [width, height], "empty_frames": empty, "items": [asdict(it) for it in items],
         "frames": per_frame}) + "\n")
    return out


@click.command()
@click.argument("out", type=click.Path())
@click.option("--scene", type=click.Choice(["counter", "conveyor"]), default="counter", show_default=True)
@click.option("--items", type=click.IntRange(1), default=None, help="Products (counter: 6, conveyor: 100).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fps", type=int, default=30, show_default=True)
def main(out, scene, items, seed, fps):
    """Make a per-object test video from the sample catalog's product photos."""
    products = catalog_products()
    if scene == "counter":
        width, height = 640, 480
        plan = counter_scene(products, width, height, seed, count=items or 6)
    else:
        width, height = 320, 240
        plan = conveyor_scene(products, items or 100, width, height, seed)
    click.echo(write_video(plan, out, width, height, fps, seed))


if __name__ == "__main__":
    main()
