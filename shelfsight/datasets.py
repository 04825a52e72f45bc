"""One dataset API over three layouts, chosen by what is at the path.

- Grocery Store layout: a folder with classes.csv and train.txt / val.txt / test.txt
  (``path, fine_id, coarse_id``), plus iconic catalog images named in classes.csv.
- CSV manifest: a .csv file with a header ``path,label[,sku][,name][,split][,barcode]``;
  paths relative to the file. ``barcode`` lists the product's barcodes (EAN/UPC, Code 128,
  QR text), several separated by ``;``; they are carried into the catalog index, where the
  per-object mode checks a decoded code against the visual match.
- Folder per class: ``ROOT/<split>/<label>/*.jpg`` (``validation/`` and ``valid/`` are read as
  val, ``training/`` as train, ``testing/`` as test), or ``ROOT/<label>/*.jpg`` with no split
  folders, in which case a stable hash of each file name puts 20% of it in ``val``.

The class list always comes from the train split, so train and val agree on label order;
a val label that train does not have is an error. Unreadable images are found when pixels
are loaded (`load_images`): they are skipped, counted and reported, never fatal.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import DatasetError
from .images import UnreadableImage, is_image_file, read_image
from .preprocess import PreprocessSpec, prepare

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
HASH_VAL_SHARE = 0.2
# Folder names other tools use for a split (Keras, Roboflow, Kaggle exports), first match wins.
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "validation", "valid"), "test": ("test", "testing")}


@dataclass(frozen=True)
class Sample:
    """One image and what it shows."""

    path: Path
    label: str
    sku: str = ""
    name: str = ""
    coarse: str = ""
    barcodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """The samples of one split, the class list (from train) and the catalog images if any."""

    root: Path
    split: str
    layout: str
    samples: tuple[Sample, ...]
    labels: tuple[str, ...]
    catalog: tuple[Sample, ...] = ()
    coarse_of: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_hierarchy(self) -> bool:
        return bool(self.coarse_of)

    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def fingerprint(self) -> str:
        """A short hash of the file list and labels (not pixels), for provenance."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(f"{s.path.relative_to(self.root) if s.path.is_relative_to(self.root) else s.path}"
                     f"\t{s.label}\n".encode())
        return h.hexdigest()[:16]


def load_dataset(path: str | Path, split: str = "train") -> Dataset:
    """Read one split of a dataset in any supported layout.

    Raises:
        DatasetError: unknown layout or split, an empty class, a label missing from train.
    """
    root = Path(path)
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} unknown, expected one of {', '.join(SPLITS)}")
    if not root.exists():
        raise DatasetError(f"dataset {root} not found")
    if root.is_file() and root.suffix.lower() == ".csv":
        reader, layout = _read_csv, "csv"
    elif root.is_dir() and (root / "classes.csv").is_file() and (root / "train.txt").is_file():
        reader, layout = _read_grocery, "grocery"
    elif root.is_dir():
        reader, layout = _read_folders, "folders"
    else:
        raise DatasetError(f"{root}: expected a folder (class folders or Grocery layout) or a .csv manifest")

    train_samples, catalog, coarse_of = reader(root, "train")
    labels = _class_list(train_samples, root)
    samples = train_samples if split == "train" else reader(root, split)[0]
    unknown = sorted({s.label for s in samples} - set(labels))
    if unknown:
        raise DatasetError(f"{root}: split {split} has labels that train does not have: {', '.join(unknown[:5])}"
                           + (" ..." if len(unknown) > 5 else ""))
    if not samples:
        raise DatasetError(f"{root}: split {split} has no images")
    base = root.parent if root.is_file() else root
    return Dataset(root=base, split=split, layout=layout, samples=tuple(samples), labels=labels,
                   catalog=tuple(catalog), coarse_of=coarse_of)


def _class_list(train: list[Sample], root: Path) -> tuple[str, ...]:
    if not train:
        raise DatasetError(f"{root}: the train split has no images")
    seen: dict[str, None] = {}
    for s in train:
        seen.setdefault(s.label)
    return tuple(seen)


def _hash_split(name: str) -> str:
    digest = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if digest < HASH_VAL_SHARE else "train"


