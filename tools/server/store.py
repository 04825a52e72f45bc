"""The parsing of a POST /v1/events body (the events are kept by `storage`)."""
from __future__ import annotations

import json

from aiohttp import web

from shelfsight.edge.sync.outbox import MAX_ID_CHARS

MAX_BATCH_EVENTS = 10_000


def parse_batch(body: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(valid (id, json) pairs, rejected id -> reason) of a POST /v1/events body; an id
    that comes twice with different content is rejected (which one the device meant is
    not the server's guess), twice with the same content is one event.

    Raises:
        web.HTTPBadRequest: not JSON, no "events" list, too many events, or an event
            without a string id (it could not be reported back).
    """
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("body is not JSON") from None
    except RecursionError:
        raise bad_request("body is nested too deeply") from None
    except ValueError as e:  # NaN / Infinity: not JSON, and not storable as JSON
        raise bad_request(str(e)) from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise bad_request('expected {"events": [...]}')
    if len(events) > MAX_BATCH_EVENTS:
        raise bad_request(f"{len(events)} events in one batch, limit {MAX_BATCH_EVENTS}")
    bodies: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for n, event in enumerate(events):
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str):
            raise bad_request(f"event {n} has no string id")
        if not 0 < len(event_id) <= MAX_ID_CHARS:
            rejected[event_id] = f"id must be 1..{MAX_ID_CHARS} characters"
            continue
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        if not _is_unicode(body):
            rejected[event_id] = "text that is not valid Unicode (a lone surrogate, \\ud800-\\udfff)"
            continue
        if bodies.get(event_id, body) != body or event_id in rejected:
            # the same id twice in one batch with different content: neither is stored
            rejected[event_id] = "id sent twice in this batch with different content"
            continue
        bodies[event_id] = body  # the same event twice in one batch is stored once
    valid = [(i, body) for i, body in bodies.items() if i not in rejected]
    return valid, rejected


def _is_unicode(text: str) -> bool:
    """False for text holding a lone surrogate (valid in JSON escapes, storable in no database)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")
