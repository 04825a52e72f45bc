"""From one recognition to the three products a shopper may tap, and the catalog they choose from.

A shopper chooses catalog items (an item id, its SKU and name), not classes. The three shown:

1. an item this device was taught (its confirmed photos enrolled in the index) comes first when
   it is the nearest item in the index, or within ``TAUGHT_MARGIN`` of the nearest: the shop
   corrected the model for it, and the photos it was corrected with are what the camera sees
   now. The margin settles near ties in the shop's favour (its own photos of a product and the
   catalog's photo of what the model thought it was can be equally near the same view); an item
   clearly nearer still wins;
2. then the model's classes, best first, each as its best-matching catalog item of that label
   (the first item of the label when the search found none), with the class score as confidence;
3. then other similar items the search found (products the classifier never had, enrolled on
   the device), with their similarity as confidence.

The screen says "unknown" when the model's best score is under the bundle's threshold and no
taught item matched (the same rule as `Recognizer`, which decides ``label``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from ..catalog.items import CatalogItem
from ..runtime.postprocess import Recognition

SHOWN = 3
TAUGHT_MARGIN = 0.02  # cosine similarity


@dataclass(frozen=True)
class Candidate:
    """One product offered to the shopper."""

    item_id: str
    sku: str
    name: str
    label: str
    confidence: float  # 0..1: the class score, or the similarity of a search match
    why: str  # "taught", "model" or "search"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalog_items(recognizer: Any) -> dict[str, CatalogItem]:
    """Every item a shopper can choose, by id: the index's catalog, then items enrolled since;
    a bundle without an index offers one item per class label."""
    index = getattr(recognizer, "index", None)
    if index is None:
        return {label: CatalogItem(label, label=label, name=label) for label in recognizer.labels}
    items = {item.item_id: item for item in index.catalog}
    for item in index.enrolled:
        items.setdefault(item.item_id, item)
    return items


class CatalogCache:
    """`catalog_items` of the running recogniser, made again only when its catalog changed
    (another bundle, an enrolment of a new item, a rebuild)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._items: dict[str, CatalogItem] = {}

    def items(self, recognizer: Any) -> dict[str, CatalogItem]:
        index = getattr(recognizer, "index", None)
        key = (id(recognizer), id(index), len(index.enrolled) if index is not None else 0,
               len(index.catalog) if index is not None else 0)
        if key != self._key:
            self._items, self._key = catalog_items(recognizer), key
        return self._items


def display_name(item: CatalogItem) -> str:
    return item.name or item.label or item.item_id


def _candidate(item: CatalogItem, confidence: float, why: str) -> Candidate:
    return Candidate(item.item_id, item.sku or item.item_id, display_name(item), item.label,
                     round(min(max(float(confidence), 0.0), 1.0), 4), why)


def choose(recognition: Recognition, items: Mapping[str, CatalogItem], taught: Iterable[str],
           k: int = SHOWN) -> tuple[bool, list[Candidate]]:
    """(known, the ``k`` products to show) for one recognition (see the module docstring)."""
    out: dict[str, Candidate] = {}
    matches = [m for m in recognition.matches if m.item_id in items]
    taught = set(taught)
    nearest_taught = next((m for m in matches if m.item_id in taught), None)
    taught_first = nearest_taught is not None and \
        nearest_taught.similarity >= matches[0].similarity - TAUGHT_MARGIN
    if taught_first:
        out[nearest_taught.item_id] = _candidate(items[nearest_taught.item_id], nearest_taught.similarity, "taught")
    first_of_label: dict[str, CatalogItem] = {}
    for item in items.values():
        first_of_label.setdefault(item.label, item)
    for p in recognition.predictions:
        best = next((m for m in matches if m.label == p.label), None)
        item = items[best.item_id] if best is not None else first_of_label.get(p.label)
        if item is not None and item.item_id not in out:
            out[item.item_id] = _candidate(item, p.score, "model")
    for m in matches:
        if m.item_id not in out:
            out[m.item_id] = _candidate(items[m.item_id], m.similarity, "search")
    return taught_first or recognition.label is not None, list(out.values())[:k]


def filter_items(items: Mapping[str, CatalogItem], query: str, limit: int = 24) -> list[Candidate]:
    """Items whose name, label, SKU or id contain every word of ``query`` (any case), in catalog
    order; an empty query gives the first ``limit`` items."""
    words = query.casefold().split()
    found = []
    for item in items.values():
        text = " ".join((item.name, item.label, item.sku, item.item_id)).casefold()
        if all(w in text for w in words):
            found.append(_candidate(item, 0.0, "search"))
            if len(found) >= limit:
                break
    return found
