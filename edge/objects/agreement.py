"""A decoded barcode against the visual match: the self-checkout "ticket switch" check.

When the catalog lists barcodes (the CSV manifest's ``barcode`` column, carried into the
index's ``catalog.json``), a track's decoded code is looked up there and compared with what
the recogniser saw. The event's "barcode" becomes::

    {"value": "4006381333931", "symbology": "EAN_13",
     "item": {"item_id", "label", "sku", "name"} | None,   # the catalog item listing the code
     "agreement": "agree" | "mismatch" | "unlisted" | "unverified"}

- ``agree``: the listed item has the track's label, or is its best sighting's nearest item;
- ``mismatch``: the listed item is another product than the one seen: a code stuck on the
  wrong product, the "ticket switch" alert;
- ``unlisted``: the catalog lists no item with this code (or no barcodes at all);
- ``unverified``: the code is listed but the recogniser did not know the product (unknown),
  so there is nothing to compare it with.

Codes are compared as `normalize_barcode` makes them (EAN/UPC digits as GTIN-14).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from ..catalog.items import Catalog

if TYPE_CHECKING:
    from ..catalog.search import Match

AGREE, MISMATCH, UNLISTED, UNVERIFIED = "agree", "mismatch", "unlisted", "unverified"
AGREEMENTS = (AGREE, MISMATCH, UNLISTED, UNVERIFIED)


def check_barcode(code: Mapping[str, str], catalog: Catalog | None, label: str | None,
                  matches: Sequence[Match] = ()) -> dict:
    """The event's "barcode": ``code`` (value, symbology) with its catalog item and agreement.

    Args:
        code: what the reader decoded: {"value", "symbology"}.
        catalog: the bundle's catalog (None: the bundle has no index).
        label: the track's smoothed label (None: unknown).
        matches: the nearest catalog items of the track's best sighting, best first.
    """
    item = catalog.by_barcode(code["value"]) if catalog is not None else None
    if item is None:
        agreement = UNLISTED
    elif (item.label and item.label == label) or (matches and matches[0].item_id == item.item_id):
        agreement = AGREE
    elif label is None:
        agreement = UNVERIFIED
    else:
        agreement = MISMATCH
    listed = None if item is None else {"item_id": item.item_id, "label": item.label, "sku": item.sku,
                                        "name": item.name}
    return {"value": code["value"], "symbology": code["symbology"], "item": listed, "agreement": agreement}
