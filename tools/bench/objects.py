"""Benchmark the per-object mode (issue 16) on generated videos whose ground truth is exact.

    python -m shelfsight.tools.bench.objects BUNDLE [--data DIR] [--out DIR] [--threads 2] [--seed 0]

Writes the seeded videos (`shelfsight.tools.make_objects_video`, each with its OUT.json) under
``--out``/videos, runs the per-object stage on each as the device does (frames read back from
the MJPG files, the bundle's recogniser with its search and fusion, the background backend),
and measures:

    proposals   recall / precision of the background backend's boxes at IoU >= 0.5, counter
                video (640x480, catalog photos); ground-truth boxes smaller than the backend's
                ``min_area`` (an item's first or last sliver at the frame's edge) are left out
                of recall, by design of that option, and counted apart
    labels      per-track label accuracy (each track's label against the item it follows, "unknown"
                counted wrong; and its top class alone, as a top-1 accuracy counts) on a conveyor
                carrying every val photo once (never trained on; 640x480, photos at 224 px, the
                bundle's input size), against the single-image top-1 of the same recogniser on the
                same val photos; and on the same conveyor's frames as generated, before the MJPG
                codec (what the codec costs)
    count       conveyor with N catalog photos (320x240, 64 px) and a count line across its
                middle: items never counted (missed) and crossings beyond one per item
                (double-counted); per-track accuracy there too (no target: 64 px photos lose
                detail the single-image figure keeps)
    barcodes    products carrying EAN-13 / UPC-A / EAN-8 / QR labels (640x480): tracks whose event
                has the item's code, and the ticket switches (another product's code) flagged as
                "mismatch"
    fps         the stage's frames per second with 3 objects in view (640x480), frames decoded
                beforehand; with decoding added too

Prints a Markdown table and writes ``--out``/objects.json (with the device fingerprint) and
objects.md. A track is matched to the item whose box at the track's best frame overlaps it
most (IoU >= 0.5).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import click
import cv2
import numpy as np

from shelfsight import atomic
from shelfsight.errors import ShelfsightError

from .. import make_objects_video as mv
from .stats import latency_stats

MIN_IOU = 0.5
LABEL_SIZE = 224  # val photos ride the labels video at the bundle's input size: no detail lost to scaling
TARGETS = {"proposal_recall": 0.95, "proposal_precision": 0.90, "barcode_decode_rate": 0.95, "fps": 30.0}


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def matched_pairs(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]],
                  min_iou: float = MIN_IOU) -> list[tuple[int, int]]:
    """One-to-one (truth index, found index) pairs at IoU >= ``min_iou``, greedy by IoU."""
    scored = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    pairs, used_t, used_f = [], set(), set()
    for value, i, j in scored:
        if value < min_iou:
            break
        if i not in used_t and j not in used_f:
            pairs.append((i, j))
            used_t.add(i)
            used_f.add(j)
    return sorted(pairs)


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise ShelfsightError(f"{path}: no frames could be read")
    return frames


def make_video(out: Path, items: list, width: int, height: int, seed: int) -> tuple[list[np.ndarray], dict]:
    """Write the video and its ground truth; returns the frames as read back and the truth."""
    video = mv.write_video(items, out, width, height, seed=seed)
    truth = json.loads(video.with_suffix(video.suffix + ".json").read_text())
    frames = read_video(video)
    if len(frames) != len(truth["frames"]):
        raise ShelfsightError(f"{video}: {len(frames)} frames read back, {len(truth['frames'])} written")
    return frames, truth


def proposal_quality(frames: Sequence[np.ndarray], truth: dict, min_area: float) -> dict[str, Any]:
    """Recall and precision of the background backend's boxes against the truth, frame by frame
    (after the frames it learns from)."""
    from shelfsight.edge.objects import BackgroundOptions, BackgroundProposer

    options = BackgroundOptions()
    proposer = BackgroundProposer(options)
    width, height = truth["size"]
    found_total = matched = truth_total = too_small = 0
    for index, (frame, objects) in enumerate(zip(frames, truth["frames"])):
        boxes = [b.to_list() for b in proposer.propose(frame)]
        if index < options.learn_frames:
            continue
        big = [o["box"] for o in objects if o["box"][2] * o["box"][3] >= min_area * width * height]
        too_small += len(objects) - len(big)
        pairs = matched_pairs(big, boxes)
        truth_total, found_total, matched = truth_total + len(big), found_total + len(boxes), matched + len(pairs)
    return {"truth_boxes": truth_total, "proposals": found_total, "matched": matched,
            "recall": matched / truth_total if truth_total else None,
            "precision": matched / found_total if found_total else None,
            "truth_boxes_under_min_area": too_small, "frames": len(frames) - options.learn_frames}


def run_stage(frames: Iterable[np.ndarray], recognizer, options, catalog=None) -> tuple[list[dict], Any, list[float]]:
    """The per-object stage over the frames: (events, the stage, seconds per frame)."""
    from shelfsight.edge.objects import BundleCrops, ObjectStage
    from shelfsight.edge.pipeline.sources import Frame

    stage = ObjectStage(options, BundleCrops(recognizer, options.max_batch), catalog=catalog)
    events, seconds = [], []
    try:
        for index, image in enumerate(frames):
            t0 = time.perf_counter()
            events += stage.process(image, Frame(image, index, 1000.0 + index / 30, "generated"), caption=False)[0]
            seconds.append(time.perf_counter() - t0)
        events += stage.finish()
    finally:
        stage.close()
    return events, stage, seconds


def items_of_tracks(events: Sequence[dict], truth: dict) -> dict[int, int | None]:
    """track id -> the item its best box overlaps most at its best frame (None: no item at IoU >= 0.5)."""
    out = {}
    for event in events:
        if event["kind"] != "object_left":
            continue
        objects = truth["frames"][event["best_frame"]]
        scored = [(iou(event["best_box"], o["box"]), o["item"]) for o in objects]
        best = max(scored, default=(0.0, None))
        out[event["track_id"]] = best[1] if best[0] >= MIN_IOU else None
    return out


def label_accuracy(events: Sequence[dict], truth: dict) -> dict[str, Any]:
    """Per-track label accuracy over the truth's items: an item without a track counts as wrong.

    ``right`` counts the tracks named right (the event's label; "unknown" is wrong), ``right_top1``
    those whose top class is right (the event's first prediction, whatever the unknown threshold
    says: what a top-1 accuracy counts), ``unknown`` the tracks of an item named "unknown".
    """
    left = {e["track_id"]: e for e in events if e["kind"] == "object_left"}
    item_of = items_of_tracks(events, truth)
    labels = [it["label"] for it in truth["items"]]
    right, right_top1, unknown = set(), set(), set()
    for track, item in item_of.items():
        if item is None:
            continue
        event = left[track]
        if event["label"] == labels[item]:
            right.add(item)
        if event.get("predictions") and event["predictions"][0]["label"] == labels[item]:
            right_top1.add(item)
        if event["label"] is None:
            unknown.add(item)
    tracked = {i for i in item_of.values() if i is not None}
    return {"items": len(labels), "tracked": len(tracked), "right": len(right),
            "accuracy": len(right) / len(labels) if labels else None, "right_top1": len(right_top1),
            "accuracy_top1": len(right_top1) / len(labels) if labels else None, "unknown": len(unknown),
            "tracks_without_item": sum(i is None for i in item_of.values())}


def count_error(events: Sequence[dict], truth: dict) -> dict[str, Any]:
    """Count-line crossings against the items: missed (never counted) and double-counted
    (crossings beyond one per item, and crossings of tracks that follow no item)."""
    item_of = items_of_tracks(events, truth)
    per_item: Counter[int] = Counter()
    stray = 0
    for event in events:
        if event["kind"] != "object_left":
            continue
        item = item_of[event["track_id"]]
        if item is None:
            stray += len(event["crossings"])
        else:
            per_item[item] += len(event["crossings"])
    items = len(truth["items"])
    missed = sum(1 for i in range(items) if per_item[i] == 0)
    double = sum(max(0, n - 1) for n in per_item.values()) + stray
    return {"items": items, "counted": sum(per_item.values()) + stray, "missed": missed, "double_counted": double}


def per_sku_error(counts: Counter, truth: dict) -> int:
    """Sum over SKUs of |counted - true| (the count line's per-label counts)."""
    true = Counter(it["label"] for it in truth["items"])
    counted: Counter = Counter()
    for (label, _direction), n in counts.items():
        counted[label] += n
    return sum(abs(counted[k] - true[k]) for k in set(true) | set(counted))


def barcode_quality(events: Sequence[dict], truth: dict) -> dict[str, Any]:
    """Tracks whose event has the item's code; ticket switches flagged; false alerts."""
    item_of = items_of_tracks(events, truth)
    items = truth["items"]
    read = wrong = flagged = false_alerts = 0
    for event in events:
        item = item_of.get(event["track_id"]) if event["kind"] == "object_left" else None
        if item is None:
            continue
        code = event["barcode"]
        if code is None:
            continue
        if code["value"] != items[item]["code"]:
            wrong += 1
            continue
        read += 1
        if items[item]["switched"]:
            flagged += code["agreement"] == "mismatch"
        else:
            false_alerts += code["agreement"] == "mismatch"
    switched = sum(it["switched"] for it in items)
    return {"items": len(items), "decoded": read, "wrong_value": wrong,
            "decode_rate": read / len(items) if items else None, "switched": switched,
            "switches_flagged": flagged, "false_alerts": false_alerts}


def single_image_top1(recognizer, data: Path) -> tuple[float, float, dict[str, tuple[bool, bool]]]:
    """Top-1 of the recogniser on the val photos one by one (its search and fusion included),
    the share it names right with "unknown" counted wrong (what the device answers), and per
    photo whether its top-1 is right and whether it is named right."""
    from shelfsight.datasets import load_dataset
    from shelfsight.images import read_image

    right = {}
    for s in load_dataset(data, "val").samples:
        result = recognizer.recognize(read_image(s.path))
        right[str(s.path)] = (result.predictions[0].label == s.label, result.label == s.label)
    return (sum(top1 for top1, _ in right.values()) / len(right),
            sum(named for _, named in right.values()) / len(right), right)


def measure(bundle: Path, data: Path, out: Path, threads: int, seed: int = 0, counter_items: int = 6,
            conveyor_items: int = 100, barcode_items: int = 20, fps_frames: int = 300,
            val_items: int | None = None) -> dict[str, Any]:
    """Every figure of the table (see the module docstring)."""
    from shelfsight.datasets import load_dataset
    from shelfsight.edge.catalog import Catalog, CatalogItem
    from shelfsight.edge.objects import BackgroundOptions, CountLine, ObjectsOptions
    from shelfsight.edge.runtime.recognizer import Recognizer

    cv2.setNumThreads(threads)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    products = mv.catalog_products()
    result: dict[str, Any] = {"bundle": str(bundle), "data": str(data), "threads": threads, "seed": seed}
    with Recognizer.create_from_bundle(bundle, threads=threads) as recognizer:
        result["bundle_id"] = recognizer.bundle.bundle_id
        val_top1, val_answer, right_alone = single_image_top1(recognizer, data)
        result["single_image_val_top1"], result["single_image_val_answer"] = val_top1, val_answer

        frames, truth = make_video(videos / "counter.avi", mv.counter_scene(products, 640, 480, seed, counter_items),
                                   640, 480, seed)
        result["proposals"] = proposal_quality(frames, truth, BackgroundOptions().min_area)
        events, _, _ = run_stage(frames, recognizer, ObjectsOptions())
        result["counter_labels"] = label_accuracy(events, truth)

        val = [(s.label, s.path) for s in load_dataset(data, "val").samples][:val_items]
        plan = mv.conveyor_scene(val, 0, 640, 480, seed, size=LABEL_SIZE, speed=12.0, each_once=True)
        frames, truth = make_video(videos / "labels.avi", plan, 640, 480, seed)
        events, _, _ = run_stage(frames, recognizer, ObjectsOptions())
        del frames  # ~1,400 frames of 640x480: not twice in memory
        result["val_labels"] = dict(label_accuracy(events, truth), size=LABEL_SIZE, single_image_same_photos=float(
            np.mean([right_alone[str(it.image)][0] for it in plan])), single_image_same_photos_named=float(
            np.mean([right_alone[str(it.image)][1] for it in plan])))
        # the same conveyor as generated, before the MJPG codec: what the codec costs
        uncompressed = (image for image, _ in mv.frames(plan, 640, 480, seed, empty=truth["empty_frames"]))
        events, _, _ = run_stage(uncompressed, recognizer, ObjectsOptions())
        result["val_labels_uncompressed"] = label_accuracy(events, truth)

        plan = mv.conveyor_scene(products, conveyor_items, 320, 240, seed)
        frames, truth = make_video(videos / "conveyor.avi", plan, 320, 240, seed)
        events, stage, _ = run_stage(frames, recognizer, ObjectsOptions(count_line=CountLine(160, 0, 160, 240)))
        result["conveyor_labels"] = label_accuracy(events, truth)
        result["conveyor_count"] = dict(count_error(events, truth), per_sku_error=per_sku_error(stage.counts, truth))

        codes = mv.product_codes(products, seed)
        catalog = Catalog(CatalogItem(label, label=label, barcodes=(codes[label][1],)) for label, _ in products)
        plan = mv.barcode_scene(products, 640, 480, seed, barcode_items)
        frames, truth = make_video(videos / "barcodes.avi", plan, 640, 480, seed)
        events, _, _ = run_stage(frames, recognizer, ObjectsOptions(), catalog=catalog)
        result["barcodes"] = dict(barcode_quality(events, truth),
                                  symbologies=dict(Counter(it.symbology for it in plan)))

        plan = mv.steady_scene(products, 640, 480, seed, 3)
        video = mv.write_video(plan, videos / "steady.avi", 640, 480, seed=seed)
        truth = json.loads(video.with_suffix(".avi.json").read_text())
        t0 = time.perf_counter()
        frames = read_video(video)
        decode_s = (time.perf_counter() - t0) / len(frames)
        frames = frames[:BackgroundOptions().learn_frames + fps_frames]
        _, _, seconds = run_stage(frames, recognizer, ObjectsOptions())
        timed = [s for s, objects in zip(seconds, truth["frames"])
                 if sum(o["whole"] for o in objects) == 3][10:]  # after the tracks are confirmed
        stats = latency_stats(timed)
        result["fps"] = {"frames": len(timed), "fps": stats.throughput_fps, "p50_ms": stats.p50_ms,
                         "p90_ms": stats.p90_ms, "p99_ms": stats.p99_ms, "decode_ms": decode_s * 1e3,
                         "fps_with_decode": 1.0 / (float(np.mean(timed)) + decode_s)}
    from .device import device_fingerprint

    result["device"] = device_fingerprint()
    return result


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(r: dict[str, Any]) -> str:
    """The Markdown table of a `measure` result."""
    p, lab, cnt, bc, fps = r["proposals"], r["val_labels"], r["conveyor_count"], r["barcodes"], r["fps"]
    counter, conveyor, raw = r["counter_labels"], r["conveyor_labels"], r["val_labels_uncompressed"]
    ok = {
        "proposals": (p["recall"] or 0) >= TARGETS["proposal_recall"]
        and (p["precision"] or 0) >= TARGETS["proposal_precision"],
        "labels": (lab["accuracy"] or 0) >= r["single_image_val_top1"],
        "count": cnt["missed"] == 0 and cnt["double_counted"] == 0,
        "barcodes": (bc["decode_rate"] or 0) >= TARGETS["barcode_decode_rate"],
        "fps": fps["fps"] >= TARGETS["fps"],
    }
    mark = {True: "met", False: "**missed**"}
    rows = [
        ("proposal recall / precision at IoU ≥ 0.5 (background, counter video)", "≥ 0.95 / ≥ 0.90",
         f"{_f(p['recall'])} / {_f(p['precision'])} ({p['matched']} of {p['truth_boxes']} boxes, "
         f"{p['proposals']} proposals)", mark[ok["proposals"]]),
        (f"per-track label accuracy (val photos at {lab['size']} px on a conveyor)",
         f"≥ single-image val top-1 {r['single_image_val_top1']:.3f}",
         f"{_f(lab['accuracy'])} ({lab['right']}/{lab['items']} named right, {lab['unknown']} \"unknown\"; "
         f"top-1 {lab['right_top1']}/{lab['items']}; the same photos alone: top-1 "
         f"{lab['single_image_same_photos']:.3f}, named right {lab['single_image_same_photos_named']:.3f})",
         mark[ok["labels"]]),
        ("per-track label accuracy, the same conveyor as generated (before the MJPG codec)", "—",
         f"{_f(raw['accuracy'])} ({raw['right']}/{raw['items']} named right, {raw['unknown']} \"unknown\"; "
         f"top-1 {raw['right_top1']}/{raw['items']})", "—"),
        ("per-track label accuracy (catalog photos: counter at 120 px / conveyor at 64 px)", "—",
         f"{_f(counter['accuracy'])} ({counter['right']}/{counter['items']}) / {_f(conveyor['accuracy'])} "
         f"({conveyor['right']}/{conveyor['items']})", "—"),
        (f"conveyor count error ({cnt['items']} items)", "0 missed, 0 double-counted",
         f"{cnt['missed']} missed, {cnt['double_counted']} double-counted (per-SKU error {cnt['per_sku_error']})",
         mark[ok["count"]]),
        ("barcode decode rate, readable codes at 640×480", "≥ 95% of tracks",
         f"{100 * (bc['decode_rate'] or 0):.0f}% ({bc['decoded']}/{bc['items']}, {bc['wrong_value']} wrong values)",
         mark[ok["barcodes"]]),
        ("ticket switches flagged (code of another product)", "—",
         f"{bc['switches_flagged']}/{bc['switched']}, {bc['false_alerts']} false alerts", "—"),
        (f"sustained FPS, 3 objects in view, {r['threads']} threads", "≥ 30",
         f"{fps['fps']:.1f} (p50 {fps['p50_ms']:.1f} ms, p99 {fps['p99_ms']:.1f} ms; "
         f"{fps['fps_with_decode']:.1f} with MJPG decoding)", mark[ok["fps"]]),
    ]
    lines = ["| metric | target | measured | |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=mv.SAMPLE, show_default=True,
              help="The bundle's dataset: its val photos ride the conveyor.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-objects"),
              show_default=True, help="Videos, objects.json and objects.md go here.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--counter-items", type=click.IntRange(1), default=6, show_default=True)
@click.option("--conveyor-items", type=click.IntRange(1), default=100, show_default=True)
@click.option("--barcode-items", type=click.IntRange(1), default=20, show_default=True)
@click.option("--val-items", type=click.IntRange(1), default=None,
              help="Val photos on the labels conveyor (default: every one).")
@click.option("--fps-frames", type=click.IntRange(20), default=300, show_default=True,
              help="Frames timed with 3 objects in view (at most the steady video's).")
def main(bundle, data, out, threads, seed, counter_items, conveyor_items, barcode_items, val_items, fps_frames):
    """Measure the per-object mode on generated videos with exact ground truth (issue 16)."""
    try:
        result = measure(bundle, data, out, threads, seed, counter_items, conveyor_items, barcode_items, fps_frames,
                         val_items)
    except ShelfsightError as e:
        raise click.ClickException(str(e)) from None
    markdown = table(result)
    atomic.write_text(out / "objects.json", json.dumps(result, indent=2) + "\n")
    atomic.write_text(out / "objects.md", markdown + "\n")
    click.echo(markdown)


if __name__ == "__main__":
    main()
