"""Every product in view: object proposals, per-crop recognition, tracking, counting, events.

Proposals come from a learned empty scene (`background`) or a TFLite detector
(`detector:PATH.tflite`), chosen in `proposals.make_proposer`; each box is cropped and named
by the bundle's recogniser (`crops`), tracked across frames (`tracking`), counted across a
line (`counting`), read for barcodes (`barcodes`, checked against the catalog's codes in
`agreement`), and reported once when confirmed and once when it leaves (`events`).
`ObjectStage` is what the run loop calls per frame.
"""
from .agreement import AGREEMENTS, check_barcode
from .background import BackgroundOptions, BackgroundProposer, load_scene, save_scene
from .boxes import Box
from .counting import CountLine
from .crops import BundleCrops, CropRecognizer, CropResult
from .detector import DetectorOptions, DetectorProposer
from .options import ObjectsOptions
from .proposals import make_proposer, parse_backend
from .stage import ObjectStage
from .tracking import Track, Tracker, TrackingOptions

__all__ = ["AGREEMENTS", "BackgroundOptions", "BackgroundProposer", "Box", "BundleCrops", "CountLine", "CropRecognizer",
           "CropResult", "DetectorOptions", "DetectorProposer", "ObjectStage", "ObjectsOptions", "Track",
           "Tracker", "TrackingOptions", "check_barcode", "load_scene", "make_proposer", "parse_backend", "save_scene"]
