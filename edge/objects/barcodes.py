"""Barcodes and QR codes on a track's crops, with OpenCV's own decoders (no new dependency).

`cv2.barcode.BarcodeDetector` reads EAN-13, EAN-8, UPC-A and UPC-E (OpenCV 4.11 decodes no
other linear symbology: Code 128 and Code 39 are not read); `cv2.QRCodeDetector` reads QR
codes. Values come back as printed (UPC-A as 12 digits; the catalog compares digits as
GTIN-14, `shelfsight.edge.catalog.items.normalize_barcode`). A track's crops are tried until one decodes (every ``every`` frames, so the
cost stays bounded); an unreadable code leaves the track without a barcode.
"""
from __future__ import annotations

import cv2
import numpy as np


class BarcodeReader:
    """``read(crop_bgr) -> {"value", "symbology"} | None``."""

    def __init__(self) -> None:
        self._barcode = cv2.barcode.BarcodeDetector()
        self._qr = cv2.QRCodeDetector()
        self.attempts = self.decoded = 0

    def read(self, crop_bgr: np.ndarray) -> dict | None:
        self.attempts += 1
        found = self._read(crop_bgr)
        self.decoded += found is not None
        return found

    def _read(self, crop_bgr: np.ndarray) -> dict | None:
        try:
            ok, values, kinds, _ = self._barcode.detectAndDecodeWithType(crop_bgr)
        except cv2.error:
            ok = False
        if ok:
            for value, kind in zip(values, kinds):
                if value:
                    return {"value": value, "symbology": kind}
        try:
            value, _, _ = self._qr.detectAndDecode(crop_bgr)
        except cv2.error:
            value = ""
        return {"value": value, "symbology": "QR"} if value else None