def _split_folder(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


def _read_folders(root: Path, split: str) -> tuple[list[Sample], list[Sample], dict[str, str]]:
    split_dirs = [d.name for d in (_split_folder(root, s) for s in SPLITS) if d is not None]
    if split_dirs:
        base = _split_folder(root, split)
        if base is None:
            raise DatasetError(f"{root}: no {'/, '.join(SPLIT_FOLDERS[split])}/ folder (has {', '.join(split_dirs)})")
        hashed = False
    else:
        base, hashed = root, True
        if split == "test":
            raise DatasetError(f"{root}: no split folders, so there is no test split (train/val are hashed 80/20)")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{base}: no class folders")
    samples = []
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if is_image_file(f))
        if not files:
            raise DatasetError(f"{d}: class {d.name!r} has no images")
        samples += [Sample(f, d.name) for f in files if not hashed or _hash_split(f.name) == split]
    return samples, [], {}


def _read_csv(path: Path, split: str) -> tuple[list[Sample], list[Sample], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: a CSV manifest needs a header with at least 'path,label'")
    has_split = "split" in rows[0]
    samples = []
    for i, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DatasetError(f"{path}:{i}: empty path or label")
        p = Path(row["path"])
        p = p if p.is_absolute() else path.parent / p
        row_split = row["split"].strip() if has_split else _hash_split(p.name)
        if row_split == split:
            codes = tuple(c.strip() for c in (row.get("barcode") or "").split(";") if c.strip())
            samples.append(Sample(p, row["label"].strip(), (row.get("sku") or "").strip(),
                                  (row.get("name") or "").strip(), barcodes=codes))
    return samples, [], {}


def _read_grocery(root: Path, split: str) -> tuple[list[Sample], list[Sample], dict[str, str]]:
    with open(root / "classes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    by_id = {r[1].strip(): r for r in rows}
    coarse_of = {r[0]: r[2] for r in rows}
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{root}: no {split}.txt")
    samples = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or parts[1] not in by_id:
            raise DatasetError(f"{listing}:{n}: expected 'path, fine_id, coarse_id' with a fine id from classes.csv")
        row = by_id[parts[1]]
        samples.append(Sample(root / parts[0], row[0], sku=row[0], name=row[0].replace("-", " "), coarse=row[2]))
    catalog = [Sample(root / r[4].lstrip("/"), r[0], sku=r[0], name=r[0].replace("-", " "), coarse=r[2])
               for r in rows if len(r) > 4 and (root / r[4].lstrip("/")).is_file()]
    return samples, catalog, coarse_of


@dataclass(frozen=True)
class LoadedImages:
    """Decoded pixels of a list of samples; what could not be read is listed, not lost."""

    images: np.ndarray          # N x size x size x 3 uint8 RGB
    label_ids: np.ndarray       # N int32 (-1 where the label is not in the class list)
    samples: tuple[Sample, ...]  # the N samples kept, in order
    skipped: tuple[tuple[Path, str], ...]  # (path, reason) for each image skipped


def load_images(samples: tuple[Sample, ...] | list[Sample], spec: PreprocessSpec, labels: tuple[str, ...] = (),
                progress: bool = True, desc: str = "images") -> LoadedImages:
    """Decode and prepare images exactly as the device will (`preprocess.prepare`), skipping
    unreadable ones."""
    index = {label: i for i, label in enumerate(labels)}

    def one(sample: Sample):
        try:
            bgr = read_image(sample.path)
        except (UnreadableImage, OSError) as e:
            return None, str(e) if isinstance(e, UnreadableImage) else f"{sample.path}: {e.strerror or e}"
        return prepare(bgr, spec), None

    images, kept, skipped = [], [], []
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(one, samples)
        for sample, (img, err) in tqdm(zip(samples, results), total=len(samples), desc=desc,
                                       disable=not progress, leave=False):
            if img is None:
                skipped.append((sample.path, err))
                continue
            images.append(img)
            kept.append(sample)
    for path, reason in skipped:
        log.warning("skipped %s", reason)
    array = np.stack(images) if images else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    ids = np.array([index.get(s.label, -1) for s in kept], np.int32)
    return LoadedImages(array, ids, tuple(kept), tuple(skipped))
