"""The rollout rules as plain functions: who is in a canary, what rolls a rollout back."""
from __future__ import annotations

import pytest

from shelfsight.tools.server.rollouts import (bucket, in_rollout, offered_bundle, parse_health, unhealthy_reason,
                                              update_failure_reason)
from shelfsight.tools.server.storage import HealthReport, Rollout


def rollout(**kw) -> Rollout:
    values = dict(id=5, bundle="v2", group=None, percent=10, state="active", min_fps=10.0, max_unknown_rate=0.3,
                  max_errors=2, started=0.0, ended=None, reason="")
    return Rollout(**dict(values, **kw))


def test_a_percentage_is_a_stable_hash_of_rollout_and_device():
    devices = [f"cam-{i}" for i in range(2000)]
    canary = [d for d in devices if in_rollout(rollout(), d, "")]
    assert 160 <= len(canary) <= 240  # about 10 %
    assert canary == [d for d in devices if bucket(5, d) < 10]
    assert [d for d in devices if in_rollout(rollout(id=6), d, "")] != canary  # a new rollout, a new draw
    assert in_rollout(rollout(group="north", percent=None), "x", "north")
    assert not in_rollout(rollout(group="north", percent=None), "x", "")
    assert offered_bundle("x", "north", rollout(group="north", percent=None), "v1") == "v2"
    assert offered_bundle("x", "south", rollout(group="north", percent=None), "v1") == "v1"
    assert offered_bundle("x", "south", None, None) is None


def test_what_rolls_back():
    r = rollout()
    assert unhealthy_reason(r, HealthReport(bundle_id="v2", fps=9.5)) == "fps 9.5 below 10"
    assert unhealthy_reason(r, HealthReport(bundle_id="v2", unknown_rate=0.5)) == "unknown rate 0.5 above 0.3"
    assert unhealthy_reason(r, HealthReport(bundle_id="v2", errors=3)) == "3 errors above 2"
    assert unhealthy_reason(r, HealthReport(bundle_id="v1", fps=1.0)) is None  # not running the new bundle
    assert unhealthy_reason(r, HealthReport(bundle_id="v2", fps=12.0, unknown_rate=0.1, errors=0)) is None
    event = {"type": "bundle_update", "bundle_id": "v2", "reason": "bad signature"}
    assert update_failure_reason(r, dict(event, status="refused")) == "device update refused: bad signature"
    assert update_failure_reason(r, dict(event, status="failed")) is None  # the device's disk, not the bundle
    assert update_failure_reason(r, dict(event, status="updated")) is None


@pytest.mark.parametrize("payload, message", [({"fps": -1}, "health field 'fps' must be a number >= 0, got -1"),
                                              ({"errors": True}, "health field 'errors' must be a number >= 0"),
                                              ({"bundle_id": 3}, "health field 'bundle_id' must be a string")])
def test_health_fields_are_checked(payload, message):
    with pytest.raises(ValueError, match=message):
        parse_health(payload)
