"""The one JSON result record: what `classify --json`, `search --json` and every event say.

A record names its version in "schema" (``shelfsight.result/1``) and always has "label"
(None for unknown), "score", "predictions" (top-k: label, score, index, best first),
"matches" (similar catalog items: item_id, sku, label, name, similarity, best first) and
"latency_ms". Where it came from is added by the writer: "image" (classify, search) or
"id", "time", "source", "frame" (events). Keys a newer writer adds are allowed.
Version 1 is additive only; a rename or a change of meaning gets ``shelfsight.result/2``.
"""
from __future__ import annotations

import dataclasses
import numbers
from functools import lru_cache
from typing import Any

from shelfsight.errors import ShelfsightError

SCHEMA_ID = "shelfsight.result/1"

_SCORE = {"type": "number"}
_PREDICTION = {"type": "object", "required": ["label", "score", "index"],
               "properties": {"label": {"type": "string"}, "score": _SCORE,
                              "index": {"type": "integer", "minimum": 0}}}
_MATCH = {"type": "object", "required": ["item_id", "sku", "label", "name", "similarity"],
          "properties": {"item_id": {"type": "string"}, "sku": {"type": "string"}, "label": {"type": "string"},
                         "name": {"type": "string"}, "similarity": _SCORE}}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "type": "object",
    "required": ["schema", "label", "score", "predictions", "matches", "latency_ms"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "label": {"type": ["string", "null"]},
        "score": _SCORE,
        "predictions": {"type": "array", "items": _PREDICTION},
        "matches": {"type": "array", "items": _MATCH},
        "latency_ms": {"type": "number", "minimum": 0},
        "image": {"type": "string"},
        "id": {"type": "string"},
        "time": {"type": "string"},
        "source": {"type": "string"},
        "frame": {"type": "integer"},
    },
}


class ResultError(ShelfsightError):
    """A record that does not follow the result schema."""


def result_record(label: str | None, score: float, predictions, matches, latency_ms: float) -> dict[str, Any]:
    """The schema's core fields; predictions and matches are dataclass records (Prediction, Match)."""
    return {"schema": SCHEMA_ID, "label": label, "score": round(float(score), 5),
            "predictions": [_rounded(dataclasses.asdict(p)) for p in predictions],
            "matches": [_rounded(dataclasses.asdict(m)) for m in matches],
            "latency_ms": round(float(latency_ms), 3)}


def check_result(record: dict) -> None:
    """Raises ResultError naming the first violation (``$.predictions[0]: 'index' is a required property``)."""
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        raise ResultError(f"{where}: {e.message}")


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA)


def _rounded(record: dict) -> dict:
    # numpy scalars too (similarities come from numpy): plain floats, so json.dumps always works
    return {k: round(float(v), 5) if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) else v
            for k, v in record.items()}
