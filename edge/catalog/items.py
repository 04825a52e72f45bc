"""The catalog: what each searchable item is (id, label, sku, name, images, barcodes, extra columns).

Saved as JSON in the bundle (``catalog.json``)::

    {"format": "shelfsight.catalog", "version": 1,
     "items": [{"item_id": "banana", "label": "Banana", "sku": "4011", "name": "Bananas, loose",
                "images": ["iconic/Banana.jpg", ...], "extra": {"coarse": "Fruit"},
                "barcodes": ["4011200296908"]}, ...]}

"barcodes" is written only when the item has some (the CSV manifest's ``barcode`` column);
a barcode belongs to one item at most (`Catalog.by_barcode` finds it).

An item may have several images and so several vectors in the index; search results are
grouped per item. Item order is fixed once written: the index refers to items by position.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from shelfsight.atomic import write_text
from shelfsight.errors import ConfigError, IndexMismatchError

FORMAT, VERSION = "shelfsight.catalog", 1


@dataclass(frozen=True)
class CatalogItem:
    """One product of the catalog.

    Attributes:
        item_id: unique, non-empty id (what search results name).
        label: the class label this item belongs to (may repeat across items).
        sku, name: shop identifiers for display; may be empty.
        images: image paths the item's vectors came from (informational).
        extra: any further CSV columns, as strings.
        barcodes: the codes printed on the product (EAN/UPC digits, Code 128 or QR text);
            compared as `normalize_barcode` makes them.
    """

    item_id: str
    label: str = ""
    sku: str = ""
    name: str = ""
    images: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)
    barcodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id.strip():
            raise ConfigError(f"catalog item_id must be a non-empty string, got {self.item_id!r}")
        for name in ("label", "sku", "name"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"catalog item {self.item_id!r}: {name} must be a string, "
                                  f"got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "images", tuple(str(p) for p in self.images))
        object.__setattr__(self, "extra", {str(k): str(v) for k, v in dict(self.extra).items()})
        if not isinstance(self.barcodes, (list, tuple)) or not all(isinstance(c, str) and c.strip()
                                                                       for c in self.barcodes):
            raise ConfigError(f"catalog item {self.item_id!r}: barcodes must be a list of non-empty strings, "
                              f"got {self.barcodes!r}")
        object.__setattr__(self, "barcodes", tuple(dict.fromkeys(c.strip() for c in self.barcodes)))

    def __hash__(self) -> int:
        return hash((self.item_id, self.label, self.sku, self.name, self.images, self.barcodes))

    def to_dict(self) -> dict[str, Any]:
        d = {"item_id": self.item_id, "label": self.label, "sku": self.sku, "name": self.name,
             "images": list(self.images), "extra": dict(self.extra)}
        if self.barcodes:
            d["barcodes"] = list(self.barcodes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CatalogItem":
        return cls(item_id=d["item_id"], label=d.get("label", ""), sku=d.get("sku", ""),
                   name=d.get("name", ""), images=tuple(d.get("images", ())), extra=d.get("extra", {}),
                   barcodes=d.get("barcodes", ()))


def normalize_barcode(value: str) -> str:
    """The form barcodes are compared in: stripped; EAN-8, UPC-A, EAN-13 and GTIN-14 digits
    zero-padded to 14 (GTIN-14), so a UPC-A listed as 12 digits matches its EAN-13 reading."""
    value = value.strip()
    return value.zfill(14) if value.isdigit() and len(value) in (8, 12, 13, 14) else value


class Catalog:
    """An ordered, immutable collection of `CatalogItem` with unique ids."""

    def __init__(self, items: Iterable[CatalogItem]):
        self._items = tuple(items)
        self._position: dict[str, int] = {}
        for i, item in enumerate(self._items):
            if item.item_id in self._position:
                raise ConfigError(f"catalog: item_id {item.item_id!r} appears twice "
                                  f"(positions {self._position[item.item_id]} and {i})")
            self._position[item.item_id] = i
        self._barcode: dict[str, int] = {}
        for i, item in enumerate(self._items):
            for code in item.barcodes:
                other = self._barcode.setdefault(normalize_barcode(code), i)
                if other != i:
                    raise ConfigError(f"catalog: barcode {code!r} is listed by both {self._items[other].item_id!r} "
                                      f"and {item.item_id!r}")

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self._items)

    def __getitem__(self, position: int) -> CatalogItem:
        return self._items[position]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and self._items == other._items

    def __repr__(self) -> str:
        return f"Catalog({len(self)} items)"

    def get(self, item_id: str) -> CatalogItem:
        """The item with this id. Raises KeyError if there is none."""
        return self._items[self._position[item_id]]

    def position(self, item_id: str) -> int:
        """The item's position (what the index's row map stores). Raises KeyError."""
        return self._position[item_id]

    def by_barcode(self, code: str) -> CatalogItem | None:
        """The item that lists ``code`` (compared normalised), or None."""
        position = self._barcode.get(normalize_barcode(code))
        return None if position is None else self._items[position]

    @property
    def has_barcodes(self) -> bool:
        return bool(self._barcode)

    def extended(self, items: Iterable[CatalogItem]) -> "Catalog":
        """A new catalog with ``items`` appended (positions of existing items unchanged)."""
        return Catalog((*self._items, *items))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "items": [it.to_dict() for it in self._items]}

    def save(self, path: Path) -> None:
        """Write the catalog as JSON atomically (`shelfsight.atomic`)."""
        write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Catalog":
        """Read a catalog written by `save`.

        Raises:
            IndexMismatchError: missing, not JSON, wrong format or version, invalid items.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexMismatchError(f"{path}: catalog is not readable JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            got = (data.get("format"), data.get("version")) if isinstance(data, dict) else type(data).__name__
            raise IndexMismatchError(f"{path}: catalog format {got}, expected ({FORMAT!r}, {VERSION})")
        try:
            return cls(CatalogItem.from_dict(d) for d in data["items"])
        except (KeyError, TypeError, AttributeError, ConfigError) as e:
            raise IndexMismatchError(f"{path}: invalid catalog item ({e})") from None
