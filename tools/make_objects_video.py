"""Generated videos for the per-object mode, with exact ground truth (seeded).

Product photos are pasted as rectangles onto a static textured background and moved in
straight lines: several at once, entering and leaving the frame. Scenes:

    counter   a few products crossing a counter at once, in both directions, at different speeds
    conveyor  N products one after another, left to right, in a known order
    barcodes  products carrying a printed code on a white label (EAN-13, UPC-A, EAN-8 or QR,
              one code per product, `product_codes`); every ``switch_every``-th item carries
              another product's code (the self-checkout "ticket switch")
    steady    ``count`` products in view all the time, drifting slowly (throughput)

    python -m shelfsight.tools.make_objects_video OUT.avi --scene conveyor --items 100 [--seed 0]

Writes OUT (MJPG .avi or mp4v .mp4) and OUT.json: per item its path (and code), and per frame
the visible boxes (x, y, w, h, clipped) with the item number and whether the item is whole.

Codes are drawn from the module patterns of python-barcode (EAN/UPC) and segno (QR), dev
dependencies: the device decodes them with OpenCV, so renderer and decoder are different code.
A label is drawn at 8 pixels per module, scaled down with area averaging and softened a
little, as a camera's optics would.
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
    code: str = ""  # the code printed on it, as a decoder reads it ("": none)
    symbology: str = ""  # EAN_13, UPC_A, EAN_8 or QR
    switched: bool = False  # the code is another product's

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
                   seed: int = 0, size: int = 64, gap: int = 48, speed: float = 8.0,
                   each_once: bool = False) -> list[Item]:
    """``items`` products in a known (seeded) order, left to right, ``gap`` pixels apart
    (``each_once``: every product once, in a seeded order; ``items`` is then ignored)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(products)) if each_once else rng.integers(len(products), size=items)
    spacing = (size + gap) / speed  # frames between two items
    return [Item(products[k][0], str(products[k][1]), start=int(round(i * spacing)), x0=float(-size),
                 y=(height - size) // 2, speed=speed, size=size) for i, k in enumerate(order)]


SYMBOLOGIES = ("EAN_13", "UPC_A", "EAN_8", "QR")
_DIGITS = {"EAN_13": 12, "UPC_A": 11, "EAN_8": 7}  # digits before the check digit
_PYTHON_BARCODE = {"EAN_13": "ean13", "UPC_A": "upca", "EAN_8": "ean8"}


def product_codes(products: Sequence[tuple[str, Path]], seed: int = 0) -> dict[str, tuple[str, str]]:
    """label -> (symbology, code) for every product: symbologies in turn, seeded digits (EAN-13
    in the in-store prefix 20), check digits computed, each code as a decoder reads it."""
    import barcode  # python-barcode (dev): the module patterns and check digits

    rng = np.random.default_rng(seed)
    codes = {}
    for k, (label, _) in enumerate(products):
        symbology = SYMBOLOGIES[k % len(SYMBOLOGIES)]
        if symbology == "QR":
            codes[label] = (symbology, f"shelfsight:{label}")
            continue
        digits = "".join(str(d) for d in rng.integers(0, 10, _DIGITS[symbology]))
        if symbology == "EAN_13":
            digits = "20" + digits[2:]
        codes[label] = (symbology, barcode.get(_PYTHON_BARCODE[symbology], digits).get_fullcode())
    return codes


def render_code(symbology: str, code: str, width: int) -> np.ndarray:
    """A white label ``width`` pixels wide with the code on it (gray uint8), quiet zones included.

    Drawn at 8 pixels per module from the symbology's module pattern, then scaled down
    (area averaging) and softened (Gaussian, sigma 0.6 px), as a camera's optics would.
    """
    if symbology == "QR":
        import segno  # dev dependency

        matrix = np.asarray(segno.make(code, error="m", micro=False).matrix, np.uint8)
        modules = np.pad(matrix, 4)  # 4-module quiet zone
        height = width
    elif symbology in _PYTHON_BARCODE:
        import barcode  # python-barcode (dev)

        pattern = barcode.get(_PYTHON_BARCODE[symbology], code[:-1]).build()[0]
        row = np.pad(np.array([c == "1" for c in pattern], np.uint8), 10)  # 10-module quiet zones
        bar_rows = max(1, round(0.4 * len(row)))  # bars as high as 40% of the label's width
        modules = np.pad(np.tile(row, (bar_rows, 1)), ((4, 4), (0, 0)))
        height = round(width * modules.shape[0] / modules.shape[1])
    else:
        raise ConfigError(f"symbology {symbology!r} unknown, expected one of {', '.join(SYMBOLOGIES)}")
    big = np.where(np.kron(modules, np.ones((8, 8), np.uint8)) > 0, 0, 255).astype(np.uint8)
    label = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(label, (0, 0), 0.6)


def with_code(patch: np.ndarray, symbology: str, code: str) -> np.ndarray:
    """The product patch with its code's label: a bar code along the bottom (92% of the width),
    a QR code in the bottom-right corner (45%)."""
    out = patch.copy()
    size = patch.shape[1]
    label = render_code(symbology, code, round(size * (0.45 if symbology == "QR" else 0.92)))
    h, w = label.shape
    y0, x0 = patch.shape[0] - h - 2, size - w - 2 if symbology == "QR" else (size - w) // 2
    out[y0:y0 + h, x0:x0 + w] = label[..., None]
    return out


def barcode_scene(products: Sequence[tuple[str, Path]], width: int = 640, height: int = 480, seed: int = 0,
                  count: int = 20, size: int = 210, switch_every: int = 5) -> list[Item]:
    """``count`` products carrying their codes in two lanes (right, left), one entering every 40
    frames; every ``switch_every``-th carries the next product's code instead (0: none)."""
    rng = np.random.default_rng(seed)
    codes = product_codes(products, seed)
    lanes = [10, height - size - 10]
    speeds = [float(rng.uniform(4.0, 6.0)), -float(rng.uniform(4.0, 6.0))]
    picks = rng.permutation(len(products))
    items = []
    for i in range(count):
        k = int(picks[i % len(picks)])
        switched = switch_every > 0 and i % switch_every == switch_every - 1
        label, image = products[k]
        symbology, code = codes[products[(k + 1) % len(products)][0] if switched else label]
        lane = i % 2
        items.append(Item(label, str(image), start=i * 40, x0=float(-size if lane == 0 else width), y=lanes[lane],
                          speed=speeds[lane], size=size, code=code, symbology=symbology, switched=switched))
    return items


def steady_scene(products: Sequence[tuple[str, Path]], width: int = 640, height: int = 480, seed: int = 0,
                 count: int = 3, size: int = 120) -> list[Item]:
    """``count`` products in view from the first frame for at least 300 frames, drifting at 0.5-1
    pixel a frame in lanes (alternately right and left)."""
    rng = np.random.default_rng(seed)
    lane_height = (height - 20) // count
    if lane_height < size:
        raise ConfigError(f"{count} lanes of {size} px do not fit in {height} px")
    picks = rng.permutation(len(products))
    items = []
    for i in range(count):
        label, image = products[int(picks[i % len(picks)])]
        speed = float(rng.uniform(0.5, 1.0)) * (1 if i % 2 == 0 else -1)
        x0 = 20.0 if speed > 0 else float(width - size - 20)
        items.append(Item(label, str(image), start=0, x0=x0, y=10 + i * lane_height, speed=speed, size=size))
    return items


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
        key = (it.image, it.size, it.symbology, it.code)
        if key not in patches:
            patch = cv2.resize(read_image(it.image), (it.size, it.size), interpolation=cv2.INTER_AREA)
            patches[key] = with_code(patch, it.symbology, it.code) if it.code else patch
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
            frame[y0:y1, x0:x1] = patches[(it.image, it.size, it.symbology, it.code)][y0 - y:y1 - y, x0 - x:x1 - x]
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
@click.option("--scene", type=click.Choice(["counter", "conveyor", "barcodes", "steady"]), default="counter",
              show_default=True)
@click.option("--items", type=click.IntRange(1), default=None,
              help="Products (counter: 6, conveyor: 100, barcodes: 20, steady: 3).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fps", type=int, default=30, show_default=True)
def main(out, scene, items, seed, fps):
    """Make a per-object test video from the sample catalog's product photos."""
    products = catalog_products()
    if scene == "counter":
        width, height = 640, 480
        plan = counter_scene(products, width, height, seed, count=items or 6)
    elif scene == "barcodes":
        width, height = 640, 480
        plan = barcode_scene(products, width, height, seed, count=items or 20)
    elif scene == "steady":
        width, height = 640, 480
        plan = steady_scene(products, width, height, seed, count=items or 3)
    else:
        width, height = 320, 240
        plan = conveyor_scene(products, items or 100, width, height, seed)
    click.echo(write_video(plan, out, width, height, fps, seed))


if __name__ == "__main__":
    main()
