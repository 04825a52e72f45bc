"""The bundle manifest's JSON Schema: what the device relies on, checked before it is used.

`check_manifest` validates with ``jsonschema`` (imported on first use) and reports the first
violation, ordered by its place in the document, as ``$.files['model.tflite']: 'sha256' is a
required property``; then refuses NaN and Infinity anywhere (not JSON, though Python reads
and writes them). Sections the device does not read (metrics, provenance, ...) may hold
anything; keys it does not know are allowed, so a newer writer's additions do not break it.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterable, Iterator

from .errors import BundleError

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "minLength": 1, "pattern": r"^[^/\\]+$"}
_NUMBER = {"type": "number"}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "schema_version", "bundle_id", "files", "model", "labels", "preprocess"],
    "properties": {
        "schema": {"type": "string"},
        "schema_version": {"type": "integer"},
        "bundle_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "created_at": {"type": "string"},
        "files": {"type": "object", "minProperties": 1, "propertyNames": _NAME,
                  "additionalProperties": {"type": "object", "required": ["sha256", "size"],
                                           "properties": {"sha256": _SHA256, "size": _COUNT}}},
        "model": {"type": "object", "required": ["file"], "properties": {"file": _NAME}},
        "labels": {"type": "object", "required": ["file", "count"],
                   "properties": {"file": _NAME, "count": _COUNT}},
        "preprocess": {"type": "object", "required": ["size", "crop_fraction", "mean", "std"],
                       "properties": {
                           "size": {"type": "integer", "minimum": 1},
                           "crop_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                           "mean": {"type": "array", "items": _NUMBER, "minItems": 1, "maxItems": 4},
                           "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                                   "minItems": 1, "maxItems": 4},
                           "interpolation": {"enum": ["area", "linear", "cubic"]}}},
        "thresholds": {"type": "object", "additionalProperties": _NUMBER},
        "index": {"type": ["object", "null"],
                  "properties": {"model_sha256": _SHA256,
                                 "checksums": {"type": "object", "propertyNames": _NAME,
                                               "additionalProperties": {
                                                   "type": "object", "required": ["sha256", "size"],
                                                   "properties": {"sha256": _SHA256, "size": _COUNT}}}}},
        "fusion": {"type": ["object", "null"]},
    },
}

@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator  # imported only when a manifest is checked

    return Draft202012Validator(SCHEMA)


def check_manifest(manifest: Any, where: str) -> None:
    """Validate a parsed manifest against `SCHEMA`.

    Raises:
        BundleError: ``"{where}: {json path}: {what is wrong}"`` for the first violation.
    """
    errors = list(_validator().iter_errors(manifest))
    if errors:
        first = min(errors, key=lambda e: ([str(p) for p in e.absolute_path], str(e.message)))
        message = first.message if len(first.message) <= 200 else first.message[:200] + "..."
        raise BundleError(f"{where}: {json_path(first.absolute_path)}: {_one_line(message)}")
    for path, value in _numbers(manifest, ()):
        if not math.isfinite(value):  # NaN / Infinity are no JSON, though Python reads and writes them
            raise BundleError(f"{where}: {json_path(path)}: {value} is not a finite number")


def json_path(parts: Iterable[Any]) -> str:
    """``$.files['model.tflite'].size``: names as attributes where they can be, anything else
    quoted with its control characters escaped (a path stays on one line)."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{_one_line(repr(part))}]"
    return out


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _numbers(value: Any, path: tuple) -> Iterator[tuple[tuple, float]]:
    """Every float in a parsed JSON value with its path, in document order (no recursion: a
    manifest may nest as deep as the JSON reader allows)."""
    stack = [(path, value)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float):
            yield path, value
        elif isinstance(value, dict):
            stack.extend(reversed([(path + (k,), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(path + (i,), v) for i, v in enumerate(value)]))
