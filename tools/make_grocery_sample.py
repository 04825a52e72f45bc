"""Copy a small, fixed subset of the Grocery Store Dataset into assets/grocery-sample.

The subset keeps the dataset's own layout (train.txt / val.txt / classes.csv, natural
images and iconic catalog images) and its MIT license, so that every command that reads
the full dataset also reads the sample. Run once by a developer; the project never reads
the full dataset at run time.

    python tools/make_grocery_sample.py ../shared/data/grocery-store assets/grocery-sample
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

# Fruits whose ImageNet class exists come first: the backbone port is checked on them.
CLASSES = (
    "Banana", "Lemon", "Orange", "Pineapple", "Pomegranate", "Granny-Smith",
    "Royal-Gala", "Avocado", "Kiwi", "Red-Bell-Pepper", "Arla-Standard-Milk", "Oatly-Oat-Milk",
)
PER_SPLIT = {"train.txt": 10, "val.txt": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    src, dst = args.source, args.dest
    dst.mkdir(parents=True, exist_ok=True)

    with open(src / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r[0] in CLASSES]
    wanted_ids = {r[1] for r in body}
    with open(dst / "classes.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *body])
    for row in body:
        for rel in row[4:6]:
            _copy(src, dst, rel.lstrip("/"))
        info = Path(row[4].lstrip("/")).with_name(f"{row[0]}_Information.txt")
        if (src / info).exists():
            _copy(src, dst, str(info))

    for split, per_class in PER_SPLIT.items():
        kept, taken = [], {}
        for line in (src / split).read_text().splitlines():
            path, fine, _coarse = (p.strip() for p in line.split(","))
            if fine in wanted_ids and taken.get(fine, 0) < per_class:
                taken[fine] = taken.get(fine, 0) + 1
                kept.append(line)
                _copy(src, dst, path)
        (dst / split).write_text("\n".join(kept) + "\n")

    for name in ("LICENSE",):
        shutil.copy(src / name, dst / name)


def _copy(src: Path, dst: Path, rel: str) -> None:
    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / rel, dst / rel)


if __name__ == "__main__":
    main()
